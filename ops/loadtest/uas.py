"""
The answering side of L{warden.ops.loadtest.agent.SipAgent} (UAS, RFC 3261 §13.3):
an INVITE to a user the agent registered is answered with 180 and then 200 with a
PCMU answer; the 2xx is retransmitted until its ACK arrives (§13.3.1.4); RTP is
sent back to the address of the offer; BYE (§15.1.2) and CANCEL (§9.2) end the
call. Anything else the PBX asks of a user agent gets a plain answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from warden.errors import SipParseError
from warden.sip.flow import Flow
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.transaction import ServerTransaction

from .media import RtpStream
from .sdp import offer, rtp_target

if TYPE_CHECKING:
    from .agent import SipAgent
    from .results import Account

#: After a BYE, keep receiving this long so packets still in flight are counted.
#: The PBX answers the BYE at once, but its media relay may be busy for longer
#: than a packet time: 100 ms counted packets it relayed later as lost (1 of 51
#: in a test on a loaded machine); half a second is the budget for that.
MEDIA_GRACE = 0.5


class IncomingCall:
    """A call the agent answered: its 2xx, the retransmission timer, its RTP."""

    def __init__(self, transaction: ServerTransaction, ok: Response) -> None:
        self.transaction = transaction
        self.ok = ok
        self.stream: RtpStream | None = None
        self.acked = False
        self.timer: IDelayedCall | None = None
        self.interval = 0.0
        self.waited = 0.0


class Answerer:
    """
    Answers requests for ``users`` (user part -> account) on behalf of ``agent``.

    Attributes:
        users: the accounts to answer (added by successful registrations).
        calls: answered calls by Call-ID.
        answered: INVITEs answered with 200.
        unacknowledged: answered calls whose ACK never came.
    """

    log = Logger()

    def __init__(self, agent: SipAgent) -> None:
        self.agent = agent
        self.users: dict[str, Account] = {}
        self.calls: dict[str, IncomingCall] = {}
        self.answered = 0
        self.unacknowledged = 0
        # Ended calls' streams still receiving for MEDIA_GRACE: their closes.
        self._closing: dict[RtpStream, IDelayedCall] = {}

    def request_received(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        """A new request for the UAS side."""
        method = request.method
        if method == "INVITE":
            self._invite(transaction, request)
        elif method == "BYE":
            self._bye(transaction, request)
        elif method == "CANCEL":
            self._cancel(transaction, request)
        elif method in ("OPTIONS", "NOTIFY", "INFO", "UPDATE"):
            transaction.respond(make_response(request, 200, "OK"))
        else:
            transaction.respond(make_response(request, 501, "Not Implemented"))

    def ack_received(self, request: Request) -> None:
        """The ACK for our 2xx: stop retransmitting it."""
        call = self.calls.get(request.call_id)
        if call is not None and not call.acked:
            call.acked = True
            self._cancel_timer(call)

    def _target_user(self, request: Request) -> str | None:
        try:
            user = request.uri.user
            if user in self.users:
                return user
            user = request.to.uri.user
        except SipParseError:
            return None
        return user if user in self.users else None

    def _invite(self, transaction: ServerTransaction, request: Request) -> None:
        existing = self.calls.get(request.call_id)
        if existing is not None:  # a re-INVITE (session refresh, hold): same answer
            answer = make_response(request, 200, "OK", headers=_answer_headers(existing.ok))
            answer.set_body(existing.ok.body)
            transaction.respond(answer)
            return
        user = self._target_user(request)
        if user is None:
            transaction.respond(make_response(request, 404, "Not Found"))
            return
        agent = self.agent
        tag = new_tag()
        # A proxy's Record-Route goes back in responses that make the dialog (§12.1.1).
        routes = [("Record-Route", value) for value in request.get_all("Record-Route")]
        transaction.respond(make_response(request, 180, "Ringing", to_tag=tag, headers=routes))
        stream = None
        if agent.media is not None:
            stream = agent.media.open()
        port = stream.local_port if stream is not None else 9
        headers = [
            *routes,
            ("Contact", f"<{agent.contact_uri(user)}>"),
            ("Content-Type", "application/sdp"),
        ]
        ok = make_response(request, 200, "OK", to_tag=tag, headers=headers)
        ok.set_body(offer(agent.local_ip, port))
        call = IncomingCall(transaction, ok)
        call.stream = stream
        self.calls[request.call_id] = call
        self.answered += 1
        transaction.respond(ok)
        if stream is not None and agent.media is not None:
            target = rtp_target(request.body)
            if target is not None:
                agent.media.start_sending(stream, target)
        if not transaction.flow.reliable:
            call.interval = agent.timers.t1
            call.timer = agent.clock.callLater(call.interval, self._retransmit, request.call_id)

    def _retransmit(self, call_id: str) -> None:
        """§13.3.1.4: the 2xx again, T1 doubling up to T2, until 64*T1."""
        call = self.calls.get(call_id)
        if call is None or call.acked:
            return
        timers = self.agent.timers
        call.waited += call.interval
        if call.waited >= timers.timer_h:
            call.timer = None
            self.unacknowledged += 1
            self._end(call_id)
            return
        call.transaction.respond(call.ok)
        call.interval = min(call.interval * 2, timers.t2)
        call.timer = self.agent.clock.callLater(call.interval, self._retransmit, call_id)

    def _bye(self, transaction: ServerTransaction, request: Request) -> None:
        if request.call_id not in self.calls:
            transaction.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        transaction.respond(make_response(request, 200, "OK"))
        self._end(request.call_id)

    def _cancel(self, transaction: ServerTransaction, request: Request) -> None:
        invite = self.agent.layer.find_invite_server_transaction(request)
        if invite is None:
            transaction.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        transaction.respond(make_response(request, 200, "OK"))
        if invite.last_response is None or invite.last_response.status < 200:
            invite.respond(make_response(invite.request, 487, "Request Terminated"))

    def _end(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return
        self._cancel_timer(call)
        stream, call.stream = call.stream, None
        media = self.agent.media
        if stream is not None and media is not None:
            stream.sending = False
            self._closing[stream] = self.agent.clock.callLater(
                MEDIA_GRACE, self._close_stream, media, stream
            )

    def _close_stream(self, media: Any, stream: RtpStream) -> None:
        self._closing.pop(stream, None)
        _close_quietly(media, stream)

    def end_all(self) -> None:
        """Forget every answered call and close its stream now (the agent is stopping)."""
        for call_id in list(self.calls):
            self._end(call_id)
        media = self.agent.media
        for stream, timer in list(self._closing.items()):
            if timer.active():
                timer.cancel()
            if media is not None:
                self._close_stream(media, stream)

    @staticmethod
    def _cancel_timer(call: IncomingCall) -> None:
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None


def _answer_headers(ok: Response) -> list[tuple[str, str]]:
    return [(name, value) for name, value in ok.headers if name in ("Contact", "Content-Type")]


def _close_quietly(media: Any, stream: RtpStream) -> None:
    media.close(stream).addErrback(lambda f: Answerer.log.failure("closing RTP", f))
