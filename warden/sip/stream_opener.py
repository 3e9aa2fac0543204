"""
Opening TCP connections for requests Warden sends (RFC 3261 §18.1.1): to
another Warden node (L{warden.sip.node_streams}) or to a SIP trunk's provider
(ADR 0021), over TLS when given client TLS options (RFC 5630; a trunk with
``transport = "tls"``, ADR 0034).

L{StreamOpener.connection} returns an open connection of the transport hub
to the peer, or one being opened: messages written while it opens wait for
it (a bounded number); if it cannot be opened they are lost like a lost
datagram, and the client transaction's timers report it. A connection that
cannot be opened, whose TLS handshake fails (the peer's certificate is
refused), or that closes once open, is reported to ``on_failed`` with its
kind (``connect``, ``tls``, ``lost``), so that the requests sent on it fail
at once (RFC 3261 §17.1.4) rather than at their timers. The connection is
the hub's once open, so responses and the peer's requests on it reach the
transaction layer like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTCP
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.sip.tls import SipTlsProtocol
from warden.sip.transport import SipStreamProtocol, TransportError, TransportHub

__all__ = ["CONNECT_TIMEOUT", "MAX_WAITING", "StreamOpener"]

#: Seconds a TCP connection may take to open.
CONNECT_TIMEOUT = 10.0
#: Messages that may wait for a connection being opened.
MAX_WAITING = 32
#: Seconds a TLS handshake may take once the TCP connection is open.
HANDSHAKE_TIMEOUT = 10.0


class _Opening:
    """A TCP connection being opened; what is sent meanwhile waits."""

    def __init__(self) -> None:
        self.waiting: list[bytes] = []
        self.protocol: SipStreamProtocol | None = None
        self.failed = False

    @property
    def is_open(self) -> bool:
        """True until the connection failed or, once up, closed."""
        if self.protocol is not None:
            return self.protocol.is_open
        return not self.failed

    def send_message(self, data: bytes) -> None:
        """Send now if the connection is up, else keep ``data`` for it."""
        if self.protocol is not None:
            self.protocol.send_message(data)
            return
        if len(self.waiting) >= MAX_WAITING:
            raise TransportError("too many messages waiting for a connection to open")
        self.waiting.append(data)

    def opened(self, protocol: SipStreamProtocol) -> None:
        self.protocol = protocol
        waiting, self.waiting = self.waiting, []
        for data in waiting:
            protocol.send_message(data)


class StreamOpener:
    """
    Opens (once) and reuses TCP connections to peers.

    Args:
        connector: opens TCP connections (the reactor).
        hub: the transport hub; its connections carry the streams both ways.
        local_host: the address to open connections from ("" lets the system
            choose).
        peer_kind: names the peers in log lines ("node", "trunk").
        on_failed: told ``(host, port, kind, error)`` when a connection cannot
            be opened (``kind`` ``connect``) or its TLS handshake fails
            (``tls``: a refused certificate, a protocol error, no handshake in
            time), or closes once open (``lost``).
    """

    log = Logger()

    def __init__(
        self,
        connector: IReactorTCP,
        hub: TransportHub,
        local_host: str = "",
        peer_kind: str = "",
        on_failed: Callable[[str, int, str, str], None] | None = None,
    ) -> None:
        self._connector = connector
        self._hub = hub
        self.local_host = local_host
        self._peer_kind = peer_kind
        self._on_failed = on_failed
        self._opening: dict[tuple[str, int], _Opening] = {}

    def connection(
        self, host: str, port: int, tls: IOpenSSLClientConnectionCreator | None = None
    ) -> Any:
        """
        An open (or opening) TCP connection to ``host``:``port``; a TLS one
        with ``tls`` (the certificate checks it makes, SNI).
        """
        wanted = "tcp" if tls is None else "tls"
        connection = self._hub.connection_to(host, port)
        if connection is not None and connection.transport_name == wanted:
            return connection
        opening = self._opening.get((host, port))
        if opening is not None and opening.is_open:
            return opening
        opening = _Opening()
        self._opening[(host, port)] = opening
        bind = (self.local_host, 0) if self.local_host else None
        endpoint: Any
        if ":" in host:
            endpoint = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self._connector, host, port, CONNECT_TIMEOUT, bind
            )
        else:
            endpoint = TCP4ClientEndpoint(self._connector, host, port, CONNECT_TIMEOUT, bind)
        protocol: SipStreamProtocol = SipStreamProtocol(self._hub)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)

            def refused(error: str) -> None:
                self.log.warn(
                    "TLS handshake with {kind} {host}:{port} failed: {error}",
                    kind=self._peer_kind, host=host, port=port, error=error,
                )  # fmt: skip
                self._report(host, port, "tls", error)

            protocol = SipTlsProtocol(self._hub, HANDSHAKE_TIMEOUT, refused)

        def closed() -> None:
            if isinstance(protocol, SipTlsProtocol) and not protocol.handshake_done:
                return  # reported as a failed handshake
            self._report(host, port, "lost", "connection closed")

        protocol.on_closed = closed
        d = connectProtocol(endpoint, protocol)  # type: ignore[no-untyped-call]

        def opened(protocol: SipStreamProtocol) -> None:
            self._opening.pop((host, port), None)
            opening.opened(protocol)

        def failed(reason: Failure) -> None:
            self._opening.pop((host, port), None)
            opening.failed = True
            lost, opening.waiting = len(opening.waiting), []
            self.log.warn(
                "Could not connect to {kind} {host}:{port} ({lost} messages lost): {error}",
                kind=self._peer_kind, host=host, port=port, lost=lost,
                error=reason.getErrorMessage(),
            )  # fmt: skip
            self._report(host, port, "connect", reason.getErrorMessage())

        d.addCallbacks(opened, failed)
        return opening

    def _report(self, host: str, port: int, kind: str, error: str) -> None:
        if self._on_failed is not None:
            self._on_failed(host, port, kind, error)
