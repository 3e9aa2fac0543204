"""
TCP against slow and many-connection floods (slowloris): a per-IP connection
cap (``sip.tcp_connections_per_ip``), a deadline for each message from its
first byte to its last (``sip.tcp_message_timeout``), and an idle timer that
only whole messages and keep-alives reset. Unit tests on a Clock and
StringTransport, and one on real sockets on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.sip.test_transport import options
from warden.sip import metrics
from warden.sip.transport import SipStreamFactory, TransportHub
from warden.testing.sipstack import FakeSipStack

EPSILON = 0.001


def tcp_options(n: int = 1) -> bytes:
    """An OPTIONS request sent over TCP."""
    return options(n).replace(b"UDP", b"TCP")


class PerIpCapTests(SynchronousTestCase):
    """At most tcp_connections_per_ip connections from one source IP."""

    def test_cap(self) -> None:
        """
        Past the cap a connection from that IP is refused and counted; other IPs
        still connect; closing one lets the IP connect again.
        """
        stack = FakeSipStack(tcp_connections_per_ip=3)
        peers = [stack.connect_tcp(("192.0.2.20", 40000 + n)) for n in range(3)]
        before = metrics.TCP_REFUSED._value.get()
        self.assertRaises(ConnectionRefusedError, stack.connect_tcp, ("192.0.2.20", 40003))
        self.assertEqual(metrics.TCP_REFUSED._value.get(), before + 1)
        stack.connect_tcp(("192.0.2.21", 40000))
        peers[0].protocol.connectionLost()
        again = stack.connect_tcp(("192.0.2.20", 40004))
        (response,) = again.send(tcp_options())
        self.assertEqual(response.status, 200)

    def test_default_allows_an_office(self) -> None:
        """By default 64 phones behind one NAT address connect; the 65th is refused."""
        stack = FakeSipStack()
        for n in range(64):
            stack.connect_tcp(("198.51.100.1", 30000 + n))
        self.assertRaises(ConnectionRefusedError, stack.connect_tcp, ("198.51.100.1", 31000))


class MessageDeadlineTests(SynchronousTestCase):
    """A message must be complete within tcp_message_timeout of its first byte."""

    def setUp(self) -> None:
        self.stack = FakeSipStack(tcp_idle_timeout=600, tcp_message_timeout=20)
        self.peer = self.stack.connect_tcp()

    def test_trickled_message_cut_off(self) -> None:
        """
        A message sent a byte a second is cut off exactly at the deadline, however
        often bytes arrive, and the cut is counted.
        """
        before = metrics.TCP_MESSAGE_TIMEOUTS._value.get()
        data = tcp_options()
        for n in range(20):
            self.assertFalse(self.peer.closed, n)
            self.peer.send(data[n : n + 1])
            self.stack.clock.advance(1 if n < 19 else 1 - EPSILON)
        self.assertFalse(self.peer.closed)
        self.stack.clock.advance(EPSILON)
        self.assertTrue(self.peer.closed)
        self.assertEqual(metrics.TCP_MESSAGE_TIMEOUTS._value.get(), before + 1)

    def test_missing_body_cut_off(self) -> None:
        """Headers announcing a body that never comes count as an unfinished message."""
        head = tcp_options().replace(b"Content-Length: 0", b"Content-Length: 100")
        self.assertEqual(self.peer.send(head), [])
        self.stack.clock.advance(20)
        self.assertTrue(self.peer.closed)

    def test_whole_messages_are_not_timed(self) -> None:
        """Whole messages, however far apart, never meet the deadline."""
        for n in range(3):
            (response,) = self.peer.send(tcp_options(n))
            self.assertEqual(response.status, 200)
            self.stack.clock.advance(30)
        self.assertFalse(self.peer.closed)

    def test_each_message_has_its_own_deadline(self) -> None:
        """The deadline restarts when a message completes and the next one begins."""
        second = tcp_options(2)
        self.peer.send(tcp_options(1)[:10])
        self.stack.clock.advance(15)
        self.peer.send(tcp_options(1)[10:] + second[:10])
        self.stack.clock.advance(19)
        self.assertFalse(self.peer.closed)
        (response,) = self.peer.send(second[10:])
        self.assertEqual(response.status, 200)
        self.stack.clock.advance(100)
        self.assertFalse(self.peer.closed)


class IdleTests(SynchronousTestCase):
    """Only whole messages and keep-alives keep a connection from being idle."""

    def setUp(self) -> None:
        self.stack = FakeSipStack(tcp_idle_timeout=600, tcp_message_timeout=10_000)
        self.peer = self.stack.connect_tcp()

    def test_stray_bytes_do_not_reset_idle(self) -> None:
        """A byte every 100 s (never a whole message) does not keep the connection open."""
        for _ in range(5):
            self.peer.send(b"O")
            self.stack.clock.advance(100)
        self.stack.clock.advance(100 - EPSILON)
        self.assertFalse(self.peer.closed)
        self.stack.clock.advance(EPSILON)
        self.assertTrue(self.peer.closed)

    def test_keepalive_resets_idle(self) -> None:
        """An RFC 5626 CRLF keep-alive is answered and keeps the connection open."""
        self.stack.clock.advance(500)
        self.peer.protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(self.peer.transport.value(), b"\r\n")
        self.stack.clock.advance(599)
        self.assertFalse(self.peer.closed)
        self.stack.clock.advance(1)
        self.assertTrue(self.peer.closed)


class Client(Protocol):
    """A TCP client that records whether Warden closed it and what it answered."""

    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        """Keep what Warden wrote."""
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        """Note the close."""
        self.closed.callback(None)


class RealSocketTests(TestCase):
    """The per-IP cap and the message deadline on a real listener on 127.0.0.1."""

    timeout = 10

    def setUp(self) -> None:
        self.hub = TransportHub(reactor, 65535, 600.0, 0.5, 2)  # type: ignore[arg-type]
        self.hub.receiver = lambda message, flow: None
        port = reactor.listenTCP(0, SipStreamFactory(self.hub), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        self.clients: list[Client] = []
        self.addCleanup(self.close_all)

    def close_all(self) -> defer.Deferred[Any]:
        """Close every client still open and wait until both ends are gone."""
        for client in self.clients:
            if not client.closed.called and client.transport is not None:
                client.transport.loseConnection()
        return defer.DeferredList([c.closed for c in self.clients])

    @defer.inlineCallbacks
    def connect(self) -> Any:
        """A connected client."""
        client = Client()
        self.clients.append(client)
        yield connectProtocol(self.endpoint, client)
        return client

    @defer.inlineCallbacks
    def test_cap_and_slow_message(self) -> Any:
        """
        With a cap of 2, a third connection from 127.0.0.1 is closed at once; a
        connection trickling a message is closed after the 0.5 s deadline, after
        which 127.0.0.1 may connect again.
        """
        first = yield self.connect()
        second = yield self.connect()
        third = yield self.connect()
        yield third.closed
        self.assertFalse(first.closed.called or second.closed.called)
        first.transport.write(tcp_options()[:20])
        yield first.closed
        self.assertFalse(second.closed.called)
        fourth = yield self.connect()
        self.assertFalse(fourth.closed.called)
        self.assertEqual(len(self.hub.connections), 2)
