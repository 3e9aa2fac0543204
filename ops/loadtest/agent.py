"""
A SIP user agent for load tests and drills, built on Warden's own SIP stack
(L{warden.sip.transport}, L{warden.sip.transaction}, L{warden.sip.dialog},
digest answers from L{warden.sip.auth.answer_challenge}).

One L{SipAgent} is one local socket (UDP, or one TCP connection to the PBX) that
serves any number of accounts at once. Every operation returns a Deferred that
fires with a result value (L{warden.ops.loadtest.results}); operations never fail
with an exception for a SIP-level problem, the result says what happened::

    agent = SipAgent(reactor, "127.0.0.1", 5060)
    await agent.start()
    alice, bob = Account("1001", "pw1"), Account("1002", "pw2")
    await agent.register(alice)
    await agent.register(bob)             # bob is now answered by this agent (UAS)
    result = await agent.place_call(alice, "1002", hold=2.0, rtp=True)
    await agent.unregister(bob)
    await agent.stop()

Registered accounts are answered as a UAS (L{warden.ops.loadtest.uas}): an INVITE
to their user gets 180 then 200 with G.711 SDP, and RTP flows back when the
agent was created with media. Calls are placed through the PBX (it is the
outbound proxy for every request): INVITE, 401/407 answered with digest
credentials (RFC 3261 §22.2, §22.3), 180, 200, ACK (§13.2.2.4), BYE (§15.1.1).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.abstract import isIPAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from warden.interfaces import ITransactionUser
from warden.sip.flow import Flow
from warden.sip.message import Message, Request, Response, new_tag
from warden.sip.timers import TimerSettings
from warden.sip.transaction import ServerTransaction, TransactionLayer
from warden.sip.transport import (
    SipDatagramProtocol,
    SipStreamProtocol,
    TransportError,
    TransportHub,
)
from warden.sip.waiter import ResponseWaiter

from .calls import OutgoingCall
from .media import MediaEngine
from .registration import Registration, Registrations, Reply, digest_ha1
from .results import Account, CallResult, RegistrationResult
from .uas import Answerer

TRANSPORTS = ("udp", "tcp")
#: Socket buffer size asked for (the kernel caps it at net.core.rmem_max/wmem_max):
#: bursts of thousands of responses must not overflow the default ~200 KB.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
#: Largest SIP message the agent accepts.
MAX_MESSAGE_BYTES = 65_535
#: The agent's TCP connection is never closed for idleness by the agent itself.
TCP_IDLE_TIMEOUT = 86_400.0


@implementer(ITransactionUser)
class SipAgent:
    """
    A SIP user agent serving many accounts from one socket.

    Args:
        reactor: opens sockets and connections (IReactorUDP, IReactorTCP).
        pbx_host: the PBX's IP address (every request goes there).
        pbx_port: the PBX's SIP port.
        transport: ``"udp"`` or ``"tcp"``.
        local_ip: the address to bind and to put in Via, Contact and SDP.
        domain: the host part of addresses of record (default: ``pbx_host``).
        clock: time source (default: ``reactor``).
        timers: T1/T2/T4 for the transactions.
        media: send and receive RTP on answered calls (UAS side too).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        pbx_host: str,
        pbx_port: int = 5060,
        transport: str = "udp",
        local_ip: str = "127.0.0.1",
        domain: str | None = None,
        clock: IReactorTime | None = None,
        timers: TimerSettings | None = None,
        media: bool = True,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}: {transport!r}")
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.pbx = (pbx_host, pbx_port)
        self.transport = transport
        self.local_ip = local_ip
        self.domain = domain or pbx_host
        self.timers = timers or TimerSettings()
        self.hub = TransportHub(self.clock, MAX_MESSAGE_BYTES, TCP_IDLE_TIMEOUT)
        self.hub.receiver = self._receive
        self.layer = TransactionLayer(self.clock, self.timers, self.hub.send, self)
        self.media = MediaEngine(self.clock, reactor, local_ip) if media else None
        self.answerer = Answerer(self)
        self.calls: dict[str, OutgoingCall] = {}
        self._port: Any = None
        self._connection: SipStreamProtocol | None = None
        #: user -> Call-ID, From tag and last CSeq of its registrations.
        self.bindings: dict[str, tuple[str, str, int]] = {}
        self.registrations = Registrations(
            self.clock, self.timers, self._send_bytes, reliable=transport != "udp"
        )
        self._ha1: dict[tuple[str, str, str, str], str] = {}
        self._datagrams: SipDatagramProtocol | None = None
        self._sendto: Callable[[bytes, tuple[str, int]], object] | None = None
        self._waiting: set[ResponseWaiter] = set()
        self._local_port: int | None = None
        self._via_host: str | None = None
        self._flow: Flow | None = None
        self.stopped = False

    # -- life cycle -----------------------------------------------------------------

    async def _start(self) -> None:
        if self.transport == "udp":
            protocol = self._datagrams = _AgentDatagramProtocol(self.hub, self.registrations)
            self._port = self.reactor.listenUDP(0, protocol, interface=self.local_ip)
            _enlarge_buffers(self._port)
            if isIPAddress(self.pbx[0]):  # else the port's write() refuses it each time
                self._sendto = _direct_sendto(self._port)
            self._learn_address(self._port.getHost().port)
            return
        endpoint = TCP4ClientEndpoint(
            self.reactor, self.pbx[0], self.pbx[1], timeout=10, bindAddress=(self.local_ip, 0)
        )
        self._connection = await connectProtocol(  # type: ignore[no-untyped-call]
            endpoint, SipStreamProtocol(self.hub)
        )
        host: Any = self._connection.transport.getHost()  # type: ignore[union-attr]
        self._learn_address(host.port)

    def _learn_address(self, port: int) -> None:
        """Remember our port and the strings built from it (every request needs them)."""
        self._local_port = int(port)
        self._via_host = f"{self.local_ip}:{self._local_port}"
        self._flow = Flow(self.transport, self.pbx[0], self.pbx[1], self._connection)

    def start(self) -> defer.Deferred[None]:
        """
        Bind the UDP socket, or connect to the PBX over TCP (fails with the
        connection error when the PBX refuses or cannot be reached).
        """
        return defer.Deferred.fromCoroutine(self._start())

    def stop(self) -> defer.Deferred[None]:
        """Close the socket or connection. Calls still up are abandoned, not hung up."""
        self.stopped = True
        self.answerer.end_all()
        self.layer.terminate_all()
        self.registrations.stop()
        for waiter in list(self._waiting):
            waiter.fail("stopped")
        if self._connection is not None:
            connection, self._connection = self._connection, None
            if connection.transport is not None:
                connection.transport.loseConnection()
            return defer.succeed(None)
        if self._port is not None:
            port, self._port, self._sendto = self._port, None, None
            return defer.maybeDeferred(port.stopListening)
        return defer.succeed(None)

    @property
    def local_port(self) -> int:
        """Our SIP port (UDP socket or the TCP connection's local end)."""
        if self._local_port is None:
            raise RuntimeError("the agent is not started")
        return self._local_port

    @property
    def connected(self) -> bool:
        """True while requests can be sent (UDP bound, or TCP connection open)."""
        if self.transport == "udp":
            return self._port is not None
        return self._connection is not None and self._connection.is_open

    @property
    def flow(self) -> Flow:
        """Where requests go: the PBX, over our socket or connection."""
        if self._flow is None:
            return Flow(self.transport, self.pbx[0], self.pbx[1], self._connection)
        return self._flow

    @property
    def via_host(self) -> str:
        """Our sent-by, ``ip:port``."""
        if self._via_host is None:
            raise RuntimeError("the agent is not started")
        return self._via_host

    def contact_uri(self, user: str) -> str:
        """The Contact URI of ``user`` at this agent."""
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@{self.via_host}{suffix}"

    def aor(self, user: str) -> str:
        """The address of record of ``user`` as a name-addr."""
        return f"<sip:{user}@{self.domain}>"

    # -- requests -------------------------------------------------------------------

    def via(self, branch: str) -> str:
        """A top Via with ``branch`` and ``rport`` (RFC 3581)."""
        return f"SIP/2.0/{self.transport.upper()} {self.via_host};branch={branch};rport"

    def send_request(self, request: Request) -> ResponseWaiter:
        """Send ``request`` to the PBX in a new client transaction."""
        waiter = ResponseWaiter()
        if not self.connected:
            waiter.fail("unreachable")
            return waiter
        self._waiting.add(waiter)
        waiter.final.addBoth(_discard, self._waiting, waiter)
        self.layer.send_request(request, self.flow, waiter)
        return waiter

    def send_stateless(self, message: Message) -> bool:
        """Send an ACK or a response outside a transaction; False when it could not go."""
        try:
            self.hub.send(message, self.flow)
        except TransportError:
            return False
        return True

    async def probe(self, timeout: float = 2.0) -> Response | None:
        """
        OPTIONS to the PBX itself (RFC 3261 §11): its response, or None when none
        came within ``timeout`` seconds.
        """
        branch = self.layer.new_branch()
        uri = f"sip:{self.pbx[0]}:{self.pbx[1]}"
        request = Request(
            "OPTIONS",
            uri,
            [
                ("Via", self.via(branch)),
                ("Max-Forwards", "70"),
                ("From", f"<sip:loadtest@{self.domain}>;tag={new_tag()}"),
                ("To", f"<{uri}>"),
                ("Call-ID", f"{secrets.token_hex(10)}@{self.local_ip}"),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        waiter = self.send_request(request)
        final = waiter.final
        final.addTimeout(timeout, self.clock, onTimeoutCancel=lambda _r, _t: None)
        return await final

    # -- registration -----------------------------------------------------------------

    def register(
        self, account: Account, expires: int = 3600
    ) -> defer.Deferred[RegistrationResult]:
        """
        Register ``account``'s contact at this agent (RFC 3261 §10.2), answering a
        401/407 challenge once. On success the agent answers INVITEs to the account.
        Refreshes reuse the Call-ID with a higher CSeq (§10.2.4).
        """
        return Registration(self, account, expires).start()

    def unregister(self, account: Account) -> defer.Deferred[RegistrationResult]:
        """Remove ``account``'s contact at this agent (Expires: 0, §10.2.2); stop answering it."""
        self.answerer.users.pop(account.user, None)
        return Registration(self, account, 0).start()

    @property
    def register_uri(self) -> str:
        """The Request-URI of REGISTER: the domain (RFC 3261 §10.2)."""
        return f"sip:{self.domain}"

    def register_bytes(
        self, user: str, branch: str, call_id: str, tag: str, cseq: int, expires: int,
        authorization: str | None = None,
    ) -> bytes:  # fmt: skip
        """A REGISTER of ``user``'s contact here; ``authorization`` is a whole header line."""
        aor = f"<sip:{user}@{self.domain}>"  # self.aor(user), without the call
        credentials = f"{authorization}\r\n" if authorization is not None else ""
        return (
            f"REGISTER sip:{self.domain} SIP/2.0\r\n"
            f"Via: {self.via(branch)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: {aor};tag={tag}\r\n"
            f"To: {aor}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <{self.contact_uri(user)}>\r\n"
            f"Expires: {expires}\r\n"
            "User-Agent: warden-loadtest\r\n"
            f"{credentials}"
            "Content-Length: 0\r\n\r\n"
        ).encode("utf-8", "surrogateescape")

    def ha1(self, account: Account, realm: str, algorithm: str) -> str:
        """H(username:realm:password), computed once per account, realm and algorithm."""
        key = (account.username, account.password, realm, algorithm)
        value = self._ha1.get(key)
        if value is None:
            value = self._ha1[key] = digest_ha1(account, realm, algorithm)
        return value

    def _send_bytes(self, data: bytes) -> None:
        """Send a request's bytes to the PBX; raises when it cannot go."""
        sendto = self._sendto
        if sendto is not None:
            # The port's own write() checks the address and retries EINTR per
            # datagram; the PBX's address was checked once, when the port was bound.
            try:
                sendto(data, self.pbx)
            except InterruptedError:
                sendto(data, self.pbx)
            except ConnectionRefusedError:
                pass  # an ICMP error of an earlier datagram, as the port's write() ignores it
        elif self._datagrams is not None and self._datagrams.transport is not None:
            self._datagrams.transport.write(data, self.pbx)
        elif self._connection is not None and self._connection.is_open:
            self._connection.send_message(data)
        else:
            raise TransportError("not connected")

    # -- calls --------------------------------------------------------------------------

    def dial(
        self, caller: Account, callee: str, rtp: bool = False
    ) -> defer.Deferred[OutgoingCall]:
        """
        Call ``callee`` (a user at the PBX's domain) as ``caller``; fires when the
        INVITE ended: answered (``call.answered``) or not (``call.result`` is final).
        """
        call = OutgoingCall(self, caller, callee, rtp)
        return defer.Deferred.fromCoroutine(call.invite())

    def hangup(self, call: OutgoingCall) -> defer.Deferred[CallResult]:
        """Send BYE on an answered call; fires with the call's result."""
        return defer.Deferred.fromCoroutine(call.bye())

    def place_call(
        self, caller: Account, callee: str, hold: float, rtp: bool = False
    ) -> defer.Deferred[CallResult]:
        """Dial, hold for ``hold`` seconds once answered, hang up: the whole call's result."""

        async def run() -> CallResult:
            call = await self.dial(caller, callee, rtp)
            if not call.answered:
                return call.result()
            await call.hold(hold)
            return await call.bye()

        return defer.Deferred.fromCoroutine(run())

    def hangup_all(self) -> defer.Deferred[list[CallResult]]:
        """BYE every answered call still up (for a clean stop)."""
        calls = [c for c in self.calls.values() if c.answered and not c.ended]
        return defer.gatherResults([defer.Deferred.fromCoroutine(c.bye()) for c in calls])

    def pause(self, seconds: float) -> defer.Deferred[None]:
        """A Deferred firing after ``seconds`` on the agent's clock."""
        return task.deferLater(self.clock, seconds, lambda: None)

    # -- ITransactionUser ---------------------------------------------------------------

    def _receive(self, message: Message, flow: Flow) -> None:
        if isinstance(message, Response) and self.registrations.reply(Reply.of(message)):
            return
        self.layer.receive(message, flow)

    def request_received(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        """A new request from the PBX: our callees' INVITEs, BYEs of either side, OPTIONS."""
        if request.method == "BYE":
            call = self.calls.get(request.call_id)
            # Through a proxy both ends of a call share the Call-ID: a BYE for our
            # caller carries the caller's tag as its To tag.
            if call is not None and call.dialog is not None:
                if request.to.tag == call.dialog.local_tag:
                    call.remote_bye(transaction, request)
                    return
        self.answerer.request_received(transaction, request, flow)

    def ack_received(self, request: Request, flow: Flow) -> None:
        """An ACK for a 2xx we sent as UAS."""
        self.answerer.ack_received(request)

    def response_received_stray(self, response: Response, flow: Flow) -> None:
        """A 2xx to our INVITE retransmitted after its transaction ended: ACK it again."""
        call = self.calls.get(response.call_id) if response.get("Call-ID") else None
        if call is not None and response.cseq.method == "INVITE" and response.status < 300:
            call.resend_ack()


class _AgentDatagramProtocol(SipDatagramProtocol):
    """The agent's UDP socket: answers to its REGISTERs are read here, the rest by the hub."""

    def __init__(self, hub: TransportHub, registrations: Registrations) -> None:
        super().__init__(hub)
        self.registrations = registrations

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """A response to a pending REGISTER ends here; other datagrams go to the hub."""
        if not self.registrations.datagram(datagram):
            super().datagramReceived(datagram, addr)


def _discard(result: object, waiting: set[ResponseWaiter], waiter: ResponseWaiter) -> object:
    waiting.discard(waiter)
    return result


def _direct_sendto(port: Any) -> Callable[[bytes, tuple[str, int]], object] | None:
    """
    The ``sendto`` of a UDP port's socket, for the REGISTER path (None when the
    port has no socket, as in tests): datagrams to the PBX skip the address
    checks of the port's ``write()``, which are the same for every one.
    """
    sock = getattr(port, "socket", None)
    sendto = getattr(sock, "sendto", None)
    return sendto if callable(sendto) else None


def _enlarge_buffers(port: Any) -> None:
    """Ask for large send and receive buffers on a UDP port's socket (best effort)."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        except OSError:
            pass
