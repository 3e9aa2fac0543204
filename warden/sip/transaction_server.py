"""
Server transactions (RFC 3261 §17.2, with RFC 6026 §7.1 for 2xx to INVITE).

A server transaction is created by the L{warden.sip.transaction.TransactionLayer}
for each new request and handed to the transaction user (TU), which answers with
L{ServerTransaction.respond}. The transaction sends each response on its flow,
answers retransmitted requests with the last response it sent, and retransmits
non-2xx final responses to INVITE until the ACK comes (UDP only).

A 2xx to an INVITE moves the transaction to Accepted (RFC 6026): it absorbs
retransmitted INVITEs for Timer L, but it never retransmits the 2xx; the TU does
that (RFC 3261 §13.3.1.4), passing each copy to L{ServerTransaction.respond}.

Every server transaction ends even when its TU never answers: once the TU has
the request, an INVITE waits at most Timer C for a final response and is then
answered 500 (as a proxy's Timer C ends a branch, RFC 3261 §16.8); a
non-INVITE request is forgotten once its client has given up (Timer F, plus T4).
"""

from __future__ import annotations

from collections.abc import Hashable

from warden.sip.flow import Flow
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.transaction_base import (
    Transaction,
    TransactionContext,
    TransactionState,
    transition_table,
)

_S = TransactionState


class ServerTransaction(Transaction):
    """
    What the TU sees of a server transaction.

    Attributes:
        request: the request that created the transaction.
        flow: where responses are sent (the request's flow).
    """

    def __init__(
        self,
        context: TransactionContext,
        request: Request,
        flow: Flow,
        key: Hashable,
        initial: TransactionState,
    ) -> None:
        super().__init__(context, request, flow, key, initial)
        self._last_response: Response | None = None

    @property
    def last_response(self) -> Response | None:
        """The last response sent, or None."""
        return self._last_response

    def respond(self, response: Response) -> None:
        """
        Send ``response`` (built by the TU, e.g. with L{make_response}) on the
        transaction's flow and move as §17.2 says.

        A response the state does not allow (a second final response, anything
        after ``Terminated``) is logged and dropped.
        """
        raise NotImplementedError

    def respond_statelessly(self, response: Response) -> None:
        """
        Send a final error response once and terminate at once, as a stateless
        server would (RFC 3261 §16.11, §17.2.1 for what is then left out): no
        retransmission until an ACK, nothing waiting for one. A retransmitted
        request makes a new transaction and gets a new answer; the ACK of a
        non-2xx then matches no transaction and goes no further. Anything but a
        final error response before one was sent is handed to L{respond}.
        """
        if response.status < 300 or self._state not in (_S.TRYING, _S.PROCEEDING):
            self.respond(response)
            return
        self._cancel_timer("trying")
        if self._send(response):
            self._terminate()

    def start(self) -> None:
        """Called by the layer once the transaction is filed, before the TU sees it."""

    def limit_wait(self) -> None:
        """
        Called by the layer once the TU has been handed the request (even when it
        raised): bound the wait for the TU's final response.
        """
        raise NotImplementedError

    def handle_request(self, request: Request, flow: Flow) -> bool:
        """
        A request the layer matched to this transaction (§17.2.3): a
        retransmission, or an ACK. Returns False when the request must go on to
        the TU instead (an ACK for a 2xx).
        """
        raise NotImplementedError

    def _send(self, response: Response) -> bool:
        self._last_response = response
        self._context.observer.response_sent(
            response.status, self.flow.transport, self.request.method
        )
        return self._transmit(response)

    def _resend_last(self) -> None:
        """Absorb a retransmitted request, answering with the last response (if any)."""
        self._absorb()
        if self._last_response is not None:
            self._transmit(self._last_response)

    def _refuse(self, response: Response) -> None:
        if self._state is _S.TERMINATED:
            self.log.debug("{txn!r}: {response!r} dropped", txn=self, response=response)
        else:
            self.log.error("{txn!r} cannot send {response!r}", txn=self, response=response)


class InviteServerTransaction(ServerTransaction):
    """
    The INVITE server transaction (RFC 3261 §17.2.1, Figure 7; RFC 6026 §7.1).

    Proceeding: "100 Trying" after ``trying_delay`` unless the TU answered first;
    provisional responses sent as given. A 2xx moves to Accepted (Timer L); a
    300-699 moves to Completed, retransmitted with Timer G (UDP: T1 doubling up to
    T2) until an ACK moves to Confirmed (Timer I) or Timer H gives up.
    """

    TABLE = transition_table(
        {
            _S.PROCEEDING: (["trying", "C"], [_S.COMPLETED, _S.ACCEPTED, _S.TERMINATED]),
            _S.COMPLETED: (["G", "H"], [_S.CONFIRMED, _S.TERMINATED]),
            _S.CONFIRMED: (["I"], [_S.TERMINATED]),
            _S.ACCEPTED: (["L"], [_S.TERMINATED]),
        }
    )

    def __init__(
        self, context: TransactionContext, request: Request, flow: Flow, key: Hashable
    ) -> None:
        super().__init__(context, request, flow, key, _S.PROCEEDING)
        self._interval = 0.0

    def start(self) -> None:
        """§17.2.1: send 100 Trying if the TU has not answered within 200 ms."""
        self._start_timer("trying", self.settings.trying_delay, self._send_trying)

    def limit_wait(self) -> None:
        """Answer 500 if the TU sends no final response within Timer C."""
        if self._state is _S.PROCEEDING:
            self._start_timer("C", self.settings.timer_c, self._timer_c)

    def _timer_c(self) -> None:
        self.log.warn("{txn!r}: no final response from the TU before Timer C", txn=self)
        self.respond(make_response(self.request, 500, "Server Internal Error", new_tag()))

    def _send_trying(self) -> None:
        timestamp = self.request.get("Timestamp")  # §8.2.6.1: echoed in the 100
        extra = [("Timestamp", timestamp)] if timestamp is not None else []
        self._send(make_response(self.request, 100, headers=extra))

    def respond(self, response: Response) -> None:
        """Send a response from the TU (§17.2.1; 2xx as RFC 6026 §7.1 says)."""
        status = response.status
        if self._state is _S.PROCEEDING:
            self._cancel_timer("trying")
            if not self._send(response) or status < 200:
                return
            if status < 300:
                self._enter(_S.ACCEPTED)
                # One shared timer for every transaction in Accepted (a
                # DelayedCall each kept ended calls alive in the reactor's heap).
                self._linger("L", self.settings.timer_l)
            else:
                self._enter(_S.COMPLETED)
                if not self.flow.reliable:
                    self._interval = self.settings.timer_g
                    self._start_timer("G", self._interval, self._timer_g)
                self._start_timer("H", self.settings.timer_h, self._timer_h)
        elif self._state is _S.ACCEPTED and 200 <= status < 300:
            self._send(response)  # a 2xx retransmitted by the TU, or from another fork
        else:
            self._refuse(response)

    def handle_request(self, request: Request, flow: Flow) -> bool:
        """Absorb retransmitted INVITEs; an ACK confirms a non-2xx final response."""
        if request.method != "ACK":
            if self._state in (_S.PROCEEDING, _S.COMPLETED):
                self._resend_last()
            else:
                self._absorb()  # Accepted (RFC 6026: no resend) or Confirmed
            return True
        if self._state is _S.ACCEPTED:
            return False  # the ACK for a 2xx belongs to the TU (RFC 6026 §7.1)
        if self._state is _S.COMPLETED:
            self._enter(_S.CONFIRMED)
            self._linger("I", self.settings.timer_i(self.flow.reliable))
        else:
            self._absorb()
        return True

    def _timer_g(self) -> None:
        assert self._last_response is not None
        if self._retransmit(self._last_response):
            self._interval = min(2 * self._interval, self.settings.t2)
            self._start_timer("G", self._interval, self._timer_g)

    def _timer_h(self) -> None:
        self.log.info("{txn!r}: no ACK before Timer H", txn=self)
        self._terminate()


class NonInviteServerTransaction(ServerTransaction):
    """
    The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).

    Trying until the TU answers; provisional responses move to Proceeding; a final
    response moves to Completed, where retransmitted requests get the final
    response again until Timer J (64*T1 on UDP, 0 on reliable transports).
    """

    TABLE = transition_table(
        {
            _S.TRYING: (["limit"], [_S.PROCEEDING, _S.COMPLETED, _S.TERMINATED]),
            _S.PROCEEDING: (["limit"], [_S.COMPLETED, _S.TERMINATED]),
            _S.COMPLETED: (["J"], [_S.TERMINATED]),
        }
    )

    def __init__(
        self, context: TransactionContext, request: Request, flow: Flow, key: Hashable
    ) -> None:
        super().__init__(context, request, flow, key, _S.TRYING)

    def respond(self, response: Response) -> None:
        """Send a response from the TU (§17.2.2)."""
        if self._state not in (_S.TRYING, _S.PROCEEDING):
            self._refuse(response)
            return
        if not self._send(response):
            return
        if response.status >= 200:
            self._enter(_S.COMPLETED)
            linger = self.settings.timer_j(self.flow.reliable)
            if linger > 0:
                # Only retransmissions to answer from now on: the layer's echoes
                # do that, and this transaction ends (see AnswerEchoes).
                self._context.echoes.add(self.key, response.to_bytes(), self.flow, linger)
            self._enter(_S.TERMINATED)
        elif self._state is _S.TRYING:
            self._enter(_S.PROCEEDING)

    def limit_wait(self) -> None:
        """Forget the request if the TU sends no final response before its client gives up."""
        if self._state in (_S.TRYING, _S.PROCEEDING):
            self._linger("limit", self.settings.server_limit_non_invite)

    def _linger_over(self) -> None:
        if self._state is not _S.COMPLETED:
            self.log.warn("{txn!r}: no final response from the TU in time", txn=self)
        super()._linger_over()

    def handle_request(self, request: Request, flow: Flow) -> bool:
        """A retransmission: answered with the last response, if any (§17.2.2)."""
        self._resend_last()
        return True
