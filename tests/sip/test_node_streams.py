"""
Large requests between cluster nodes go over TCP (RFC 3261 §18.1.1,
L{warden.sip.node_streams}): the transport hub's choice, the connection it
opens, and the client transaction that no longer retransmits such a request.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.transaction_fakes import RecordingTU, RecordingUser
from warden.sip.flow import Flow
from warden.sip.message import Request
from warden.sip.node_streams import MAX_WAITING, NodeStreams, udp_limit
from warden.sip.parser import StreamFramer, parse_datagram
from warden.sip.timers import TimerSettings
from warden.sip.transaction import TransactionLayer
from warden.sip.transport import SipDatagramProtocol, TransportError, TransportHub

NODE = ("127.0.0.2", 5060)
PHONE = ("127.0.0.1", 40000)
OWN_HOST = "127.0.0.3"


def request(method: str = "INVITE", body_bytes: int = 0, branch: str = "z9hG4bKn1") -> Request:
    """A request from this node (127.0.0.3) to node A with a body of ``body_bytes``."""
    body = b"v=0\r\n" + b"a=x-padding:" + b"p" * max(0, body_bytes - 19) + b"\r\n"
    body = body if body_bytes else b""
    text = (
        f"{method} sip:1001@127.0.0.1:40000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {OWN_HOST}:5070;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@pbx>;tag=f1\r\nTo: <sip:1001@pbx>\r\n"
        f"Call-ID: big-1\r\nCSeq: 1 {method}\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    parsed = parse_datagram(text.encode() + body)
    assert isinstance(parsed, Request)
    return parsed


class NodeStreamTests(SynchronousTestCase):
    """The hub sends large requests to other nodes over TCP, small ones over UDP."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.hub = TransportHub(self.reactor, 65535, 600.0)
        self.udp = SipDatagramProtocol(self.hub)
        self.datagrams = FakeDatagramTransport()
        self.udp.makeConnection(self.datagrams)
        self.streams = NodeStreams(
            self.reactor, self.hub, lambda host, port: (host, port) == NODE, 1300, OWN_HOST
        )
        self.hub.choose_flow = self.streams.choose

    def connect(self) -> StringTransport:
        """Complete the connection the hub is opening to the node; return its wire."""
        host, port, factory, _timeout, bind = self.reactor.tcpClients[-1]
        self.assertEqual((host, port, bind), (*NODE, (OWN_HOST, 0)))
        protocol = factory.buildProtocol(IPv4Address("TCP", *NODE))
        wire = StringTransport(peerAddress=IPv4Address("TCP", *NODE))
        protocol.makeConnection(wire)
        return wire

    def test_limit(self) -> None:
        """1300 bytes when the path MTU is unknown, else 200 bytes below it."""
        self.assertEqual((udp_limit(0), udp_limit(1500), udp_limit(9000)), (1300, 1300, 8800))

    def test_small_request_stays_on_udp(self) -> None:
        """A request of at most the limit goes to the node as a datagram, unchanged."""
        small = request(body_bytes=200)
        self.hub.send(small, Flow("udp", *NODE))
        [(data, address)] = self.datagrams.written
        self.assertEqual(address, NODE)
        self.assertIn(b"Via: SIP/2.0/UDP", data)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_large_request_goes_over_tcp(self) -> None:
        """A 5 KB INVITE to a node: its top Via says TCP, it waits for the
        connection (opened from this node's address) and is written on it; the
        next one reuses that connection."""
        big = request(body_bytes=5000)
        self.hub.send(big, Flow("udp", *NODE))
        self.assertEqual(self.datagrams.written, [])
        self.assertEqual(big.top_via.transport, "TCP")
        wire = self.connect()
        [sent] = StreamFramer().feed(wire.value())
        assert isinstance(sent, Request)
        self.assertEqual(sent.top_via.transport, "TCP")
        self.assertEqual(len(sent.body), len(big.body))
        wire.clear()
        self.hub.send(request(body_bytes=3000, branch="z9hG4bKn2"), Flow("udp", *NODE))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(len(StreamFramer().feed(wire.value())), 1)

    def test_cancel_follows_its_invite(self) -> None:
        """A small request whose top Via already says TCP (the CANCEL of a moved
        INVITE) goes the same way; responses are never moved."""
        big = request(body_bytes=5000)
        self.hub.send(big, Flow("udp", *NODE))
        wire = self.connect()
        wire.clear()
        cancel = request("CANCEL")
        cancel.set("Via", big.get_all("Via")[0])
        self.hub.send(cancel, Flow("udp", *NODE))
        [sent] = StreamFramer().feed(wire.value())
        self.assertEqual((sent.method, sent.top_via.transport), ("CANCEL", "TCP"))  # type: ignore[union-attr]
        self.assertEqual(self.datagrams.written, [])

    def test_phones_keep_udp(self) -> None:
        """Only other nodes get TCP: a large request to a phone stays a datagram."""
        self.hub.send(request(body_bytes=5000), Flow("udp", *PHONE))
        self.assertEqual(len(self.datagrams.written), 1)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_connection_fails(self) -> None:
        """A node that refuses TCP loses what waited (like lost datagrams); the
        next large request tries a new connection; the wait is bounded."""
        self.hub.send(request(body_bytes=5000), Flow("udp", *NODE))
        connector = self.reactor.connectors[-1]
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.hub.send(request(body_bytes=5000), Flow("udp", *NODE))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        for _ in range(MAX_WAITING - 1):
            self.hub.send(request(body_bytes=5000), Flow("udp", *NODE))
        self.assertRaises(
            TransportError, self.hub.send, request(body_bytes=5000), Flow("udp", *NODE)
        )

    def test_no_retransmissions_over_tcp(self) -> None:
        """An INVITE the transport moved to TCP is not retransmitted (Timer A is
        for unreliable transports only, RFC 3261 §17.1.1.2); Timer B still runs."""
        settings = TimerSettings()
        layer = TransactionLayer(self.reactor, settings, self.hub.send, RecordingTU())
        user = RecordingUser()
        layer.send_request(request(body_bytes=5000), Flow("udp", *NODE), user)
        wire = self.connect()
        self.reactor.advance(settings.timer_b - 0.001)
        self.assertEqual(len(StreamFramer().feed(wire.value())), 1)
        self.assertEqual(self.datagrams.written, [])
        self.reactor.advance(0.001)
        self.assertEqual(len(user.timeouts), 1)
