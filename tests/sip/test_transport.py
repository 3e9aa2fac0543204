"""Tests for warden.sip.transport: UDP/TCP edges, rport/received, bad input."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from warden.sip import metrics
from warden.sip.parser import parse_datagram
from warden.testing.sipstack import FakeSipStack

OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-opt-%s;rport\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:pbx.test>\r\nFrom: <sip:1001@pbx.test>;tag=1\r\n"
    b"Call-ID: opt-%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def options(n: int = 1, rport: bool = True) -> bytes:
    """An OPTIONS request, unique per ``n``."""
    data = OPTIONS % (str(n).encode(), str(n).encode())
    return data if rport else data.replace(b";rport", b"")


class UdpTests(SynchronousTestCase):
    """The UDP edge."""

    def test_rport_and_received(self) -> None:
        """With rport, the response goes to the source port and Via says so (RFC 3581)."""
        stack = FakeSipStack()
        (response,) = stack.send_udp(options(), ("203.0.113.7", 40123))
        _packet, address = stack.sent_udp()[-1]
        self.assertEqual(address, ("203.0.113.7", 40123))
        via = response.top_via
        self.assertEqual((via.param("received"), via.param("rport")), ("203.0.113.7", "40123"))

    def test_received_without_rport(self) -> None:
        """Without rport, the response goes to the sent-by port at the source address."""
        stack = FakeSipStack()
        (response,) = stack.send_udp(options(rport=False), ("203.0.113.7", 40123))
        self.assertEqual(stack.sent_udp()[-1][1], ("203.0.113.7", 5062))
        self.assertEqual(response.top_via.param("received"), "203.0.113.7")
        self.assertIsNone(response.top_via.param("rport"))

    def test_retransmission_absorbed(self) -> None:
        """A retransmitted request is answered with the same response, not processed again."""
        stack = FakeSipStack()
        (first,) = stack.send_udp(options())
        (again,) = stack.send_udp(options())
        self.assertEqual(first.to_bytes(), again.to_bytes())

    def test_garbage_never_raises(self) -> None:
        """Random bytes, truncations and keep-alives never raise and get no answer."""
        stack = FakeSipStack()
        before = metrics.PARSE_ERRORS.labels("udp")._value.get()
        rng = os.urandom
        inputs = [b"\r\n\r\n", b"\x00" * 10, rng(200), options()[:40], b"SIP/2.0 200\r\n\r\n"]
        inputs += [options()[: i * 17] for i in range(1, 12)]
        for data in inputs:
            stack.send_udp(data)
        self.assertGreater(metrics.PARSE_ERRORS.labels("udp")._value.get(), before)
        self.assertEqual(len(stack.send_udp(options(99))), 1)

    def test_nothing_served_while_starting(self) -> None:
        """
        From the bind (privilegedStartService, before the store is ready) until the
        SIP service starts, datagrams are dropped: nothing is answered before the
        bindings are restored, and the sender's retransmission is served after.
        """
        stack = FakeSipStack()
        stack.hub.accepting = False
        self.assertEqual(stack.send_udp(options()), [])
        stack.hub.accepting = True  # as SipService.startService does
        self.assertEqual([r.status for r in stack.send_udp(options())], [200])

    def test_oversized_datagram(self) -> None:
        """A datagram over max_message_bytes is dropped unparsed (and counted)."""
        stack = FakeSipStack(max_message_bytes=1024)
        data = options().replace(
            b"Content-Length: 0", b"X-Pad: " + b"a" * 2000 + b"\r\nContent-Length: 0"
        )
        self.assertEqual(stack.send_udp(data), [])


class TcpTests(SynchronousTestCase):
    """The TCP edge."""

    def test_response_on_same_connection(self) -> None:
        """Responses go back on the connection the request came on (RFC 3261 §18.2.2)."""
        stack = FakeSipStack()
        peer = stack.connect_tcp()
        (response,) = peer.send(options().replace(b"UDP", b"TCP"))
        self.assertEqual(response.status, 200)

    def test_pipelined_and_split(self) -> None:
        """Two requests in one segment, and one split across segments, all answered."""
        stack = FakeSipStack()
        peer = stack.connect_tcp()
        self.assertEqual(len(peer.send(options(1) + options(2))), 2)
        data = options(3)
        self.assertEqual(peer.send(data[:50]), [])
        self.assertEqual(len(peer.send(data[50:])), 1)

    def test_keepalive_ping(self) -> None:
        """A CRLFCRLF ping is answered with a CRLF pong (RFC 5626 §4.4.1)."""
        stack = FakeSipStack()
        peer = stack.connect_tcp()
        peer.protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(peer.transport.value(), b"\r\n")

    def test_endless_header_cut_off(self) -> None:
        """Header lines without end are cut off at the size limit: connection closed."""
        stack = FakeSipStack(max_message_bytes=4096)
        peer = stack.connect_tcp()
        peer.send(b"REGISTER sip:pbx.test SIP/2.0\r\n")
        for _ in range(100):
            if peer.closed:
                break
            peer.send(b"X-Junk: " + b"a" * 100 + b"\r\n")
        self.assertTrue(peer.closed)
        self.assertLess(peer.protocol.framer.pending_bytes, 4096)

    def test_huge_body_refused(self) -> None:
        """A 10 MB Content-Length is answered 400 and the connection closed at once."""
        stack = FakeSipStack()
        peer = stack.connect_tcp()
        head = (
            options()
            .replace(b"UDP", b"TCP")
            .replace(b"Content-Length: 0", b"Content-Length: 10000000")
        )
        (response,) = peer.send(head + b"x" * 1000)
        self.assertEqual(response.status, 400)
        self.assertTrue(peer.closed)
        peer.send(b"y" * 100_000)
        self.assertEqual(peer.protocol.framer.pending_bytes, 0)

    def test_idle_connection_closed(self) -> None:
        """A connection without traffic for tcp_idle_timeout is closed; traffic resets it."""
        stack = FakeSipStack(tcp_idle_timeout=30)
        peer = stack.connect_tcp()
        stack.clock.advance(20)
        peer.send(options().replace(b"UDP", b"TCP"))
        stack.clock.advance(29)
        self.assertFalse(peer.closed)
        stack.clock.advance(1.5)
        self.assertTrue(peer.closed)

    def test_closed_connection_forgotten(self) -> None:
        """A lost connection leaves the hub and its idle timer is cancelled."""
        stack = FakeSipStack()
        peer = stack.connect_tcp()
        self.assertIn(peer.protocol, stack.hub.connections)
        peer.protocol.connectionLost()
        self.assertNotIn(peer.protocol, stack.hub.connections)
        self.assertEqual(stack.clock.getDelayedCalls(), [])

    def test_malformed_then_reply_400(self) -> None:
        """A malformed request on TCP is answered 400 and the stream closed."""
        stack = FakeSipStack()
        peer = stack.connect_tcp()
        bad = options().replace(b"Content-Length: 0", b"Content-Length: -5")
        (response,) = peer.send(bad)
        self.assertEqual(response.status, 400)
        self.assertTrue(peer.closed)
        self.assertEqual(parse_datagram(response.to_bytes()).call_id, "opt-1")
