"""
A client of rtpengine's ng control protocol: bencoded dictionaries over UDP.

Each request is ``<cookie> <bencoded dictionary>`` with a ``command`` key; the
reply is ``<cookie> <bencoded dictionary>`` with a ``result`` of ``ok`` (or
``pong`` for ``ping``), else ``error`` with an ``error-reason``. rtpengine
remembers the replies by cookie for a while and answers a repeated request
with the same reply without doing the work twice, so a request that got no
reply is sent again, unchanged, with the same cookie: after ``timeout``
seconds, then twice that, up to ``attempts`` sends in all. Then the request
fails with L{NgTimeout}.

A reply is hostile input like any datagram: it is accepted only from the
configured address, only for a cookie still waiting, only when it decodes as a
bounded bencoded dictionary (L{warden.rtp.bencode}) with a known ``result``.
Anything else is dropped and counted (``warden_rtpengine_replies_dropped_total``);
the request it might have been meant for is retransmitted or times out.
The number of requests waiting at once is bounded too (``max_pending``).

Time comes from the injected clock (a ``Clock`` in tests); the datagram
transport is whatever ``makeConnection`` gave (``reactor.listenUDP``).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter
from twisted.internet import defer
from twisted.internet.error import InvalidAddressError, MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from warden.rtp import bencode
from warden.rtp.errors import MediaError

Address = tuple[str, int]

#: The longest request Warden sends (a phone's SDP is bounded well below).
MAX_REQUEST = 60000
#: How much of an ``error-reason`` is kept (it ends up in logs).
MAX_REASON = 200

REQUESTS = Counter(
    "warden_rtpengine_requests_total", "ng requests sent to rtpengine, by outcome", ["outcome"]
)
_OUTCOMES = {o: REQUESTS.labels(o) for o in ("ok", "error", "timeout", "refused")}
RETRANSMISSIONS = Counter(
    "warden_rtpengine_retransmissions_total", "ng requests sent again for want of a reply"
)
REPLIES_DROPPED = Counter(
    "warden_rtpengine_replies_dropped_total",
    "Datagrams on the ng socket that were not a reply to a waiting request",
)


class NgError(MediaError):
    """
    rtpengine answered a request with an error (or an unusable reply).

    Args:
        command: the request's command.
        reason: rtpengine's ``error-reason``, or what was wrong with the reply.
    """

    def __init__(self, command: str, reason: str) -> None:
        self.command = command
        self.reason = reason
        super().__init__(f"rtpengine {command}: {reason}")


class NgTimeout(MediaError):
    """rtpengine did not answer a request, however often it was sent."""


def parse_address(text: str) -> Address:
    """
    ``host:port`` (``[v6]:port`` for IPv6) as an IP address and a port.

    Raises:
        ValueError: not an IP address literal with a port from 1 to 65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError("must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets: [::1]:2223")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ValueError(f"{port_text!r} is not a port")
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(f"port {port} out of range")
    return str(ip), port


def _printable(raw: Any) -> str:
    """A reply's text value, bounded and without control characters, for messages."""
    if not isinstance(raw, bytes):
        return "(none)"
    text = raw[:MAX_REASON].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


class _Pending:
    __slots__ = ("command", "datagram", "deferred", "sends", "timer")

    def __init__(self, command: str, datagram: bytes, deferred: defer.Deferred[dict[str, Any]]):
        self.command = command
        self.datagram = datagram
        self.deferred = deferred
        self.sends = 0
        self.timer: IDelayedCall | None = None


class NgClient(DatagramProtocol):
    """
    Sends ng requests to one rtpengine and matches their replies.

    Args:
        clock: schedules retransmissions.
        address: rtpengine's ng address (IP, port).
        timeout: seconds before the first retransmission (doubled each time).
        attempts: sends of one request before it fails with L{NgTimeout}.
        max_pending: requests waiting at once; more fail with L{MediaError}.
        new_cookie: makes cookies (``secrets``; tests pass a deterministic one).
    """

    noisy = False
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        address: Address,
        timeout: float = 0.5,
        attempts: int = 3,
        max_pending: int = 4096,
        new_cookie: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.clock = clock
        self.address = (str(ipaddress.ip_address(address[0])), address[1])
        self.timeout = timeout
        self.attempts = attempts
        self.max_pending = max_pending
        self._new_cookie = new_cookie
        self._pending: dict[bytes, _Pending] = {}

    @property
    def pending(self) -> int:
        """Requests waiting for a reply."""
        return len(self._pending)

    def request(
        self, command: str, params: Mapping[str, Any] | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        """
        Send ``command`` with ``params``; fire with the reply's dictionary (its
        ``result`` is ``ok`` or ``pong``).

        Fails with L{NgError} on an error reply, L{NgTimeout} without a reply,
        L{MediaError} when the client is closed or too many requests wait.
        """
        if self.transport is None:
            _OUTCOMES["refused"].inc()
            return defer.fail(MediaError("the rtpengine control socket is closed"))
        if len(self._pending) >= self.max_pending:
            _OUTCOMES["refused"].inc()
            return defer.fail(MediaError(f"{len(self._pending)} rtpengine requests waiting"))
        cookie = self._new_cookie().encode("ascii")
        while cookie in self._pending or b" " in cookie or not cookie:
            cookie = secrets.token_hex(8).encode("ascii")
        body = bencode.encode({**(params or {}), "command": command})
        datagram = cookie + b" " + body
        if len(datagram) > MAX_REQUEST:
            _OUTCOMES["refused"].inc()
            return defer.fail(MediaError(f"rtpengine {command}: request of {len(datagram)} bytes"))
        pending = _Pending(command, datagram, defer.Deferred())
        self._pending[cookie] = pending
        self._send(cookie, pending)
        return pending.deferred

    def _send(self, cookie: bytes, pending: _Pending) -> None:
        if pending.sends:
            RETRANSMISSIONS.inc()
        pending.sends += 1
        delay = self.timeout * 2 ** (pending.sends - 1)
        pending.timer = self.clock.callLater(delay, self._expired, cookie)
        transport = self.transport
        if transport is None:
            return
        try:
            transport.write(pending.datagram, self.address)
        except (OSError, InvalidAddressError, MessageLengthError) as e:
            # ICMP refusals of earlier sends surface here: retransmit as if lost.
            self.log.debug("ng send to {address} failed: {error}", address=self.address, error=e)

    def _expired(self, cookie: bytes) -> None:
        pending = self._pending.get(cookie)
        if pending is None:
            return
        pending.timer = None
        if pending.sends < self.attempts:
            self._send(cookie, pending)
            return
        del self._pending[cookie]
        _OUTCOMES["timeout"].inc()
        host, port = self.address
        pending.deferred.errback(
            NgTimeout(
                f"rtpengine at {host}:{port} did not answer {pending.command}"
                f" ({pending.sends} sends)"
            )
        )

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """A reply: fire its request's Deferred; drop anything else."""
        try:
            source = (str(ipaddress.ip_address(addr[0])), addr[1])
        except (ValueError, TypeError, IndexError):
            source = None
        cookie, sep, body = datagram.partition(b" ")
        pending = self._pending.get(cookie) if sep and source == self.address else None
        if pending is None:
            REPLIES_DROPPED.inc()
            return
        try:
            reply = bencode.decode(body)
        except bencode.BencodeError as e:
            REPLIES_DROPPED.inc()
            self.log.warn("Malformed rtpengine reply to {command}: {error}",
                          command=pending.command, error=e)  # fmt: skip
            return
        del self._pending[cookie]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        result = reply.get("result") if isinstance(reply, dict) else None
        if result in (b"ok", b"pong"):
            _OUTCOMES["ok"].inc()
            pending.deferred.callback(reply)
            return
        _OUTCOMES["error"].inc()
        if result == b"error":
            reason = _printable(reply.get("error-reason"))
        else:
            reason = f"unexpected result {_printable(result)}"
        pending.deferred.errback(NgError(pending.command, reason))

    def close(self) -> None:
        """Fail every waiting request and stop listening."""
        pending, self._pending = self._pending, {}
        for each in pending.values():
            if each.timer is not None and each.timer.active():
                each.timer.cancel()
            each.deferred.errback(MediaError("the rtpengine control socket was closed"))
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.stopListening()
