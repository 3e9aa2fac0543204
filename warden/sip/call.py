"""
One call through the B2BUA: an A leg (Warden is the UAS of the caller's INVITE)
and, once answered, one B leg (Warden is the UAC towards the callee); while
ringing, one B branch per forked binding.

The two dialogs are independent (RFC 3261 §12, §16 does not apply: this is no
proxy). What crosses from one leg to the other is chosen here: SDP (rewritten by
the media session to point at the relay), the status of final responses, the
bodies of INFO/UPDATE, and the caller's identity as the B2BUA asserts it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from warden.digits import parse_uint
from warden.interfaces import IMediaSession
from warden.model import Binding, Extension
from warden.sip.addressing import binding_host
from warden.sip.dialog import Dialog, DialogState, confirm_uac_dialog, uas_dialog
from warden.sip.flow import Flow
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.sdp import SdpError
from warden.sip.session_timer import MIN_SE, SessionTimer, session_expires, supports_timer

if TYPE_CHECKING:  # pragma: no cover
    from warden.sip.b2bua import CallSettings
    from warden.sip.hooks import CallAttempt
    from warden.sip.transaction_client import ClientTransaction
    from warden.sip.transaction_server import ServerTransaction

RELAYED_HEADERS = ("Content-Type", "Content-Disposition", "Info-Package", "Event", "Reason")


class CallState(Enum):
    """Where a call is."""

    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@attrs.define
class Branch:
    """One forked INVITE towards one binding of the callee."""

    binding: Binding
    request: Request
    dialog: Dialog
    txn: ClientTransaction | None = None
    provisional: bool = False
    done: bool = False
    cancel_pending: bool = False
    status: int = 0
    pracked: int = 0


@attrs.define
class PendingInvite:
    """
    An INVITE in flight from one side to the other (the initial one or a
    re-INVITE): what is needed to retransmit its 2xx and relay the ACK.
    """

    origin: str
    server_txn: ServerTransaction
    target_cseq: int = 0
    response: Response | None = None
    retransmit: IDelayedCall | None = None
    interval: float = 0.0
    started: float = 0.0
    target_2xx: Response | None = None
    origin_cseq: int = 0


class CallServices(Protocol):
    """
    What a call asks of the B2BUA that owns it (L{warden.sip.b2bua.CallController}
    provides it): time, settings, its forks' INVITEs, sending, dialog indexing
    and reporting. The call sees nothing else of the controller.
    """

    clock: IReactorTime
    settings: CallSettings
    allow_header: str

    def new_branch(self) -> str:
        """A fresh Via branch for a request the call sends."""

    def via_for(self, flow: Flow) -> str:
        """Our ``host:port`` as seen from ``flow``'s peer."""

    def contact_for(self, flow: Flow) -> str:
        """Our Contact URI towards ``flow``'s peer."""

    def codec_of(self, sdp: bytes) -> str:
        """The first codec of ``sdp``'s first audio stream."""

    def make_branch(self, call: Call, binding: Binding, offer: bytes) -> Branch | None:
        """The INVITE towards one binding, or None when it cannot be reached."""

    def send_branch(self, call: Call, branch: Branch) -> None:
        """Send a fork's INVITE."""

    def cancel_branch(self, branch: Branch) -> None:
        """CANCEL a ringing fork."""

    def ack_and_bye(self, branch: Branch, response: Response) -> None:
        """Acknowledge and hang up a fork that answered too late."""

    def send_bye(self, call: Call, side: str) -> None:
        """Hang up one side."""

    def fire_and_forget(self, request: Request, flow: Flow) -> None:
        """Send a request whose outcome does not matter."""

    def index_dialog(self, call: Call, side: str, dialog: Dialog) -> None:
        """Route the dialog's requests to the call."""

    def start_2xx_retransmit(self, call: Call, pending: PendingInvite) -> None:
        """Retransmit a 2xx until its ACK comes."""

    def resend_ack(self, call: Call, side: str, response: Response) -> None:
        """Send the ACK for a retransmitted 2xx again."""

    def reinvite(self, call: Call, side: str, offer: bytes) -> None:
        """Refresh ``side``'s session with a re-INVITE."""

    def handed_over(self, call: Call, branch: Branch, response: Response, body: bytes) -> None:
        """A phone answered a call Warden had answered itself (L{Call.ring_again})."""

    def reroute(self, call: Call, number: str) -> None:
        """Send a call Warden answered itself on to ``number`` (L{warden.sip.handover})."""

    def call_answered(self, call: Call) -> None:
        """The call was answered."""

    def redirect_failed(self, call: Call, status: int, reason: str | None, cause: str) -> bool:
        """Whether a hook may redirect the failed call (it then keeps ringing)."""

    def follow_up(self, call: Call, branch: Branch, response: Response | None) -> Branch | None:
        """A branch replacing a failed one (an external target's next try), or None."""


class Call:
    """
    The state of one call and its reactions to SIP events.

    Args:
        services: what the call asks of the B2BUA that owns it.
        call_id: Warden's identifier of the call (also the B legs' Call-ID base).
        caller: the authenticated extension that placed the call.
        dialled: the number dialled.
        callee: the extension reached.
        txn: the A leg's INVITE server transaction.
        request: the caller's INVITE.
        flow: where the caller's INVITE came from.
        attempt: the call as hooks see it (L{warden.sip.hooks}).
        media: the relay's session anchoring the call's media.
    """

    log = Logger()

    def __init__(
        self,
        services: CallServices,
        call_id: str,
        caller: Extension,
        dialled: str,
        callee: Extension,
        txn: ServerTransaction,
        request: Request,
        flow: Flow,
        attempt: CallAttempt,
        media: IMediaSession,
    ) -> None:
        self.services = services
        self.attempt = attempt
        self.call_id = call_id
        self.caller = caller
        self.dialled = dialled
        self.callee = callee
        #: The numbers counted in the cluster-wide call counts (released at the end).
        self.counted: tuple[str, ...] = (caller.number, callee.number)
        self.a_txn = txn
        self.a_request = request
        self.a_tag = new_tag()
        self.state = CallState.RINGING
        self.started_at = services.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.dialogs: dict[str, Dialog] = {}
        self.dialogs["a"] = uas_dialog(
            request, self.a_tag, flow, services.contact_for(flow), services.via_for(flow)
        )
        self.branches: list[Branch] = []
        #: The forks of the current callee start here (a hook may redirect the call).
        self.first_branch = 0
        self.media = media
        self.sent_sdp: dict[str, bytes] = {}
        self.timers: dict[str, SessionTimer] = {}
        self.rseq = 0
        self.unacked: tuple[int, Response] | None = None
        self.prack_timer: IDelayedCall | None = None
        self.pending: dict[str, PendingInvite] = {}
        self.ring_timer: IDelayedCall | None = None
        self.final_status = 0
        self.hangup_cause = ""
        self.hangup_side = ""
        self.codec = ""
        self.on_ended: Callable[[Call], None] | None = None
        #: Warden answered the caller itself (a local application) and now
        #: rings another callee for it (L{ring_again}): no response goes to
        #: the caller's INVITE any more.
        self.rering = False

    # -- helpers ------------------------------------------------------------------

    def other(self, side: str) -> str:
        """The other side's name."""
        return "b" if side == "a" else "a"

    def party(self, side: str) -> Extension:
        """The extension connected on ``side`` ("a": the caller's side)."""
        return self.caller if side == "a" else self.callee

    def set_party(self, side: str, extension: Extension) -> None:
        """A transfer connected ``extension`` on ``side``."""
        if side == "a":
            self.caller = extension
        else:
            self.callee = extension

    def phone_host(self, side: str) -> str:
        """The IP address the phone on ``side`` sends its SIP from (the media relay's rule)."""
        winner = self.winner if side == "b" else None
        if winner is not None:
            return binding_host(winner.binding, winner.dialog.flow)
        return self.dialogs[side].flow.host

    @property
    def reliable_provisionals(self) -> bool:
        """The caller requires 100rel (RFC 3262): 180/183 must be acknowledged."""
        return "100rel" in (t.strip().lower() for t in self.a_request.get_all("Require"))

    def respond_a(
        self,
        status: int,
        reason: str | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        """Answer the caller's INVITE."""
        extra = list(headers or [])
        if 100 < status < 300:
            extra.append(("Contact", f"<{self.dialogs['a'].local_contact}>"))
            extra.append(("Allow", self.services.allow_header))
        if body:
            extra.append(("Content-Type", "application/sdp"))
        reliable = 100 < status < 200 and self.reliable_provisionals
        if reliable:
            if self.unacked is not None:
                return self.unacked[1]  # one reliable provisional at a time (RFC 3262 §3)
            self.rseq += 1
            extra += [("Require", "100rel"), ("RSeq", str(self.rseq))]
        elif status >= 200:
            self.prack_received(None)
        response = make_response(self.a_request, status, reason, to_tag=self.a_tag, headers=extra)
        dialog = self.dialogs["a"]
        if 200 <= status < 300:
            dialog.state = DialogState.CONFIRMED
        elif 100 < status < 200 and dialog.state is DialogState.PENDING:
            dialog.state = DialogState.EARLY
        if body:
            response.body = body
        self.a_txn.respond(response)
        if reliable:
            self.unacked = (self.rseq, response)
            self._schedule_provisional(self.services.settings.timers.t1, 0.0)
        return response

    def _schedule_provisional(self, interval: float, elapsed: float) -> None:
        self.prack_timer = self.services.clock.callLater(
            interval, self._retransmit_provisional, interval, elapsed + interval
        )

    def _retransmit_provisional(self, interval: float, elapsed: float) -> None:
        """RFC 3262 §3: resend until PRACK, doubling; give up after 64*T1."""
        self.prack_timer = None
        if self.unacked is None or self.state is not CallState.RINGING:
            return
        if elapsed >= self.services.settings.timers.timer_h:
            self.unacked = None
            self.fail(504, "Server Time-out", "no PRACK")
            return
        self.a_txn.respond(self.unacked[1])
        self._schedule_provisional(interval * 2, elapsed)

    def prack_received(self, rseq: int | None) -> bool:
        """A PRACK for ``rseq`` (None: forget the pending one); True if it matched."""
        if self.unacked is None or (rseq is not None and rseq != self.unacked[0]):
            return False
        self.unacked = None
        if self.prack_timer is not None and self.prack_timer.active():
            self.prack_timer.cancel()
        self.prack_timer = None
        return True

    def rewrite(self, side: str, body: bytes, offer: bool, source: str | None = None) -> bytes:
        """
        SDP from ``side``'s phone as the other side must see it (via the relay);
        ``source``: the IP address that phone's SIP comes from, when it is new.
        """
        if not body:
            return body
        if source is not None:
            self.media.signalling_from(side, source)
        if offer:
            out: bytes = self.media.offer_from(side, body)
        else:
            out = self.media.answer_from(side, body)
        if not self.codec:
            self.codec = self.services.codec_of(out)
        self.sent_sdp[self.other(side)] = out
        return out

    # -- the initial INVITE -------------------------------------------------------

    def start(self, bindings: tuple[Binding, ...], offer: bytes) -> None:
        """Fork the INVITE to every binding and start the ring timer."""
        forks = []
        for binding in bindings:
            branch = self.services.make_branch(self, binding, offer)
            if branch is not None:
                forks.append(branch)
        self.branches.extend(forks)
        if not forks:
            self._routing_failed(480, "Temporarily Unavailable", "no reachable contact")
            return
        if not self.rering:  # else the endpoint answers that side until a phone does
            hosts = (binding_host(b.binding, b.dialog.flow) for b in forks)
            self.media.signalling_from("b", *hosts)
        for branch in forks:
            self.services.send_branch(self, branch)
        self.ring_timer = self.services.clock.callLater(self.ring_seconds(), self.ring_timeout)

    def ring_seconds(self) -> float:
        """
        How long the call rings: what a hook chose (a ring group's, voicemail's),
        else the callee extension's own ring timeout, else ``[calls] ring_timeout``
        (an extension's is capped by that).
        """
        default = self.services.settings.ring_timeout
        own = min(self.callee.ring_timeout, default) if self.callee.ring_timeout > 0 else 0.0
        return self.attempt.ring_timeout or own or default

    def branch_response(self, branch: Branch, response: Response) -> None:
        """A response from one forked branch."""
        status = response.status
        if self.state is not CallState.RINGING or branch.done:
            if 200 <= status < 300 and branch is not self.winner:
                self.services.ack_and_bye(branch, response)  # a late 2xx from a cancelled fork
            elif 200 <= status < 300 and branch is self.winner:
                self.reack(response)
            return
        if status < 200:
            self._branch_provisional(branch, response)
        elif status < 300:
            self._answered(branch, response)
        else:
            self._branch_failed(branch, status, response)

    def _branch_provisional(self, branch: Branch, response: Response) -> None:
        branch.provisional = True
        if response.to.tag and branch.dialog.remote_tag is None:
            confirm_uac_dialog(branch.dialog, response)
        if branch.cancel_pending:
            self.services.cancel_branch(branch)
            return
        if response.status == 100:
            return
        if not self._prack_if_reliable(branch, response):
            return  # a retransmission of a reliable provisional already PRACKed
        if self.rering:
            return  # the caller was answered long ago (it hears Warden's ringback)
        body = b""
        if response.body:
            try:
                source = binding_host(branch.binding, branch.dialog.flow)
                body = self.rewrite("b", response.body, offer=False, source=source)
            except SdpError:
                body = b""
        self.respond_a(response.status, response.reason, body)

    def _prack_if_reliable(self, branch: Branch, response: Response) -> bool:
        """
        PRACK a reliable provisional from the callee (RFC 3262 §4); False for one
        already acknowledged. The PRACK's own transaction needs no answer here.
        """
        requires = (t.strip().lower() for t in response.get_all("Require"))
        rseq = (response.get("RSeq") or "").strip()
        number = parse_uint(rseq, 2**32 - 1, max_digits=10)  # RFC 3262 §7.1: 1..2**32-1
        if "100rel" not in requires or number is None:
            return True
        if number <= branch.pracked:
            return False
        branch.pracked = number
        rack = f"{rseq} {branch.request.cseq.number} INVITE"
        prack = branch.dialog.request("PRACK", self.services.new_branch(), [("RAck", rack)])
        self.services.fire_and_forget(prack, branch.dialog.flow)
        return True

    @property
    def winner(self) -> Branch | None:
        """The branch that answered."""
        dialog = self.dialogs.get("b")
        return next((b for b in self.branches if b.dialog is dialog), None)

    def _answered(self, branch: Branch, response: Response) -> None:
        branch.done = True
        self.state = CallState.ANSWERED
        if not self.rering:  # else the caller's answer (by Warden) stays the call's
            self.answered_at = self.services.clock.seconds()
        self._stop_ring_timer()
        confirm_uac_dialog(branch.dialog, response)
        self.dialogs["b"] = branch.dialog
        self.services.index_dialog(self, "b", branch.dialog)
        for other in self.branches:
            if other is not branch and not other.done:
                other.done = True
                self.services.cancel_branch(other)
        try:
            source = binding_host(branch.binding, branch.dialog.flow)
            body = self.rewrite("b", response.body, offer=not branch.request.body, source=source)
        except SdpError:
            self.services.ack_and_bye(branch, response)
            self.fail(500, "Server Internal Error", "bad SDP from callee")
            return
        if self.rering:
            self.rering = False
            self.services.handed_over(self, branch, response, body)
            return
        pending = PendingInvite(
            "a", self.a_txn, branch.request.cseq.number, target_2xx=response,
            origin_cseq=self.a_request.cseq.number,
        )  # fmt: skip
        self.pending["a"] = pending
        headers = self._start_session_timers(response)
        pending.response = self.respond_a(200, "OK", body, headers)
        self.services.start_2xx_retransmit(self, pending)
        self.services.call_answered(self)

    def _start_session_timers(self, response: Response) -> list[tuple[str, str]]:
        """RFC 4028 on each leg; returns the headers for the caller's 200."""
        headers: list[tuple[str, str]] = []
        asked = session_expires(self.a_request)
        if asked is not None:
            interval = max(asked[0], MIN_SE)
            caller_refreshes = supports_timer(self.a_request)
            refresher = "uac" if caller_refreshes else "uas"
            headers.append(("Session-Expires", f"{interval};refresher={refresher}"))
            if caller_refreshes:
                headers.append(("Require", "timer"))
            self.timers["a"] = self._timer("a", interval, not caller_refreshes)
        answered = session_expires(response)
        if answered is not None:
            self.timers["b"] = self._timer("b", max(answered[0], MIN_SE), answered[1] != "uas")
        return headers

    def _timer(self, side: str, interval: int, we_refresh: bool) -> SessionTimer:
        return SessionTimer(
            self.services.clock,
            interval,
            we_refresh,
            refresh=lambda: self.services.reinvite(self, side, self.sent_sdp.get(side, b"")),
            expired=lambda: self.hangup(None, "session timer expired"),
        )

    def session_refreshed(self, *sides: str) -> None:
        """A re-INVITE or UPDATE refreshed the session on ``sides``."""
        for side in sides:
            timer = self.timers.get(side)
            if timer is not None:
                timer.restart()

    def reack(self, response: Response) -> None:
        """A retransmitted 2xx from the callee: acknowledge again once we have."""
        self.services.resend_ack(self, "b", response)

    def restart(self, bindings: tuple[Binding, ...]) -> None:
        """Ring another callee's ``bindings`` (a hook redirected the failed call)."""
        self.first_branch = len(self.branches)
        self.start(bindings, self.sent_sdp.get("b", b""))

    def ring_again(self, bindings: tuple[Binding, ...], offer: bytes) -> None:
        """
        A call Warden answered itself (a local application: an IVR) rings
        ``bindings`` with ``offer`` (the relay's fresh offer for the callee
        side). The caller keeps its answered dialog: when a phone answers, the
        B2BUA connects it (L{CallServices.handed_over}); when none does, and no
        hook redirects the call, Warden hangs up.
        """
        self.rering = True
        self.state = CallState.RINGING
        self.sent_sdp["b"] = offer
        self.first_branch = len(self.branches)
        self.start(bindings, offer)

    def answer_locally(self, answer: bytes, host: str) -> None:
        """
        Warden answers the call itself (a local application, L{warden.sip.local}):
        ``answer`` is the SDP of Warden's endpoint at ``host`` for the callee
        side; the caller gets the relay's answer in a 200, retransmitted until
        the ACK. SdpError when the relay refuses ``answer``.
        """
        body = self.rewrite("b", answer, offer=False, source=host)
        self._stop_ring_timer()
        self.state = CallState.ANSWERED
        self.answered_at = self.services.clock.seconds()
        pending = PendingInvite("a", self.a_txn, origin_cseq=self.a_request.cseq.number)
        self.pending["a"] = pending
        pending.response = self.respond_a(200, "OK", body)
        self.services.start_2xx_retransmit(self, pending)
        self.services.call_answered(self)

    def _maybe_all_failed(self) -> None:
        forks = self.branches[self.first_branch :]
        if not all(b.done for b in forks):
            return
        statuses = [b.status for b in forks]
        if 486 in statuses or 600 in statuses:
            self._routing_failed(486, "Busy Here", "busy")
        elif any(600 <= s < 700 for s in statuses):
            self._routing_failed(603, "Decline", "declined")
        elif all(s in (408, 430, 480, 0) for s in statuses):
            # 430 Flow Failed: the node holding the phone's connection lost it.
            self._routing_failed(480, "Temporarily Unavailable", "no answer")
        else:
            best = min(s for s in statuses if s >= 300)
            self._routing_failed(best, None, str(best))

    def _routing_failed(self, status: int, reason: str | None, cause: str) -> None:
        """The callee cannot be reached: fail, unless a hook redirects the call."""
        self._stop_ring_timer()
        if not self.services.redirect_failed(self, status, reason, cause):
            self.fail(status, reason, cause)

    def ring_timeout(self) -> None:
        """Nobody answered in time: cancel every branch, tell the caller."""
        self.ring_timer = None
        if self.state is not CallState.RINGING:
            return
        for branch in self.branches:
            if not branch.done:
                branch.done = True
                self.services.cancel_branch(branch)
        self._routing_failed(480, "Temporarily Unavailable", "ring timeout")

    def branch_timed_out(self, branch: Branch) -> None:
        """Timer B on one branch."""
        self._branch_failed(branch, 408, None)

    def _branch_failed(self, branch: Branch, status: int, response: Response | None) -> None:
        """One branch failed: its follow-up rings instead, if it has one."""
        first_failure = not branch.done
        branch.done = True
        branch.status = status
        if self.state is not CallState.RINGING:
            return
        follow = self.services.follow_up(self, branch, response) if first_failure else None
        if follow is None:
            self._maybe_all_failed()
            return
        self.first_branch = len(self.branches)
        self.branches.append(follow)
        self.media.signalling_from("b", binding_host(follow.binding, follow.dialog.flow))
        self.services.send_branch(self, follow)

    def caller_cancelled(self, cause: str = "CANCEL") -> None:
        """The caller sent CANCEL (or BYE in the early dialog) before the answer."""
        if self.state is not CallState.RINGING:
            return
        for branch in self.branches:
            if not branch.done:
                branch.done = True
                self.services.cancel_branch(branch)
        self.hangup_side = "caller"
        if self.rering:  # the caller hung up while Warden rang a phone for it
            self.rering = False
            self.hangup("a", cause)
            return
        self.fail(487, "Request Terminated", cause)

    def fail(self, status: int, reason: str | None, cause: str) -> None:
        """End an unanswered call with a final error to the caller."""
        self._stop_ring_timer()
        if self.state is CallState.ENDED:
            return
        if self.rering:  # nobody took the call Warden rang for its caller
            self.rering = False
            self.state = CallState.ANSWERED
            self.hangup(None, f"{cause} ({status})")
            return
        self.final_status = status
        self.hangup_cause = self.hangup_cause or cause
        self.hangup_side = self.hangup_side or "callee"
        self.respond_a(status, reason)
        self.end()

    def _stop_ring_timer(self) -> None:
        if self.ring_timer is not None and self.ring_timer.active():
            self.ring_timer.cancel()
        self.ring_timer = None

    # -- after the answer ---------------------------------------------------------

    def hangup(self, side: str | None, cause: str) -> None:
        """End an answered call: BYE to each side that did not send one."""
        if self.state is CallState.ENDED:
            return
        self.hangup_side = self.hangup_side or (side or "system")
        if side == "a":
            self.hangup_side = "caller"
        elif side == "b":
            self.hangup_side = "callee"
        self.hangup_cause = self.hangup_cause or cause
        for name in ("a", "b"):
            if name != side and name in self.dialogs:
                self.services.send_bye(self, name)
        self.end()

    def end(self) -> None:
        """Release everything the call holds; write its record."""
        if self.state is CallState.ENDED:
            return
        self._stop_ring_timer()
        self.state = CallState.ENDED
        self.ended_at = self.services.clock.seconds()
        for pending in self.pending.values():
            if pending.retransmit is not None and pending.retransmit.active():
                pending.retransmit.cancel()
        for timer in self.timers.values():
            timer.cancel()
        self.prack_received(None)
        if self.on_ended is not None:
            self.on_ended(self)

    @property
    def disposition(self) -> str:
        """The CDR disposition."""
        if self.answered_at is not None:
            return "ANSWERED"
        if self.final_status == 487:
            return "CANCELLED"
        if self.final_status in (486, 600, 603):
            return "BUSY"
        if self.final_status in (408, 480):
            return "NO ANSWER"
        return "FAILED"
