"""
Warden as a registering user agent (RFC 3261 §10.2): keeps one binding alive
at a provider's registrar, for a SIP trunk.

A L{Registration} sends REGISTER in client transactions of Warden's
transaction layer, answers a 401/407 challenge once per attempt with digest
credentials (RFC 3261 §22.2, RFC 7616), follows a 423 to the registrar's
Min-Expires (§10.2.8), refreshes the binding before it expires (at 80% of the
granted lifetime), and after a failure (a refusal, a challenge its
credentials do not satisfy, no answer, a garbled answer) tries again after an
exponentially growing back-off. When the registrar has several servers (RFC
3263 SRV targets), a server that does not answer, cannot be reached or
answers 5xx is followed at once by the next one for the same registration
(§4.3), each server once per attempt.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from enum import Enum
from typing import Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from warden.digits import parse_uint
from warden.errors import SipParseError
from warden.interfaces import IClientTransactionUser
from warden.sip.auth import answer_challenge, pick_challenge
from warden.sip.flow import Flow
from warden.sip.message import Request, Response, new_tag
from warden.sip.waiter import ResponseWaiter

__all__ = ["Registration", "RegistrationSettings", "RegistrationState"]

#: The share of the granted lifetime after which the binding is refreshed.
REFRESH_SHARE = 0.8
#: The longest lifetime accepted from a 423's Min-Expires, in seconds.
MAX_EXPIRES = 86400


class RegistrationState(Enum):
    """Where a registration is."""

    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


class Transactions(Protocol):
    """What a registration needs of the transaction layer."""

    def new_branch(self) -> str:
        """A fresh Via branch."""

    def send_request(self, request: Request, flow: Flow, user: IClientTransactionUser) -> object:
        """Send ``request`` in a new client transaction."""


@attrs.frozen
class RegistrationSettings:
    """
    One registration.

    Attributes:
        flow: where REGISTER goes (the registrar's address).
        domain: the registrar's domain: Request-URI ``sip:domain`` and AOR host.
        username: the AOR's user and the digest user.
        password: the digest password (never logged).
        expires: the lifetime asked for, in seconds.
        backoff_first: seconds before the first retry after a failure; doubles.
        backoff_max: the longest wait between retries.
        algorithms: the digest algorithms answered (None: the first challenge,
            whatever its algorithm; FIPS mode: SHA-256 only, an MD5-only
            registrar is a failure).
    """

    flow: Flow
    domain: str
    username: str
    password: str = attrs.field(repr=False)
    expires: int = 3600
    backoff_first: float = 10.0
    backoff_max: float = 600.0
    algorithms: tuple[str, ...] | None = None


class Registration:
    """
    Keeps one binding registered at a provider.

    Args:
        clock: for refreshes and back-off.
        transactions: sends REGISTER (the transaction layer).
        via_host: ``flow -> host:port``, Warden's address as the registrar sees it.
        settings: what to register where.
        on_change: called after each change of L{state} or L{last_error}.
        on_failure: called with the reason (``timeout``, ``transport``,
            ``rejected``, ``auth``) of each failed attempt.
        open_flow: the flow to send on for the settings' flow (a TCP
            connection to the registrar, opened when there is none).
        next_flow: the registrar's next server after the one of a flow that
            failed (time-out, transport, 5xx), or None when there is none.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        transactions: Transactions,
        via_host: Callable[[Flow], str],
        settings: RegistrationSettings,
        on_change: Callable[[Registration], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        open_flow: Callable[[Flow], Flow] | None = None,
        next_flow: Callable[[Flow], Flow | None] | None = None,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self._transactions = transactions
        self._via_host = via_host
        self._on_change = on_change
        self._on_failure = on_failure
        self._open_flow = open_flow
        self._next_flow = next_flow
        #: The server registered at (the settings' flow, or the next ones).
        self.flow = settings.flow
        self._tried: set[tuple[str, str, int]] = set()
        self.state = RegistrationState.UNREGISTERED
        self.last_error = ""
        #: When the binding expires (clock time), while registered.
        self.expires_at: float | None = None
        self.failures = 0
        self._call_id = f"{secrets.token_hex(12)}@warden"
        self._tag = new_tag()
        self._cseq = 0
        self._expires = settings.expires
        self._timer: IDelayedCall | None = None
        self._running = False
        self._attempt = 0

    @property
    def aor(self) -> str:
        """The address of record registered."""
        return f"sip:{self.settings.username}@{self.settings.domain}"

    def start(self) -> None:
        """Register now, and keep the binding alive until L{stop}."""
        if self._running:
            return
        self._running = True
        self._register()

    def stop(self) -> None:
        """Stop refreshing; remove the binding (Expires: 0) if it is registered."""
        self._running = False
        self._cancel_timer()
        if self.state is RegistrationState.REGISTERED:
            self._send(0, None, ResponseWaiter())
        self._attempt += 1  # answers to earlier REGISTERs change nothing now
        self._set(RegistrationState.UNREGISTERED, self.last_error)
        self.expires_at = None

    # -- sending ------------------------------------------------------------------

    def _register(self) -> None:
        self._timer = None
        if not self._running:
            return
        if self.state is not RegistrationState.REGISTERED:
            self._set(RegistrationState.REGISTERING, self.last_error)
        self._attempt += 1
        self._tried = set()
        self._try(self._attempt, None)

    def _try(self, attempt: int, authorization: tuple[str, str] | None) -> None:
        waiter = ResponseWaiter()
        waiter.final.addCallback(self._answered, waiter, attempt, authorization is not None)
        waiter.final.addErrback(
            lambda f: self.log.failure("Registration of {aor} failed", f, aor=self.aor)
        )
        self._send(self._expires, authorization, waiter)

    def _send(
        self, expires: int, authorization: tuple[str, str] | None, waiter: ResponseWaiter
    ) -> None:
        s = self.settings
        self._cseq += 1
        flow = self.flow if self._open_flow is None else self._open_flow(self.flow)
        host = self._via_host(flow)
        transport = "" if flow.transport == "udp" else f";transport={flow.transport}"
        aor = f"<{self.aor}>"
        headers = [
            ("Via", f"SIP/2.0/{flow.transport.upper()} {host};branch="
                    f"{self._transactions.new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"{aor};tag={self._tag}"),
            ("To", aor),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<sip:{s.username}@{host}{transport}>"),
            ("Expires", str(expires)),
        ]  # fmt: skip
        if authorization is not None:
            headers.append(authorization)
        request = Request("REGISTER", self._request_uri, headers)
        try:
            self._transactions.send_request(request, flow, waiter)
        except Exception as e:  # an I/O boundary: the socket refused it
            waiter.fail(f"transport ({e})")

    @property
    def _request_uri(self) -> str:
        # RFC 5630 §3.2: sip: over TLS hop by hop, the transport named.
        tls = ";transport=tls" if self.flow.transport == "tls" else ""
        return f"sip:{self.settings.domain}{tls}"

    # -- answers ------------------------------------------------------------------

    def _answered(
        self, response: Response | None, waiter: ResponseWaiter, attempt: int, answered: bool
    ) -> None:
        if attempt != self._attempt or not self._running:
            return
        if response is None:
            cause = waiter.cause or "timeout"
            reason = "timeout" if cause == "timeout" else "transport"
            if not self._fail_over(reason, attempt):
                self._failed(reason, f"no answer ({cause})")
            return
        status = response.status
        if status >= 500 and self._fail_over("rejected", attempt):
            return
        try:
            if 200 <= status < 300:
                self._registered(response)
            elif status in (401, 407):
                self._challenged(response, attempt, answered)
            elif status == 423:
                self._too_brief(response, attempt)
            else:
                self._failed("rejected", f"{status} {response.reason}")
        except SipParseError:
            self._failed("rejected", f"unreadable {status} answer")

    def _registered(self, response: Response) -> None:
        granted = self._granted(response)
        if granted <= 0:
            self._failed("rejected", "the registrar kept no binding")
            return
        self.failures = 0
        self.expires_at = self.clock.seconds() + granted
        self._set(RegistrationState.REGISTERED, "")
        self._schedule(max(1.0, granted * REFRESH_SHARE))

    def _granted(self, response: Response) -> int:
        """The lifetime the registrar granted our contact (RFC 3261 §10.2.4)."""
        host, _, port = self._via_host(self.flow).rpartition(":")
        for contact in response.contacts:
            uri = contact.uri
            if (uri.user, uri.host, str(uri.port)) == (self.settings.username, host, port):
                value = contact.param("expires")
                seconds = parse_uint(value, MAX_EXPIRES * 10) if value is not None else None
                if seconds is not None:
                    return min(seconds, self._expires)
        value = response.get("Expires")
        seconds = parse_uint(value.strip(), MAX_EXPIRES * 10) if value is not None else None
        return min(seconds, self._expires) if seconds is not None else self._expires

    def _challenged(self, response: Response, attempt: int, answered: bool) -> None:
        status = response.status
        name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        challenges = response.get_all(name)
        if answered or not challenges:
            self._failed("auth", f"{status} {response.reason}: credentials refused")
            return
        chosen = pick_challenge(challenges, self.settings.algorithms)
        if chosen is None:
            self._failed(
                "auth",
                f"{status}: the registrar offers no {'/'.join(self.settings.algorithms or ())}"
                " digest challenge (FIPS mode refuses MD5)",
            )
            return
        try:
            value = answer_challenge(
                chosen, self.settings.username, self.settings.password, "REGISTER",
                self._request_uri,
            )  # fmt: skip
        except (SipParseError, KeyError, ValueError):
            self._failed("auth", f"{status}: unreadable challenge")
            return
        header = "Proxy-Authorization" if status == 407 else "Authorization"
        self._try(attempt, (header, value))

    def _too_brief(self, response: Response, attempt: int) -> None:
        value = response.get("Min-Expires")
        minimum = parse_uint(value.strip(), MAX_EXPIRES) if value is not None else None
        if minimum is None or minimum <= self._expires:
            self._failed("rejected", "423 without a usable Min-Expires")
            return
        self._expires = minimum
        self._try(attempt, None)

    def _fail_over(self, reason: str, attempt: int) -> bool:
        """
        Send the attempt's REGISTER to the registrar's next server (RFC 3263
        §4.3), one not tried yet in this attempt; False when there is none.
        """
        if self._next_flow is None:
            return False
        self._tried.add(_key(self.flow))
        flow = self._next_flow(self.flow)
        if flow is None or _key(flow) in self._tried:
            return False
        if self._on_failure is not None:
            self._on_failure(reason)
        self.log.info(
            "Registration of {aor}: {server} failed ({reason}), trying {next}",
            aor=self.aor, server=str(self.flow), reason=reason, next=str(flow),
        )  # fmt: skip
        self.flow = flow
        self._try(attempt, None)
        return True

    def _failed(self, reason: str, error: str) -> None:
        """Record the failure and try again after the back-off."""
        s = self.settings
        self.failures += 1
        self.expires_at = None
        self._set(RegistrationState.FAILED, error)
        if self._on_failure is not None:
            self._on_failure(reason)
        delay = min(s.backoff_max, s.backoff_first * 2 ** min(self.failures - 1, 30))
        self._schedule(delay)

    # -- helpers ------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(delay, self._register)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _set(self, state: RegistrationState, error: str) -> None:
        changed = (state, error) != (self.state, self.last_error)
        self.state, self.last_error = state, error
        if changed and self._on_change is not None:
            self._on_change(self)


def _key(flow: Flow) -> tuple[str, str, int]:
    return (flow.transport, flow.host, flow.port)
