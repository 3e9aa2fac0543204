"""The relay's own UDP sockets (warden.rtp.udp) on real sockets, read by hand."""

from __future__ import annotations

import functools
import select
import socket
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from warden.rtp.relay import MediaRelay
from warden.rtp.udp import MediaPort, MediaSockets, listen_udp
from warden.testing.rtpnet import rtp, sdp_body


class FakeReactor:
    """Records addReader/removeReader like an IReactorFDSet."""

    def __init__(self) -> None:
        self.readers: set[Any] = set()

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)


class Collector(DatagramProtocol):
    noisy = False

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.stopped = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))

    def stopProtocol(self) -> None:
        self.stopped += 1


class MediaPortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.protocol = Collector()
        self.port = listen_udp(self.reactor, 0, self.protocol, "127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.addCleanup(self.peer.close)
        assert self.port.socket is not None
        self.address = self.port.socket.getsockname()

    def test_interfaces(self) -> None:
        """A listening port and a reader the reactor can poll."""
        self.assertTrue(verifyObject(IListeningPort, self.port))
        self.assertTrue(verifyObject(IReadDescriptor, self.port))
        self.assertIn(self.port, self.reactor.readers)
        self.assertIs(self.protocol.transport, self.port)
        self.assertEqual(self.port.getHost().host, "127.0.0.1")

    def test_reads_burst(self) -> None:
        """One doRead delivers every waiting datagram (up to max_reads), with (host, port)."""
        for n in range(5):
            self.peer.sendto(b"%d" % n, self.address)
        self.port.socket.setblocking(True)  # type: ignore[union-attr]
        self.port.socket.settimeout(5)  # type: ignore[union-attr]
        self.port.max_reads = 5
        self.port.doRead()
        self.assertEqual([d for d, _ in self.protocol.received], [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(self.protocol.received[0][1], self.peer.getsockname())

    def test_read_stops_when_empty(self) -> None:
        """doRead returns when nothing more is waiting."""
        self.port.doRead()
        self.assertEqual(self.protocol.received, [])

    def test_write(self) -> None:
        """write sends from the bound port."""
        self.port.write(b"hello", self.peer.getsockname())
        data, source = self.peer.recvfrom(100)
        self.assertEqual((data, source), (b"hello", self.address))

    def test_stop(self) -> None:
        """stopListening closes at once, stops reading, stops the protocol once, and
        later writes raise OSError."""
        self.port.stopListening()
        self.port.stopListening()
        self.assertNotIn(self.port, self.reactor.readers)
        self.assertEqual(self.protocol.stopped, 1)
        self.assertEqual(self.port.fileno(), -1)
        self.assertRaises(OSError, self.port.write, b"x", self.peer.getsockname())
        # The port number is free again.
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(again.close)
        again.bind(self.address)

    def test_port_taken(self) -> None:
        """Binding a taken port raises CannotListenError and leaves no reader."""
        other = MediaPort(self.reactor, self.address[1], Collector(), "127.0.0.1")
        self.assertRaises(CannotListenError, other.startListening)
        self.assertEqual(self.reactor.readers, {self.port})

    def test_ipv6(self) -> None:
        """An IPv6 interface gives an IPv6 socket and (host, port) addresses."""
        try:
            port = listen_udp(self.reactor, 0, Collector(), "::1")
        except CannotListenError:
            self.skipTest("no IPv6 loopback here")
        self.addCleanup(port.stopListening)
        self.assertEqual(port.getHost().type, "UDP")
        self.assertEqual(port.getHost().host, "::1")


class Failing(Collector):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        raise ZeroDivisionError()


class MediaSocketsTests(SynchronousTestCase):
    """The media process's sockets, read through one epoll set (Linux)."""

    def setUp(self) -> None:
        if not hasattr(select, "epoll"):
            self.skipTest("no epoll here")
        self.reactor = FakeReactor()
        self.sockets = MediaSockets(self.reactor)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.addCleanup(self.peer.close)

    def bind(self, protocol: Collector | None = None) -> tuple[MediaPort, Collector]:
        protocol = protocol or Collector()
        port = self.sockets.listen_udp(0, protocol, "127.0.0.1")
        self.addCleanup(port.stopListening)
        return port, protocol

    def send(self, port: MediaPort, *datagrams: bytes) -> None:
        assert port.socket is not None
        for data in datagrams:
            self.peer.sendto(data, port.socket.getsockname())

    def test_one_reader_while_bound(self) -> None:
        """The set is the reactor's only reader while a socket is bound, then none."""
        self.assertEqual(self.sockets.fileno(), -1)
        first, _ = self.bind()
        second, _ = self.bind()
        self.assertEqual(self.reactor.readers, {self.sockets})
        self.assertNotEqual(self.sockets.fileno(), -1)
        first.stopListening()
        self.assertEqual(self.reactor.readers, {self.sockets})
        second.stopListening()
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.sockets.fileno(), -1)
        self.bind()
        self.assertEqual(self.reactor.readers, {self.sockets})

    def test_reads_every_socket(self) -> None:
        """One doRead delivers every waiting datagram of every socket, with (host, port)."""
        first, one = self.bind()
        second, two = self.bind()
        self.send(first, b"1", b"2", b"3")
        self.send(second, b"x")
        self.sockets.doRead()
        self.assertEqual([d for d, _ in one.received], [b"1", b"2", b"3"])
        self.assertEqual(two.received, [(b"x", self.peer.getsockname())])
        self.sockets.doRead()  # nothing waiting: returns
        self.assertEqual(len(one.received) + len(two.received), 4)

    def test_rounds_bounded(self) -> None:
        """A wake-up reads at most max_rounds datagrams of one socket; the rest next time."""
        port, protocol = self.bind()
        self.sockets.max_rounds = 2
        self.send(port, b"1", b"2", b"3")
        self.sockets.doRead()
        self.assertEqual([d for d, _ in protocol.received], [b"1", b"2"])
        self.sockets.doRead()
        self.assertEqual([d for d, _ in protocol.received], [b"1", b"2", b"3"])

    def test_failing_protocol_closes_its_port(self) -> None:
        """A protocol raising closes its port (logged), as the reactor would; others read on."""
        bad, failing = self.bind(Failing())
        good, protocol = self.bind()
        self.send(bad, b"boom")
        self.send(good, b"fine")
        self.sockets.doRead()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(bad.fileno(), -1)
        self.assertEqual(failing.stopped, 1)
        self.assertEqual(protocol.received, [(b"fine", self.peer.getsockname())])
        self.assertEqual(self.reactor.readers, {self.sockets})

    def test_connection_lost_closes_every_port(self) -> None:
        """Should the reactor give up on the set, every socket closes."""
        first, _ = self.bind()
        second, _ = self.bind()
        self.sockets.connectionLost(Failure(ZeroDivisionError()))
        self.assertEqual((first.fileno(), second.fileno()), (-1, -1))
        self.assertEqual(self.sockets.fileno(), -1)

    def test_interface(self) -> None:
        """A reader the reactor can poll, with a log prefix."""
        self.assertTrue(verifyObject(IReadDescriptor, self.sockets))
        self.assertEqual(self.sockets.logPrefix(), "MediaSockets")


class DrainTests(SynchronousTestCase):
    """What waits on a socket when a session is released is still relayed."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.phones = {}
        for name in ("caller", "callee"):
            phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            phone.bind(("127.0.0.1", 0))
            phone.settimeout(5)
            self.addCleanup(phone.close)
            self.phones[name] = phone

    def test_drain_delivers_what_waits(self) -> None:
        """drain() hands every waiting datagram to the protocol, then returns."""
        protocol = Collector()
        port = listen_udp(self.reactor, 0, protocol, "127.0.0.1")
        self.addCleanup(port.stopListening)
        assert port.socket is not None
        for n in range(3):
            self.phones["caller"].sendto(b"%d" % n, port.socket.getsockname())
        port.drain()
        self.assertEqual([d for d, _ in protocol.received], [b"0", b"1", b"2"])
        port.drain()
        self.assertEqual(len(protocol.received), 3)

    def test_packet_before_release_is_relayed(self) -> None:
        """A packet that reached the relay before the release goes on to the callee."""
        # The relay on 127.0.0.2: packets from its own address would be refused.
        relay = MediaRelay(
            Clock(), functools.partial(listen_udp, self.reactor), "127.0.0.2", (31000, 31999)
        )
        session = self.successResultOf(relay.allocate("call-1"))
        caller, callee = (self.phones[n].getsockname()[1] for n in ("caller", "callee"))
        for side in ("a", "b"):
            session.signalling_from(side, "127.0.0.1")
        session.offer_from("a", sdp_body("127.0.0.1", caller))
        session.answer_from("b", sdp_body("127.0.0.1", callee))
        side_a, side_b = session.side_a, session.side_b
        self.phones["caller"].sendto(rtp(1), (side_a.address, side_a.rtp_port))
        session.release()  # nobody read the socket: the release does
        data, source = self.phones["callee"].recvfrom(2048)
        self.assertEqual((data, source), (rtp(1), (side_b.address, side_b.rtp_port)))
        self.assertEqual(session.stats()["a"]["packets_in"], 1)
