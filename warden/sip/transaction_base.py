"""
What every SIP transaction shares (RFC 3261 §17): the states, the transition
table each kind of transaction declares, timers run on an injected clock, and the
context a transaction shares with its L{warden.sip.transaction.TransactionLayer}.

A transaction's table says, for each state, which states may follow it and which
timers may run in it. Entering a state cancels every timer the new state does not
list, so no timer outlives the state it belongs to; entering ``Terminated``
cancels them all and tells the layer to forget the transaction (§17.1.1.2: "the
client transaction MUST be destroyed the instant it enters the Terminated state").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import ClassVar

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from warden.sip.flow import Flow
from warden.sip.message import Message, Request
from warden.sip.timers import TimerSettings


class TransactionState(enum.Enum):
    """The states of RFC 3261 §17 (Figures 5 to 8) and RFC 6026's Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


@attrs.frozen
class StateRule:
    """
    One row of a transition table.

    Attributes:
        timers: names of the timers that may run while in the state.
        successors: the states the transaction may move to from this one.
    """

    timers: frozenset[str]
    successors: frozenset[TransactionState]


def transition_table(
    rows: Mapping[TransactionState, tuple[Iterable[str], Iterable[TransactionState]]],
) -> Mapping[TransactionState, StateRule]:
    """
    Build a transition table from ``{state: (timers, successors)}``.

    ``Terminated`` is added as the final state (no timers, no successors).
    """
    table = {
        state: StateRule(frozenset(timers), frozenset(successors))
        for state, (timers, successors) in rows.items()
    }
    table[TransactionState.TERMINATED] = StateRule(frozenset(), frozenset())
    return table


@attrs.define(eq=False)
class TransactionContext:
    """
    What a transaction shares with its layer.

    Attributes:
        clock: the time source every timer runs on.
        settings: T1, T2, T4 and the timers derived from them.
        send: hands a message to the transport layer; raises on failure.
        forget: called once when a transaction enters ``Terminated``.
        retransmissions: messages sent again because a timer fired.
        absorbed: received retransmissions that went no further.
    """

    clock: IReactorTime
    settings: TimerSettings
    send: Callable[[Message, Flow], None]
    forget: Callable[[Transaction], None]
    retransmissions: int = 0
    absorbed: int = 0


class TransactionStateError(RuntimeError):
    """A transaction was asked to make a move its transition table forbids (a bug)."""


class Transaction:
    """
    Base of the four transaction kinds: state, timers and sending.

    Attributes:
        request: the request that created the transaction.
        flow: where the transaction sends (the request's flow for a client
            transaction, the flow responses go to for a server transaction).
        key: what the layer files the transaction under.
    """

    log = Logger()
    TABLE: ClassVar[Mapping[TransactionState, StateRule]]

    def __init__(
        self,
        context: TransactionContext,
        request: Request,
        flow: Flow,
        key: Hashable,
        initial: TransactionState,
    ) -> None:
        self.request = request
        self.flow = flow
        self.key = key
        self._context = context
        self._state = initial
        self._timers: dict[str, IDelayedCall] = {}

    @property
    def state(self) -> TransactionState:
        """The current state."""
        return self._state

    @property
    def settings(self) -> TimerSettings:
        """The timer settings the transaction runs with."""
        return self._context.settings

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.key!r} {self._state.value}>"

    # -- states -------------------------------------------------------------------

    def _enter(self, state: TransactionState) -> None:
        """Move to ``state`` as the table allows, cancelling timers it does not list."""
        if state not in self.TABLE[self._state].successors:
            raise TransactionStateError(f"{self!r} cannot move to {state.value}")
        self._state = state
        allowed = self.TABLE[state].timers
        for name in [name for name in self._timers if name not in allowed]:
            self._timers.pop(name).cancel()
        if state is TransactionState.TERMINATED:
            self._context.forget(self)

    def _terminate(self) -> None:
        """Enter ``Terminated`` unless already there."""
        if self._state is not TransactionState.TERMINATED:
            self._enter(TransactionState.TERMINATED)

    # -- timers -------------------------------------------------------------------

    def _start_timer(self, name: str, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay`` seconds unless the state is left first."""
        if name not in self.TABLE[self._state].timers:
            raise TransactionStateError(f"{self!r} cannot run timer {name}")
        self._cancel_timer(name)
        self._timers[name] = self._context.clock.callLater(delay, self._fire, name, action)

    def _fire(self, name: str, action: Callable[[], None]) -> None:
        del self._timers[name]
        action()

    def _cancel_timer(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None:
            call.cancel()

    def _linger(self, name: str, delay: float) -> None:
        """
        Wait ``delay`` seconds for retransmissions, then terminate (Timers D, I, J,
        K, L, M). A zero delay (reliable transports) terminates at once.
        """
        if delay <= 0:
            self._terminate()
        else:
            self._start_timer(name, delay, self._terminate)

    # -- sending ------------------------------------------------------------------

    def _transmit(self, message: Message) -> bool:
        """
        Hand ``message`` to the transport layer. On failure the transaction
        handles the transport error (§17.1.4, §17.2.4) and False is returned.
        """
        try:
            self._context.send(message, self.flow)
        except Exception as e:  # the transport boundary: any send failure counts
            self.log.info(
                "Sending {outgoing!r} on {flow} failed: {error!r}",
                outgoing=message,
                flow=str(self.flow),
                error=e,
            )
            self._transport_error()
            return False
        return True

    def _retransmit(self, message: Message) -> bool:
        """Send ``message`` again because a timer fired."""
        self._context.retransmissions += 1
        return self._transmit(message)

    def _absorb(self) -> None:
        """Count a received retransmission that goes no further."""
        self._context.absorbed += 1

    def _transport_error(self) -> None:
        """What a send failure does: terminate (clients also tell their user)."""
        self._terminate()
