"""
Clients for talking to a running Warden over real sockets on 127.0.0.1: a SIP
user agent client over UDP built on Warden's own parser and digest code, and a
raw TCP connection for feeding arbitrary bytes.

Waiting is polling on the real reactor with ``task.deferLater``, bounded in the
number of attempts; nothing sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from warden.errors import SipParseError
from warden.sip.auth import answer_challenge
from warden.sip.message import Message, Request, Response, make_response, new_tag
from warden.sip.parser import parse_datagram

LOCALHOST = "127.0.0.1"
POLL_INTERVAL = 0.1


def real_reactor() -> Any:
    """The global reactor (integration tests run on it)."""
    from twisted.internet import reactor

    return reactor


def pause(seconds: float) -> Deferred[None]:
    """A Deferred firing after ``seconds`` on the real reactor (never blocks)."""
    return task.deferLater(real_reactor(), seconds, lambda: None)


async def poll(
    condition: Callable[[], bool], timeout: float, interval: float = POLL_INTERVAL
) -> bool:
    """
    Check ``condition`` every ``interval`` seconds, at most ``timeout / interval``
    times; True as soon as it holds, False when the attempts ran out.
    """
    for _ in range(max(1, int(timeout / interval))):
        if condition():
            return True
        await pause(interval)
    return condition()


async def poll_async(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """L{poll} for a condition that must itself wait (a wardenctl run, a scrape)."""
    for _ in range(max(1, int(timeout / POLL_INTERVAL))):
        if await condition():
            return True
        await pause(POLL_INTERVAL)
    return await condition()


def new_branch() -> str:
    """An RFC 3261 §8.1.1.7 branch."""
    return "z9hG4bK" + os.urandom(8).hex()


class SipUdpClient(protocol.DatagramProtocol):
    """
    A SIP user agent client on 127.0.0.1 that sends requests to one server and
    matches responses by the top Via branch, retransmitting as RFC 3261 §17.1.2.2
    says (T1 = 0.5 s, doubling up to T2 = 4 s) until a final response or timeout.

    Use L{open} to bind it, L{close} when done.
    """

    T1 = 0.5
    T2 = 4.0

    def __init__(self, server: tuple[str, int], local_host: str = LOCALHOST) -> None:
        self.server = server
        self.local_host = local_host
        self._pending: dict[str, Deferred[Response]] = {}
        self._port: Any = None

    @classmethod
    async def open(cls, server: tuple[str, int], local_host: str = LOCALHOST) -> SipUdpClient:
        """A client bound to a free UDP port on ``local_host`` (127.0.0.1 by default)."""
        client = cls(server, local_host)
        client._port = real_reactor().listenUDP(0, client, interface=local_host)
        return client

    async def close(self) -> None:
        """Stop listening."""
        if self._port is not None:
            port, self._port = self._port, None
            await defer.maybeDeferred(port.stopListening)

    @property
    def local_port(self) -> int:
        """The client's own port."""
        return int(self._port.getHost().port)

    def sent_by(self) -> str:
        """The ``host:port`` of our Via."""
        return f"{self.local_host}:{self.local_port}"

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Hand a final response to whoever waits for its branch."""
        try:
            message = parse_datagram(datagram)
            branch = message.top_via.param("branch")
        except SipParseError:
            return
        if not isinstance(message, Response) or message.status < 200 or branch is None:
            return
        waiting = self._pending.pop(branch, None)
        if waiting is not None:
            waiting.callback(message)

    def send_raw(self, data: bytes) -> None:
        """Send a datagram to the server as is."""
        self.transport.write(data, self.server)  # type: ignore[union-attr]

    def request(
        self,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]],
        timeout: float = 5.0,
        retransmit: bool = True,
        body: bytes = b"",
    ) -> Deferred[Response]:
        """
        Send a request (a Via with a new branch and ``rport`` goes on top, and
        ``body`` when given, with its Content-Length); fires with the final
        response or fails with ``defer.TimeoutError``.
        """
        branch = new_branch()
        via = f"SIP/2.0/UDP {self.sent_by()};branch={branch};rport"
        top = [("Via", via), ("Max-Forwards", "70"), *headers]
        if body:
            top.append(("Content-Length", str(len(body))))
        request = Request(method, uri, top, body)
        data = request.to_bytes()
        answered: Deferred[Response] = Deferred()
        self._pending[branch] = answered
        clock = real_reactor()
        interval = [self.T1]
        resend: list[Any] = []

        def again() -> None:
            self.send_raw(data)
            interval[0] = min(interval[0] * 2, self.T2)
            resend[:] = [clock.callLater(interval[0], again)]

        self.send_raw(data)
        if retransmit:
            resend.append(clock.callLater(interval[0], again))

        def finished(result: object) -> object:
            self._pending.pop(branch, None)
            for call in resend:
                if call.active():
                    call.cancel()
            return result

        answered.addTimeout(timeout, clock)
        answered.addBoth(finished)
        return answered

    def options(self, timeout: float = 5.0, retransmit: bool = True) -> Deferred[Response]:
        """OPTIONS to the server itself (RFC 3261 §11)."""
        host, port = self.server
        headers = [
            ("From", f"<sip:probe@{LOCALHOST}>;tag={new_tag()}"),
            ("To", f"<sip:{host}:{port}>"),
            ("Call-ID", f"{new_tag()}@{LOCALHOST}"),
            ("CSeq", "1 OPTIONS"),
        ]
        return self.request("OPTIONS", f"sip:{host}:{port}", headers, timeout, retransmit)

    async def register(
        self,
        user: str,
        password: str,
        contact: str | None = None,
        expires: int | None = 3600,
        timeout: float = 5.0,
    ) -> Response:
        """
        REGISTER ``user`` (RFC 3261 §10.2), answering a 401 challenge with digest
        credentials in a second request of the same Call-ID. Without ``contact``
        this is a query for the current bindings (§10.2.3). Returns the final
        response to the authenticated request (or the first one if not 401).
        """
        host, port = self.server
        uri = f"sip:{host}:{port}"
        call_id = f"{new_tag()}@{LOCALHOST}"
        common = [
            ("From", f"<sip:{user}@{host}>;tag={new_tag()}"),
            ("To", f"<sip:{user}@{host}>"),
            ("Call-ID", call_id),
        ]
        if contact is not None:
            common.append(("Contact", contact))
        if expires is not None and contact is not None:
            common.append(("Expires", str(expires)))
        response = await self.request("REGISTER", uri, [*common, ("CSeq", "1 REGISTER")], timeout)
        if response.status != 401:
            return response
        authorization = answer_challenge(
            _first_challenge(response), user, password, "REGISTER", uri
        )
        return await self.request(
            "REGISTER",
            uri,
            [*common, ("CSeq", "2 REGISTER"), ("Authorization", authorization)],
            timeout,
        )


#: The SDP a test phone answers with (PCMA on a port nobody listens to).
ANSWER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
).encode("ascii")


class NatPhone(SipUdpClient):
    """
    A phone behind a port-restricted NAT (RFC 4787 "address and port-dependent
    filtering"): it takes datagrams only from addresses it sent to (the others
    are listed in L{dropped}, with their first line), and its Via names its
    private address, as such a phone's does, so Warden sees the NAT (the
    source differs from the Via).
    It picks up every INVITE at once (200 with an answer, its Contact at the
    private address) and accepts OPTIONS, BYE and CANCEL, answering to where
    each request came from; L{requests} lists what it took, with the source.
    """

    PRIVATE = "10.0.0.5:5060"

    def __init__(self, server: tuple[str, int], local_host: str = LOCALHOST) -> None:
        super().__init__(server, local_host)
        self.tag = new_tag()
        self.sent_to: set[tuple[str, int]] = set()
        #: (source, first line) of each datagram the NAT let not in.
        self.dropped: list[tuple[tuple[str, int], str]] = []
        self.requests: list[tuple[Request, tuple[str, int]]] = []

    def sent_by(self) -> str:
        """The private address, which Warden cannot reach."""
        return self.PRIVATE

    def send_raw(self, data: bytes) -> None:
        """Send to the server, opening the NAT to it."""
        self.sent_to.add(self.server)
        super().send_raw(data)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Drop what comes from elsewhere than where we sent; answer requests."""
        source = (addr[0], addr[1])
        if source not in self.sent_to:
            first = datagram.split(b"\r\n", 1)[0].decode("ascii", "replace")
            self.dropped.append((source, first))
            return
        try:
            message = parse_datagram(datagram)
        except SipParseError:
            return
        if not isinstance(message, Request):
            super().datagramReceived(datagram, addr)
            return
        self.requests.append((message, source))
        if message.method == "INVITE":
            contact = ("Contact", f"<sip:phone@{self.PRIVATE}>")
            response = make_response(message, 200, "OK", self.tag, [contact])
            response.set_body(ANSWER_SDP, "application/sdp")
        elif message.method in ("OPTIONS", "BYE", "CANCEL"):
            response = make_response(message, 200, "OK", self.tag)
        else:
            return  # ACK
        self.transport.write(response.to_bytes(), source)  # type: ignore[union-attr]


def _first_challenge(response: Message) -> str:
    """The first MD5 WWW-Authenticate value (else the first of any algorithm)."""
    values = response.get_all("WWW-Authenticate")
    if not values:
        raise AssertionError(f"401 without WWW-Authenticate: {response.headers}")
    for value in values:
        if "algorithm=MD5" in value.replace(" ", "") or "algorithm" not in value:
            return value
    return values[0]


# -- raw TCP -------------------------------------------------------------------------


class RawTcpClient(protocol.Protocol):
    """
    A TCP connection that writes what it is told and records what comes back and
    whether (and when) the server closed it.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = False

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> RawTcpClient:
        """Connect to ``address``."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        client = cls()
        endpoint = TCP4ClientEndpoint(real_reactor(), address[0], address[1], timeout=5)
        await connectProtocol(endpoint, client)
        return client

    def dataReceived(self, data: bytes) -> None:
        """Keep what the server sends."""
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        """The server (or we) closed the connection."""
        self.lost = True

    def write(self, data: bytes) -> None:
        """Send bytes unless the connection is gone."""
        if not self.lost:
            self.transport.write(data)  # type: ignore[union-attr]

    def has_response(self) -> bool:
        """True once a complete response head arrived."""
        return self.received.startswith(b"SIP/2.0 ") and b"\r\n\r\n" in self.received

    async def close(self) -> None:
        """Close and wait (bounded) until the connection is gone."""
        if not self.lost:
            self.transport.abortConnection()  # type: ignore[union-attr]
            await poll(lambda: self.lost, 5.0, 0.01)
