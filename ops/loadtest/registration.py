"""
REGISTER without the general SIP stack: the load generator's hot path.

A registration is two non-INVITE client transactions (RFC 3261 §17.1.2): the
REGISTER, its 401/407 challenge, the REGISTER with digest credentials (§22.2,
§22.3), its final response. At thousands a second the general stack's parts
(a L{warden.sip.message.Request} built and serialised, a transaction object
and its reactor timers, every response fully parsed, a coroutine per
registration) cost more than the exchange itself, so here:

- requests are formatted straight to bytes;
- a response is read with bytes operations (L{parse_reply}): only the status,
  the top Via's branch, Call-ID, CSeq, the challenges, Contact and
  (Min-)Expires, bounded and checked (numbers ASCII digits, the branch,
  Call-ID and CSeq ASCII); one that belongs to a pending REGISTER but is malformed ends that
  registration as ``bad-response``, never raises;
- retransmission (Timer E) and time-out (Timer F) timers of every transaction
  share one L{TimerWheel};
- a registration is a small state machine with one Deferred, fired once.

Responses that match no pending REGISTER (answers to INVITE, BYE, OPTIONS,
late retransmissions) go to the general stack as before.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from warden.digits import parse_uint
from warden.errors import SipParseError
from warden.sip.auth import answer_params_with_ha1, digest_hex
from warden.sip.headers import parse_auth_params
from warden.sip.message import Response, new_tag
from warden.sip.timers import TimerSettings

from .results import Account, RegistrationResult
from .wheel import Timer, TimerWheel

if TYPE_CHECKING:
    from .agent import SipAgent

#: Most header lines read from one response.
MAX_HEADER_LINES = 128
#: Most attempts of one registration: challenge, and one 423 retry with its challenge.
ATTEMPTS = 4
#: Seconds: a wheel timer fires within this of its time or later, never earlier.
_TIME_SLACK = 1e-3
#: The start of a response's status line.
_STATUS_LINE = b"SIP/2.0 "
#: Header names read (long and compact forms, lower case) and what they are kept as.
_WANTED = {
    b"via": "via", b"v": "via", b"call-id": "call-id", b"i": "call-id", b"cseq": "cseq",
    b"www-authenticate": "www-authenticate", b"proxy-authenticate": "proxy-authenticate",
    b"contact": "contact", b"m": "contact", b"expires": "expires", b"min-expires": "min-expires",
}  # fmt: skip
#: Header names as registrars usually spell them, looked up before lower-casing:
#: what is read (as in L{_WANTED}), and common ones that are not ("").
_SPELLED = {
    b"Via": "via", b"v": "via", b"Call-ID": "call-id", b"i": "call-id", b"CSeq": "cseq",
    b"WWW-Authenticate": "www-authenticate", b"Proxy-Authenticate": "proxy-authenticate",
    b"Contact": "contact", b"m": "contact", b"Expires": "expires", b"Min-Expires": "min-expires",
    b"From": "", b"f": "", b"To": "", b"t": "", b"Content-Length": "", b"l": "", b"Server": "",
    b"User-Agent": "", b"Date": "", b"Allow": "", b"Supported": "", b"Accept": "",
}  # fmt: skip


class Reply:
    """
    What the registration path reads from a response. ``problem`` says what is
    wrong with it when it cannot be used (the other fields may then be partial).
    """

    __slots__ = (
        "branch",
        "call_id",
        "challenges",
        "contacts",
        "cseq",
        "expires",
        "method",
        "min_expires",
        "problem",
        "status",
    )  # fmt: skip

    def __init__(self) -> None:
        self.status = 0
        self.branch: str | None = None
        self.call_id: str | None = None
        self.cseq: int | None = None
        self.method: str | None = None
        self.challenges: tuple[str, ...] = ()
        self.contacts: tuple[str, ...] = ()
        self.expires: int | None = None
        self.min_expires: int | None = None
        self.problem: str | None = None

    @classmethod
    def of(cls, response: Response) -> Reply:
        """The same reading of a response the general stack parsed (stream transports)."""
        reply = cls()
        reply.status = response.status
        try:
            reply.branch = response.vias[0].branch
            reply.call_id = response.call_id
            reply.cseq, reply.method = response.cseq.number, response.cseq.method
            name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
            reply.challenges = tuple(response.get_all(name))
            reply.contacts = tuple(response.get_all("Contact"))
            reply.expires = _number(response.get("Expires"))
            reply.min_expires = _number(response.get("Min-Expires"))
        except (SipParseError, IndexError) as e:
            reply.problem = str(e) or "unreadable headers"
        return reply

    def granted(self, contact_uri: str) -> int | None:
        """
        The expiry given to ``contact_uri`` (its Contact's ``expires``, else the
        Expires header: RFC 3261 §10.2.4), when the response says.
        """
        mine = f"<{contact_uri}>"
        for value in self.contacts:
            at = value.find(mine)
            if at < 0:
                continue
            params = value[at + len(mine) :].split(",", 1)[0]
            for param in params.split(";")[1:]:
                key, _, number = param.partition("=")
                if key.strip().lower() == "expires":
                    return _number(number.strip())
        return self.expires


def _number(text: str | None) -> int | None:
    """A non-negative 32-bit number in ASCII digits, else None."""
    return None if text is None else parse_uint(text.strip(), 2**32 - 1, max_digits=10)


def parse_reply(data: bytes) -> Reply | None:
    """
    Read a response from a datagram's bytes; None when ``data`` is not a SIP
    response at all. Never raises: what is wrong is in ``problem``.
    """
    if not data.startswith(_STATUS_LINE):
        return None
    reply = Reply()
    end = data.find(b"\r\n\r\n")
    if end < 0:
        reply.problem = "no end of header"
        end = len(data)
    lines = data[:end].split(b"\r\n", MAX_HEADER_LINES + 1)
    if len(lines) > MAX_HEADER_LINES:
        reply.problem = "too many header lines"
        lines = lines[:MAX_HEADER_LINES]
    code = lines[0][8:12]
    if len(code) >= 3 and code[:3].isdigit() and (len(code) == 3 or code[3:] == b" "):
        reply.status = int(code[:3])
    if not 100 <= reply.status <= 699:
        reply.status = 0
        reply.problem = "bad status line"
    values: dict[str, list[bytes]] = {}
    last: list[bytes] | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        key = _SPELLED.get(name) if colon else None
        if key is not None:
            if key:
                last = values.setdefault(key, [])
                last.append(value.strip())
            else:
                last = None
            continue
        if line[:1] in (b" ", b"\t"):  # a folded line continues the header above
            if last is not None:
                last[-1] += b" " + line.strip()
            continue
        key = _WANTED.get(name.lower()) if colon else None
        if key is None and colon and name[-1:] in (b" ", b"\t"):  # "Via :" is allowed too
            key = _WANTED.get(name.rstrip().lower())
        if key is None:
            last = None
            if not colon:
                reply.problem = "header line without a colon"
            continue
        last = values.setdefault(key, [])
        last.append(value.strip())
    _read_headers(reply, values)
    return reply


def _read_headers(reply: Reply, values: dict[str, list[bytes]]) -> None:
    vias = values.get("via")
    if vias:
        for param in vias[0].split(b",", 1)[0].split(b";")[1:]:
            key, _, value = param.partition(b"=")
            if key.strip().lower() == b"branch":
                branch = value.strip()
                if branch.isascii():
                    reply.branch = branch.decode("ascii")
                break
    call_ids = values.get("call-id")
    if call_ids and call_ids[0].isascii():
        reply.call_id = call_ids[0].decode("ascii")
    cseqs = values.get("cseq")
    if cseqs:
        number, _, method = cseqs[0].partition(b" ")
        if number.isdigit() and len(number) <= 10 and method.strip().isascii():
            reply.cseq = int(number)
            reply.method = method.strip().decode("ascii")
    if reply.branch is None or reply.call_id is None or reply.cseq is None:
        reply.problem = reply.problem or "no branch, Call-ID or CSeq"
        return
    challenges = values.get("proxy-authenticate" if reply.status == 407 else "www-authenticate")
    reply.challenges = _texts(challenges)
    reply.contacts = _texts(values.get("contact"))
    # An odd expiry is not used, as if absent: it must not fail a good registration.
    expires, min_expires = values.get("expires"), values.get("min-expires")
    if expires:
        reply.expires = _number(expires[0].decode("latin-1"))
    if min_expires:
        reply.min_expires = _number(min_expires[0].decode("latin-1"))


def _texts(values: list[bytes] | None) -> tuple[str, ...]:
    """``values`` as text (bytes that are not UTF-8 kept as surrogates, as the stack does)."""
    return tuple(v.decode("utf-8", "surrogateescape") for v in values or ())


class Exchange:
    """One REGISTER transaction in flight (RFC 3261 §17.1.2)."""

    __slots__ = ("call_id", "cseq", "data", "deadline", "done", "interval", "proceeding", "timer")

    def __init__(
        self, data: bytes, call_id: str, cseq: int, done: Callable[[Reply | None, str], None],
        deadline: float,
    ) -> None:  # fmt: skip
        self.data = data
        self.call_id = call_id
        self.cseq = cseq
        self.done = done
        self.deadline = deadline
        self.interval = 0.0
        self.proceeding = False
        self.timer: Timer | None = None


class Registrations:
    """
    REGISTER transactions of one agent: sends their bytes with ``send``
    (retransmitted unless ``reliable``), matches responses by branch, times out.

    Args:
        clock: time source of the timer wheel.
        timers: T1, T2.
        send: puts bytes on the wire; raises OSError (or any Exception) when it cannot.
        reliable: the transport is a stream (no retransmissions, §17.1.2.2).
    """

    def __init__(
        self,
        clock: IReactorTime,
        timers: TimerSettings,
        send: Callable[[bytes], None],
        reliable: bool,
    ) -> None:
        self.wheel = TimerWheel(clock)
        self.timers = timers
        self.send = send
        self.reliable = reliable
        self.pending: dict[str, Exchange] = {}
        self.malformed = 0
        self._branch_prefix = "z9hG4bK" + secrets.token_hex(6)
        self._branches = 0

    def new_branch(self) -> str:
        """A branch unique to this agent (the magic cookie, random, a counter: §8.1.1.7)."""
        self._branches += 1
        return f"{self._branch_prefix}{self._branches:x}"

    def start(
        self, data: bytes, branch: str, call_id: str, cseq: int,
        done: Callable[[Reply | None, str], None],
    ) -> None:  # fmt: skip
        """
        Send ``data`` (a REGISTER with ``branch``); ``done(reply, "")`` gets its
        final response, ``done(None, cause)`` its failure: ``timeout``,
        ``transport``, ``bad-response``, ``stopped``.
        """
        try:
            self.send(data)
        except Exception:
            done(None, "transport")
            return
        timeout = 64 * self.timers.t1  # Timer F
        exchange = Exchange(data, call_id, cseq, done, self.wheel.clock.seconds() + timeout)
        self.pending[branch] = exchange
        # One wheel timer per transaction: the next retransmission (Timer E), or
        # Timer F when no retransmission comes first (always, over a stream).
        exchange.interval = timeout if self.reliable else self.timers.t1
        exchange.timer = self.wheel.schedule(exchange.interval, lambda: self._timer(branch))

    def datagram(self, data: bytes) -> bool:
        """Take ``data`` when it answers a pending REGISTER; False otherwise."""
        reply = parse_reply(data)
        return reply is not None and self.reply(reply)

    def reply(self, reply: Reply) -> bool:
        """Take ``reply`` when it answers a pending REGISTER; False otherwise."""
        exchange = self.pending.get(reply.branch) if reply.branch is not None else None
        if exchange is None or (reply.method is not None and reply.method != "REGISTER"):
            return False
        if reply.problem is None and (
            reply.call_id != exchange.call_id or reply.cseq != exchange.cseq
        ):
            reply.problem = "Call-ID or CSeq not those of the request"
        if reply.problem is not None:
            self.malformed += 1
            self._end(reply.branch, None, "bad-response")  # type: ignore[arg-type]
        elif reply.status < 200:
            exchange.proceeding = True
        else:
            self._end(reply.branch, reply, "")  # type: ignore[arg-type]
        return True

    def stop(self) -> None:
        """End every pending REGISTER as ``stopped``; no timer is left."""
        pending, self.pending = self.pending, {}
        self.wheel.clear()
        for exchange in pending.values():
            exchange.done(None, "stopped")

    def _timer(self, branch: str) -> None:
        """
        Timer F: time out. Timer E: retransmit, the interval doubling up to T2
        (T2 once provisional, §17.1.2.2), the last one cut short by Timer F.
        """
        exchange = self.pending.get(branch)
        if exchange is None:
            return
        left = exchange.deadline - self.wheel.clock.seconds()
        if left <= _TIME_SLACK:
            self._end(branch, None, "timeout")
            return
        try:
            self.send(exchange.data)
        except Exception:
            pass  # the next retransmission or Timer F decides
        t2 = self.timers.t2
        exchange.interval = t2 if exchange.proceeding else min(2 * exchange.interval, t2)
        exchange.timer = self.wheel.schedule(
            min(exchange.interval, left), lambda: self._timer(branch)
        )

    def _end(self, branch: str, reply: Reply | None, cause: str) -> None:
        exchange = self.pending.pop(branch, None)
        if exchange is None:
            return
        if exchange.timer is not None:
            self.wheel.cancel(exchange.timer)
        exchange.done(reply, cause)


class Registration:
    """
    One registration of ``account`` through ``agent`` (RFC 3261 §10.2): answers
    one 401/407 challenge, and one 423 with the registrar's Min-Expires (§10.2.8).
    Refreshes reuse the Call-ID with a higher CSeq (§10.2.4). ``deferred`` fires
    with the L{RegistrationResult}.
    """

    def __init__(self, agent: SipAgent, account: Account, expires: int) -> None:
        self.agent = agent
        self.account = account
        self.expires = expires
        self.deferred: defer.Deferred[RegistrationResult] = defer.Deferred()
        self.started = agent.clock.seconds()
        self.statuses: list[int] = []
        self.authorization: str | None = None
        self.auth_started: float | None = None
        self.raised = False
        self.attempts = 0
        self.branch = ""
        state = agent.bindings.get(account.user)
        if state is None:
            state = (f"{secrets.token_hex(10)}@{agent.local_ip}", new_tag(), 0)
        self.call_id, self.tag, _ = state

    def start(self) -> defer.Deferred[RegistrationResult]:
        """Send the first REGISTER."""
        if not self.agent.connected:
            self._finish(None, "unreachable")
        else:
            self._send()
        return self.deferred

    def _send(self) -> None:
        agent, user = self.agent, self.account.user
        # Take the next CSeq now: a refresh may start before this one ends.
        cseq = agent.bindings.get(user, (self.call_id, self.tag, 0))[2] + 1
        agent.bindings[user] = (self.call_id, self.tag, cseq)
        self.attempts += 1
        branch = agent.registrations.new_branch()
        data = agent.register_bytes(user, branch, self.call_id, self.tag, cseq, self.expires,
                                    self.authorization)  # fmt: skip
        if self.authorization is not None:
            self.auth_started = agent.clock.seconds()
        agent.registrations.start(data, branch, self.call_id, cseq, self._reply)

    def _reply(self, reply: Reply | None, cause: str) -> None:
        if reply is None:
            self._finish(None, cause)
            return
        status = reply.status
        self.statuses.append(status)
        if self.attempts < ATTEMPTS:
            if status in (401, 407) and self.authorization is None:
                if not reply.challenges:
                    self._finish(reply, str(status))
                    return
                self.authorization = self._answer(reply)
                if self.authorization is None:
                    self._finish(reply, "bad-challenge")
                    return
                self._send()
                return
            minimum = reply.min_expires if status == 423 else None
            if minimum is not None and minimum <= 2**31 and self.expires < minimum:
                if not self.raised:
                    # §10.2.8: Interval Too Brief; ask again with the registrar's minimum.
                    self.expires, self.raised, self.authorization = minimum, True, None
                    self._send()
                    return
        self._finish(reply, "" if 200 <= status < 300 else str(status))

    def _answer(self, reply: Reply) -> str | None:
        """The credentials answering the first challenge, MD5 preferred; None if unusable."""
        values = reply.challenges
        chosen = next(
            (v for v in values if "ALGORITHM=MD5" in v.upper().replace(" ", "")), values[0]
        )
        name = "Proxy-Authorization" if reply.status == 407 else "Authorization"
        try:
            _, params = parse_auth_params(chosen)
            algorithm = params.get("algorithm", "MD5").upper()
            ha1 = self.agent.ha1(self.account, params["realm"], algorithm)
            value = answer_params_with_ha1(params, self.account.username, ha1, "REGISTER",
                                           self.agent.register_uri)  # fmt: skip
        except (SipParseError, KeyError, ValueError):
            return None
        return f"{name}: {value}"

    def _finish(self, reply: Reply | None, cause: str) -> None:
        agent = self.agent
        now = agent.clock.seconds()
        ok = reply is not None and 200 <= reply.status < 300
        user = self.account.user
        if ok and self.expires > 0:
            agent.answerer.users[user] = self.account
        elif self.expires == 0:
            agent.bindings.pop(user, None)
        granted = reply.granted(agent.contact_uri(user)) if ok and reply is not None else None
        self.deferred.callback(
            RegistrationResult(
                user=user,
                ok=ok,
                status=reply.status if reply is not None else None,
                cause=None if ok else (cause or "bad-response"),
                started=self.started,
                duration=now - self.started,
                auth_duration=now - self.auth_started if self.auth_started is not None else None,
                statuses=tuple(self.statuses),
                expires=granted,
            )
        )


def digest_ha1(account: Account, realm: str, algorithm: str) -> str:
    """H(username:realm:password) for ``algorithm`` (RFC 7616 §3.4.2)."""
    return digest_hex(algorithm, f"{account.username}:{realm}:{account.password}")
