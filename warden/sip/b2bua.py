"""
The B2BUA call controller: authenticates INVITEs (407), routes them, forks them
to the callee's bindings, anchors media on the relay, and bridges the two
dialogs of each call (RFC 3261 §13-15 on each leg; RFC 7092 describes the role).

``Call`` (warden.sip.call) holds one call's state; this module owns the index
of dialogs, the transaction users, the 2xx retransmission timers, and the
services a call needs: sending, media, limits, records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.digits import parse_uint
from warden.errors import SipError, SipParseError
from warden.interfaces import (
    ICallCounters,
    ICallRecordStore,
    IClientTransactionUser,
    ILiveCalls,
    IMediaRelay,
    IRouter,
)
from warden.model import Binding, CallRecord, Extension, Route
from warden.randomness import random_hex
from warden.rtp import metrics as rtp_metrics
from warden.rtp.errors import MediaError
from warden.sip import metrics as sip_metrics
from warden.sip.addressing import Addressing, binding_over_tls
from warden.sip.authenticator import Authenticator
from warden.sip.call import RELAYED_HEADERS, Branch, Call, CallState, PendingInvite
from warden.sip.dialog import Dialog, DialogState, confirm_uac_dialog
from warden.sip.external import ExternalLegs
from warden.sip.flow import Flow
from warden.sip.groups import GroupRinger
from warden.sip.handover import Handover
from warden.sip.headers import name_addr
from warden.sip.hooks import CallAttempt, CallHooks, OutgoingLeg
from warden.sip.local import LocalApplications, LocalTarget, info_digit
from warden.sip.message import Message, Request, Response, make_response, new_tag
from warden.sip.pickup import pick_up
from warden.sip.sdp import SdpError, codecs_of
from warden.sip.session_timer import DEFAULT_SE, check_interval
from warden.sip.timers import TimerSettings
from warden.sip.transaction import TransactionLayer
from warden.sip.transaction_client import ClientTransaction
from warden.sip.transaction_server import ServerTransaction
from warden.sip.transfer import Transfers

LIVE_REFRESH_INTERVAL = 5.0
# Seconds between two log lines about refused in-dialog requests (each is counted).
LOG_INTERVAL = 60.0
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER, REGISTER"


@attrs.frozen
class CallSettings:
    """Call handling settings."""

    ring_timeout: float = 30.0
    max_calls_per_extension: int = 0
    timers: TimerSettings = TimerSettings()
    domain: str = "localhost"
    node_id: str = ""


class CallController:
    """
    Handles INVITE and everything inside the dialogs it creates.

    Args:
        clock: time source.
        settings: ring timeout, limits, timers.
        transactions: the transaction layer (``send_request``).
        send: stateless sending ``(message, flow)`` for ACKs to 2xx.
        authenticator: digest authentication (407 challenges for INVITE).
        router: where dialled numbers go.
        media: the IMediaRelay anchoring RTP.
        addressing: ``via_for(flow)`` / ``flow_for(binding)`` of the transport.
        records: call records; ``live``: live-call summaries (both optional).
        hooks: the feature plugins' call hooks (L{warden.sip.hooks}).
        counters: the cluster's call counts per extension (None on one node).
        applications: the local applications a hook may send calls to
            (L{warden.sip.local}); None: none.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: CallSettings,
        transactions: TransactionLayer,
        send: Callable[[Message, Flow], None],
        authenticator: Authenticator,
        router: IRouter,
        media: IMediaRelay,
        addressing: Addressing,
        records: ICallRecordStore | None = None,
        live: ILiveCalls | None = None,
        hooks: CallHooks | None = None,
        counters: ICallCounters | None = None,
        applications: LocalApplications | None = None,
    ) -> None:
        self.clock = clock
        self.applications = applications
        self.hooks = hooks if hooks is not None else CallHooks()
        self.settings = settings
        self.transactions = transactions
        self._send = send
        self.authenticator = authenticator
        self.router = router
        self.media = media
        self.addressing = addressing
        self.records = records
        self.live = live
        # Shared ICallCounters (several nodes); None: the per-process counts
        # below are the only limit.
        self.counters = counters
        self.calls: dict[str, Call] = {}
        # Ended calls whose record waits for their media's final counters.
        self._recording: set[defer.Deferred[dict[str, dict[str, Any]]]] = set()
        self._dialogs: dict[tuple[str, str], tuple[Call, str]] = {}
        self._by_a_txn: dict[int, Call] = {}
        self._active: Counter[str] = Counter()
        self._acks: dict[tuple[str, str], Request] = {}
        self._ended_dialogs: dict[tuple[str, str], float] = {}
        self._stranger_logged_at: float | None = None
        self._strangers_unlogged = 0
        self.draining = False
        self.allow_header = ALLOW
        self.transfers = Transfers(self)
        self.external = ExternalLegs(self)
        self.groups = GroupRinger(self)
        self.handover = Handover(self)
        self._refresh_loop = task.LoopingCall(self._refresh_live)
        self._refresh_loop.clock = clock

    # -- addressing ---------------------------------------------------------------

    def via_for(self, flow: Flow) -> str:
        """Our ``host:port`` as seen from ``flow``'s peer."""
        return str(self.addressing.via_for(flow))

    def contact_for(self, flow: Flow) -> str:
        """Our Contact URI towards ``flow``'s peer."""
        transport = "" if flow.transport == "udp" else f";transport={flow.transport}"
        return f"sip:warden@{self.via_for(flow)}{transport}"

    def new_branch(self) -> str:
        """A fresh Via branch (the transaction layer's)."""
        return self.transactions.new_branch()

    def reinvite(self, call: Call, side: str, offer: bytes) -> None:
        """Refresh ``side``'s session with a re-INVITE (RFC 4028 refresh)."""
        self.transfers.reinvite(call, side, offer)

    @staticmethod
    def codec_of(sdp: bytes) -> str:
        """The first codec of the first audio stream, for records."""
        try:
            names = codecs_of(sdp)
        except SdpError:
            return ""
        return names[0] if names else ""

    # -- new calls ----------------------------------------------------------------

    def handle_invite(
        self, txn: ServerTransaction, request: Request, flow: Flow
    ) -> defer.Deferred[None]:
        """A new INVITE (no To tag): authenticate, route, fork."""
        return defer.Deferred.fromCoroutine(self._invite(txn, request, flow))

    async def _invite(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        # Draining: no new calls, but an emergency call still goes out (Kari's Law).
        if self.draining and not self.hooks.may_be_emergency(request.uri.user_unescaped or ""):
            raise SipError(503, "Service Unavailable", (("Retry-After", "30"),))
        if self.hooks:  # verification of what the sender asserts (may reject)
            await self.hooks.incoming(request, flow)
        # Authenticated first: the 407 to a request that may be spoofed goes out
        # alone and statelessly (the transaction still sends 100 after 200 ms).
        vouched = await self.hooks.identify(request, flow) if self.hooks else None
        if vouched is not None:  # a trunk's caller: no credentials (ADR 0021)
            caller = vouched.caller
        else:
            caller = await self.authenticator.authenticate(request, flow, proxy=True)
        txn.respond(make_response(request, 100, "Trying"))
        sip_metrics.CALL_ATTEMPTS.inc()
        check_interval(request)
        dialled = request.uri.user_unescaped or ""
        if not dialled:
            raise SipError(404, "Not Found")
        attempt = CallAttempt(caller, dialled, request, flow)
        if vouched is not None:
            attempt.dialled = vouched.dialled or dialled
            attempt.marks.update(vouched.marks)
        if self.hooks:  # may reject, redirect (attempt.dialled) or mark
            await self.hooks.before_routing(attempt)
        # Neither a drain nor a limit refuses an emergency call (Kari's Law, ADR 0027).
        if self.draining and not attempt.emergency:  # a number that proved no emergency
            raise SipError(503, "Service Unavailable", (("Retry-After", "30"),))
        if not attempt.emergency and self._at_limit(caller.number):
            raise SipError(486, "Busy Here")
        if attempt.pickup:  # a hook chose a ringing call for the caller to pick up
            self.pick_up(attempt, txn)
            return
        # A hook (never the phone) may send the call to a local application.
        local = self.local_target(attempt.dialled) if attempt.dialled != dialled else None
        route = await self.route_attempt(attempt, local)
        if route.status and self.hooks:
            route, local = await self._redirect_local(attempt, route)
        if route.status:
            raise SipError(route.status, route.reason)
        bindings = over_tls_if_sips(request, route.bindings) if local is None else ()
        callee = route.extension
        assert callee is not None  # a routed number names its extension
        if not attempt.emergency and self._at_limit(callee.number):
            raise SipError(486, "Busy Here")
        call_id = random_hex(12)
        try:
            session = await self.media.allocate(call_id)
        except MediaError as e:
            # No ports, or the media engine (rtpengine) down: try again later.
            self.log.warn("No media for a call: {error}", error=e)
            raise SipError(503, "Service Unavailable", (("Retry-After", "5"),)) from e
        session.signalling_from("a", flow.host)
        # SDES keys only over TLS (ADR 0019); every forked phone must be on TLS.
        session.signalling_encrypted("a", flow.transport == "tls")
        tls = [binding_over_tls(b) for b in bindings]
        session.signalling_encrypted("b", bool(tls) and all(tls))
        try:
            offer = session.offer_from("a", request.body) if request.body else b""
        except SdpError as e:
            session.release()
            raise SipError(488, "Not Acceptable Here") from e
        counted = self._shared_limit() and not attempt.emergency
        if self.counters is not None and counted:
            limit = self.settings.max_calls_per_extension
            counted = await self.counters.acquire((caller.number, callee.number), limit)
            if not counted:
                session.release()
                raise SipError(486, "Busy Here")
        attempt.call_id, attempt.callee, attempt.media = call_id, callee, session
        call = Call(self, call_id, caller, dialled, callee, txn, request, flow, attempt, session)
        if offer:
            call.sent_sdp["b"] = offer
        if not counted:
            call.counted = ()
        call.on_ended = self._ended
        session.on_timeout = lambda: self._media_stopped(call)
        if self.hooks:
            session.on_dtmf = lambda side, digit: self._dtmf(call, side, digit)
        self.calls[call_id] = call
        self._by_a_txn[id(txn)] = call
        self._active[caller.number] += 1
        self._active[callee.number] += 1
        self.index_dialog(call, "a", call.dialogs["a"])
        self._publish(call)
        if local is not None:
            self.answer_locally(call, local)
        else:
            call.start(bindings, offer)

    def _media_stopped(self, call: Call) -> None:
        """
        No RTP for ``[media] timeout``: hang up, except an emergency call,
        which only its parties end (a silent 911 caller is still a caller).
        """
        if call.attempt.emergency:
            self.log.warn(
                "Media of emergency call {call_id} stopped; the call is kept", call_id=call.call_id
            )
            return
        call.hangup(None, "media timeout")

    def pick_up(self, attempt: CallAttempt, txn: ServerTransaction) -> None:
        """Connect the caller's INVITE to the ringing call ``attempt.pickup`` names."""
        call = self.calls.get(attempt.pickup)
        if call is None:
            raise SipError(480, "Temporarily Unavailable (no call to pick up)")
        pick_up(self, call, attempt.caller, txn, attempt.request, attempt.flow)

    async def route_attempt(self, attempt: CallAttempt, local: LocalTarget | None) -> Route:
        """
        Where ``attempt`` goes once the hooks ran: the local application
        ``local``, the trunk or ring group a hook chose, else the dialled
        number's route (or the failure a hook chose).
        """
        if local is not None:
            return Route(0, "", local.party())
        if attempt.target is not None:  # a hook sent the call outside (a trunk)
            return attempt.target.route()
        if attempt.plan is not None:  # a hook made the call ring a group
            return await self.groups.route(attempt)
        return await self._route(attempt)

    async def _route(self, attempt: CallAttempt) -> Route:
        """The route of the dialled number, or the failure a hook chose (L{CallAttempt.refuse})."""
        if attempt.refusal is not None:
            return Route(*attempt.refusal)
        route: Route = await self.router.route(attempt.dialled, attempt.caller)
        return route

    # -- local applications (warden.sip.local) -------------------------------------------

    def local_target(self, number: str) -> LocalTarget | None:
        """The local application ``number`` names (``voicemail:1001``), if any."""
        return self.applications.target(number) if self.applications else None

    async def _redirect_local(
        self, attempt: CallAttempt, route: Route
    ) -> tuple[Route, LocalTarget | None]:
        """
        A routing failure: the route to the number a hook redirects to, if
        any. That number may name a local application: then the route to the
        extension the call was for (or the target itself) and the application.
        """
        number = await self.hooks.routing_failed(attempt, route.status, route.reason)
        if number is None:
            return route, None
        attempt.redirected = True
        local = self.local_target(number)
        if local is not None:
            return Route(0, "", route.extension or local.party()), local
        redirected: Route = await self.router.route(number, attempt.caller)
        return redirected, None

    def answer_locally(self, call: Call, target: LocalTarget) -> None:
        """
        Answer ``call`` inside Warden and run ``target``'s application on it;
        a call Warden answered and rang on (L{reroute}) that nobody took goes
        back to the endpoint still answering its caller.
        """
        assert self.applications is not None
        if call.rering:
            call.rering = False
            call.state = CallState.ANSWERED
            self.applications.resume(call, target)
            return
        self.applications.answer(call, target)

    def reroute(self, call: Call, number: str) -> None:
        """Send a call Warden answered itself on to ``number`` (L{warden.sip.handover})."""
        self.handover.reroute(call, number)

    def handed_over(self, call: Call, branch: Branch, response: Response, body: bytes) -> None:
        """A phone answered a call Warden had answered itself (L{warden.sip.handover})."""
        self.handover.handed_over(call, branch, response, body)

    def remember_ack(self, call_id: str, side: str, ack: Request) -> None:
        """The ACK sent for a 2xx in dialog ``call_id``, resent for its retransmissions."""
        self._acks[(call_id, side)] = ack

    def redirect_failed(self, call: Call, status: int, reason: str | None, cause: str) -> bool:
        """
        Every fork of a ringing call failed (busy, no answer, ring timeout):
        whether a hook may redirect it (once per call); if so the call keeps
        ringing while the hooks are asked, and fails as it would have when none
        redirects.
        """
        attempt = call.attempt
        if call.state is CallState.RINGING and self.groups.next_step(call):
            return True  # the next members of a ring group ring
        if not self.hooks or attempt.redirected or call.state is not CallState.RINGING:
            return False
        attempt.redirected = True
        d = defer.Deferred.fromCoroutine(self._retarget(call, status, reason, cause))
        d.addErrback(self._retarget_failed, call)
        return True

    async def _retarget(self, call: Call, status: int, reason: str | None, cause: str) -> None:
        attempt = call.attempt
        number = await self.hooks.routing_failed(attempt, status, reason or "")
        local = self.local_target(number) if number is not None else None
        if local is not None:
            if call.state is CallState.RINGING:
                self.answer_locally(call, local)
            return
        route: Route | None = None
        if number is not None:
            route = await self.router.route(number, attempt.caller)
        if call.state is not CallState.RINGING:
            return  # cancelled while the hooks were asked
        if route is None or route.status or route.extension is None:
            call.fail(status, reason, cause)
            return
        self.change_party(call, "b", route.extension)
        call.restart(route.bindings)

    def _retarget_failed(self, failure: Failure, call: Call) -> None:
        self.log.failure("Could not redirect call {call_id}", failure, call_id=call.call_id)
        call.fail(500, "Server Internal Error", "redirect failed")

    def _shared_limit(self) -> bool:
        """Whether calls are also counted in the cluster-wide counters."""
        return self.counters is not None and self.settings.max_calls_per_extension > 0

    def at_limit(self, number: str) -> bool:
        """Whether ``number`` is in as many calls as ``[calls]`` allows on this node."""
        return self._at_limit(number)

    def _at_limit(self, number: str) -> bool:
        limit = self.settings.max_calls_per_extension
        return limit > 0 and self._active[number] >= limit

    def make_branch(self, call: Call, binding: Binding, offer: bytes) -> Branch | None:
        """The INVITE towards one binding, with its own dialog."""
        if call.attempt.target is not None:
            return self.external.make_branch(call, binding, offer)
        call_id = f"{call.call_id}-{len(call.branches)}"
        reached = self.addressing.reach(binding, call_id)
        if reached is None:
            return None
        flow, routes = reached
        caller = call.caller
        domain = self.settings.domain
        local_party = name_addr(caller.name, f"sip:{caller.number}@{domain}")
        dialog = Dialog(
            call_id=call_id,
            local_tag=new_tag(),
            remote_tag=None,
            local_party=local_party,
            remote_party=f"<sip:{call.callee.number}@{domain}>",
            local_cseq=0,
            remote_cseq=None,
            remote_target=binding.contact,
            route_set=routes,
            flow=flow,
            local_contact=self.contact_for(flow),
            via_host=self.via_for(flow),
        )
        return self.build_branch(call, binding, dialog, offer)

    def build_branch(self, call: Call, binding: Binding, dialog: Dialog, offer: bytes) -> Branch:
        """The INVITE in ``dialog``, asserting its From identity (RFC 3325 §9.1)."""
        headers = [
            ("P-Asserted-Identity", dialog.local_party),
            ("Allow", ALLOW),
            ("Supported", "timer, 100rel"),
            ("Session-Expires", str(DEFAULT_SE)),
        ]
        if offer:
            headers.append(("Content-Type", "application/sdp"))
        request = dialog.request("INVITE", self.transactions.new_branch(), headers, offer)
        max_forwards = call.a_request.int_header("Max-Forwards", 255)
        if max_forwards is not None:
            request.set("Max-Forwards", str(max(0, min(70, max_forwards - 1))))
        if self.hooks:  # may add headers and body parts
            self.hooks.leg_built(call.attempt, OutgoingLeg(request))
        return Branch(binding, request, dialog)

    def send_branch(self, call: Call, branch: Branch) -> None:
        """Send a branch's INVITE through a client transaction."""
        self.index_dialog(call, "b", branch.dialog)
        branch.txn = self.transactions.send_request(
            branch.request, branch.dialog.flow, _BranchUser(call, branch)
        )
        if call.attempt.target is not None:
            self.external.sent(call, branch)

    def follow_up(self, call: Call, branch: Branch, response: Response | None) -> Branch | None:
        """
        The branch that replaces a failed one: for a call to an external target,
        the INVITE with credentials or to the next destination; None otherwise.
        """
        if call.attempt.target is None:
            return None
        return self.external.follow_up(call, branch, response)

    def cancel_branch(self, branch: Branch) -> None:
        """CANCEL a ringing branch (RFC 3261 §9.1: only after a provisional)."""
        if not branch.provisional:
            branch.cancel_pending = True
            return
        invite = branch.request
        headers = [
            ("Via", invite.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.get("From") or ""),
            ("To", invite.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
        ]
        headers.extend(("Route", r) for r in invite.get_all("Route"))
        cancel = Request("CANCEL", invite.uri_text, headers)
        self.fire_and_forget(cancel, branch.dialog.flow)

    def ack_and_bye(self, branch: Branch, response: Response) -> None:
        """A 2xx from a branch that lost the race: acknowledge it and hang up."""
        confirm_uac_dialog(branch.dialog, response)
        ack = branch.dialog.request(
            "ACK", self.transactions.new_branch(), cseq=branch.request.cseq.number
        )
        self.send_quietly(ack, branch.dialog.flow)
        bye = branch.dialog.request("BYE", self.transactions.new_branch())
        self.fire_and_forget(bye, branch.dialog.flow)

    def send_bye(self, call: Call, side: str) -> None:
        """Hang up one side."""
        dialog = call.dialogs[side]
        bye = dialog.request("BYE", self.transactions.new_branch())
        self.fire_and_forget(bye, dialog.flow)

    def fire_and_forget(self, request: Request, flow: Flow) -> None:
        try:
            self.transactions.send_request(request, flow, _NullUser())
        except Exception:
            self.log.failure("Could not send {method}", method=request.method)

    def send_quietly(self, message: Request | Response, flow: Flow) -> None:
        try:
            self._send(message, flow)
        except Exception as e:
            self.log.warn(
                "Could not send {what} to {flow}: {error}",
                what=repr(message),
                flow=str(flow),
                error=str(e),
            )

    # -- 2xx retransmission and ACK -----------------------------------------------

    def start_2xx_retransmit(self, call: Call, pending: PendingInvite) -> None:
        """Retransmit our 2xx until the ACK comes (RFC 3261 §13.3.1.4)."""
        pending.interval = self.settings.timers.t1
        pending.started = self.clock.seconds()
        pending.retransmit = self.clock.callLater(
            pending.interval, self._retransmit, call, pending
        )

    def _retransmit(self, call: Call, pending: PendingInvite) -> None:
        timers = self.settings.timers
        if self.clock.seconds() - pending.started >= timers.timer_h:
            pending.retransmit = None
            call.pending.pop(pending.origin, None)
            call.hangup(None, "no ACK")
            return
        if pending.response is not None:
            pending.server_txn.respond(pending.response)
        pending.interval = min(pending.interval * 2, timers.t2)
        pending.retransmit = self.clock.callLater(
            pending.interval, self._retransmit, call, pending
        )

    def handle_ack(self, request: Request, flow: Flow) -> None:
        """The ACK for one of our 2xx: stop retransmitting, acknowledge the other side."""
        found = self._lookup(request)
        if found is None:
            return
        call, side, _ = found
        pending = call.pending.get(side)
        if pending is None or request.cseq.number != pending.origin_cseq:
            return
        del call.pending[side]
        if pending.retransmit is not None and pending.retransmit.active():
            pending.retransmit.cancel()
        target = call.other(side)
        if target not in call.dialogs or pending.target_2xx is None:
            return
        body = b""
        if request.body:
            try:
                body = call.rewrite(side, request.body, offer=False)
            except SdpError:
                body = b""
        headers = [("Content-Type", "application/sdp")] if body else []
        dialog = call.dialogs[target]
        ack = dialog.request(
            "ACK", self.transactions.new_branch(), headers, body, cseq=pending.target_cseq
        )
        self._acks[(dialog.call_id, target)] = ack
        self.send_quietly(ack, dialog.flow)

    def resend_ack(self, call: Call, side: str, response: Response) -> None:
        """A retransmitted 2xx: send the ACK we already sent for it again."""
        dialog = call.dialogs.get(side)
        if dialog is None:
            return
        ack = self._acks.get((dialog.call_id, side))
        if ack is not None and ack.cseq.number == response.cseq.number:
            self.send_quietly(ack, dialog.flow)

    # -- requests inside dialogs --------------------------------------------------

    def index_dialog(self, call: Call, side: str, dialog: Dialog) -> None:
        """Requests carrying (Call-ID, To tag = our tag) now belong to ``call``."""
        self._dialogs[(dialog.call_id, dialog.local_tag)] = (call, side)

    def forget_dialog(self, dialog: Dialog) -> None:
        """Requests in ``dialog`` no longer belong to any call."""
        key = (dialog.call_id, dialog.local_tag)
        if self._dialogs.pop(key, None) is not None:
            self._remember_ended(key, dialog)

    def _remember_ended(self, key: tuple[str, str], dialog: Dialog) -> None:
        """
        A BYE crossing ours in this dialog is answered 200, not 481 (for 64*T1).
        Only a confirmed dialog is remembered: one that ended with the INVITE's
        error response never existed for the peer (RFC 3261 §12.2.2, §15.1.2).
        """
        if dialog.state is not DialogState.CONFIRMED:
            return
        now = self.clock.seconds()
        ended = self._ended_dialogs
        horizon = now - self.settings.timers.timer_h
        while ended and next(iter(ended.values())) < horizon:
            del ended[next(iter(ended))]
        ended[key] = now

    def dialog_owner(self, call_id: str, local_tag: str) -> tuple[Call, str] | None:
        """The call and side of our dialog (``call_id``, our tag), if any."""
        return self._dialogs.get((call_id, local_tag))

    def _lookup(self, request: Request) -> tuple[Call, str, Dialog] | None:
        """
        The call, side and dialog ``request`` belongs to: Call-ID and both tags
        must match (RFC 3261 §12.2.2), so knowing Warden's tag is not enough.
        """
        tag = request.to.tag
        if tag is None:
            return None
        found = self._dialogs.get((request.call_id, tag))
        if found is None:
            return None
        call, side = found
        dialog = call.dialogs.get(side)
        if dialog is None or not dialog.matches(request):
            return None
        return call, side, dialog

    def _recently_ended(self, request: Request) -> bool:
        ended_at = self._ended_dialogs.get((request.call_id, request.to.tag or ""))
        timer_h = self.settings.timers.timer_h
        return ended_at is not None and self.clock.seconds() - ended_at < timer_h

    def handle_in_dialog(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        """A request with a To tag: find its call and act (or 481)."""
        found = self._lookup(request)
        if found is None:
            if request.method == "BYE" and self._recently_ended(request):
                txn.respond(make_response(request, 200, "OK"))
                return
            raise SipError(481, "Call/Transaction Does Not Exist")
        call, side, dialog = found
        if call.state is CallState.ENDED or dialog.state is DialogState.PENDING:
            # No tagged response was sent yet: the peer has no dialog (§12.1.1).
            raise SipError(481, "Call/Transaction Does Not Exist")
        if not dialog.from_peer(flow):
            self._refuse_stranger(request, flow, dialog)
        if not dialog.accepts(request):
            raise SipError(500, "Server Internal Error", (("Retry-After", "1"),))
        method = request.method
        if method in ("INVITE", "UPDATE"):
            call.session_refreshed(side)
        if method == "BYE":
            txn.respond(make_response(request, 200, "OK"))
            if call.state is CallState.RINGING:
                call.caller_cancelled("BYE")  # an early dialog: 487 to the INVITE (§15.1.2)
            else:
                call.hangup(side, "BYE")
        elif method == "OPTIONS":
            txn.respond(make_response(request, 200, "OK", headers=[("Allow", ALLOW)]))
        elif method == "PRACK":
            self._prack(call, side, txn, request)
        elif method == "REFER":
            self.transfers.handle_refer(call, side, txn, request)
        elif method == "INFO" and self.applications and self.applications.info(call, request):
            txn.respond(make_response(request, 200, "OK"))  # DTMF for a local application
        elif method in ("INVITE", "UPDATE", "INFO", "MESSAGE", "NOTIFY"):
            if call.state is not CallState.ANSWERED and method == "INVITE":
                raise SipError(491, "Request Pending")
            if method == "INFO" and self.hooks and (digit := info_digit(request)):
                self._dtmf(call, side, digit)
            self._relay(call, side, txn, request)
        else:
            raise SipError(405, "Method Not Allowed", (("Allow", ALLOW),))

    def _refuse_stranger(self, request: Request, flow: Flow, dialog: Dialog) -> None:
        """
        A request with the right dialog ID from somewhere else than the dialog's
        peer: 403 (the dialog goes on for its real peer, who may be asked to
        retry from its own flow; 481 would end it at a phone whose flow
        changed). See ADR 0012.
        """
        sip_metrics.IN_DIALOG_REFUSED.labels(sip_metrics.method_label(request.method)).inc()
        now = self.clock.seconds()
        if self._stranger_logged_at is None or now - self._stranger_logged_at >= LOG_INTERVAL:
            self.log.warn(
                "Refused in-dialog {method} from {source}: the dialog's peer is {peer}"
                " ({more} more refused since the last such line)",
                method=sip_metrics.method_label(request.method),
                source=str(flow),
                peer=str(dialog.flow),
                more=self._strangers_unlogged,
            )
            self._stranger_logged_at, self._strangers_unlogged = now, 0
        else:
            self._strangers_unlogged += 1
        raise SipError(403, "Not From The Dialog Peer")

    def _prack(self, call: Call, side: str, txn: ServerTransaction, request: Request) -> None:
        """PRACK of a reliable provisional we sent the caller (RFC 3262 §4)."""
        rack = (request.get("RAck") or "").split()
        rseq = parse_uint(rack[0], 2**32 - 1, max_digits=10) if len(rack) == 3 else None
        if side != "a" or rseq is None:
            raise SipError(481, "Call/Transaction Does Not Exist")
        if not call.prack_received(rseq):
            raise SipError(481, "Call/Transaction Does Not Exist")
        txn.respond(make_response(request, 200, "OK"))

    def _relay(self, call: Call, side: str, txn: ServerTransaction, request: Request) -> None:
        target = call.other(side)
        if target not in call.dialogs:
            raise SipError(491, "Request Pending")
        is_invite = request.method == "INVITE"
        if is_invite and (side in call.pending or target in call.pending):
            raise SipError(491, "Request Pending", (("Retry-After", "1"),))
        body = request.body
        if body and request.method in ("INVITE", "UPDATE"):
            try:
                body = call.rewrite(side, body, offer=True)
            except SdpError as e:
                raise SipError(488, "Not Acceptable Here") from e
        if request.method in ("INVITE", "UPDATE"):
            call.dialogs[side].update_target(request)
        headers = [(n, v) for n in RELAYED_HEADERS if (v := request.get(n)) is not None]
        dialog = call.dialogs[target]
        out = dialog.request(request.method, self.transactions.new_branch(), headers, body)
        if is_invite:
            call.pending[side] = PendingInvite(
                side, txn, out.cseq.number, origin_cseq=request.cseq.number
            )
        self.transactions.send_request(
            out, dialog.flow, _RelayUser(self, call, side, txn, request)
        )

    def relay_final(
        self, call: Call, side: str, txn: ServerTransaction, request: Request, response: Response
    ) -> None:
        """The other side's final answer to a relayed request, back to ``side``."""
        status = response.status
        target = call.other(side)
        body = b""
        if response.body and 200 <= status < 300:
            try:
                body = call.rewrite(target, response.body, offer=False)
            except SdpError:
                status, body = 488, b""
        headers = [(n, v) for n in RELAYED_HEADERS if n != "Content-Type"
                   if (v := response.get(n)) is not None]  # fmt: skip
        if body:
            headers.append(("Content-Type", response.get("Content-Type") or "application/sdp"))
        if 200 <= status < 300 and request.method in ("INVITE", "UPDATE"):
            headers.append(("Contact", f"<{call.dialogs[side].local_contact}>"))
            call.session_refreshed(target)
            call.dialogs[target].update_target(response)
        out = make_response(request, status, response.reason, headers=headers)
        out.body = body
        pending = call.pending.get(side)
        if request.method == "INVITE" and pending is not None:
            if 200 <= status < 300:
                pending.target_2xx = response
                pending.response = out
                txn.respond(out)
                self.start_2xx_retransmit(call, pending)
                return
            del call.pending[side]
        txn.respond(out)

    def handle_cancel(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        """CANCEL of a ringing INVITE."""
        invite_txn = self.transactions.find_invite_server_transaction(request)
        call = self._by_a_txn.get(id(invite_txn)) if invite_txn is not None else None
        if call is None:
            raise SipError(481, "Call/Transaction Does Not Exist")
        txn.respond(make_response(request, 200, "OK"))
        call.caller_cancelled()

    # -- end of calls ---------------------------------------------------------------

    def call_answered(self, call: Call) -> None:
        """Publish the answered state."""
        self.groups.answered(call)
        sip_metrics.CALL_ANSWERS.inc()
        if call.answered_at is not None:
            sip_metrics.CALL_SETUP_SECONDS.observe(max(0.0, call.answered_at - call.started_at))
        self._publish(call)
        if self.hooks:
            recording = call.attempt.recording
            self.hooks.answered(call.attempt)
            if call.attempt.recording != recording:
                self._publish(call)  # a recording started: operators see it at once

    def _dtmf(self, call: Call, side: str, digit: str) -> None:
        """A digit from ``side``: the hooks hear it (``*1`` may start a recording)."""
        recording = call.attempt.recording
        self.hooks.dtmf(call.attempt, side, digit)
        if call.attempt.recording != recording:
            self._publish(call)

    def change_party(self, call: Call, side: str, extension: Extension) -> None:
        """
        A transfer connected ``extension`` on ``side``: the live summary, the
        per-extension call counts and the call's record follow who is connected.
        """
        old = call.party(side)
        if old.number == extension.number:
            return
        self._active[old.number] -= 1
        if self._active[old.number] <= 0:
            del self._active[old.number]
        self._active[extension.number] += 1
        call.set_party(side, extension)
        if side == "b":
            call.attempt.callee = extension
        self._publish(call)

    def publish(self, call: Call) -> None:
        """Publish ``call``'s live summary (state, parties)."""
        self._publish(call)

    def _publish(self, call: Call) -> None:
        if self.live is None:
            return
        from warden.model import LiveCall

        if call.state is CallState.ENDED:
            return
        now = self.clock.seconds()
        state = call.state.value
        if call.media.hold_state.on_hold:
            state = "on hold"
        stats = call.media.stats()
        # Whether each leg's media is encrypted (ADR 0019); known once answered.
        answered = call.answered_at is not None
        media = {side: _media_kind(stats.get(side) if answered else None) for side in ("a", "b")}
        summary = LiveCall(
            call_id=call.call_id, caller=call.caller.number, callee=call.callee.number,
            dialled=call.dialled, state=state, started_at=call.started_at,
            answered_at=call.answered_at, codec=call.codec, packets=_packets(stats),
            node_id=self.settings.node_id, updated_at=now, caller_media=media["a"],
            callee_media=media["b"], caller_signalling=leg_transport(call, "a"),
            callee_signalling=leg_transport(call, "b"), recording=bool(call.attempt.recording),
        )  # fmt: skip
        self._quiet(self.live.publish(summary), "publish live call")

    def start(self) -> None:
        """Refresh the live-call summaries (packets, hold) every few seconds."""
        if not self._refresh_loop.running:
            d = self._refresh_loop.start(LIVE_REFRESH_INTERVAL, now=False)
            d.addErrback(lambda f: self.log.failure("Live-call refresh stopped", f))

    def stop(self) -> None:
        """Stop refreshing."""
        if self._refresh_loop.running:
            self._refresh_loop.stop()

    def _refresh_live(self) -> None:
        for call in list(self.calls.values()):
            if call.state is CallState.ANSWERED:
                self._publish(call)

    def _ended(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        self._by_a_txn.pop(id(call.a_txn), None)
        for dialog in [*call.dialogs.values(), *(b.dialog for b in call.branches)]:
            key = (dialog.call_id, dialog.local_tag)
            owner = self._dialogs.get(key)
            if owner is not None and owner[0] is call:
                del self._dialogs[key]
                self._remember_ended(key, dialog)
            for side in ("a", "b"):
                self._acks.pop((dialog.call_id, side), None)
        for number in (call.caller.number, call.callee.number):
            self._active[number] -= 1
            if self._active[number] <= 0:
                del self._active[number]
        if self.counters is not None and self._shared_limit():
            self._quiet(self.counters.release(call.counted), "release call counts")
        sip_metrics.CALLS_ENDED.labels(call.disposition).inc()
        session = call.media
        session.release()
        session.on_timeout = session.on_dtmf = None  # break the call <-> session cycle
        call.attempt.media = None
        call.on_ended = None
        winner = call.winner
        for branch in call.branches:
            # The transaction may linger (timer D, Accepted for a late 2xx) with
            # its user: the user lets the call go (only a losing fork's late 2xx
            # still needs an answer), and the branch lets the transaction go.
            txn = branch.txn
            if txn is not None and isinstance(txn.user, _BranchUser):
                txn.user.call_ended(self, branch is winner)
            branch.txn = None
        if self.live is not None:
            self._quiet(self.live.remove(call.call_id), "remove live call")
        # The record waits for the released session's final counters: at once
        # in this process, a moment with the media process (ADR 0033).
        d = session.final_stats()
        self._recording.add(d)
        d.addCallback(self._write_record, call)
        d.addErrback(self._record_failed, call)
        d.addBoth(lambda _: self._recording.discard(d))

    def _write_record(self, stats: dict[str, Any], call: Call) -> None:
        media_stats = with_signalling(call, stats)
        for counts in media_stats.values():
            if counts.get("packets_in"):
                rtp_metrics.JITTER_SECONDS.observe(float(counts.get("jitter_ms_in", 0.0)) / 1000)
        if self.records is not None or self.hooks:
            record = self._record(call, media_stats)
            if self.records is not None:
                self._quiet(self.records.add(record), "write call record")
            if self.hooks:
                self.hooks.ended(call.attempt, record)

    def _record_failed(self, failure: Failure, call: Call) -> None:
        self.log.failure(
            "Could not record the end of call {call_id}", failure, call_id=call.call_id
        )

    def records_written(self) -> defer.Deferred[None]:
        """Fires once every ended call's record was handed to the store (at shutdown)."""
        pending = list(self._recording)
        d = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)
        return d.addCallback(lambda _: None)

    def _record(self, call: Call, media_stats: dict[str, Any]) -> CallRecord:
        return CallRecord(
            call_id=call.call_id, caller=call.caller.number, caller_name=call.caller.name,
            callee=call.callee.number if call.answered_at is not None else "",
            dialled=call.dialled, started_at=call.started_at, answered_at=call.answered_at,
            ended_at=call.ended_at or self.clock.seconds(), disposition=call.disposition,
            hangup_cause=call.hangup_cause, hangup_side=call.hangup_side or "system",
            codec=call.codec, media=media_stats, node_id=self.settings.node_id,
            recording=call.attempt.recording, recording_info=call.attempt.recording_info,
            stir_attest=call.attempt.stir_attest, stir_verstat=call.attempt.stir_verstat,
            emergency=call.attempt.emergency,
        )  # fmt: skip

    def _quiet(self, d: object, what: str) -> None:
        """Log (never raise) a failed store write the call does not depend on."""
        if isinstance(d, defer.Deferred):
            d.addErrback(self._store_failed, what)

    def _store_failed(self, failure: Failure, what: str) -> None:
        if isinstance(failure.value, _BUGS):
            self.log.failure("Could not " + what, failure)
        else:
            # The store is down or locked: one line, not a traceback per attempt.
            self.log.warn("Could not {what}: {error}", what=what, error=failure.getErrorMessage())

    def hangup_all(self, cause: str = "shutdown", spare_emergency: bool = False) -> None:
        """
        End every call (graceful shutdown): BYE answered ones, 503 ringing
        ones; with ``spare_emergency``, every call but the emergency calls.
        """
        for call in list(self.calls.values()):
            if not (spare_emergency and call.attempt.emergency):
                self.end_call(call, cause)

    def end_call(self, call: Call, cause: str) -> None:
        """End one call from Warden's side: BYE if answered, else CANCEL forks and 503."""
        if call.state is CallState.RINGING:
            call.hangup_side = "system"
            for branch in call.branches:
                if not branch.done:
                    branch.done = True
                    self.cancel_branch(branch)
            call.fail(503, "Service Unavailable", cause)
        else:
            call.hangup(None, cause)


def _packets(stats: dict[str, dict[str, Any]]) -> int:
    """Packets received on both legs, from a session's counters."""
    return int(sum(side.get("packets_in", 0) for side in stats.values()))


# Exceptions that mean a bug rather than an unavailable store.
_BUGS = (AttributeError, AssertionError, KeyError, NameError, TypeError)


@implementer(IClientTransactionUser)
class _BranchUser:
    """Reports one forked INVITE's transaction to its call."""

    def __init__(self, call: Call, branch: Branch) -> None:
        self.call: Call | None = call
        self.branch = branch
        self._controller: CallController | None = None
        self._winner = False

    def call_ended(self, controller: CallController, winner: bool) -> None:
        """
        The call ended while the transaction lingers: forget it, so that the
        ended call (its dialogs, media session, records) is not kept for the
        32 s of Accepted. What the call would still do is kept: a late 2xx of
        a fork that lost is acknowledged and hung up; the winner's dialog is
        over (its 2xx retransmissions were answered while the call lived).
        """
        self.call = None
        self._controller = controller
        self._winner = winner

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        call = self.call
        if call is None:
            if self._controller is not None and not self._winner and 200 <= response.status < 300:
                try:
                    self._controller.ack_and_bye(self.branch, response)
                except SipParseError:
                    pass
            return
        try:
            call.branch_response(self.branch, response)
        except SipParseError:
            call.branch_timed_out(self.branch)

    def timed_out(self, transaction: ClientTransaction) -> None:
        if self.call is not None:
            self.call.branch_timed_out(self.branch)

    def transport_failed(self, transaction: ClientTransaction) -> None:
        if self.call is not None:
            self.call.branch_timed_out(self.branch)


@implementer(IClientTransactionUser)
class _RelayUser:
    """Carries the final answer of a relayed in-dialog request back."""

    def __init__(
        self,
        controller: CallController,
        call: Call,
        side: str,
        txn: ServerTransaction,
        request: Request,
    ) -> None:
        self.controller = controller
        self.call = call
        self.side = side
        self.txn = txn
        self.request = request
        self.done = False

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        if response.status < 200:
            return
        if self.done:
            if 200 <= response.status < 300:
                self.controller.resend_ack(self.call, self.call.other(self.side), response)
            return
        self.done = True
        self.controller.relay_final(self.call, self.side, self.txn, self.request, response)

    def timed_out(self, transaction: ClientTransaction) -> None:
        self._fail(408, "Request Timeout")

    def transport_failed(self, transaction: ClientTransaction) -> None:
        self._fail(503, "Service Unavailable")

    def _fail(self, status: int, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.call.pending.pop(self.side, None)
        self.txn.respond(make_response(self.request, status, reason))


@implementer(IClientTransactionUser)
class _NullUser:
    """For BYE and CANCEL: the answer changes nothing."""

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        """Ignored."""

    def timed_out(self, transaction: ClientTransaction) -> None:
        """Ignored."""

    def transport_failed(self, transaction: ClientTransaction) -> None:
        """Ignored."""


def over_tls_if_sips(request: Request, bindings: tuple[Binding, ...]) -> tuple[Binding, ...]:
    """
    The bindings a call rings: for a ``sips:`` URI only the callee's phones
    registered over TLS (RFC 5630 §3.1.3: TLS on every hop), 480 with none;
    otherwise all of them.
    """
    if request.uri.scheme != "sips":
        return bindings
    over_tls = tuple(b for b in bindings if binding_over_tls(b))
    if not over_tls:
        raise SipError(480, "Temporarily Unavailable (no TLS phone)")
    return over_tls


#: The record's and metric's names of the two legs.
LEG_NAMES = {"a": "caller", "b": "callee"}


def leg_transport(call: Call, side: str) -> str:
    """The transport of ``side``'s signalling ("udp", "tcp", "tls"); "" without a dialog."""
    dialog = call.dialogs.get(side)
    return dialog.flow.transport if dialog is not None else ""


def with_signalling(call: Call, stats: dict[str, Any]) -> dict[str, Any]:
    """
    ``stats`` (per leg, from the media session) with each leg's signalling,
    ``transport`` and ``signalling_encrypted`` (over TLS, RFC 3261 §26.2), as
    the call record keeps them; each leg is counted in ``warden_call_legs_total``.
    """
    legs = {side: dict(values) for side, values in stats.items()}
    for side, leg in LEG_NAMES.items():
        transport = leg_transport(call, side)
        if not transport:
            continue
        values = legs.setdefault(side, {})
        values["transport"] = transport
        values["signalling_encrypted"] = transport == "tls"
        sip_metrics.CALL_LEGS.labels(leg, transport).inc()
    return legs


def _media_kind(stats: dict[str, Any] | None) -> str:
    """``srtp`` or ``rtp`` for a leg's media statistics; "" when there are none."""
    if stats is None:
        return ""
    return "srtp" if stats.get("media_encrypted") else "rtp"
