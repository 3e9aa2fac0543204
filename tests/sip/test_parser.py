"""Tests for warden.sip.parser, message, headers and uri."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.errors import SipParseError
from warden.sip import headers as headers_module
from warden.sip import uri as uri_module
from warden.sip.headers import parse_address, parse_via, split_commas
from warden.sip.message import Request, make_response
from warden.sip.parser import StreamFramer, UnsupportedVersion, parse_datagram
from warden.sip.uri import contact_key, parse_uri

REGISTER = (
    b"REGISTER sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:1001@pbx.test>\r\n"
    b'From: "Bob, the Builder" <sip:1001@pbx.test>;tag=456248\r\n'
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:1001@192.0.2.10:5062;transport=udp>;expires=600, "
    b"<sip:1001@198.51.100.1>;q=0.5\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class DatagramTests(SynchronousTestCase):
    """parse_datagram and serialisation."""

    def test_round_trip_keeps_raw_bytes(self) -> None:
        """An unchanged parsed message serialises to exactly the bytes received."""
        message = parse_datagram(REGISTER)
        self.assertEqual(message.to_bytes(), REGISTER)

    def test_fields(self) -> None:
        """Parsed accessors expose the start line and the main headers."""
        message = parse_datagram(REGISTER)
        assert isinstance(message, Request)
        self.assertEqual(message.method, "REGISTER")
        self.assertEqual(message.uri.host, "pbx.test")
        self.assertEqual(message.top_via.branch, "z9hG4bK776asdhds")
        self.assertEqual(message.top_via.port, 5062)
        self.assertEqual(message.to.uri.user, "1001")
        self.assertEqual(message.from_.display, "Bob, the Builder")
        self.assertEqual(message.from_.tag, "456248")
        self.assertEqual(message.cseq.number, 1826)
        self.assertEqual([c.param("expires") for c in message.contacts], ["600", None])
        self.assertEqual(message.contacts[1].param("q"), "0.5")

    def test_reserialise_after_change(self) -> None:
        """A changed message is re-serialised with a recomputed Content-Length."""
        message = parse_datagram(REGISTER)
        message.set_body(b"hello", "text/plain")
        again = parse_datagram(message.to_bytes())
        self.assertEqual(again.body, b"hello")
        self.assertEqual(again.get("content-length"), "5")
        self.assertEqual(again.get("Call-ID"), message.get("Call-ID"))

    def test_compact_forms_and_folding(self) -> None:
        """Compact header names expand and folded lines join with one space."""
        data = (
            b"OPTIONS sip:pbx.test SIP/2.0\r\n"
            b"v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa\r\n"
            b"t: <sip:pbx.test>\r\nf: <sip:a@pbx.test>;tag=1\r\ni: abc\r\n"
            b"CSeq: 1\r\n OPTIONS\r\nSubject: one\r\n\ttwo\r\nl: 0\r\n\r\n"
        )
        message = parse_datagram(data)
        self.assertEqual(message.get("Via"), "SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa")
        self.assertEqual(message.call_id, "abc")
        self.assertEqual(message.cseq.method, "OPTIONS")
        self.assertEqual(message.get("subject"), "one two")

    def test_multi_value_headers_split(self) -> None:
        """Comma lists split outside quotes and angle brackets; lines concatenate."""
        message = parse_datagram(
            REGISTER.replace(
                b"Max-Forwards", b"Via: SIP/2.0/UDP h;branch=z9hG4bK2\r\nMax-Forwards"
            )
        )
        self.assertEqual(len(message.vias), 2)
        self.assertEqual(len(message.contacts), 2)
        self.assertEqual(
            split_commas('"a, b" <sip:x@y>, <sip:z@w;p=1,2>'),
            ['"a, b" <sip:x@y>', "<sip:z@w;p=1,2>"],
        )

    def test_extra_octets_after_body_ignored(self) -> None:
        """Octets after the Content-Length body of a datagram are not part of it."""
        data = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 2") + b"okEXTRA"
        message = parse_datagram(data)
        self.assertEqual(message.body, b"ok")
        self.assertEqual(message.to_bytes(), data[:-5])

    def test_content_length_beyond_datagram(self) -> None:
        """A Content-Length larger than the datagram is an error with a partial message."""
        data = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 99")
        error = self.assertRaises(SipParseError, parse_datagram, data)
        self.assertIsInstance(error.partial, Request)

    def test_oversized(self) -> None:
        """A datagram over the maximum size is refused."""
        self.assertRaises(SipParseError, parse_datagram, REGISTER, 100)

    def test_version(self) -> None:
        """A request with another SIP version raises UnsupportedVersion with headers."""
        error = self.assertRaises(
            UnsupportedVersion,
            parse_datagram,
            REGISTER.replace(b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia", 1),
        )
        self.assertEqual(error.partial.call_id, "843817637684230@998sdasdh09")

    def test_response(self) -> None:
        """Status lines parse, reason phrases may be empty or UTF-8."""
        message = parse_datagram(
            "SIP/2.0 200 Vale ✓\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n".encode()
        )
        self.assertEqual((message.status, message.reason), (200, "Vale ✓"))

    def test_make_response(self) -> None:
        """Responses copy Via/From/To/Call-ID/CSeq and add the To tag (RFC 3261 §8.2.6)."""
        request = parse_datagram(REGISTER)
        response = make_response(request, 200, to_tag="abc")
        again = parse_datagram(response.to_bytes())
        self.assertEqual(again.to.tag, "abc")
        self.assertEqual(again.get("Via"), request.get("Via"))
        self.assertEqual(again.cseq, request.cseq)
        trying = make_response(request, 100, to_tag="abc")
        self.assertIsNone(parse_datagram(trying.to_bytes()).to.tag)


class StreamTests(SynchronousTestCase):
    """StreamFramer: Content-Length framing on TCP."""

    def test_byte_at_a_time(self) -> None:
        """Messages delivered one byte at a time come out whole, in order."""
        framer = StreamFramer()
        data = (
            REGISTER
            + b"\r\n"
            + REGISTER.replace(b"Content-Length: 0", b"Content-Length: 3")
            + b"abc"
        )
        out = []
        for i in range(len(data)):
            out.extend(framer.feed(data[i : i + 1]))
        self.assertEqual(len(out), 2)
        self.assertEqual(out[1].body, b"abc")
        self.assertEqual(framer.pending_bytes, 0)

    def test_endless_header_cut_off(self) -> None:
        """Header bytes beyond the maximum raise instead of buffering forever."""
        framer = StreamFramer(4096)
        framer.feed(b"REGISTER sip:x SIP/2.0\r\n")
        with self.assertRaises(SipParseError):
            for _ in range(100):
                framer.feed(b"X-Junk: " + b"a" * 100 + b"\r\n")
        self.assertLessEqual(framer.pending_bytes, 4096 + 200)

    def test_huge_body_refused_at_header(self) -> None:
        """A Content-Length over the maximum is refused before any body is buffered."""
        framer = StreamFramer(65535)
        head = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 10000000")
        error = self.assertRaises(SipParseError, framer.feed, head)
        self.assertIsInstance(error.partial, Request)


class URITests(SynchronousTestCase):
    """URIs and their comparison (RFC 3261 §19.1.4)."""

    def test_parts(self) -> None:
        """User, password, host, port, parameters and headers are separated."""
        uri = parse_uri("sips:alice:secret@Atlanta.COM:5061;transport=TCP;lr?subject=x&h=y")
        self.assertEqual(
            (uri.user, uri.password, uri.host, uri.port), ("alice", "secret", "atlanta.com", 5061)
        )
        self.assertEqual(uri.transport, "tcp")
        self.assertTrue(uri.has_param("lr"))
        self.assertEqual(uri.headers, (("subject", "x"), ("h", "y")))

    def test_equal_examples(self) -> None:
        """The equal pairs of RFC 3261 §19.1.4."""
        pairs = [
            ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
            ("sip:alice@atlanta.com;transport=UDP", "sip:alice@atlanta.com;transport=udp"),
            ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
             "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ]  # fmt: skip
        for a, b in pairs:
            self.assertTrue(parse_uri(a).equals(parse_uri(b)), (a, b))

    def test_unequal_examples(self) -> None:
        """The unequal pairs of RFC 3261 §19.1.4."""
        pairs = [
            ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;user=phone"),
            ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;newparam=6"),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ]
        for a, b in pairs:
            self.assertFalse(parse_uri(a).equals(parse_uri(b)), (a, b))

    def test_contact_key(self) -> None:
        """contact_key is equal for URIs a registrar must treat as the same binding."""
        self.assertEqual(
            contact_key(parse_uri("sip:1001@192.0.2.1:5060;transport=UDP")),
            contact_key(parse_uri("sip:1001@192.0.2.1:5060;transport=udp")),
        )
        self.assertNotEqual(
            contact_key(parse_uri("sip:1001@192.0.2.1")),
            contact_key(parse_uri("sip:1001@192.0.2.1:5060")),
        )

    def test_ipv6(self) -> None:
        """IPv6 references parse with brackets; bad ones are refused (RFC 5118)."""
        uri = parse_uri("sip:[2001:DB8::10]:5070")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10]", 5070))
        for bad in ("sip:2001:db8::10", "sip:[2001:db8::10", "sip:[2001:db8:::1]", "sip:[::1]x"):
            self.assertRaises(SipParseError, parse_uri, bad)

    def test_other_schemes(self) -> None:
        """Non-SIP URIs parse as opaque; whitespace inside any URI is refused."""
        self.assertEqual(parse_uri("tel:+15551234").opaque, "+15551234")
        self.assertFalse(parse_uri("urn:service:sos").is_sip)
        self.assertRaises(SipParseError, parse_uri, "sip:a b@c")

    def test_round_trip(self) -> None:
        """str() of a parsed URI gives it back."""
        text = "sip:+1555;phone-context=x@pbx.test:5080;user=phone;lr?Subject=hi"
        self.assertEqual(str(parse_uri(text)), text)


class HeaderTests(SynchronousTestCase):
    """Address and Via values."""

    def test_address_forms(self) -> None:
        """name-addr with quoted or token display names, and addr-spec parameters."""
        a = parse_address('"A \\"B\\"" <sip:a@b>;tag=1')
        self.assertEqual((a.display, a.tag), ('A "B"', "1"))
        b = parse_address("Alice Smith <sip:a@b;lr>;expires=5")
        self.assertEqual(
            (b.display, b.param("expires"), b.uri.has_param("lr")), ("Alice Smith", "5", True)
        )
        c = parse_address("sip:a@b;tag=9")
        self.assertEqual((c.tag, c.uri.params), ("9", ()))
        self.assertTrue(parse_address("*").star)

    def test_bad_addresses(self) -> None:
        """Unbalanced quotes, commas in token display names, spaces in <> are refused."""
        for bad in ('"unbalanced <sip:a@b>', "Bell, Alex <sip:a@b>", "< sip:a@b >", "sip:a@b?x=y"):
            self.assertRaises(SipParseError, parse_address, bad)

    def test_via(self) -> None:
        """Via with LWS, IPv6 sent-by and received/rport parameters."""
        via = parse_via(
            "SIP / 2.0 / udp [2001:db8::9]:5066 ; branch=z9hG4bKx;rport;received=2001:db8::9"
        )
        self.assertEqual((via.transport, via.host, via.port), ("UDP", "[2001:db8::9]", 5066))
        self.assertEqual((via.branch, via.param("rport")), ("z9hG4bKx", ""))
        self.assertRaises(SipParseError, parse_via, "SIP/2.0/UDP 192.0.2.15;;")
        self.assertRaises(SipParseError, parse_via, "SIP/2.0/UDP h;received=not-an-ip")


class ParseCacheTests(SynchronousTestCase):
    """parse_address and parse_uri remember recent answers, within bounds."""

    def setUp(self) -> None:
        self.caches = (headers_module._cached_address, uri_module._cached_uri)
        for cache in self.caches:
            cache.cache_clear()
            self.addCleanup(cache.cache_clear)

    def test_same_text_same_value(self) -> None:
        """A repeated header value is parsed once and gives the same immutable value."""
        text = "<sip:1000@192.0.2.1:5060;transport=udp>;expires=60"
        first = parse_address(text)
        self.assertIs(parse_address(text), first)
        self.assertEqual(headers_module._cached_address.cache_info().hits, 1)
        self.assertIs(parse_uri("sip:1000@pbx.example.com"), parse_uri("sip:1000@pbx.example.com"))

    def test_errors_not_kept(self) -> None:
        """A bad value raises every time."""
        for _ in range(2):
            self.assertRaises(SipParseError, parse_address, "<sip:1000@example.com")
            self.assertRaises(SipParseError, parse_uri, "sip:")
        self.assertEqual(headers_module._cached_address.cache_info().currsize, 0)

    def test_long_values_not_kept(self) -> None:
        """Values longer than the bound are parsed each time and never kept."""
        long_uri = "sip:1000@example.com;x=" + "a" * uri_module.CACHED_URI_LENGTH
        long_address = f"<{long_uri}>"
        self.assertEqual(
            parse_address(long_address).uri.param("x"), "a" * uri_module.CACHED_URI_LENGTH
        )
        self.assertEqual(parse_uri(long_uri), parse_address(long_address).uri)
        self.assertEqual(headers_module._cached_address.cache_info().currsize, 0)
        self.assertEqual(uri_module._cached_uri.cache_info().currsize, 0)

    def test_bounded(self) -> None:
        """However many different values come, at most the bound are kept."""
        for n in range(headers_module.ADDRESSES_CACHED + 100):
            parse_address(f"<sip:{n}@example.com>")
        self.assertEqual(
            headers_module._cached_address.cache_info().currsize, headers_module.ADDRESSES_CACHED
        )
        self.assertEqual(uri_module._cached_uri.cache_info().currsize, uri_module.URIS_CACHED)
