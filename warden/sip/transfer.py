"""
Call transfer handled inside the B2BUA (RFC 3515 REFER, RFC 3891 Replaces, RFC
5589 call-transfer flows).

The phone that sends REFER (the transferor) never talks to the transfer target
itself: Warden accepts the REFER (202), creates the new leg, reports progress to
the transferor with NOTIFY ``message/sipfrag`` bodies, and once the new leg is
up moves it into the call, hangs up the transferor, and re-INVITEs the
transferee so its media (still anchored on the relay) runs ``sendrecv`` again.

- Blind transfer: ``Refer-To: <sip:1003@pbx>``: Warden calls 1003 with the
  SDP the relay offers on the transferor's side.
- Attended transfer: ``Refer-To: <sip:1003@pbx?Replaces=...>`` naming the
  transferor's other call: Warden joins the transferee into that call in place
  of the transferor; no new INVITE to the target is needed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import SipError, SipParseError
from warden.interfaces import IClientTransactionUser
from warden.model import Extension, Route
from warden.sip.call import Call, CallState
from warden.sip.dialog import Dialog, DialogState, confirm_uac_dialog
from warden.sip.headers import name_addr, parse_address
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.sdp import SdpError

if TYPE_CHECKING:  # pragma: no cover
    from warden.sip.b2bua import CallController
    from warden.sip.transaction_client import ClientTransaction
    from warden.sip.transaction_server import ServerTransaction

_DIRECTION = re.compile(rb"a=(sendonly|recvonly|inactive)\r?\n")


def sendrecv(sdp: bytes) -> bytes:
    """The same SDP with its direction attributes made ``sendrecv`` (off hold)."""
    return _DIRECTION.sub(lambda m: b"a=sendrecv" + m.group(0)[len(m.group(1)) + 2 :], sdp)


def parse_replaces(value: str) -> tuple[str, str, str]:
    """``call-id;to-tag=X;from-tag=Y`` (RFC 3891 §6.1) -> (call_id, to_tag, from_tag)."""
    parts = unquote(value).split(";")
    params = dict(p.strip().split("=", 1) for p in parts[1:] if "=" in p)
    if not parts[0] or "to-tag" not in params or "from-tag" not in params:
        raise SipError(400, "Bad Replaces")
    return parts[0].strip(), params["to-tag"], params["from-tag"]


class Transfers:
    """REFER handling for the call controller."""

    log = Logger()

    def __init__(self, controller: CallController) -> None:
        self.c = controller

    def handle_refer(
        self, call: Call, side: str, txn: ServerTransaction, request: Request
    ) -> None:
        """Accept a REFER from ``side`` of an answered call and carry it out."""
        if call.state is not CallState.ANSWERED or call.other(side) not in call.dialogs:
            raise SipError(403, "Transfer Needs An Answered Call")
        try:
            target = parse_address(request.get("Refer-To") or "")
        except SipParseError as e:
            raise SipError(400, "Bad Refer-To") from e
        uri = target.uri
        if not uri.is_sip or not uri.user:
            raise SipError(400, "Refer-To must name an extension")
        replaces = next((v for k, v in uri.headers if k.lower() == "replaces"), None)
        if replaces is not None:
            other = self._replaced(parse_replaces(replaces), call, side)
        txn.respond(make_response(request, 202, "Accepted"))
        self.notify(call, side, 100, "Trying")
        if replaces is not None:
            self._attended(call, side, *other)
        else:
            d = self._blind(call, side, uri.user_unescaped or "")
            d.addErrback(self._failed, call, side)

    def _failed(self, failure: Failure, call: Call, side: str) -> None:
        self.log.failure("Transfer failed", failure)
        self.notify(call, side, 500, "Server Internal Error", final=True)

    def notify(self, call: Call, side: str, status: int, reason: str, final: bool = False) -> None:
        """Tell the transferor how the transfer goes (RFC 3515 §2.4.5)."""
        dialog = call.dialogs.get(side)
        if dialog is None:
            return
        state = "terminated;reason=noresource" if final else "active;expires=60"
        headers = [
            ("Event", "refer"),
            ("Subscription-State", state),
            ("Content-Type", "message/sipfrag;version=2.0"),
        ]
        body = f"SIP/2.0 {status} {reason}\r\n".encode()
        self.c.fire_and_forget(
            dialog.request("NOTIFY", self.c.transactions.new_branch(), headers, body), dialog.flow
        )

    # -- blind ---------------------------------------------------------------------

    def _blind(self, call: Call, side: str, number: str) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._blind_to(call, side, number))

    async def _blind_to(self, call: Call, side: str, number: str) -> None:
        route: Route = await self.c.router.route(number, call.caller)
        if route.status:
            self.notify(call, side, route.status, route.reason, final=True)
            return
        binding = route.bindings[0]
        target = route.extension
        assert target is not None  # a routed number names its extension
        flow = self.c.addressing.flow_for(binding)
        offer = sendrecv(call.sent_sdp.get(side, b""))
        if flow is None or not offer:
            self.notify(call, side, 480, "Temporarily Unavailable", final=True)
            return
        domain = self.c.settings.domain
        transferee = call.other(side)
        identity = call.caller if transferee == "a" else call.callee
        local = name_addr(identity.name, f"sip:{identity.number}@{domain}")
        dialog = Dialog(
            call_id=f"{call.call_id}-t{new_tag()}", local_tag=new_tag(), remote_tag=None,
            local_party=local, remote_party=f"<sip:{number}@{domain}>", local_cseq=0,
            remote_cseq=None, remote_target=binding.contact, route_set=[], flow=flow,
            local_contact=self.c.contact_for(flow), via_host=self.c.via_for(flow),
        )  # fmt: skip
        headers = [("P-Asserted-Identity", local), ("Content-Type", "application/sdp")]
        invite = dialog.request("INVITE", self.c.transactions.new_branch(), headers, offer)
        user = _TransferLeg(self, call, side, dialog, invite, target)
        self.c.transactions.send_request(invite, flow, user)

    def leg_answered(
        self,
        call: Call,
        side: str,
        dialog: Dialog,
        invite: Request,
        response: Response,
        target: Extension,
    ) -> None:
        """The transfer target answered: swap it in for the transferor."""
        confirm_uac_dialog(dialog, response)
        ack = dialog.request("ACK", self.c.transactions.new_branch(), cseq=invite.cseq.number)
        self.c.send_quietly(ack, dialog.flow)
        if call.state is not CallState.ANSWERED:
            self.c.fire_and_forget(
                dialog.request("BYE", self.c.transactions.new_branch()), dialog.flow
            )
            return
        try:
            call.media.signalling_from(side, dialog.flow.host)
            for_transferee = call.media.answer_from(side, response.body)
        except SdpError:
            self.c.fire_and_forget(
                dialog.request("BYE", self.c.transactions.new_branch()), dialog.flow
            )
            self.notify(call, side, 488, "Not Acceptable Here", final=True)
            return
        self.notify(call, side, 200, "OK", final=True)
        old = call.dialogs[side]
        self.c.fire_and_forget(old.request("BYE", self.c.transactions.new_branch()), old.flow)
        self.c.forget_dialog(old)
        call.dialogs[side] = dialog
        self.c.index_dialog(call, side, dialog)
        self.c.change_party(call, side, target)
        self.reinvite(call, call.other(side), sendrecv(for_transferee))

    # -- attended ------------------------------------------------------------------

    def _replaced(self, replaces: tuple[str, str, str], call: Call, side: str) -> tuple[Call, str]:
        """
        The call and side of the dialog ``Replaces`` names (RFC 3891 §3: Call-ID,
        to-tag = Warden's tag, from-tag = the transferor's): a confirmed dialog
        of another answered call whose party is the transferor's extension.
        Anything else changes no call (481, or 403 for someone else's call).
        """
        call_id, to_tag, from_tag = replaces
        found = self.c.dialog_owner(call_id, to_tag)
        if found is None:
            raise SipError(481, "Replaced Dialog Does Not Exist")
        other, other_side = found
        dialog = other.dialogs.get(other_side)
        if (
            other is call
            or other.state is not CallState.ANSWERED
            or dialog is None
            or dialog.local_tag != to_tag
            or dialog.remote_tag != from_tag
            or dialog.state is not DialogState.CONFIRMED
        ):
            raise SipError(481, "Replaced Dialog Does Not Exist")
        transferor = call.party(side).number
        if other.party(other_side).number != transferor:
            self.log.warn(
                "Refused REFER from {transferor}: Replaces names a call of {party}",
                transferor=transferor,
                party=other.party(other_side).number,
            )
            raise SipError(403, "Replaced Dialog Is Not The Transferor's")
        return found

    def _attended(self, call: Call, side: str, other: Call, other_side: str) -> None:
        """Join ``call``'s transferee into ``other`` in place of the transferor."""
        transferee = call.other(side)
        offer = sendrecv(other.sent_sdp.get(other_side, b""))
        if not offer:
            self.notify(call, side, 488, "Not Acceptable Here", final=True)
            return
        other.media.signalling_from(other_side, call.phone_host(transferee))
        moved = call.dialogs.pop(transferee)
        self.c.forget_dialog(moved)
        old = other.dialogs[other_side]
        other.dialogs[other_side] = moved
        self.c.index_dialog(other, other_side, moved)
        self.c.change_party(other, other_side, call.party(transferee))
        self.notify(call, side, 200, "OK", final=True)
        for dialog in (call.dialogs[side], old):
            self.c.fire_and_forget(
                dialog.request("BYE", self.c.transactions.new_branch()), dialog.flow
            )
            self.c.forget_dialog(dialog)
        call.dialogs.pop(side, None)
        call.hangup_side, call.hangup_cause = "caller" if side == "a" else "callee", "transferred"
        call.end()
        self.reinvite(other, other_side, offer, then=other.other(other_side))

    # -- re-INVITEs Warden originates ------------------------------------------------

    def reinvite(self, call: Call, side: str, offer: bytes, then: str | None = None) -> None:
        """
        Send ``offer`` to ``side``; its answer is fed to the relay. With ``then``,
        the relay's resulting SDP is offered to that side too (both off hold).
        """
        dialog = call.dialogs.get(side)
        if dialog is None:
            return
        headers = [("Content-Type", "application/sdp")]
        request = dialog.request("INVITE", self.c.transactions.new_branch(), headers, offer)
        self.c.transactions.send_request(
            request, dialog.flow, _ReInvite(self, call, side, request, then)
        )

    def reinvite_answered(
        self, call: Call, side: str, request: Request, response: Response, then: str | None
    ) -> None:
        """Acknowledge a 2xx to our re-INVITE and update the relay."""
        dialog = call.dialogs.get(side)
        if dialog is None:
            return
        dialog.update_target(response)
        ack = dialog.request("ACK", self.c.transactions.new_branch(), cseq=request.cseq.number)
        self.c.send_quietly(ack, dialog.flow)
        if not response.body:
            return
        try:
            out = call.media.answer_from(side, response.body)
        except SdpError:
            return
        call.sent_sdp[call.other(side)] = out
        if then is not None:
            self.reinvite(call, then, sendrecv(out))


@implementer(IClientTransactionUser)
class _TransferLeg:
    """The INVITE to a blind-transfer target."""

    def __init__(
        self,
        transfers: Transfers,
        call: Call,
        side: str,
        dialog: Dialog,
        invite: Request,
        target: Extension,
    ) -> None:
        self.t = transfers
        self.call = call
        self.side = side
        self.dialog = dialog
        self.invite = invite
        self.target = target
        self.answered = False

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        if response.status < 200:
            if response.status in (180, 183):
                self.t.notify(self.call, self.side, response.status, response.reason)
        elif response.status < 300:
            if not self.answered:
                self.answered = True
                self.t.leg_answered(
                    self.call, self.side, self.dialog, self.invite, response, self.target
                )
        else:
            self.t.notify(self.call, self.side, response.status, response.reason, final=True)

    def timed_out(self, transaction: ClientTransaction) -> None:
        self.t.notify(self.call, self.side, 408, "Request Timeout", final=True)

    def transport_failed(self, transaction: ClientTransaction) -> None:
        self.t.notify(self.call, self.side, 503, "Service Unavailable", final=True)


@implementer(IClientTransactionUser)
class _ReInvite:
    """A re-INVITE Warden sends by itself (after a transfer)."""

    def __init__(
        self, transfers: Transfers, call: Call, side: str, request: Request, then: str | None
    ) -> None:
        self.t = transfers
        self.call = call
        self.side = side
        self.request = request
        self.then = then
        self.done = False

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        if 200 <= response.status < 300 and not self.done:
            self.done = True
            self.t.reinvite_answered(self.call, self.side, self.request, response, self.then)

    def timed_out(self, transaction: ClientTransaction) -> None:
        """The call goes on with the media as it was."""

    def transport_failed(self, transaction: ClientTransaction) -> None:
        """The call goes on with the media as it was."""
