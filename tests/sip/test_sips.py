"""
``sips:`` URIs (RFC 3261 §26.2.2, RFC 5630 §3.1.3, §3.1.5): a request for a
``sips:`` URI, or a REGISTER binding a ``sips:`` Contact, is refused unless it
came over TLS, and a call to a ``sips:`` URI rings only phones registered over TLS.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_transport import options
from warden.errors import SipError
from warden.model import Binding, Route
from warden.sip.b2bua import over_tls_if_sips
from warden.sip.message import Request
from warden.sip.parser import StreamFramer, parse_datagram
from warden.sip.tls import SipTlsProtocol
from warden.store.credentials import make_extension
from warden.testing.sipstack import FakeSipStack

REGISTER = (
    b"REGISTER sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-reg-1;rport\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:1001@pbx.test>\r\nFrom: <sip:1001@pbx.test>;tag=1\r\n"
    b"Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: <sips:1001@10.0.0.5:5062>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def sips_options(n: int = 1) -> bytes:
    """An OPTIONS for ``sips:pbx.test``, unique per ``n``."""
    return options(n).replace(b"OPTIONS sip:pbx.test", b"OPTIONS sips:pbx.test", 1)


class SipsOverTransportTests(SynchronousTestCase):
    """The transport a ``sips:`` request arrived on is checked."""

    def test_sips_request_over_udp_refused(self) -> None:
        """A request for a ``sips:`` URI over UDP is answered 416; over TLS, 200."""
        stack = FakeSipStack()
        (response,) = stack.send_udp(sips_options())
        self.assertEqual((response.status, response.reason), (416, "SIPS Requires TLS"))
        (over_tls,) = self.send_tls(stack, sips_options(2).replace(b"/UDP", b"/TLS"))
        self.assertEqual(over_tls.status, 200)

    def test_sips_contact_over_udp_refused(self) -> None:
        """A REGISTER binding a ``sips:`` Contact over UDP is answered 400, nothing bound."""
        stack = FakeSipStack()
        (response,) = stack.send_udp(REGISTER)
        self.assertEqual((response.status, response.reason), (400, "SIPS Contact Requires TLS"))
        (over_tls,) = self.send_tls(
            stack, REGISTER.replace(b"/UDP", b"/TLS").replace(b"reg-1", b"reg-2")
        )
        self.assertEqual(over_tls.status, 401)  # on to the registrar's challenge

    def send_tls(self, stack: FakeSipStack, data: bytes) -> list[object]:
        """Deliver ``data`` on a (handshaken) TLS connection; the messages sent back."""
        protocol = SipTlsProtocol(stack.hub, 10.0)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.5", 5062))
        protocol.makeConnection(transport)
        protocol.handshakeCompleted()
        protocol.dataReceived(data)
        return list(StreamFramer().feed(transport.value()))


def binding(number: str, transport: str) -> Binding:
    """A binding of ``number`` registered over ``transport``."""
    return Binding(
        aor=number, contact=f"sip:{number}@192.0.2.7:5060", key=f"{transport}-{number}",
        expires_at=100.0, received=f"{transport}:192.0.2.7:40000",
    )  # fmt: skip


def invite(uri: str) -> Request:
    """An INVITE for ``uri``."""
    request = parse_datagram(
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.9:5061;branch=z9hG4bK1\r\n"
        "Max-Forwards: 70\r\nTo: <sip:1002@pbx.test>\r\nFrom: <sip:1001@pbx.test>;tag=1\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(request, Request)
    return request


class SipsRoutingTests(SynchronousTestCase):
    """A call to a ``sips:`` URI goes only over TLS."""

    def setUp(self) -> None:
        """A callee with a UDP phone and a TLS phone."""
        self.route = Route(
            0, extension=make_extension("1002", "Bob", "pbx.test", "pw"),
            bindings=(binding("1002", "udp"), binding("1002", "tls")),
        )  # fmt: skip

    def test_sips_rings_only_tls_phones(self) -> None:
        """For ``sips:1002@pbx.test`` only the TLS phone is rung."""
        rung = over_tls_if_sips(invite("sips:1002@pbx.test"), self.route.bindings)
        self.assertEqual([b.received.split(":")[0] for b in rung], ["tls"])

    def test_sip_rings_every_phone(self) -> None:
        """For ``sip:1002@pbx.test`` every phone rings, whatever its transport."""
        rung = over_tls_if_sips(invite("sip:1002@pbx.test"), self.route.bindings)
        self.assertEqual(rung, self.route.bindings)

    def test_sips_without_tls_phone(self) -> None:
        """With no phone on TLS, a ``sips:`` call is answered 480."""
        udp_only = Route(0, extension=self.route.extension, bindings=self.route.bindings[:1])
        with self.assertRaises(SipError) as caught:
            over_tls_if_sips(invite("sips:1002@pbx.test"), udp_only.bindings)
        self.assertEqual(caught.exception.status, 480)
