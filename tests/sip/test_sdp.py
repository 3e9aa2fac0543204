"""Tests for warden.sip.sdp: parsing, byte-exact round trips, rewriting, hold."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.errors import WardenError
from warden.sip import sdp
from warden.sip.sdp import SdpError, parse_sdp, rewrite


def crlf(text: str) -> bytes:
    """``text`` with one SDP line per source line, CRLF-terminated."""
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


# SIPp's built-in uac scenario, with its keywords filled in.
SIPP = crlf("""
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
""")

BARESIP = crlf("""
    v=0
    o=- 1407935543 2036826337 IN IP4 192.168.1.10
    s=-
    c=IN IP4 192.168.1.10
    t=0 0
    a=tool:baresip 3.10.1
    m=audio 10170 RTP/AVP 96 9 0 8 101
    b=AS:128
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 stereo=1;sprop-stereo=1
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp-mux
    a=sendrecv
    a=label:1
    a=ssrc:2913201213 cname:a8b8a7f4-2b79-4d0b-8d0e-3f1e2e7f4c1d
    a=ptime:20
""")

LINPHONE = crlf("""
    v=0
    o=alice 3026 1426 IN IP4 192.168.0.20
    s=Talk
    c=IN IP4 192.168.0.20
    t=0 0
    a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
    a=record:off
    m=audio 7078 RTP/AVP 96 97 0 8 18 101 100
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 useinbandfec=1
    a=rtpmap:97 speex/16000
    a=fmtp:97 vbr=on
    a=fmtp:18 annexb=yes
    a=rtpmap:101 telephone-event/48000
    a=rtpmap:100 telephone-event/8000
    a=rtcp:7079
    a=rtcp-fb:* trr-int 1000
    a=rtcp-fb:* ccm tmmbr
    m=video 9078 RTP/AVP 96
    a=rtpmap:96 VP8/90000
    a=rtcp-fb:* trr-int 1000
""")

IPV6 = crlf("""
    v=0
    o=bob 2890844527 2890844528 IN IP6 2001:db8::20
    s=Call
    c=IN IP6 2001:db8::20
    t=0 0
    m=audio 49170 RTP/AVP 8 101
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
    a=rtcp:49171 IN IP6 2001:db8::20
    a=ptime:30
    a=sendrecv
""")

# Media-level c= only, and a second stream that is already disabled.
MEDIA_LEVEL_C = crlf("""
    v=0
    o=carol 1 1 IN IP4 198.51.100.9
    s=-
    t=0 0
    m=audio 20000 RTP/SAVP 0 101
    c=IN IP4 198.51.100.9
    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR
    a=rtpmap:101 telephone-event/8000
    a=rtcp:20001 IN IP4 198.51.100.9
    m=video 0 RTP/AVP 31
""")

HOLD_LEGACY = crlf("""
    v=0
    o=user1 53655765 2353687638 IN IP4 127.0.0.1
    s=-
    c=IN IP4 0.0.0.0
    t=0 0
    m=audio 6000 RTP/AVP 0
""")

REALISTIC = {
    "sipp": SIPP,
    "baresip": BARESIP,
    "linphone": LINPHONE,
    "ipv6": IPV6,
    "media-level-c": MEDIA_LEVEL_C,
    "hold": HOLD_LEGACY,
}


def replace_line(body: bytes, old: str, new: str) -> bytes:
    """``body`` with the line ``old`` replaced by ``new`` (asserting it was there)."""
    assert old.encode() + b"\r\n" in body, old
    return body.replace(old.encode() + b"\r\n", new.encode() + b"\r\n" if new else b"")


class RoundTripTests(SynchronousTestCase):
    """An unchanged description serialises to the bytes it came from."""

    def test_realistic_offers(self) -> None:
        """SIPp, baresip, linphone, IPv6 and SRTP offers round-trip byte for byte."""
        for name, body in REALISTIC.items():
            self.assertEqual(parse_sdp(body).to_bytes(), body, name)

    def test_line_endings_and_trailer_kept(self) -> None:
        """Bare LF endings, a final line without ending and blank trailing lines survive."""
        bodies = [
            SIPP.replace(b"\r\n", b"\n"),
            SIPP.replace(b"\r\n", b"\n", 3),
            SIPP[:-2],
            SIPP + b"\r\n\r\n",
        ]
        for body in bodies:
            self.assertEqual(parse_sdp(body).to_bytes(), body)

    def test_non_utf8_session_name_kept(self) -> None:
        """A Latin-1 session name (a=charset, RFC 8866 §6.10) round-trips unchanged."""
        body = SIPP.replace(b"s=-", b"s=Caf\xe9") + b"a=charset:ISO-8859-1\r\n"
        self.assertEqual(parse_sdp(body).to_bytes(), body)

    def test_unknown_lines_kept_in_order(self) -> None:
        """Unknown attributes and type letters stay where they were."""
        body = SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\ny=0123456789\r\na=x-custom:1 2\r\n")
        parsed = parse_sdp(body)
        self.assertEqual(parsed.to_bytes(), body)
        self.assertEqual([line.kind for line in parsed.lines], list("vosctya"))

    def test_model(self) -> None:
        """The parsed model exposes media, ports, protocols, formats and connections."""
        parsed = parse_sdp(LINPHONE)
        self.assertEqual(len(parsed.media), 2)
        audio, video = parsed.media
        self.assertEqual((audio.media, audio.port, audio.proto), ("audio", 7078, "RTP/AVP"))
        self.assertEqual(audio.formats, ("96", "97", "0", "8", "18", "101", "100"))
        self.assertEqual((video.media, video.port), ("video", 9078))
        self.assertEqual(parsed.connections[0].address, "192.168.0.20")
        self.assertEqual(parsed.connection_for(1), parsed.connections[0])
        self.assertEqual(audio.attribute_values("rtcp"), ["7079"])
        self.assertTrue(parse_sdp(BARESIP).media[0].has_attribute("rtcp-mux"))
        self.assertEqual(parsed.origin, "alice 3026 1426 IN IP4 192.168.0.20")


class CodecTests(SynchronousTestCase):
    """Codec names, telephone-event and ptime."""

    def test_codec_names(self) -> None:
        """Names come from a=rtpmap, else from the static payload type table, in m= order."""
        self.assertEqual(sdp.codecs(parse_sdp(SIPP).media[0]), ["PCMU"])
        self.assertEqual(
            sdp.codecs(parse_sdp(LINPHONE).media[0]),
            ["opus", "speex", "PCMU", "PCMA", "G729", "telephone-event", "telephone-event"],
        )
        self.assertEqual(sdp.codecs(parse_sdp(IPV6).media[0]), ["PCMA", "telephone-event"])

    def test_static_without_rtpmap(self) -> None:
        """Static types need no rtpmap; dynamic ones without it are left out."""
        body = crlf("""
            v=0
            o=- 1 1 IN IP4 192.0.2.1
            s=-
            c=IN IP4 192.0.2.1
            t=0 0
            m=audio 4000 RTP/AVP 0 8 9 18 13 96
        """)
        formats = sdp.payload_formats(parse_sdp(body).media[0])
        self.assertEqual(
            [(c.payload_type, c.name, c.clock_rate) for c in formats],
            [(0, "PCMU", 8000), (8, "PCMA", 8000), (9, "G722", 8000), (18, "G729", 8000),
             (13, "CN", 8000)],
        )  # fmt: skip

    def test_telephone_event(self) -> None:
        """telephone-event formats carry their clock rate and the fmtp event list."""
        (event,) = sdp.telephone_events(parse_sdp(BARESIP).media[0])
        self.assertEqual((event.payload_type, event.clock_rate, event.fmtp), (101, 8000, "0-15"))
        opus = sdp.payload_formats(parse_sdp(BARESIP).media[0])[0]
        self.assertEqual((opus.channels, opus.fmtp), (2, "stereo=1;sprop-stereo=1"))

    def test_ptime(self) -> None:
        """a=ptime is read in milliseconds; absent or unreadable gives None."""
        self.assertEqual(sdp.ptime_ms(parse_sdp(IPV6).media[0]), 30.0)
        self.assertIsNone(sdp.ptime_ms(parse_sdp(SIPP).media[0]))
        bad = SIPP + b"a=ptime:twenty\r\n"
        self.assertIsNone(sdp.ptime_ms(parse_sdp(bad).media[0]))

    def test_ptime_ascii_only(self) -> None:
        """a=ptime that float() would read (nan, inf, 1e3, 2_0, Unicode digits) is unreadable."""
        for value in ("nan", "inf", "1e3", "2_0", "-20", "\u0662\u0660", "0"):
            body = SIPP + f"a=ptime:{value}\r\n".encode()
            self.assertIsNone(sdp.ptime_ms(parse_sdp(body).media[0]), value)
        self.assertEqual(sdp.ptime_ms(parse_sdp(SIPP + b"a=ptime:22.5\r\n").media[0]), 22.5)

    def test_codecs_of_bytes(self) -> None:
        """codecs_of names the codecs of the relayed (first enabled audio) stream."""
        self.assertEqual(sdp.codecs_of(BARESIP)[:2], ["opus", "G722"])
        self.assertEqual(sdp.codecs_of(MEDIA_LEVEL_C), ["PCMU", "telephone-event"])
        self.assertRaises(SdpError, sdp.codecs_of, b"junk")

    def test_relayed_stream(self) -> None:
        """The relayed stream is the first enabled RTP audio stream, else any RTP stream."""
        self.assertEqual(sdp.relayed_stream(parse_sdp(LINPHONE)), 0)
        video_first = LINPHONE.replace(b"m=audio 7078", b"m=audio 0")
        self.assertEqual(sdp.relayed_stream(parse_sdp(video_first)), 1)
        off = video_first.replace(b"m=video 9078", b"m=video 0")
        self.assertIsNone(sdp.relayed_stream(parse_sdp(off)))


class DirectionTests(SynchronousTestCase):
    """Direction attributes and hold detection (RFC 3264 §8.4)."""

    def direction(self, body: bytes, index: int = 0) -> str:
        """The direction of stream ``index`` of ``body``."""
        parsed = parse_sdp(body)
        return sdp.direction(parsed.media[index], parsed)

    def test_default_sendrecv(self) -> None:
        """Without a direction attribute a stream is sendrecv."""
        self.assertEqual(self.direction(SIPP), "sendrecv")
        self.assertFalse(sdp.is_hold(parse_sdp(SIPP).media[0], parse_sdp(SIPP)))

    def test_media_attributes(self) -> None:
        """Each direction attribute at media level is reported; sendonly/inactive are hold."""
        for attribute, held in [("sendonly", True), ("recvonly", False), ("inactive", True),
                                ("sendrecv", False)]:  # fmt: skip
            body = SIPP + f"a={attribute}\r\n".encode()
            self.assertEqual(self.direction(body), attribute)
            parsed = parse_sdp(body)
            self.assertEqual(sdp.is_hold(parsed.media[0], parsed), held, attribute)

    def test_session_level_applies_unless_overridden(self) -> None:
        """A session-level direction applies to streams without their own (RFC 8866 §6.7)."""
        body = SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
        self.assertEqual(self.direction(body), "sendonly")
        self.assertEqual(self.direction(body + b"a=recvonly\r\n"), "recvonly")
        self.assertEqual(sdp.direction(parse_sdp(body).media[0]), "sendrecv")

    def test_legacy_hold(self) -> None:
        """c=0.0.0.0 (RFC 2543 hold) means the sender will not receive."""
        self.assertEqual(self.direction(HOLD_LEGACY), "sendonly")
        self.assertEqual(self.direction(HOLD_LEGACY + b"a=recvonly\r\n"), "inactive")
        parsed = parse_sdp(HOLD_LEGACY)
        self.assertTrue(parsed.connections[0].unspecified)
        self.assertTrue(sdp.is_hold(parsed.media[0], parsed))
        ipv6_hold = IPV6.replace(b"c=IN IP6 2001:db8::20", b"c=IN IP6 ::")
        self.assertEqual(self.direction(ipv6_hold), "sendonly")

    def test_disabled_stream_inactive(self) -> None:
        """A stream with port 0 is inactive."""
        self.assertEqual(self.direction(MEDIA_LEVEL_C, 1), "inactive")


class RewriteTests(SynchronousTestCase):
    """rewrite() points a description at the relay and keeps everything else."""

    def test_sipp_offer(self) -> None:
        """Session c= and the m= port change; nothing else does."""
        out = rewrite(parse_sdp(SIPP), "203.0.113.5", {0: 10000}).to_bytes()
        expected = SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 203.0.113.5")
        expected = expected.replace(b"m=audio 6000", b"m=audio 10000")
        self.assertEqual(out, expected)

    def test_keeps_codecs_ptime_events_direction(self) -> None:
        """Only address and port lines differ; codecs, ptime, events, direction stay."""
        original = parse_sdp(BARESIP)
        out = rewrite(original, "203.0.113.5", {0: 12000})
        before = [line for line in original.media[0].lines[1:]]
        self.assertEqual(list(out.media[0].lines[1:]), before)
        self.assertEqual(sdp.codecs(out.media[0]), sdp.codecs(original.media[0]))
        self.assertEqual(out.media[0].port, 12000)
        self.assertEqual(out.connections[0].address, "203.0.113.5")
        self.assertEqual(out.lines[1], original.lines[1])  # o= untouched

    def test_rtcp_attribute_port_only(self) -> None:
        """a=rtcp with a port only gets the new RTCP port (RTP + 1 unless given)."""
        original = parse_sdp(LINPHONE)
        out = rewrite(original, "203.0.113.5", {0: 12000})
        self.assertEqual(out.media[0].attribute_values("rtcp"), ["12001"])
        out = rewrite(original, "203.0.113.5", {0: 12000}, {0: 13001})
        self.assertEqual(out.media[0].attribute_values("rtcp"), ["13001"])

    def test_rtcp_attribute_with_address(self) -> None:
        """a=rtcp with an address gets the new port and address (RFC 3605)."""
        out = rewrite(parse_sdp(MEDIA_LEVEL_C), "2001:db8::5", {0: 12000})
        self.assertEqual(out.media[0].attribute_values("rtcp"), ["12001 IN IP6 2001:db8::5"])
        self.assertEqual(out.media[0].connections[0].value(), "IN IP6 2001:db8::5")

    def test_ipv6_to_ipv4(self) -> None:
        """An IPv6 offer rewritten for an IPv4 relay says IN IP4."""
        out = rewrite(parse_sdp(IPV6), "203.0.113.5", {0: 12000})
        self.assertEqual(out.connections[0].value(), "IN IP4 203.0.113.5")
        self.assertEqual(out.media[0].attribute_values("rtcp"), ["12001 IN IP4 203.0.113.5"])
        self.assertIn(b"o=bob 2890844527 2890844528 IN IP6 2001:db8::20\r\n", out.to_bytes())
        reparsed = parse_sdp(out.to_bytes())
        self.assertEqual(reparsed, out)

    def test_unlisted_stream_disabled(self) -> None:
        """A stream the relay does not carry gets port 0; a disabled one stays disabled."""
        out = rewrite(parse_sdp(LINPHONE), "203.0.113.5", {0: 12000})
        self.assertEqual([m.port for m in out.media], [12000, 0])
        self.assertIn(b"m=video 0 RTP/AVP 96\r\n", out.to_bytes())
        out = rewrite(parse_sdp(MEDIA_LEVEL_C), "203.0.113.5", {0: 12000, 1: 12002})
        self.assertEqual([m.port for m in out.media], [12000, 0])

    def test_hold_address_kept(self) -> None:
        """c=0.0.0.0 is not replaced, so the far phone still sees the hold."""
        out = rewrite(parse_sdp(HOLD_LEGACY), "203.0.113.5", {0: 12000})
        self.assertEqual(out.connections[0].address, "0.0.0.0")
        self.assertEqual(out.media[0].port, 12000)

    def test_port_count_dropped(self) -> None:
        """A new port drops the /<number of ports> of the m= line."""
        body = SIPP.replace(b"m=audio 6000 ", b"m=audio 6000/2 ")
        self.assertEqual(parse_sdp(body).media[0].port_count, 2)
        out = rewrite(parse_sdp(body), "203.0.113.5", {0: 12000})
        self.assertIn(b"m=audio 12000 RTP/AVP 0\r\n", out.to_bytes())

    def test_line_endings_kept(self) -> None:
        """Rewritten lines keep the line ending they had."""
        body = SIPP.replace(b"\r\n", b"\n")
        out = rewrite(parse_sdp(body), "203.0.113.5", {0: 12000}).to_bytes()
        self.assertNotIn(b"\r", out)

    def test_bad_arguments(self) -> None:
        """A relay address that is no IP literal, or a bad port, is a ValueError."""
        parsed = parse_sdp(SIPP)
        self.assertRaises(ValueError, rewrite, parsed, "relay.example", {0: 12000})
        self.assertRaises(ValueError, rewrite, parsed, "203.0.113.5", {0: 70000})

    def test_output_parses_to_itself(self) -> None:
        """
        A rewritten description (built without the parser's checks) equals what
        parsing its bytes gives, field for field: what lets L{sdp.serialised}
        keep it as that parse. Every realistic body, every stream relayed or
        disabled, with and without a port count and an a=rtcp address.
        """
        bodies = dict(REALISTIC)
        bodies["port count"] = SIPP.replace(b"m=audio 6000 ", b"m=audio 6000/2 ")
        bodies["rtcp address"] = SIPP + b"a=rtcp:6001 IN IP4 192.0.2.9\r\n"
        bodies["rtcp on hold"] = SIPP + b"a=rtcp:6001 IN IP4 0.0.0.0\r\n"
        for name, body in bodies.items():
            parsed = parse_sdp(body)
            for ports in ({}, {0: 12000}, {i: 12000 + 2 * i for i in range(len(parsed.media))}):
                for address in ("203.0.113.5", "2001:db8::5"):
                    with self.subTest(name, ports=ports, address=address):
                        out = rewrite(parsed, address, ports)
                        self.assertEqual(sdp._parse_sdp(out.to_bytes()), out)


class ParseCacheTests(SynchronousTestCase):
    """parse_sdp keeps the descriptions it parsed lately, by their bytes."""

    def setUp(self) -> None:
        sdp._parsed.clear()
        self.addCleanup(sdp._parsed.clear)

    def test_same_bytes_same_value(self) -> None:
        """Parsing the same bytes again gives the value already built."""
        self.assertIs(parse_sdp(SIPP), parse_sdp(bytes(SIPP)))
        self.assertEqual(parse_sdp(bytearray(SIPP)), parse_sdp(SIPP))  # type: ignore[arg-type]

    def test_bounded_oldest_out(self) -> None:
        """At most PARSED_KEPT are kept; the oldest goes first."""
        bodies = [SIPP.replace(b"53655765", str(n).encode()) for n in range(sdp.PARSED_KEPT + 1)]
        first = parse_sdp(bodies[0])
        for body in bodies[1:]:
            parse_sdp(body)
        self.assertEqual(len(sdp._parsed), sdp.PARSED_KEPT)
        self.assertIsNot(parse_sdp(bodies[0]), first)
        self.assertEqual(parse_sdp(bodies[0]), first)

    def test_large_not_kept(self) -> None:
        """A description over PARSED_MAX_BYTES is parsed each time, not held."""
        body = SIPP + b"a=x-pad:" + b"p" * sdp.PARSED_MAX_BYTES + b"\r\n"
        self.assertEqual(parse_sdp(body), parse_sdp(body))
        self.assertIsNot(parse_sdp(body), parse_sdp(body))
        self.assertEqual(sdp._parsed, {})

    def test_failures_not_kept(self) -> None:
        """A body that does not parse raises every time and is not kept."""
        for _ in range(2):
            self.assertRaises(SdpError, parse_sdp, b"v=1\r\n")
        self.assertEqual(sdp._parsed, {})

    def test_serialised_is_kept_as_its_parse(self) -> None:
        """serialised() gives the bytes, and parsing them gives the rewritten value."""
        out = rewrite(parse_sdp(BARESIP), "203.0.113.5", {0: 12000})
        data = sdp.serialised(out)
        self.assertEqual(data, out.to_bytes())
        self.assertIs(parse_sdp(data), out)


MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("blank lines only", b"\r\n\r\n"),
    ("garbage bytes", b"\x00\x01\xffgarbage\xfe\r\n"),
    ("missing v=", SIPP.replace(b"v=0\r\n", b"")),
    ("wrong version", SIPP.replace(b"v=0", b"v=1")),
    ("missing o=", replace_line(SIPP, "o=user1 53655765 2353687637 IN IP4 127.0.0.1", "")),
    ("missing s=", replace_line(SIPP, "s=-", "")),
    ("two o= lines", SIPP.replace(b"s=-\r\n", b"o=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\n")),
    ("o= non-numeric version", SIPP.replace(b"2353687637", b"abc")),
    ("m= too short", SIPP.replace(b"m=audio 6000 RTP/AVP 0", b"m=audio 6000 RTP/AVP")),
    ("m= non-numeric port", SIPP.replace(b"m=audio 6000", b"m=audio six")),
    ("m= port out of range", SIPP.replace(b"m=audio 6000", b"m=audio 65536")),
    ("m= negative port", SIPP.replace(b"m=audio 6000", b"m=audio -1")),
    ("m= payload type > 127", SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 200")),
    ("m= payload type not numeric", SIPP.replace(b"RTP/AVP 0", b"RTP/AVP pcmu")),
    ("no c= for a live stream", replace_line(SIPP, "c=IN IP4 127.0.0.1", "")),
    ("c= bad IPv4", SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 999.1.1.1")),
    ("c= IPv6 under IP4", SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 2001:db8::1")),
    ("c= unknown network", SIPP.replace(b"c=IN IP4", b"c=ATM NSAP")),
    ("c= missing address", SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4")),
    ("line without =", SIPP + b"hello world\r\n"),
    ("upper-case type", SIPP + b"A=sendonly\r\n"),
    ("blank line inside", SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\n\r\n")),
    ("control character", SIPP.replace(b"s=-", b"s=\x07")),
    ("bare CR", SIPP.replace(b"t=0 0\r\n", b"t=0 0\rm")),
    ("non-ASCII m= line", SIPP.replace(b"RTP/AVP 0", b"RTP/AVP \xc3\xa9")),
    ("t= not numeric", SIPP.replace(b"t=0 0", b"t=now later")),
    ("o= inside media", SIPP + b"o=x 1 1 IN IP4 1.2.3.4\r\n"),
    ("bad rtpmap", SIPP.replace(b"PCMU/8000", b"PCMU")),
    ("bad rtcp port", SIPP + b"a=rtcp:99999\r\n"),
    ("bad rtcp address", SIPP + b"a=rtcp:6001 IN IP4 nope..\r\n"),
]


class MalformedTests(SynchronousTestCase):
    """Malformed descriptions raise SdpError (the B2BUA answers 488)."""

    def test_table(self) -> None:
        """Every malformed input in the table raises SdpError with a reason."""
        for name, body in MALFORMED:
            with self.subTest(name):
                error = self.assertRaises(SdpError, parse_sdp, body)
                self.assertTrue(error.reason, name)

    def test_is_warden_error(self) -> None:
        """SdpError is a WardenError."""
        self.assertTrue(issubclass(SdpError, WardenError))

    def test_lenient_where_safe(self) -> None:
        """Disabled streams need no c=, and names are accepted as addresses."""
        no_c = replace_line(SIPP, "c=IN IP4 127.0.0.1", "").replace(b"audio 6000", b"audio 0")
        self.assertEqual(parse_sdp(no_c).media[0].port, 0)
        named = SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 media.example.com")
        self.assertEqual(parse_sdp(named).connections[0].address, "media.example.com")
        no_media = crlf("""
            v=0
            o=- 1 1 IN IP4 192.0.2.1
            s=-
            t=0 0
        """)
        self.assertEqual(parse_sdp(no_media).media, ())
