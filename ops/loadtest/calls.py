"""
A call placed by L{warden.ops.loadtest.agent.SipAgent} (the UAC side, RFC 3261
§13.2): INVITE with G.711 SDP, a 401/407 answered once with digest credentials
(§22.2, §22.3), the dialog confirmed by the 2xx (§12.1.2), ACK (§13.2.2.4),
RTP while held, BYE (§15.1.1).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger

from warden.errors import SipParseError
from warden.sip.auth import answer_challenge
from warden.sip.dialog import Dialog, confirm_uac_dialog
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.transaction import ServerTransaction

from .media import MediaResult, RtpStream
from .results import Account, CallResult
from .sdp import offer, rtp_target
from .uas import MEDIA_GRACE

if TYPE_CHECKING:
    from .agent import SipAgent


def authorization(
    response: Response, account: Account, method: str, uri: str
) -> tuple[str, str] | None:
    """
    The (Proxy-)Authorization header answering the first digest challenge of a
    401/407, MD5 preferred (RFC 3261 §22.2, §22.3); None when it has no challenge.
    """
    proxy = response.status == 407
    values = response.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
    if not values:
        return None
    chosen = next((v for v in values if "ALGORITHM=MD5" in v.upper().replace(" ", "")), values[0])
    value = answer_challenge(chosen, account.username, account.password, method, uri)
    return ("Proxy-Authorization" if proxy else "Authorization", value)


class OutgoingCall:
    """
    One call from ``caller`` to ``callee`` and its timings. Created by
    L{SipAgent.dial}; L{result} is meaningful once the INVITE ended.
    """

    log = Logger()

    def __init__(self, agent: SipAgent, caller: Account, callee: str, rtp: bool) -> None:
        self.agent = agent
        self.caller = caller
        self.callee = callee
        self.rtp = rtp
        self.call_id = f"{secrets.token_hex(10)}@{agent.local_ip}"
        self.started = agent.clock.seconds()
        self.statuses: list[int] = []
        self.status: int | None = None
        self.cause: str | None = None
        self.answered = False
        self.ended = False
        self.setup_time: float | None = None
        self.auth_setup_time: float | None = None
        self.post_dial_delay: float | None = None
        self.answered_at: float | None = None
        self.held: float | None = None
        self.bye_time: float | None = None
        self.media: MediaResult | None = None
        self.dialog: Dialog | None = None
        self.stream: RtpStream | None = None
        self._ack: Request | None = None
        self._bye_done: defer.Deferred[CallResult] | None = None
        self._hold_timer: defer.Deferred[None] | None = None
        self._remote_ended = False
        self._cut = False
        self._peer_sent: int | None = None
        self.bye_status: int | None = None

    # -- INVITE ---------------------------------------------------------------------

    async def invite(self) -> OutgoingCall:
        """Send the INVITE (and the authenticated one); returns once it ended."""
        agent = self.agent
        if not agent.connected:
            self.cause = "unreachable"
            await self._finish()
            return self
        if agent.media is not None and self.rtp:
            self.stream = agent.media.open()
        media_port = self.stream.local_port if self.stream is not None else 9
        body = offer(agent.local_ip, media_port)
        uri = f"sip:{self.callee}@{agent.domain}"
        local_party = agent.aor(self.caller.user)
        self.dialog = Dialog(
            call_id=self.call_id,
            local_tag=new_tag(),
            remote_tag=None,
            local_party=local_party,
            remote_party=f"<{uri}>",
            local_cseq=0,
            remote_cseq=None,
            remote_target=uri,
            route_set=[],
            flow=agent.flow,
            local_contact=agent.contact_uri(self.caller.user),
            via_host=agent.via_host,
        )
        agent.calls[self.call_id] = self
        credentials: tuple[str, str] | None = None
        response: Response | None = None
        for _attempt in range(2):
            extra = [("Content-Type", "application/sdp")]
            if credentials is not None:
                extra.append(credentials)
            request = self.dialog.request("INVITE", agent.layer.new_branch(), extra, body)
            sent_at = agent.clock.seconds()
            waiter = agent.send_request(request)
            waiter.on_provisional = self._provisional
            waiter.on_2xx_again = lambda _r: self.resend_ack()
            response = await waiter.final
            if response is None:
                self.cause = waiter.cause
                break
            self.statuses.append(response.status)
            self.status = response.status
            if response.status in (401, 407) and credentials is None:
                credentials = authorization(response, self.caller, "INVITE", uri)
                if credentials is None:
                    break
                continue
            if 200 <= response.status < 300:
                self.auth_setup_time = agent.clock.seconds() - sent_at
            break
        if response is not None and 200 <= response.status < 300:
            self._answered(response, request)
        else:
            if response is not None:
                self.cause = str(response.status)
            await self._finish()
        return self

    def _provisional(self, response: Response) -> None:
        if self.post_dial_delay is None and response.status in (180, 183):
            self.post_dial_delay = self.agent.clock.seconds() - self.started

    def _answered(self, response: Response, request: Request) -> None:
        agent = self.agent
        now = agent.clock.seconds()
        self.setup_time = now - self.started
        self.answered = True
        self.answered_at = now
        assert self.dialog is not None
        try:
            confirm_uac_dialog(self.dialog, response)
        except SipParseError:
            pass
        self._ack = self.dialog.request("ACK", agent.layer.new_branch(), cseq=request.cseq.number)
        agent.send_stateless(self._ack)
        if self.stream is not None and agent.media is not None:
            target = rtp_target(response.body)
            if target is None:
                self.cause = "bad-response"
            else:
                agent.media.start_sending(self.stream, target)

    def resend_ack(self) -> None:
        """The 2xx came again: our ACK was lost (§13.2.2.4)."""
        if self._ack is not None:
            self.agent.send_stateless(self._ack)

    # -- holding and hanging up -------------------------------------------------------

    def cut_hold(self) -> None:
        """End the holding time now (or skip it, if the call is still being set up)."""
        self._cut = True
        timer = self._hold_timer
        if timer is not None and not timer.called:
            timer.cancel()

    async def hold(self, seconds: float) -> None:
        """
        Stay in the call for ``seconds``; returns early when the far end hangs up
        or L{cut_hold} is called.
        """
        if seconds > 0 and not self.ended and not self._cut and not self._remote_ended:
            self._hold_timer = self.agent.pause(seconds)
            try:
                await self._hold_timer
            except defer.CancelledError:
                pass

    async def bye(self) -> CallResult:
        """Hang up with BYE (once; later calls wait for the first); the call's result."""
        if self._bye_done is not None:
            return await self._bye_done
        self._bye_done = defer.Deferred()
        agent = self.agent
        if self.answered and not self._remote_ended and self.dialog is not None:
            if self.stream is not None and agent.media is not None:
                self.stream.sending = False
                peer = agent.media.peer(self.stream)
                self._peer_sent = peer.sent if peer is not None else None
            if self.answered_at is not None:
                self.held = agent.clock.seconds() - self.answered_at
            response, cause, sent_at = None, None, agent.clock.seconds()
            credentials: tuple[str, str] | None = None
            for _attempt in range(2):
                extra = [credentials] if credentials is not None else []
                request = self.dialog.request("BYE", agent.layer.new_branch(), extra)
                sent_at = agent.clock.seconds()
                waiter = agent.send_request(request)
                response = await waiter.final
                cause = waiter.cause
                if response is not None and response.status in (401, 407) and not credentials:
                    credentials = authorization(
                        response, self.caller, "BYE", self.dialog.remote_target
                    )
                    if credentials is not None:
                        continue
                break
            self.bye_time = agent.clock.seconds() - sent_at
            self.bye_status = response.status if response is not None else None
            if response is None:
                self.cause = self.cause or f"bye-{cause}"
            elif response.status >= 300:
                self.cause = self.cause or f"bye-{response.status}"
        result = await self._finish()
        self._bye_done.callback(result)
        return result

    def remote_bye(self, transaction: ServerTransaction, request: Request) -> None:
        """The far end (or the PBX) hung up first: answer 200 and end the call."""
        transaction.respond(make_response(request, 200, "OK"))
        if not self.ended and not self._remote_ended:
            self._remote_ended = True
            self.cause = self.cause or "remote-bye"
            if self.answered_at is not None:
                self.held = self.agent.clock.seconds() - self.answered_at
            self.cut_hold()

    async def _finish(self) -> CallResult:
        agent = self.agent
        self.ended = True
        agent.calls.pop(self.call_id, None)
        if self.stream is not None and agent.media is not None:
            stream, self.stream = self.stream, None
            stream.sending = False
            if self.answered:
                # Count the packets still in flight, then pair with the callee's side.
                await agent.pause(MEDIA_GRACE)
                await agent.media.close(stream)
                self.media = agent.media.result(stream, self._peer_sent)
            else:
                await agent.media.close(stream)
                agent.media.forget(stream)
        return self.result()

    def result(self) -> CallResult:
        """The call's outcome so far."""
        ok = self.answered and self.ended and self.cause is None
        return CallResult(
            caller=self.caller.user,
            callee=self.callee,
            ok=ok,
            answered=self.answered,
            status=self.status,
            cause=None if ok else (self.cause or "not-ended"),
            started=self.started,
            setup_time=self.setup_time,
            auth_setup_time=self.auth_setup_time,
            post_dial_delay=self.post_dial_delay,
            held=self.held,
            bye_time=self.bye_time,
            statuses=tuple(self.statuses),
            media=self.media,
            bye_status=self.bye_status,
        )
