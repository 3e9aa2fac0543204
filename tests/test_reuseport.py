"""
The shared SIP port (L{warden.reuseport}): sockets bound with
``SO_REUSEPORT`` by several holders, adopted by the reactor.
"""

from __future__ import annotations

import socket

from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.trial.unittest import SynchronousTestCase

from warden.reuseport import ReusePortService, reuseport_socket


class FakeAdoptingReactor:
    """Records what it is asked to adopt (IReactorSocket's two methods)."""

    def __init__(self) -> None:
        self.adopted: list[tuple[str, int, object]] = []

    def adoptDatagramPort(self, fd: int, family: int, protocol: object, size: int) -> object:  # noqa: N802
        sock = socket.socket(fileno=socket.dup(fd))
        self.adopted.append(("udp", sock.getsockname()[1], protocol))
        sock.close()
        return _FakePort()

    def adoptStreamPort(self, fd: int, family: int, factory: object) -> object:  # noqa: N802
        sock = socket.socket(fileno=socket.dup(fd))
        self.adopted.append(("tcp", sock.getsockname()[1], factory))
        sock.close()
        return _FakePort()


class _FakePort:
    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_udp_and_tcp_port() -> int:
    """A port free for UDP that is free for TCP too (a UDP port's number may be taken for TCP)."""
    for _ in range(100):
        port = _free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError("no port free for both UDP and TCP")


class ReusePortSocketTests(SynchronousTestCase):
    """Two sockets bind the same port; a plain one cannot join them."""

    def check_shared(self, kind: socket.SocketKind) -> None:
        port = _free_port(kind)
        first = reuseport_socket(kind, "127.0.0.1", port)
        self.addCleanup(first.close)
        second = reuseport_socket(kind, "127.0.0.1", port)
        self.addCleanup(second.close)
        self.assertEqual(first.getsockname(), second.getsockname())
        plain = socket.socket(socket.AF_INET, kind)
        self.addCleanup(plain.close)
        self.assertRaises(OSError, plain.bind, ("127.0.0.1", port))

    def test_udp(self) -> None:
        """Two UDP sockets share a port."""
        self.check_shared(socket.SOCK_DGRAM)

    def test_tcp(self) -> None:
        """Two listening TCP sockets share a port."""
        self.check_shared(socket.SOCK_STREAM)

    def test_udp_both_receive(self) -> None:
        """Datagrams from many sources are spread over both sockets."""
        port = _free_port(socket.SOCK_DGRAM)
        shared = [reuseport_socket(socket.SOCK_DGRAM, "127.0.0.1", port) for _ in range(2)]
        for s in shared:
            self.addCleanup(s.close)
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"x", ("127.0.0.1", port))
        counts = []
        for s in shared:
            n = 0
            while True:
                try:
                    s.recv(16)
                except BlockingIOError:
                    break
                n += 1
            counts.append(n)
        self.assertEqual(sum(counts), 64)
        self.assertTrue(all(counts), counts)


class ReusePortServiceTests(SynchronousTestCase):
    """The service binds at (privileged) start and hands the socket to the reactor."""

    def test_adopts_udp_and_tcp(self) -> None:
        """Both kinds are adopted on the shared port, which stays bindable by another."""
        reactor = FakeAdoptingReactor()
        port = _free_udp_and_tcp_port()
        udp = ReusePortService(reactor, "127.0.0.1", port, DatagramProtocol())
        tcp = ReusePortService(reactor, "127.0.0.1", port, ServerFactory())
        for service in (udp, tcp):
            service.privilegedStartService()
            service.startService()  # binds once only
        self.assertEqual([(k, p) for k, p, _ in reactor.adopted], [("udp", port), ("tcp", port)])
        other = reuseport_socket(socket.SOCK_DGRAM, "127.0.0.1", port)
        other.close()
        self.assertIsNone(udp.stopService())
        port_object = tcp._port
        tcp.stopService()
        self.assertTrue(port_object.stopped)  # type: ignore[union-attr]
