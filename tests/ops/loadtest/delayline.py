"""
A UDP delay line for cross-checking load generators: every datagram a client
sends to the listening port reaches the server ``delay`` seconds later, from a
socket of its own per client (so the server's answers, sent back to that socket
as RFC 3581 ``rport`` says, return to the right client at once). Responses the
server sends straight to a client's Via address bypass it.

With tens of milliseconds of delay, the response times both generators measure
are dominated by a known quantity, far above SIPp's 4 ms clock granularity.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol


class _Upstream(DatagramProtocol):
    """The line's socket towards the server for one client."""

    def __init__(self, line: DelayLine, client: tuple[str, int]) -> None:
        self.line = line
        self.client = client

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """An answer from the server: straight back to the client."""
        self.line.send_to_client(datagram, self.client)


class DelayLine(DatagramProtocol):
    """Listens on 127.0.0.1; forwards to ``server`` after ``delay`` seconds."""

    def __init__(self, reactor: Any, server: tuple[str, int], delay: float) -> None:
        self.reactor = reactor
        self.server = server
        self.delay = delay
        self.forwarded = 0
        self._upstreams: dict[tuple[str, int], Any] = {}
        self._port: Any = None

    def open(self) -> int:
        """Start listening; returns the port."""
        self._port = self.reactor.listenUDP(0, self, interface="127.0.0.1")
        return int(self._port.getHost().port)

    async def close(self) -> None:
        """Stop every socket."""
        ports = [self._port, *self._upstreams.values()]
        self._upstreams.clear()
        for port in ports:
            if port is not None:
                await defer.maybeDeferred(port.stopListening)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """From a client: to the server, later."""
        client = (addr[0], addr[1])
        upstream = self._upstreams.get(client)
        if upstream is None:
            upstream = self.reactor.listenUDP(0, _Upstream(self, client), interface="127.0.0.1")
            self._upstreams[client] = upstream
        self.reactor.callLater(self.delay, self._forward, upstream, datagram)

    def _forward(self, upstream: Any, datagram: bytes) -> None:
        if upstream.connected:
            self.forwarded += 1
            upstream.write(datagram, self.server)

    def send_to_client(self, datagram: bytes, client: tuple[str, int]) -> None:
        """An answer for ``client``."""
        if self._port is not None:
            self._port.write(datagram, client)
