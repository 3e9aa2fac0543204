"""
Client transactions (RFC 3261 §17.1, with RFC 6026 §7.2 for 2xx to INVITE).

The TU hands a request to L{warden.sip.transaction.TransactionLayer.send_request};
the client transaction sends it, retransmits it over UDP (Timer A or E), gives up
after Timer B or F, and passes every response worth hearing to its
L{warden.interfaces.IClientTransactionUser}. Retransmitted final responses are
absorbed; for a 300-699 to an INVITE the transaction builds and sends the ACK
itself (§17.1.1.3) and sends it again for each retransmission of the response.
"""

from __future__ import annotations

from collections.abc import Hashable

from warden.interfaces import IClientTransactionUser
from warden.sip.flow import Flow
from warden.sip.message import Request, Response
from warden.sip.transaction_base import (
    Transaction,
    TransactionContext,
    TransactionState,
    transition_table,
)

_S = TransactionState


def make_ack(request: Request, response: Response) -> Request:
    """
    The ACK for a 300-699 response to ``request`` (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and the top Via (only) of the original request;
    To of the response; the CSeq number with method ACK; the original's Route
    headers; Max-Forwards 70 (§8.1.1.6). No body.
    """
    headers = [
        ("Via", request.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", request._required("From")),
        ("To", response._required("To")),
        ("Call-ID", request.call_id),
        ("CSeq", f"{request.cseq.number} ACK"),
    ]
    headers.extend(("Route", value) for value in request.get_all("Route"))
    return Request("ACK", request.uri_text, headers)


class ClientTransaction(Transaction):
    """
    What the TU sees of a client transaction.

    Attributes:
        request: the request sent.
        flow: where it is sent.
        user: told about responses, time-outs and transport failures.
    """

    def __init__(
        self,
        context: TransactionContext,
        request: Request,
        flow: Flow,
        key: Hashable,
        user: IClientTransactionUser,
        initial: TransactionState,
    ) -> None:
        super().__init__(context, request, flow, key, initial)
        self.user = user
        self._interval = 0.0

    def start(self) -> None:
        """Send the request and start the timers (called by the layer)."""
        raise NotImplementedError

    def _unreliable(self) -> bool:
        """
        Whether the request went over UDP and needs retransmitting. The
        transport may have sent it over TCP for its size instead, changing the
        top Via as RFC 3261 §18.1.1 requires (L{warden.sip.node_streams}).
        """
        return not self.flow.reliable and self.request.top_via.transport.upper() == "UDP"

    def handle_response(self, response: Response) -> None:
        """A response the layer matched to this transaction (§17.1.3)."""
        raise NotImplementedError

    def _transport_error(self) -> None:
        """§17.1.4: tell the TU, and terminate."""
        if self._state is not _S.TERMINATED:
            self._terminate()
            self.user.transport_failed(self)

    def _time_out(self) -> None:
        """Timer B or F: tell the TU, and terminate."""
        self._terminate()
        self.user.timed_out(self)


class InviteClientTransaction(ClientTransaction):
    """
    The INVITE client transaction (RFC 3261 §17.1.1, Figure 5; RFC 6026 §7.2).

    Calling: the INVITE is retransmitted with Timer A (UDP: T1, doubling without
    limit) until a response arrives or Timer B (64*T1) times out. A provisional
    response moves to Proceeding, where nothing is retransmitted. A 2xx moves to
    Accepted for Timer M, passing up every 2xx (each fork's, and retransmissions,
    which the TU acknowledges). A 300-699 moves to Completed: the ACK is sent, and
    sent again for each retransmitted response, until Timer D.
    """

    TABLE = transition_table(
        {
            _S.CALLING: (["A", "B"], [_S.PROCEEDING, _S.COMPLETED, _S.ACCEPTED, _S.TERMINATED]),
            _S.PROCEEDING: ([], [_S.COMPLETED, _S.ACCEPTED, _S.TERMINATED]),
            _S.COMPLETED: (["D"], [_S.TERMINATED]),
            _S.ACCEPTED: (["M"], [_S.TERMINATED]),
        }
    )

    def __init__(
        self,
        context: TransactionContext,
        request: Request,
        flow: Flow,
        key: Hashable,
        user: IClientTransactionUser,
    ) -> None:
        super().__init__(context, request, flow, key, user, _S.CALLING)
        self._ack: Request | None = None

    @property
    def ack(self) -> Request | None:
        """The ACK the transaction sent for a 300-699 response, if any."""
        return self._ack

    def start(self) -> None:
        """§17.1.1.2: send the INVITE; Timer A (UDP only) and Timer B."""
        if not self._transmit(self.request):
            return
        if self._unreliable():
            self._interval = self.settings.timer_a
            self._start_timer("A", self._interval, self._timer_a)
        self._start_timer("B", self.settings.timer_b, self._time_out)

    def _timer_a(self) -> None:
        if self._retransmit(self.request):
            self._interval *= 2
            self._start_timer("A", self._interval, self._timer_a)

    def handle_response(self, response: Response) -> None:
        """§17.1.1.2 and RFC 6026 §7.2."""
        status = response.status
        if self._state in (_S.CALLING, _S.PROCEEDING):
            if status < 200:
                if self._state is _S.CALLING:
                    self._enter(_S.PROCEEDING)
            elif status < 300:
                self._enter(_S.ACCEPTED)
                self._linger("M", self.settings.timer_m)  # one shared timer (as L)
            else:
                self._ack = make_ack(self.request, response)
                self._enter(_S.COMPLETED)
                if not self._transmit(self._ack):
                    return
                self._linger("D", self.settings.timer_d(self.flow.reliable))
            self.user.response_received(self, response)
        elif self._state is _S.ACCEPTED and 200 <= status < 300:
            self.user.response_received(self, response)
        else:
            self._absorb()
            if self._state is _S.COMPLETED and status >= 300 and self._ack is not None:
                self._transmit(self._ack)


class NonInviteClientTransaction(ClientTransaction):
    """
    The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).

    Trying: the request is retransmitted with Timer E (UDP: T1, doubling up to T2)
    until Timer F (64*T1). A provisional response moves to Proceeding, where Timer
    E is reset to T2 each time it fires. A final response moves to Completed,
    which absorbs retransmissions for Timer K (T4 on UDP, 0 on reliable transports).
    """

    TABLE = transition_table(
        {
            _S.TRYING: (["E", "F"], [_S.PROCEEDING, _S.COMPLETED, _S.TERMINATED]),
            _S.PROCEEDING: (["E", "F"], [_S.COMPLETED, _S.TERMINATED]),
            _S.COMPLETED: (["K"], [_S.TERMINATED]),
        }
    )

    def __init__(
        self,
        context: TransactionContext,
        request: Request,
        flow: Flow,
        key: Hashable,
        user: IClientTransactionUser,
    ) -> None:
        super().__init__(context, request, flow, key, user, _S.TRYING)

    def start(self) -> None:
        """§17.1.2.2: send the request; Timer E (UDP only) and Timer F."""
        if not self._transmit(self.request):
            return
        if self._unreliable():
            self._interval = self.settings.timer_e
            self._start_timer("E", self._interval, self._timer_e)
        self._start_timer("F", self.settings.timer_f, self._time_out)

    def _timer_e(self) -> None:
        if self._retransmit(self.request):
            if self._state is _S.PROCEEDING:
                self._interval = self.settings.t2
            else:
                self._interval = min(2 * self._interval, self.settings.t2)
            self._start_timer("E", self._interval, self._timer_e)

    def handle_response(self, response: Response) -> None:
        """§17.1.2.2."""
        if self._state not in (_S.TRYING, _S.PROCEEDING):
            self._absorb()
            return
        if response.status >= 200:
            self._enter(_S.COMPLETED)
            self._linger("K", self.settings.timer_k(self.flow.reliable))
        elif self._state is _S.TRYING:
            self._enter(_S.PROCEEDING)
        self.user.response_received(self, response)
