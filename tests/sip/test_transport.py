"""Tests for warden.sip.transport: UDP/TCP edges, rport/received, bad input."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.error import InvalidAddressError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from warden.sip import metrics, transport
from warden.sip.flow import Flow
from warden.sip.headers import parse_via
from warden.sip.message import Request
from warden.sip.parser import parse_datagram
from warden.sip.transport import (
    BATCHED_BYTES,
    SipDatagramProtocol,
    TransportError,
    TransportHub,
)
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


class _CheckingPort:
    """
    What the protocol uses of Twisted's UDP port: its socket, and a ``write``
    that checks the host as the port does before sending on the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.written: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        if addr[0] != "127.0.0.1":
            raise InvalidAddressError(addr, "not an IPv4 literal")
        self.written.append((data, addr))
        self.socket.sendto(data, addr)


class UdpSendTests(SynchronousTestCase):
    """Datagrams leave on the listening socket itself once the port checked their host."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = TransportHub(self.clock, 65535, 600.0)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(("127.0.0.1", 0))
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.peer.close)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.port = _CheckingPort(self.sock)
        self.proto = SipDatagramProtocol(self.hub, read_tables=lambda: [])
        self.proto.makeConnection(self.port)  # type: ignore[arg-type]

    def test_first_write_checked_then_direct(self) -> None:
        """The first datagram to a host goes through the port's checks; later ones
        go straight to the socket, and all of them arrive, in order."""
        address = self.peer.getsockname()
        for n in range(3):
            self.proto.write_to(b"datagram %d" % n, address)
        self.assertEqual([data for data, _ in self.port.written], [b"datagram 0"])
        self.clock.advance(0)  # the end of the reactor's turn
        received = [self.peer.recvfrom(100)[0] for _ in range(3)]
        self.assertEqual(received, [b"datagram 0", b"datagram 1", b"datagram 2"])

    def _waiting(self) -> bool:
        """Whether anything reached the peer yet."""
        self.peer.setblocking(False)
        try:
            self.peer.recvfrom(100)
        except BlockingIOError:
            return False
        finally:
            self.peer.settimeout(5)
        return True

    def test_sent_at_end_of_turn(self) -> None:
        """Checked datagrams wait for the end of the reactor's turn, then all
        leave in the order written, from one scheduled call."""
        address = self.peer.getsockname()
        self.proto.write_to(b"first", address)  # checked by the port, sent at once
        self.assertEqual(self.peer.recvfrom(100)[0], b"first")
        for n in range(3):
            self.proto.write_to(b"batched %d" % n, address)
        self.assertFalse(self._waiting())
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(
            [self.peer.recvfrom(100)[0] for _ in range(3)],
            [b"batched 0", b"batched 1", b"batched 2"],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_large_datagram_keeps_order(self) -> None:
        """A datagram above BATCHED_BYTES leaves at once, after those waiting."""
        address = self.peer.getsockname()
        self.proto.write_to(b"first", address)
        self.peer.recvfrom(100)
        self.proto.write_to(b"small", address)
        large = b"L" * (BATCHED_BYTES + 1)
        self.proto.write_to(large, address)
        self.assertEqual([self.peer.recvfrom(2000)[0] for _ in range(2)], [b"small", large])
        self.clock.advance(0)  # nothing is sent twice
        self.assertFalse(self._waiting())

    def test_failed_batched_send_logged(self) -> None:
        """A datagram that fails at the end of the turn is logged, and the rest still go."""
        address = self.peer.getsockname()
        self.proto.write_to(b"first", address)
        self.peer.recvfrom(100)
        real = self.proto._socket
        assert real is not None
        calls: list[bytes] = []

        class FailingOnce:
            def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
                calls.append(data)
                if len(calls) == 1:
                    raise BlockingIOError(11, "Resource temporarily unavailable")
                return real.sendto(data, addr)

        self.proto._socket = FailingOnce()  # type: ignore[assignment]
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.proto.write_to(b"lost", address)
        self.proto.write_to(b"kept", address)
        self.clock.advance(0)
        self.assertEqual(calls, [b"lost", b"kept"])
        self.assertEqual(self.peer.recvfrom(100)[0], b"kept")
        failed = [e for e in events if "failed" in str(e.get("log_format", ""))]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["host"], address[0])

    def test_stop_sends_what_waits(self) -> None:
        """Stopping the port first sends the datagrams waiting for the turn's end."""
        address = self.peer.getsockname()
        self.proto.write_to(b"first", address)
        self.peer.recvfrom(100)
        self.proto.write_to(b"last words", address)
        self.proto.doStop()
        self.assertEqual(self.peer.recvfrom(100)[0], b"last words")
        self.clock.advance(0)  # the scheduled flush finds nothing to send
        self.assertFalse(self._waiting())

    def test_bad_host_stays_checked(self) -> None:
        """A host the port refused is checked again on every write."""
        for _ in range(2):
            self.assertRaises(InvalidAddressError, self.proto.write_to, b"x", ("pbx.test", 5060))
        self.assertEqual(self.proto._checked_hosts, set())

    def test_too_large_is_a_transport_error(self) -> None:
        """A datagram the kernel refuses as too large fails the hub's send with
        TransportError, on the checked path too."""
        address = self.peer.getsockname()
        self.proto.write_to(b"small", address)
        message = parse_datagram(options())
        message.set("X-Pad", "a" * 70000)
        flow = Flow("udp", address[0], address[1])
        self.assertRaises(TransportError, self.hub.send, message, flow)

    def test_stopped_port_forgets_socket(self) -> None:
        """Once the port stops, the protocol lets its socket go: the hub has no
        UDP socket to send from, and a port started again is checked again."""
        address = self.peer.getsockname()
        self.proto.write_to(b"one", address)
        self.proto.doStop()
        flow = Flow("udp", address[0], address[1])
        self.assertRaises(TransportError, self.hub.send, parse_datagram(options()), flow)
        self.proto.makeConnection(self.port)  # type: ignore[arg-type]
        self.proto.write_to(b"two", address)
        self.assertEqual([data for data, _ in self.port.written], [b"one", b"two"])


class SharedPortTests(SynchronousTestCase):
    """
    A worker's shared UDP port (ADR 0032): what goes to a peer that sent to
    it goes from it, so a phone behind a port-restricted NAT gets Warden's
    packets from the port it sends to; the rest goes from the worker's own.
    """

    def setUp(self) -> None:
        self.stack = FakeSipStack()
        self.shared = SipDatagramProtocol(self.stack.hub, shared=True)
        self.shared_transport = FakeDatagramTransport()
        self.shared.makeConnection(self.shared_transport)

    def on_shared(self, data: bytes, source: tuple[str, int]) -> list[tuple[bytes, object]]:
        """Deliver ``data`` on the shared port; what went out of it in answer."""
        before = len(self.shared_transport.written)
        self.shared.datagramReceived(data, source)
        return self.shared_transport.written[before:]

    def send_to(self, peer: tuple[str, int]) -> str:
        """Send a request to ``peer``; which port it left from ("own" or "shared")."""
        own, shared = len(self.stack.udp_transport.written), len(self.shared_transport.written)
        request = parse_datagram(options(77))
        self.stack.hub.send(request, Flow("udp", *peer))
        if len(self.shared_transport.written) > shared:
            self.assertEqual(self.shared_transport.written[-1][1], peer)
            return "shared"
        self.assertEqual(len(self.stack.udp_transport.written), own + 1)
        return "own"

    def test_answer_leaves_from_the_shared_port(self) -> None:
        """A request on the shared port is answered from it; the own port sends nothing."""
        before = len(self.stack.udp_transport.written)
        ((packet, address),) = self.on_shared(options(), ("203.0.113.7", 40123))
        self.assertEqual(address, ("203.0.113.7", 40123))
        self.assertEqual(parse_datagram(packet).status, 200)
        self.assertEqual(len(self.stack.udp_transport.written), before)

    def test_requests_follow_what_was_heard(self) -> None:
        """
        Requests to a peer heard on the shared port behind a NAT (its Via names
        another address) leave from it; to any other peer, or another port of
        that host, from the own port.
        """
        self.on_shared(options(), ("203.0.113.7", 40123))
        self.assertEqual(self.send_to(("203.0.113.7", 40123)), "shared")
        self.assertEqual(self.send_to(("203.0.113.7", 40124)), "own")
        self.assertEqual(self.send_to(("198.51.100.1", 5060)), "own")
        self.stack.send_udp(options(2), ("198.51.100.1", 5060))  # on the own port
        self.assertEqual(self.send_to(("198.51.100.1", 5060)), "own")

    def test_sender_at_its_own_address_gets_the_own_port(self) -> None:
        """
        A sender at the address its Via names is sent to from the worker's own
        port (in Warden's Contact), so its in-dialog requests reach this worker
        even when the kernel would pick another one for it on the shared port.
        """
        at_itself = options().replace(b"10.0.0.5:5062", b"192.0.2.8:5062")
        self.on_shared(at_itself, ("192.0.2.8", 5062))
        self.assertEqual(list(self.shared.peers), [])
        self.assertEqual(self.send_to(("192.0.2.8", 5062)), "own")
        no_port = options(2).replace(b"10.0.0.5:5062", b"192.0.2.9")
        self.on_shared(no_port, ("192.0.2.9", 5060))
        self.assertEqual(list(self.shared.peers), [])

    def test_keep_alive_refreshes_a_known_peer_only(self) -> None:
        """A CRLF keep-alive keeps a NATed peer known; it does not make one known."""
        self.on_shared(b"\r\n\r\n", ("198.51.100.9", 5060))
        self.assertEqual(list(self.shared.peers), [])
        a, b = ("203.0.113.7", 40123), ("203.0.113.8", 40123)
        self.on_shared(options(1), a)
        self.on_shared(options(2), b)
        self.on_shared(b"\r\n\r\n", a)
        self.assertEqual(list(self.shared.peers), [b, a])

    def test_peers_are_bounded(self) -> None:
        """Past MAX_SHARED_PEERS the least recently heard peer is forgotten (and
        sent to from the own port again)."""
        self.patch(transport, "MAX_SHARED_PEERS", 2)
        a, b, c = ("192.0.2.1", 5060), ("192.0.2.2", 5060), ("192.0.2.3", 5060)
        for n, peer in enumerate((a, b, a, c)):
            self.on_shared(options(n), peer)
        self.assertEqual(list(self.shared.peers), [a, c])
        self.assertEqual([self.send_to(p) for p in (a, b, c)], ["shared", "own", "shared"])

    def test_response_for_another_worker_passed_on(self) -> None:
        """A response whose top Via names another worker's own port goes on to
        it, byte for byte, on the local address; one naming any other port is
        this worker's to handle (here: no transaction, so it goes nowhere)."""
        shared = SipDatagramProtocol(
            self.stack.hub, shared=True, siblings=("127.0.0.1", {5071, 5072})
        )
        written = FakeDatagramTransport()
        shared.makeConnection(written)
        before = metrics.RESPONSES_PASSED_ON._value.get()
        response = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.99:%d;branch=z9hG4bK-x;rport\r\n"
            b"To: <sip:1001@pbx.test>;tag=2\r\nFrom: <sip:w@pbx.test>;tag=1\r\n"
            b"Call-ID: passed\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        shared.datagramReceived(response % 5072, ("203.0.113.7", 40123))
        self.assertEqual(written.written, [(response % 5072, ("127.0.0.1", 5072))])
        for port in (5070, 5060, 40000):
            shared.datagramReceived(response % port, ("203.0.113.7", 40123))
        self.assertEqual(len(written.written), 1)
        self.assertEqual(metrics.RESPONSES_PASSED_ON._value.get(), before + 1)

    def test_single_process_unchanged(self) -> None:
        """Without a shared port (one process) everything leaves from the one socket."""
        stack = FakeSipStack()
        stack.send_udp(options(), ("203.0.113.7", 40123))
        stack.hub.send(parse_datagram(options(78)), Flow("udp", "203.0.113.7", 40123))
        self.assertEqual(stack.sent_udp()[-1][1], ("203.0.113.7", 40123))


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


class StampViaTests(SynchronousTestCase):
    """
    stamp_via adds received/rport (RFC 3261 §18.2.1, RFC 3581 §4) and keeps the
    stamped top Via parsed: it equals what parsing the new header text gives.
    """

    VIAS = (
        "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKa;rport",
        "SIP/2.0/UDP phone.example;branch=z9hG4bKb",
        "SIP/2.0/UDP 192.0.2.99:5062;received=192.0.2.1;rport=9;branch=z9hG4bKc",
        "SIP/2.0/TCP [2001:db8::7]:5070;branch=z9hG4bKd;rport",
        "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKe, SIP/2.0/UDP 198.51.100.2;branch=z9hG4bKf",
    )

    def request(self, via: str) -> Request:
        data = (
            f"OPTIONS sip:pbx.test SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@pbx.test>;tag=1\r\n"
            "To: <sip:pbx.test>\r\nCall-ID: s1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        request = parse_datagram(data)
        assert isinstance(request, Request)
        return request

    def test_stamped_via_as_parsed(self) -> None:
        for via in self.VIAS:
            for host in ("192.0.2.10", "203.0.113.4", "2001:db8::7"):
                with self.subTest(via=via, host=host):
                    request = self.request(via)
                    transport.stamp_via(request, "udp", host, 40000)
                    kept = request.vias
                    self.assertEqual(kept, [parse_via(v) for v in request.get_all("Via")])
                    reparsed = parse_datagram(request.to_bytes())
                    self.assertEqual(kept, reparsed.vias)

    def test_received_and_rport(self) -> None:
        request = self.request(self.VIAS[0])
        flow = transport.stamp_via(request, "udp", "203.0.113.4", 40000)
        self.assertEqual(flow, Flow("udp", "203.0.113.4", 40000))
        self.assertEqual(request.top_via.param("received"), "203.0.113.4")
        self.assertEqual(request.top_via.param("rport"), "40000")
        self.assertIn(
            "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKa;rport=40000;received=203.0.113.4",
            request.to_bytes().decode(),
        )
