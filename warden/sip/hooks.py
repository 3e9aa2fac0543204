"""
Call hooks (L{warden.interfaces.ICallHook}): what a feature plugin sees of a
call, the no-op base it extends, and L{CallHooks}, which runs the enabled
plugins' hooks in ``[plugins] enabled`` order at each point (ADR 0020):

1. L{CallHooks.incoming}: a new INVITE arrives, before authentication
   (verification of what the sender asserts; may reject);
   then L{CallHooks.identify}: a hook may vouch for the caller by its source (a
   trunk), which is then not asked for digest credentials, and name the number
   the call is for (a DID's extension) before any hook routes it;
2. L{CallHooks.before_routing}: authenticated, before the dialplan (may reject,
   redirect, send the call to an external target or mark);
3. L{CallHooks.routing_failed}: the number could not be routed, or every fork
   failed (busy, no answer, ring timeout) (may redirect, once per call);
4. L{CallHooks.leg_built}: an outgoing INVITE was built (may add headers and
   body parts; RFC 5621 multipart bodies);
5. L{CallHooks.answered};
6. L{CallHooks.dtmf}: a digit the phone on one side sent during the call
   (an RFC 4733 event the relay saw, or a SIP INFO with
   ``application/dtmf-relay`` or ``application/dtmf``);
7. L{CallHooks.ended}: with the call record.

An emergency call (L{CallAttempt.emergency}, set before routing by the
``e911`` plugin, which must come before every other call hook) is never
diverted: the later hooks are not asked before routing, none when routing
fails, and no call limit refuses it.

A hook rejects by raising L{warden.errors.SipError}. A hook may return a
Deferred where its signature allows one; Warden waits for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from warden.errors import SipError
from warden.interfaces import ICallHook, IEmergencyNumbers, IMediaSession
from warden.model import CallRecord, Extension

if TYPE_CHECKING:
    from warden.sip.external import RouteTarget
    from warden.sip.flow import Flow
    from warden.sip.groups import RingPlan
    from warden.sip.message import Request, Response

__all__ = ["CallAttempt", "CallHookBase", "CallHooks", "OutgoingLeg", "Vouched"]

_log = Logger()


@attrs.frozen
class Vouched:
    """
    A caller a hook vouches for by where its INVITE comes from (a trunk's
    address): no digest authentication is asked of it.

    Attributes:
        caller: stands for the caller (an L{Extension} of no directory: its
            ``realm`` is empty).
        dialled: the number to route instead of the Request-URI user (the
            extension of the DID the call is for); None: as dialled.
        marks: marks the call starts with (``trunk``, ...).
    """

    caller: Extension
    dialled: str | None = None
    marks: frozenset[str] = frozenset()


@attrs.define(eq=False)
class CallAttempt:
    """
    A call as hooks see it, from routing to its end.

    Attributes:
        caller: the authenticated extension calling.
        dialled: the number to route; a hook before routing may replace it.
        request: the caller's INVITE (read it; do not change it).
        flow: where the INVITE came from.
        marks: labels hooks attach for later hooks (``emergency``, ...).
        call_id: Warden's call identifier, once the call rings ("" before).
        redirected: a routing failure was already redirected (only once).
        refusal: set by L{refuse} before routing: the call fails as if the
            number could not be routed, with this status and reason, so the
            later hooks' L{CallHooks.routing_failed} may still redirect it
            (do-not-disturb to voicemail).
        target: where the call goes instead of an extension's phones (a trunk,
            L{warden.sip.external.RouteTarget}); a hook before routing sets it,
            and the dialplan is then not asked.
        plan: the extensions the call rings instead of the dialled one's
            phones, step after step (a ring group, L{warden.sip.groups}); a
            hook before routing sets it.
        ring_timeout: seconds the call (each step of a plan) rings before it
            counts as unanswered; None: ``[calls] ring_timeout``.
        pickup: the id of a ringing call this INVITE picks up instead of
            being routed (L{warden.sip.pickup}); a hook before routing sets it.
        callee: the extension the call rings or reached, once it rings.
        media: the call's media session, once the call rings (a feature may
            set its ``tap``: a call recorder).
        recording: the call's recording, as the call record keeps it: the
            file, relative to the recordings directory ("" for none).
        recording_info: what the call record keeps about that recording.
        emergency: an emergency call (the e911 plugin, ADR 0027): set before
            routing by the first hook; the later hooks' L{CallHooks.before_routing}
            and every L{CallHooks.routing_failed} are skipped (nothing may divert
            it), and no call limit refuses it.
        stir_attest: the STIR/SHAKEN attestation (``A``, ``B``, ``C``) the
            call was signed with, or (from outside) the verified PASSporT had.
        stir_verstat: the STIR/SHAKEN verification result of a call from
            outside (``TN-Validation-Passed``...); "" when not verified.
    """

    caller: Extension
    dialled: str
    request: Request
    flow: Flow
    marks: set[str] = attrs.field(factory=set)
    call_id: str = ""
    redirected: bool = False
    target: RouteTarget | None = None
    refusal: tuple[int, str] | None = None
    plan: RingPlan | None = None
    ring_timeout: float | None = None
    pickup: str = ""
    callee: Extension | None = None
    media: IMediaSession | None = None
    recording: str = ""
    recording_info: dict[str, Any] = attrs.field(factory=dict)
    emergency: bool = False
    stir_attest: str = ""
    stir_verstat: str = ""

    def refuse(self, status: int, reason: str) -> None:
        """
        Before routing: do not route the number; the call fails with ``status``
        unless a hook's L{CallHooks.routing_failed} redirects it.
        """
        self.refusal = (status, reason)


@attrs.define(eq=False)
class OutgoingLeg:
    """
    An INVITE Warden is about to send to a callee's phone.

    Hooks add headers with L{add_header} and body parts with L{add_body_part};
    the SDP offer stays the first part of a ``multipart/mixed`` body (RFC 5621).
    """

    request: Request
    parts: list[tuple[str, bytes, tuple[tuple[str, str], ...]]] = attrs.field(factory=list)

    def add_header(self, name: str, value: str) -> None:
        """Add a header (an ``Identity`` header, for example) to the INVITE."""
        self.request.add(name, value)

    def add_body_part(
        self, content_type: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """
        Add a body part (a PIDF-LO document, for example) to the INVITE, with
        its own ``headers`` besides ``Content-Type`` (``Content-ID``, which a
        ``Geolocation: <cid:...>`` header refers to, RFC 6442).
        """
        self.parts.append((content_type, body, tuple(headers)))

    def finish(self) -> None:
        """Put the added parts into the INVITE's body."""
        if not self.parts:
            return
        parts = list(self.parts)
        if self.request.body:
            sdp_type = self.request.get("Content-Type") or "application/sdp"
            parts.insert(0, (sdp_type, self.request.body, ()))
        boundary = os.urandom(12).hex()
        body = b"".join(
            b"--%s\r\nContent-Type: %s\r\n%s\r\n%s\r\n"
            % (boundary.encode(), kind.encode("ascii"), _part_headers(headers), content)
            for kind, content, headers in parts
        )
        body += b"--%s--\r\n" % boundary.encode()
        self.request.set("Content-Type", f"multipart/mixed;boundary={boundary}")
        self.request.set_body(body)


def _part_headers(headers: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (n.encode("ascii"), v.encode("ascii")) for n, v in headers)


@implementer(ICallHook)
class CallHookBase:
    """Every hook point doing nothing: a feature overrides the points it needs."""

    methods: tuple[str, ...] = ()

    def incoming(self, request: Request, flow: Flow) -> Deferred[None] | None:
        """Accept every incoming INVITE."""
        return None

    def identify(self, request: Request, flow: Flow) -> Deferred[Vouched | None] | Vouched | None:
        """Vouch for no caller: authenticate as usual."""
        return None

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """Route as dialled."""
        return None

    def routing_failed(
        self, attempt: CallAttempt, status: int, reason: str
    ) -> Deferred[str | None] | str | None:
        """No redirect: the caller gets the failure."""
        return None

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Send the INVITE as built."""

    def answered(self, attempt: CallAttempt) -> None:
        """Nothing to do."""

    def dtmf(self, attempt: CallAttempt, side: str, digit: str) -> None:
        """Nothing to do."""

    def ended(self, attempt: CallAttempt, record: CallRecord) -> None:
        """Nothing to do."""

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Not reached: the base owns no methods."""
        raise SipError(405, "Method Not Allowed")


class CallHooks:
    """
    The enabled plugins' hooks, run in order at each point.

    Args:
        hooks: the ICallHook providers, in ``[plugins] enabled`` order.
    """

    def __init__(self, hooks: Sequence[ICallHook] = ()) -> None:
        self.hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def may_be_emergency(self, dialled: str) -> bool:
        """Whether a hook providing L{IEmergencyNumbers} takes ``dialled`` for one."""
        return any(
            IEmergencyNumbers.providedBy(hook) and hook.is_emergency_number(dialled)
            for hook in self.hooks
        )

    async def incoming(self, request: Request, flow: Flow) -> None:
        """Each hook may reject (SipError) the new INVITE."""
        for hook in self.hooks:
            result = hook.incoming(request, flow)
            if isinstance(result, Deferred):
                await result

    async def identify(self, request: Request, flow: Flow) -> Vouched | None:
        """The caller the first hook vouches for, or None (authenticate)."""
        for hook in self.hooks:
            result = hook.identify(request, flow)
            vouched = await result if isinstance(result, Deferred) else result
            if vouched is not None:
                return vouched
        return None

    async def before_routing(self, attempt: CallAttempt) -> None:
        """
        Each hook may reject, change ``attempt.dialled`` or add marks; once a
        hook made the attempt an emergency call the later ones are skipped.
        """
        for hook in self.hooks:
            if attempt.emergency:
                return
            result = hook.before_routing(attempt)
            if isinstance(result, Deferred):
                await result

    async def routing_failed(self, attempt: CallAttempt, status: int, reason: str) -> str | None:
        """
        The first number a hook redirects the failed call to, or None (always
        for an emergency call: it is never sent to voicemail or a forward).
        """
        if attempt.emergency:
            return None
        for hook in self.hooks:
            result = hook.routing_failed(attempt, status, reason)
            number = await result if isinstance(result, Deferred) else result
            if number:
                return number
        return None

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Each hook may add to the INVITE; then its parts join the body."""
        for hook in self.hooks:
            hook.leg_built(attempt, leg)
        leg.finish()

    def answered(self, attempt: CallAttempt) -> None:
        """Tell each hook; a hook's error is logged, never the call's."""
        for hook in self.hooks:
            try:
                hook.answered(attempt)
            except Exception:
                _log.failure("Call hook failed when the call was answered")

    def dtmf(self, attempt: CallAttempt, side: str, digit: str) -> None:
        """Tell each hook; a hook's error is logged, never the call's."""
        for hook in self.hooks:
            try:
                hook.dtmf(attempt, side, digit)
            except Exception:
                _log.failure("Call hook failed on a DTMF digit")

    def ended(self, attempt: CallAttempt, record: CallRecord) -> None:
        """Tell each hook, with the call record; errors are logged."""
        for hook in self.hooks:
            try:
                hook.ended(attempt, record)
            except Exception:
                _log.failure("Call hook failed when the call ended")

    def method_handlers(self) -> dict[str, ICallHook]:
        """
        The hook owning each SIP method a plugin handles, the first listed
        winning; SUBSCRIBE owned by several goes to each by its event package
        (L{EventPackages}).
        """
        owners: dict[str, list[ICallHook]] = {}
        for hook in self.hooks:
            for method in hook.methods:
                owners.setdefault(method.upper(), []).append(hook)
        return {
            method: EventPackages(hooks) if method == "SUBSCRIBE" and len(hooks) > 1 else hooks[0]
            for method, hooks in owners.items()
        }


class EventPackages(CallHookBase):
    """
    SUBSCRIBE answered by several plugins, each for its event packages (RFC
    6665 §7.2: ``dialog`` for BLF, ``message-summary`` for MWI): a hook names
    them in an ``events`` attribute; a package no hook names goes to the first
    hook naming none, else is answered 489 Bad Event with ``Allow-Events``.
    """

    methods = ("SUBSCRIBE",)

    def __init__(self, owners: Sequence[ICallHook]) -> None:
        self.owners = tuple(owners)

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Hand the SUBSCRIBE to the hook serving its ``Event`` package."""
        package = (request.get("Event") or "").split(";", 1)[0].strip().lower()
        fallback: ICallHook | None = None
        known: list[str] = []
        for hook in self.owners:
            events: tuple[str, ...] | None = getattr(hook, "events", None)
            if events is None:
                fallback = fallback or hook
            elif package in events:
                return hook.handle_request(request, flow)
            else:
                known.extend(events)
        if fallback is not None:
            return fallback.handle_request(request, flow)
        raise SipError(489, "Bad Event", (("Allow-Events", ", ".join(known)),))
