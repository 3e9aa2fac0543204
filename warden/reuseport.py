"""
Listeners several SIP worker processes share (L{warden.workers}).

Twisted's ``listenUDP`` and ``listenTCP`` do not set ``SO_REUSEPORT``, so the
shared SIP port is bound here, with it, and handed to the reactor with
``adoptDatagramPort`` / ``adoptStreamPort`` (``IReactorSocket``). The kernel
then spreads datagrams and connections over the workers by a hash of the
peer's address: one phone's UDP socket always reaches the same worker while
the set of workers stays the same.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.application import service
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorSocket
from twisted.internet.protocol import DatagramProtocol, ServerFactory

_BACKLOG = 1024


def _family(interface: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in interface else socket.AF_INET


def reuseport_socket(kind: socket.SocketKind, interface: str, port: int) -> socket.socket:
    """
    A non-blocking socket of ``kind`` (``SOCK_DGRAM`` or ``SOCK_STREAM``, the
    latter listening) bound to ``interface``:``port`` with ``SO_REUSEPORT``, so
    other processes of the same user may bind the same port.

    Raises:
        OSError: the port is taken without ``SO_REUSEPORT``, or cannot be bound.
    """
    sock = socket.socket(_family(interface), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def listen_reuseport(
    reactor: object, interface: str, port: int, factory: IProtocolFactory
) -> IListeningPort:
    """
    Listen for TCP on ``interface``:``port`` shared with ``SO_REUSEPORT``,
    connections served by ``factory`` (on ``reactor``, an ``IReactorSocket``).

    Raises:
        OSError: the port cannot be bound.
    """
    interface = interface or "0.0.0.0"
    sock = reuseport_socket(socket.SOCK_STREAM, interface, port)
    try:
        server = cast("ServerFactory[Any]", factory)  # any IProtocolFactory serves
        return cast(IReactorSocket, reactor).adoptStreamPort(
            sock.fileno(), _family(interface), server
        )
    finally:
        sock.close()  # the reactor holds its own duplicate of the descriptor


class ReusePortService(service.Service):
    """
    A UDP or TCP listener on a port shared with ``SO_REUSEPORT``, bound when
    the service is privileged-started (as Twisted's ``UDPServer`` and
    ``TCPServer`` are), closed when it stops.

    Args:
        reactor: adopts the bound socket (``IReactorSocket``).
        interface: the address to bind ("" or "0.0.0.0": every IPv4 interface).
        port: the shared port.
        protocol: the datagram protocol (UDP) or the stream factory (TCP).
        max_packet_size: the largest datagram read (UDP).
    """

    def __init__(
        self,
        reactor: object,
        interface: str,
        port: int,
        protocol: DatagramProtocol | IProtocolFactory,
        max_packet_size: int = 8192,
    ) -> None:
        self._reactor = cast(IReactorSocket, reactor)
        self._interface = interface or "0.0.0.0"
        self._portnum = port
        self._protocol = protocol
        self._max_packet_size = max_packet_size
        #: The adopted port once bound (Twisted's servers call it ``_port`` too).
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """Bind the shared port now (twistd does it before dropping privileges)."""
        service.Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        if self._port is None:
            self._port = self._adopt()

    def startService(self) -> None:
        """Bind the shared port unless L{privilegedStartService} did."""
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        if self._port is None:
            self._port = self._adopt()

    def _adopt(self) -> IListeningPort:
        family = _family(self._interface)
        if isinstance(self._protocol, DatagramProtocol):
            sock = reuseport_socket(socket.SOCK_DGRAM, self._interface, self._portnum)
            try:
                return self._reactor.adoptDatagramPort(
                    sock.fileno(), family, self._protocol, self._max_packet_size
                )
            finally:
                sock.close()  # the reactor holds its own duplicate of the descriptor
        return listen_reuseport(self._reactor, self._interface, self._portnum, self._protocol)

    def stopService(self) -> object:
        """Close the shared port (this worker's share of it)."""
        service.Service.stopService(self)  # type: ignore[no-untyped-call]
        port, self._port = self._port, None
        if port is None:
            return None
        return port.stopListening()
