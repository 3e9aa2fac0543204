"""
Calls to a target outside Warden (a SIP trunk to an ITSP) instead of an
extension's phones.

A call hook sets L{warden.sip.hooks.CallAttempt.target} before routing to a
L{RouteTarget}: the number to send and the L{Destination}s to try in order.
The B2BUA then rings one destination at a time (L{ExternalLegs}), as the UAC
of a B leg whose From and P-Asserted-Identity carry the destination's caller
ID (RFC 3325 §9.1):

- a 401 or 407 from the destination is answered once with its credentials
  (RFC 3261 §22.2: the same Call-ID and From tag, the next CSeq);
- a 5xx, a 408, no answer at all within the destination's ``timeout`` (not
  even 100 Trying), a transport failure or a challenge that cannot be
  answered tries the next destination (failover); any other final answer
  (busy, declined, not found) is the callee's and ends the attempt;
- the ring timer of the call bounds the whole attempt, as for an extension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.logger import Logger

from warden.errors import SipParseError
from warden.model import Binding, Extension, Route
from warden.sip.auth import answer_challenge, pick_challenge
from warden.sip.dialog import Dialog, DialogState
from warden.sip.flow import Flow
from warden.sip.headers import name_addr
from warden.sip.message import Request, Response, new_tag

if TYPE_CHECKING:  # pragma: no cover
    from warden.sip.b2bua import CallController
    from warden.sip.call import Branch, Call

__all__ = ["Destination", "ExternalLegs", "RouteTarget", "TargetEvents", "failure_reason"]


_log = Logger()


@attrs.frozen
class Destination:
    """
    One place an external call may go.

    Attributes:
        name: the trunk's name (metrics, events).
        flow: where the INVITE is sent (the provider's address).
        uri: the Request-URI (``sip:NUMBER@host:port``).
        domain: the host of the From, To and P-Asserted-Identity URIs.
        caller_id: the user of the From and P-Asserted-Identity URIs.
        username: digest user answering the destination's challenges ("": none).
        password: its password (never logged, never shown).
        timeout: seconds the destination has to answer at all before the next
            one is tried.
        algorithms: the digest algorithms answered (None: the first challenge,
            whatever its algorithm; FIPS mode: SHA-256 only, and an MD5-only
            challenge fails the destination over to the next).
        connect: gives ``flow`` its connection (TCP, TLS) when the INVITE is
            about to go there, so only a destination that is tried is
            connected to (None: ``flow`` as it is).
    """

    name: str
    flow: Flow
    uri: str
    domain: str
    caller_id: str
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    timeout: float = 5.0
    algorithms: tuple[str, ...] | None = None
    connect: Callable[[Flow], Flow] | None = attrs.field(default=None, eq=False, repr=False)


class TargetEvents(Protocol):
    """Who hears how each destination of a target fares (the trunks plugin)."""

    def tried(self, destination: Destination) -> None:
        """An INVITE went to ``destination``."""

    def failed(self, destination: Destination, reason: str) -> None:
        """``destination`` failed (L{failure_reason}); the next one may be tried."""


@attrs.define(eq=False)
class RouteTarget:
    """
    Where a call goes instead of an extension: ``number`` at the first of
    ``destinations`` that takes it.

    Attributes:
        number: the number sent (after the route's rewriting).
        destinations: tried in order.
        events: told of each try and failure (optional).
        index: the destination being tried.
        challenged: the current destination's challenge was answered once.
    """

    number: str
    destinations: tuple[Destination, ...]
    events: TargetEvents | None = None
    index: int = 0
    challenged: bool = False

    @property
    def current(self) -> Destination:
        """The destination being tried."""
        return self.destinations[self.index]

    def route(self) -> Route:
        """
        The route the B2BUA rings: a callee standing for the external number,
        and one binding for the first destination (the next ones follow only
        when it fails).
        """
        callee = Extension(self.number, "", "", "", "")
        return Route(0, "", callee, (self.binding(),))

    def binding(self) -> Binding:
        """A binding standing for the current destination (its flow and URI)."""
        destination = self.current
        return Binding(
            aor=self.number,
            contact=destination.uri,
            key=destination.uri,
            expires_at=math.inf,
            received=str(destination.flow),
        )

    def advance(self) -> bool:
        """Move to the next destination; False when there is none."""
        if self.index + 1 >= len(self.destinations):
            return False
        self.index += 1
        self.challenged = False
        return True


def failure_reason(status: int) -> str | None:
    """
    Why a destination that answered ``status`` (0: nothing, transport
    failure) failed, when the next destination should be tried: ``timeout``,
    ``server_error`` or ``auth``; None for the callee's own answer (busy,
    declined, not found), which ends the attempt.
    """
    if status in (0, 408):
        return "timeout"
    if 500 <= status < 600:
        return "server_error"
    if status in (401, 407):
        return "auth"
    return None


class ExternalLegs:
    """
    The B legs of calls to a L{RouteTarget}, for the call controller.

    Args:
        controller: the B2BUA (clock, addressing, transactions, branch building).
    """

    def __init__(self, controller: CallController) -> None:
        self.controller = controller

    def make_branch(self, call: Call, binding: Binding, offer: bytes) -> Branch:
        """The INVITE to the target's current destination."""
        target = call.attempt.target
        assert target is not None
        destination = target.current
        controller = self.controller
        flow = destination.flow
        if destination.connect is not None:
            flow = destination.connect(flow)
        identity = f"sip:{destination.caller_id}@{destination.domain}"
        dialog = Dialog(
            call_id=f"{call.call_id}-{len(call.branches)}",
            local_tag=new_tag(),
            remote_tag=None,
            local_party=name_addr(call.caller.name, identity),
            remote_party=f"<sip:{target.number}@{destination.domain}>",
            local_cseq=0,
            remote_cseq=None,
            remote_target=destination.uri,
            route_set=[],
            flow=flow,
            local_contact=controller.contact_for(flow),
            via_host=controller.via_for(flow),
        )
        return controller.build_branch(call, binding, dialog, offer)

    def sent(self, call: Call, branch: Branch) -> None:
        """
        The INVITE went out: the destination has its ``timeout`` to answer at
        all (100 Trying included), or the next one is tried.
        """
        target = call.attempt.target
        assert target is not None
        destination = target.current
        if target.events is not None and not target.challenged:
            target.events.tried(destination)
        self.controller.clock.callLater(destination.timeout, self._silent, call, branch)

    @staticmethod
    def _silent(call: Call, branch: Branch) -> None:
        if not (branch.done or branch.provisional):
            call.branch_timed_out(branch)

    def follow_up(self, call: Call, branch: Branch, response: Response | None) -> Branch | None:
        """
        The branch failed (``branch.status``; ``response`` None for a time-out):
        the same INVITE with credentials for a first challenge, else the INVITE
        to the next destination when the failure is the destination's; None
        when the call fails with the branch's status.
        """
        target = call.attempt.target
        assert target is not None
        destination = target.current
        status = branch.status
        if status in (401, 407) and response is not None and not target.challenged:
            header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
            challenges = response.get_all(header)
            if challenges and destination.username:
                target.challenged = True
                retry = self._with_credentials(branch, status, challenges, destination)
                if retry is not None:
                    return retry
        reason = failure_reason(status)
        if reason is None:
            return None
        if reason == "auth":
            branch.status = 503  # the provider's challenge is not the caller's to answer
        if target.events is not None:
            target.events.failed(destination, reason)
        if not target.advance():
            return None
        return self.controller.make_branch(call, target.binding(), call.sent_sdp.get("b", b""))

    def _with_credentials(
        self, branch: Branch, status: int, challenges: list[str], destination: Destination
    ) -> Branch | None:
        """
        The branch's INVITE again with an answer to one of ``challenges`` (RFC
        3261 §22.2); None for a challenge that cannot be answered (unreadable,
        no realm or nonce, an unknown algorithm, or none in the destination's
        algorithms).
        """
        from warden.sip.call import Branch

        old = branch.request
        challenge = pick_challenge(challenges, destination.algorithms)
        if challenge is None:
            _log.warn(
                "Trunk {trunk} challenged the call with no {algorithms} digest: FIPS mode"
                " refuses MD5, so the call goes to the next trunk",
                trunk=destination.name,
                algorithms="/".join(destination.algorithms or ()),
            )
            return None
        try:
            answer = answer_challenge(
                challenge, destination.username, destination.password, "INVITE", old.uri_text
            )
        except (SipParseError, KeyError, ValueError):
            return None
        dialog = branch.dialog
        dialog.remote_tag = None
        dialog.state = DialogState.PENDING
        dialog.local_cseq += 1
        request = Request("INVITE", old.uri_text, list(old.headers), old.body)
        request.set(
            "Via",
            f"SIP/2.0/{dialog.flow.transport.upper()} {dialog.via_host}"
            f";branch={self.controller.new_branch()};rport",
        )
        request.set("To", dialog.remote_party)
        request.set("CSeq", f"{dialog.local_cseq} INVITE")
        request.add("Proxy-Authorization" if status == 407 else "Authorization", answer)
        return Branch(branch.binding, request, dialog)
