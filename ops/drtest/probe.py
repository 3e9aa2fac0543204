"""
The proof that a restored Warden serves: SIP user agents that register with the
credentials the backup holds and call each other.

A backup keeps digest HA1 values, never passwords; HA1 is all a client needs to
answer a challenge (RFC 7616 §3.4.1: the response is computed from HA1, the
nonce and HA2). L{ProbeAgent} is a small UDP user agent built on Warden's own
SIP stack: message and parser, the transaction layer (retransmissions, the ACK
of a failed INVITE, RFC 3261 §17) and digest answers
(L{warden.sip.auth.answer_challenge_with_ha1}). It registers (answering 401),
places a call (answering 407, acknowledging the 2xx, hanging up with BYE, RFC
3261 §13, §15) and, as callee, answers INVITE with 200 and BYE with 200.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from warden.errors import SipParseError
from warden.interfaces import ITransactionUser
from warden.sip.auth import answer_challenge_with_ha1
from warden.sip.flow import Flow
from warden.sip.headers import parse_auth_params
from warden.sip.message import Message, Request, Response, make_response, new_tag
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.sip.transaction import ServerTransaction, TransactionLayer
from warden.sip.waiter import ResponseWaiter

LOCALHOST = "127.0.0.1"


class ProbeFailed(Exception):
    """The restored PBX did not do what a phone needs; the message says what."""


@attrs.frozen
class Identity:
    """An extension as the backup holds it: number, realm and HA1 per algorithm."""

    number: str
    realm: str
    ha1: Mapping[str, str]


def authorization(challenge: str, identity: Identity, method: str, uri: str) -> str:
    """
    The Authorization value answering ``challenge`` with the stored HA1.

    Raises:
        ProbeFailed: the challenge's realm or algorithm does not match what the
            backup holds.
    """
    _, params = parse_auth_params(challenge)
    algorithm = params.get("algorithm", "MD5").upper()
    realm = params.get("realm", "")
    if realm != identity.realm:
        raise ProbeFailed(
            f"extension {identity.number}: challenged for realm {realm!r}, the backup"
            f" holds credentials for {identity.realm!r}"
        )
    if algorithm not in identity.ha1:
        raise ProbeFailed(f"extension {identity.number}: no stored HA1 for {algorithm}")
    return answer_challenge_with_ha1(
        challenge, identity.number, identity.ha1[algorithm], method, uri
    )


def _pick_challenge(values: Iterable[str], identity: Identity) -> str:
    values = list(values)
    for value in values:
        _, params = parse_auth_params(value)
        if params.get("algorithm", "MD5").upper() in identity.ha1:
            return value
    if not values:
        raise ProbeFailed(f"extension {identity.number}: challenged without a challenge header")
    return values[0]


def _sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=drtest\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()


@implementer(ITransactionUser)
class ProbeAgent(protocol.DatagramProtocol):
    """
    A SIP user agent over UDP on 127.0.0.1 talking to one server. Requests go out
    in client transactions and come in through server transactions of its own
    L{TransactionLayer}, which retransmits, absorbs retransmissions and
    acknowledges failed INVITEs (RFC 3261 §17).

    Args:
        clock: for retransmissions and timeouts.
        server: the PBX's ``(host, port)``.
        identity: whose credentials to use.
    """

    def __init__(self, clock: IReactorTime, server: tuple[str, int], identity: Identity) -> None:
        self._clock = clock
        self.server = server
        self.identity = identity
        self._layer = TransactionLayer(clock, TimerSettings(), self._send_message, self)
        self._flow = Flow("udp", server[0], server[1])
        self._waiting: set[ResponseWaiter] = set()
        self.answered_calls = 0
        self.ended_calls = 0
        self.local_port = 0
        self._media_port = 0

    def bound(self, port: int) -> None:
        """Record the local port (after ``listenUDP``)."""
        self.local_port = port
        self._media_port = port + 2 if port % 2 == 0 else port + 1

    @property
    def contact(self) -> str:
        """This agent's Contact URI."""
        return f"<sip:{self.identity.number}@{LOCALHOST}:{self.local_port}>"

    def stopProtocol(self) -> None:
        """The socket is closed: end every transaction and its timers."""
        self._layer.terminate_all()
        for waiter in list(self._waiting):
            waiter.fail("closed")

    def _send_message(self, message: Message, flow: Flow) -> None:
        if self.transport is None:
            raise ConnectionError("the probe's socket is closed")
        self.transport.write(message.to_bytes(), (flow.host, flow.port))

    # -- receiving -----------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Every message goes to the transaction layer; unparsable ones are dropped."""
        try:
            self._layer.receive(parse_datagram(datagram), Flow("udp", addr[0], addr[1]))
        except SipParseError:
            return

    def request_received(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        """Answer INVITE with 200 and SDP, BYE and a few others with 200, the rest 501."""
        method = request.method
        headers: list[tuple[str, str]] = []
        body = b""
        if method == "INVITE":
            headers = [("Contact", self.contact), ("Content-Type", "application/sdp")]
            body = _sdp(self._media_port)
            self.answered_calls += 1
        elif method == "BYE":
            self.ended_calls += 1
        elif method not in ("OPTIONS", "CANCEL", "NOTIFY", "UPDATE"):
            transaction.respond(make_response(request, 501, to_tag=new_tag()))
            return
        response = make_response(request, 200, to_tag=request.to.tag or new_tag(), headers=headers)
        response.body = body
        transaction.respond(response)

    def ack_received(self, request: Request, flow: Flow) -> None:
        """The ACK for our 200 to an INVITE: nothing to do."""

    def response_received_stray(self, response: Response, flow: Flow) -> None:
        """A response to no live transaction (a late retransmission): ignored."""

    # -- sending -------------------------------------------------------------------

    def _send(
        self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"",
        timeout: float = 8.0,
    ) -> Deferred[Response]:  # fmt: skip
        """
        Send a request in a new client transaction; fires with the final response,
        or fails with TimeoutError when none came within ``timeout`` seconds (or
        the transaction timed out or could not send).
        """
        via = f"SIP/2.0/UDP {LOCALHOST}:{self.local_port};branch={self._layer.new_branch()};rport"
        request = Request(method, uri, [("Via", via), ("Max-Forwards", "70"), *headers], body)
        answered: Deferred[Response] = Deferred()

        def deliver(response: Response | None) -> None:
            self._waiting.discard(waiter)
            if answered.called:
                return
            if response is None:
                answered.errback(TimeoutError(f"{method}: {waiter.cause}"))
            else:
                answered.callback(response)

        waiter = ResponseWaiter()
        self._waiting.add(waiter)
        waiter.final.addCallback(deliver)
        answered.addTimeout(timeout, self._clock)
        self._layer.send_request(request, self._flow, waiter)
        return answered

    def _ack(self, uri: str, headers: list[tuple[str, str]]) -> None:
        """The ACK for a 2xx: a transaction of its own (RFC 3261 §13.2.2.4)."""
        via = f"SIP/2.0/UDP {LOCALHOST}:{self.local_port};branch={self._layer.new_branch()};rport"
        request = Request("ACK", uri, [("Via", via), ("Max-Forwards", "70"), *headers])
        self._send_message(request, self._flow)

    async def register(self, expires: int = 300) -> None:
        """
        REGISTER this agent's contact, answering the challenge with the stored HA1.

        Raises:
            ProbeFailed: no 200 (the message has the status), or no answer.
        """
        host, port = self.server
        uri = f"sip:{host}:{port}"
        aor = f"<sip:{self.identity.number}@{host}>"
        common = [
            ("From", f"{aor};tag={new_tag()}"), ("To", aor),
            ("Call-ID", f"{new_tag()}@{LOCALHOST}"),
            ("Contact", self.contact), ("Expires", str(expires)),
        ]  # fmt: skip
        response = await self._request_or_fail("REGISTER", uri, [*common, ("CSeq", "1 REGISTER")])
        if response.status == 401:
            challenge = _pick_challenge(response.get_all("WWW-Authenticate"), self.identity)
            auth = authorization(challenge, self.identity, "REGISTER", uri)
            response = await self._request_or_fail(
                "REGISTER", uri, [*common, ("CSeq", "2 REGISTER"), ("Authorization", auth)]
            )
        if response.status != 200:
            number, status = self.identity.number, response.status
            raise ProbeFailed(f"REGISTER of extension {number}: {status} {response.reason}")

    async def _request_or_fail(
        self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> Response:
        try:
            return await self._send(method, uri, headers, body)
        except TimeoutError:
            raise ProbeFailed(
                f"{method} from extension {self.identity.number}: no answer from"
                f" {self.server[0]}:{self.server[1]}"
            ) from None

    async def call(self, callee: str) -> None:
        """
        Call ``callee`` (INVITE with SDP), expect 200, ACK it, hang up with BYE.

        Raises:
            ProbeFailed: the call was not answered, or the BYE was not accepted.
        """
        host, port = self.server
        uri = f"sip:{callee}@{host}:{port}"
        call_id = f"{new_tag()}@{LOCALHOST}"
        from_ = f"<sip:{self.identity.number}@{host}>;tag={new_tag()}"
        to = f"<sip:{callee}@{host}>"
        common = [("From", from_), ("To", to), ("Call-ID", call_id), ("Contact", self.contact),
                  ("Content-Type", "application/sdp")]  # fmt: skip
        body = _sdp(self._media_port)
        # The transaction acknowledges a 300-699 final response itself (§17.1.1.3).
        response = await self._invite(uri, [*common, ("CSeq", "1 INVITE")], body)
        cseq = 1
        if response.status in (401, 407):
            name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
            header = "Proxy-Authorization" if response.status == 407 else "Authorization"
            auth = authorization(
                _pick_challenge(response.get_all(name), self.identity),
                self.identity,
                "INVITE",
                uri,
            )
            cseq = 2
            response = await self._invite(
                uri, [*common, ("CSeq", "2 INVITE"), (header, auth)], body
            )
        if response.status != 200:
            raise ProbeFailed(
                f"call {self.identity.number} -> {callee}: {response.status} {response.reason}"
            )
        contacts = response.contacts
        target = str(contacts[0].uri) if contacts else uri
        dialog = [h for h in self._ack_headers(common, response, cseq) if h[0] != "CSeq"]
        self._ack(target, [*dialog, ("CSeq", f"{cseq} ACK")])
        bye = await self._request_or_fail("BYE", target, [*dialog, ("CSeq", f"{cseq + 1} BYE")])
        if bye.status != 200:
            raise ProbeFailed(f"BYE {self.identity.number} -> {callee}: {bye.status} {bye.reason}")

    async def _invite(self, uri: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        try:
            return await self._send("INVITE", uri, headers, body, timeout=15.0)
        except TimeoutError:
            raise ProbeFailed(f"INVITE from extension {self.identity.number}: no answer") from None

    @staticmethod
    def _ack_headers(
        common: list[tuple[str, str]], response: Response, cseq: int
    ) -> list[tuple[str, str]]:
        to = response.get("To") or ""
        kept = [h for h in common if h[0] in ("From", "Call-ID")]
        return [*kept, ("To", to), ("CSeq", f"{cseq} ACK")]


async def open_agent(
    reactor: Any, server: tuple[str, int], identity: Identity
) -> tuple[ProbeAgent, Any]:
    """A L{ProbeAgent} listening on a free UDP port of 127.0.0.1; returns (agent, port)."""
    agent = ProbeAgent(reactor, server, identity)
    port = reactor.listenUDP(0, agent, interface=LOCALHOST)
    agent.bound(port.getHost().port)
    return agent, port


async def prove_call(
    reactor: Any, server: tuple[str, int], caller: Identity, callee: Identity
) -> None:
    """
    Register ``callee`` and ``caller`` on the PBX at ``server`` and place one call
    from the caller to the callee, which answers.

    Raises:
        ProbeFailed: any step failed (the message names it).
    """
    ports = []
    try:
        answering, port = await open_agent(reactor, server, callee)
        ports.append(port)
        calling, port = await open_agent(reactor, server, caller)
        ports.append(port)
        await answering.register()
        await calling.register()
        await calling.call(callee.number)
        if answering.answered_calls < 1:
            raise ProbeFailed(f"extension {callee.number} never saw the INVITE")
    finally:
        for port in ports:
            port.stopListening()
