"""
Call pickup (ADR 0023): an extension answers a call ringing at another one.

A call hook sets L{warden.sip.hooks.CallAttempt.pickup} before routing to the
id of a ringing call (the callfeatures plugin does for ``*8``, group pickup);
the B2BUA then, instead of routing the picker's INVITE:

1. cancels every fork of the ringing call;
2. takes the picker's INVITE as the callee side of the call: a dialog in which
   Warden is the UAS (RFC 3261 §12.1.1), answered 200 with the caller's offer
   as the relay sends it to callee phones, retransmitted until its ACK;
3. takes the picker's offer as the callee's answer (through the relay) and
   answers the caller 200 with it, as for any answered call.

The picker becomes the call's callee (live calls, call record, call counts).
Both INVITEs must carry SDP (no offer-less INVITE is picked up: 488). The
caller's offer and the picker's must share a codec, as two phones of one
office do; the picker's phone takes the relay's copy of the caller's offer as
its answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warden.errors import SipError
from warden.model import Extension
from warden.sip.call import CallState, PendingInvite
from warden.sip.dialog import DialogState, uas_dialog
from warden.sip.message import Request, make_response, new_tag
from warden.sip.sdp import SdpError

if TYPE_CHECKING:  # pragma: no cover
    from warden.sip.b2bua import CallController
    from warden.sip.call import Call
    from warden.sip.flow import Flow
    from warden.sip.transaction_server import ServerTransaction

__all__ = ["pick_up"]


def pick_up(
    controller: CallController,
    call: Call,
    picker: Extension,
    txn: ServerTransaction,
    request: Request,
    flow: Flow,
) -> None:
    """
    Connect ``picker``'s INVITE (``request`` on ``txn``) to the ringing ``call``.

    Raises:
        SipError: 480 when the call no longer rings, 488 without usable SDP.
    """
    if call.state is not CallState.RINGING or call.rering:
        raise SipError(480, "Temporarily Unavailable (no call to pick up)")
    offer_to_picker = call.sent_sdp.get("b", b"")
    if not request.body or not offer_to_picker:
        raise SipError(488, "Not Acceptable Here (pickup needs SDP offers)")
    for branch in call.branches:
        if not branch.done:
            branch.done = True
            controller.cancel_branch(branch)
    dialog = uas_dialog(
        request, new_tag(), flow, controller.contact_for(flow), controller.via_for(flow)
    )
    dialog.state = DialogState.CONFIRMED
    call.dialogs["b"] = dialog
    controller.index_dialog(call, "b", dialog)
    controller.change_party(call, "b", picker)
    try:
        call.answer_locally(request.body, flow.host)
    except SdpError as e:
        call.fail(488, "Not Acceptable Here", "picked up with unusable SDP")
        raise SipError(488, "Not Acceptable Here") from e
    headers = [
        ("Contact", f"<{dialog.local_contact}>"),
        ("Allow", controller.allow_header),
        ("Content-Type", "application/sdp"),
    ]
    response = make_response(request, 200, "OK", to_tag=dialog.local_tag, headers=headers)
    response.body = offer_to_picker
    pending = PendingInvite("b", txn, origin_cseq=request.cseq.number, response=response)
    call.pending["b"] = pending
    txn.respond(response)
    controller.start_2xx_retransmit(call, pending)
