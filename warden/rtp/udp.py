"""
The relay's UDP sockets: a lean replacement for ``reactor.listenUDP``.

A relayed call opens four sockets and closes them again; Twisted's UDP port logs
two lines for each (``... starting on N``, ``(UDP Port N Closed)``), which at a
few hundred calls a minute buries everything else in the log. L{MediaPort} is
registered with the reactor as a plain reader instead: it logs nothing in normal
operation, reads up to L{MediaPort.max_reads} datagrams per wake-up (RTP comes
in bursts), and offers what the relay uses of an ``IListeningPort`` and
``IUDPTransport`` (``write``, ``stopListening``, ``getHost``).

Use L{listen_udp} (bound to a reactor) as the relay's ``listen_udp``.

The media process (ADR 0033) binds its sockets through L{MediaSockets}
instead: every socket in one epoll set of its own, registered with the reactor
as one reader. A wake-up then costs the reactor's dispatch once, however many
calls have a packet waiting, and each ready socket is read once per round of
that set (a round that finds nothing ends the wake-up), so no read fails with
``EAGAIN`` in the common case of one packet per socket.
"""

from __future__ import annotations

import errno
import select
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["MediaPort", "MediaSockets", "listen_udp"]

# recvfrom errors that concern one datagram (an ICMP error for an earlier send,
# a signal): skip it and read on.
_TRANSIENT = frozenset([errno.ECONNREFUSED, errno.EINTR, errno.EMSGSIZE, errno.ENETUNREACH])
_MAX_DATAGRAM = 65535


@implementer(IReadDescriptor, IListeningPort)
class MediaPort:
    """
    One bound, non-blocking UDP socket read by the reactor.

    Args:
        reactor: an IReactorFDSet.
        port: the port to bind.
        protocol: receives ``datagramReceived(data, (host, port))``.
        interface: the address to bind ("" for every IPv4 address).
        sockets: the L{MediaSockets} that reads it (None: the reactor does).
    """

    max_reads = 64
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        port: int,
        protocol: DatagramProtocol,
        interface: str,
        sockets: MediaSockets | None = None,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self.socket: socket.socket | None = None
        self._sockets = sockets

    def startListening(self) -> None:
        """Bind, start reading and connect the protocol; CannotListenError on failure."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.interface or "0.0.0.0", self.port))
        except OSError as e:
            sock.close()
            error = CannotListenError(self.interface, self.port, e)  # type: ignore[no-untyped-call]
            raise error from e
        self.socket = sock
        self.protocol.makeConnection(self)  # type: ignore[arg-type]
        if self._sockets is not None:
            self._sockets.add(self)
        else:
            self.reactor.addReader(self)

    # -- IReadDescriptor ---------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self.socket.fileno() if self.socket is not None else -1

    def doRead(self) -> None:
        """Deliver the datagrams waiting, up to ``max_reads``."""
        for _ in range(self.max_reads):
            sock = self.socket
            if sock is None:
                return
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _TRANSIENT:
                    continue
                raise
            self.protocol.datagramReceived(data, (addr[0], addr[1]))

    def read_one(self) -> bool:
        """
        Deliver one waiting datagram (L{MediaSockets}' read); False when none
        was. An error the reactor would have closed the port for closes it,
        logged.
        """
        sock = self.socket
        if sock is None:
            return False
        try:
            data, addr = sock.recvfrom(_MAX_DATAGRAM)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno not in _TRANSIENT:
                self._fail()
            return False
        try:
            self.protocol.datagramReceived(data, (addr[0], addr[1]))
        except Exception:
            self._fail()
            return False
        return True

    def drain(self, limit: int = 64) -> None:
        """
        Deliver what is already waiting (at most ``limit`` datagrams), as a
        session does before it closes: a packet that came before the call's
        release is relayed, not dropped with the socket.
        """
        for _ in range(limit):
            if not self.read_one():
                return

    def _fail(self) -> None:
        self.log.failure("Media port {port} failed and is closed", port=self.port)
        self._close()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor gave up on the descriptor: close."""
        self._close()

    def logPrefix(self) -> str:
        """For the reactor's log of an error in ``doRead``."""
        return f"MediaPort {self.port}"

    # -- what the relay uses of IUDPTransport and IListeningPort -----------------------

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """
        Send ``datagram`` to ``addr``. A full send buffer drops it (as the network
        would); other errors raise OSError.
        """
        sock = self.socket
        if sock is None:
            raise OSError(errno.EBADF, "media port closed")
        try:
            sock.sendto(datagram, addr)
        except BlockingIOError:
            pass

    def stopListening(self) -> None:
        """Stop reading and close the socket at once."""
        self._close()

    def getHost(self) -> IPv4Address | IPv6Address:
        """The bound address."""
        host, port = self.interface, self.port
        if self.socket is not None:
            host, port = self.socket.getsockname()[:2]
        if self.family == socket.AF_INET6:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def _close(self) -> None:
        sock, self.socket = self.socket, None
        if sock is None:
            return
        if self._sockets is not None:
            self._sockets.remove(self, sock)
        else:
            self.reactor.removeReader(self)
        sock.close()
        self.protocol.doStop()  # type: ignore[no-untyped-call]
        self.protocol.transport = None


def listen_udp(reactor: Any, port: int, protocol: DatagramProtocol, interface: str) -> MediaPort:
    """Bind a L{MediaPort} (the relay's ``listen_udp``, with ``reactor`` bound first)."""
    media_port = MediaPort(reactor, port, protocol, interface)
    media_port.startListening()
    return media_port


@implementer(IReadDescriptor)
class MediaSockets:
    """
    The media sockets of one reactor behind one descriptor: an epoll set the
    reactor reads while any socket is bound (Linux; elsewhere each socket is the
    reactor's own reader, as with L{listen_udp}).

    Args:
        reactor: an IReactorFDSet.
    """

    #: Rounds of the set per wake-up, each reading one datagram per ready socket.
    max_rounds = 64

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._epoll: Any = None
        self._ports: dict[int, MediaPort] = {}

    def listen_udp(self, port: int, protocol: DatagramProtocol, interface: str) -> MediaPort:
        """Bind a L{MediaPort} read through this set (a relay's ``listen_udp``)."""
        sockets = self if hasattr(select, "epoll") else None
        media_port = MediaPort(self.reactor, port, protocol, interface, sockets)
        media_port.startListening()
        return media_port

    def add(self, port: MediaPort) -> None:
        """Read ``port`` (bound) from now on."""
        if self._epoll is None:
            self._epoll = select.epoll()
            self.reactor.addReader(self)
        fd = port.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._ports[fd] = port

    def remove(self, port: MediaPort, sock: socket.socket) -> None:
        """Stop reading ``port``, whose socket ``sock`` is about to close."""
        fd = sock.fileno()
        if self._ports.pop(fd, None) is None or self._epoll is None:
            return
        self._epoll.unregister(fd)
        if not self._ports:
            self.reactor.removeReader(self)
            self._epoll.close()
            self._epoll = None

    # -- IReadDescriptor ---------------------------------------------------------------

    def fileno(self) -> int:
        """The epoll set's descriptor (-1 while no socket is bound)."""
        return self._epoll.fileno() if self._epoll is not None else -1

    def doRead(self) -> None:
        """Read every ready socket once per round, until a round finds none."""
        ports = self._ports
        for _ in range(self.max_rounds):
            epoll = self._epoll
            if epoll is None:
                return
            events = epoll.poll(0)
            if not events:
                return
            for fd, _ in events:
                port = ports.get(fd)
                if port is not None:
                    port.read_one()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor gave up on the set (never in normal operation): close every socket."""
        for port in list(self._ports.values()):
            port.stopListening()

    def logPrefix(self) -> str:
        """For the reactor's log of an error in ``doRead``."""
        return "MediaSockets"
