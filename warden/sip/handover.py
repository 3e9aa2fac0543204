"""
Handing a call Warden answered itself on to another destination (ADR 0026).

A local application (an IVR, L{warden.features.ivr}) that answered a caller
may send it on with L{warden.sip.local.LocalCall.transfer}: the destination
is routed as if the caller had dialled it, through the same call hooks
(forwards, do-not-disturb, ring groups, voicemail on no answer) and the
dialplan:

1. A destination naming a local application (``voicemail:1001``,
   ``ivr:other``), directly or through a hook, runs on the endpoint that
   already answers the caller: no SIP is exchanged.
2. Otherwise the call rings the destination's phones as a new callee side
   (L{warden.sip.call.Call.ring_again}): the relay makes a fresh offer for
   the callee side from the caller's original one, the caller's dialog stays
   as it is, and the endpoint plays a ringback tone to the caller meanwhile.
   When a phone answers, Warden acknowledges it, closes the endpoint (the
   relay now sends the callee side's media to the phone) and re-INVITEs the
   caller only when the phone chose another codec than the endpoint had.
3. A destination that cannot be reached, and that no hook redirects (once),
   ends the call: Warden hangs up.

The caller's trunk marks (``trunk-inbound``...) stay with the call, so an
outside caller handed on by an IVR reaches no outbound route it could not
have dialled itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.model import Route
from warden.sip.addressing import binding_over_tls
from warden.sip.call import Branch, Call, CallState
from warden.sip.hooks import CallAttempt
from warden.sip.message import Response
from warden.sip.sdp import SdpError
from warden.sip.transfer import sendrecv

if TYPE_CHECKING:  # pragma: no cover
    from warden.sip.b2bua import CallController

__all__ = ["Handover"]

_log = Logger()


class Handover:
    """
    Sends locally answered calls on (L{reroute}) and connects the phone that
    answers (L{handed_over}).

    Args:
        controller: the B2BUA (hooks, routing, groups, applications, sending).
    """

    def __init__(self, controller: CallController) -> None:
        self.c = controller

    def reroute(self, call: Call, number: str) -> None:
        """Send the answered ``call`` (no callee dialog) to ``number``."""
        d = defer.Deferred.fromCoroutine(self._reroute(call, number))
        d.addErrback(self._failed, call)

    async def _reroute(self, call: Call, number: str) -> None:
        c = self.c
        old = call.attempt
        attempt = CallAttempt(old.caller, number, old.request, old.flow)
        attempt.marks.update(m for m in old.marks if m.startswith("trunk"))
        attempt.call_id, attempt.media = call.call_id, call.media
        attempt.recording, attempt.recording_info = old.recording, old.recording_info
        if c.hooks:
            await c.hooks.before_routing(attempt)
        if not self._still_local(call):
            return  # the caller hung up meanwhile
        call.attempt = attempt
        local = c.local_target(attempt.dialled)
        if local is None and attempt.pickup:
            route = Route(480, "Temporarily Unavailable")
        else:
            route = await c.route_attempt(attempt, local)
        if route.status and c.hooks:
            route, local = await c._redirect_local(attempt, route)
        if not self._still_local(call):
            return
        if local is not None:
            assert c.applications is not None
            c.applications.resume(call, local)
            return
        if route.status or route.extension is None:
            call.hangup(None, f"transfer to {number} failed ({route.status})")
            return
        bindings = route.bindings
        call.media.signalling_encrypted(
            "b", bool(bindings) and all(map(binding_over_tls, bindings))
        )
        try:
            offer = call.media.offer_from("a", call.a_request.body)
        except SdpError:
            call.hangup(None, "transfer failed (media)")
            return
        c.change_party(call, "b", route.extension)
        call.ring_again(bindings, offer)

    @staticmethod
    def _still_local(call: Call) -> bool:
        """Whether ``call`` is still answered by Warden alone."""
        return call.state is CallState.ANSWERED and "b" not in call.dialogs

    def _failed(self, failure: Failure, call: Call) -> None:
        _log.failure("Could not transfer call {call_id}", failure, call_id=call.call_id)
        call.hangup(None, "transfer failed")

    def handed_over(self, call: Call, branch: Branch, response: Response, body: bytes) -> None:
        """
        A phone answered a call Warden rang for its caller: acknowledge the
        2xx, stop the endpoint, and re-INVITE the caller when the codec
        changed (``body``: the relay's SDP for the caller).
        """
        c = self.c
        dialog = branch.dialog
        ack = dialog.request("ACK", c.transactions.new_branch(), cseq=branch.request.cseq.number)
        c.remember_ack(dialog.call_id, "b", ack)
        c.send_quietly(ack, dialog.flow)
        if c.applications is not None:
            c.applications.handed_over(call)
        codec = c.codec_of(body)
        if codec and codec != call.codec:
            call.codec = codec
            c.transfers.reinvite(call, "a", sendrecv(body))
        c.groups.answered(call)
        c.publish(call)
        if c.hooks:
            c.hooks.answered(call.attempt)
