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
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["MediaPort", "listen_udp"]

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
    """

    max_reads = 64

    def __init__(
        self, reactor: Any, port: int, protocol: DatagramProtocol, interface: str
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self.socket: socket.socket | None = None

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
        self.reactor.removeReader(self)
        sock.close()
        self.protocol.doStop()  # type: ignore[no-untyped-call]
        self.protocol.transport = None


def listen_udp(reactor: Any, port: int, protocol: DatagramProtocol, interface: str) -> MediaPort:
    """Bind a L{MediaPort} (the relay's ``listen_udp``, with ``reactor`` bound first)."""
    media_port = MediaPort(reactor, port, protocol, interface)
    media_port.startListening()
    return media_port
