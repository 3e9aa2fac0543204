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
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import ClassVar

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from warden.interfaces import ITransactionObserver
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

    # Members are singletons compared by identity: hash them by identity too, in
    # C, not by Enum's hash of the name in Python (several lookups per request).
    __hash__ = object.__hash__


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


class _Lingering:
    """A transaction waiting in a L{LingerQueue}."""

    __slots__ = ("deadline", "name", "queue", "transaction")

    def __init__(
        self, queue: LingerQueue, deadline: float, transaction: Transaction, name: str
    ) -> None:
        self.queue = queue
        self.deadline = deadline
        self.transaction: Transaction | None = transaction
        self.name = name


class LingerQueue:
    """
    Transactions that wait a fixed time, then terminate (Timers D, I, J, K: each
    lasts the same for every transaction on an unreliable transport).

    The waits end in the order they began, so one DelayedCall at the earliest
    deadline serves the whole queue. A busy registrar has hundreds of thousands
    of transactions lingering in Completed; a DelayedCall each would cost a heap
    entry and several objects per transaction.
    """

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self._clock = clock
        self.delay = delay
        self._waiting: deque[_Lingering] = deque()
        self._live = 0
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        """Transactions waiting."""
        return self._live

    def add(self, transaction: Transaction, name: str) -> _Lingering:
        """Terminate ``transaction`` ``delay`` seconds from now (timer ``name``)."""
        entry = _Lingering(self, self._clock.seconds() + self.delay, transaction, name)
        waiting = self._waiting
        waiting.append(entry)
        self._live += 1
        if len(waiting) == 1 and self._call is None:
            self._call = self._clock.callLater(self.delay, self._expire)
        return entry

    def remove(self, entry: _Lingering) -> None:
        """Stop a wait early (the transaction left its state another way)."""
        if entry.transaction is None:
            return
        entry.transaction = None
        self._live -= 1
        if self._live == 0:  # leave no timer behind
            self._waiting.clear()
            if self._call is not None:
                self._call.cancel()
                self._call = None

    def _expire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        waiting = self._waiting
        while waiting and waiting[0].deadline <= now:
            entry = waiting.popleft()
            transaction, entry.transaction = entry.transaction, None
            if transaction is not None:
                self._live -= 1
                transaction._linger_over()
        while waiting and waiting[0].transaction is None:
            waiting.popleft()
        if waiting and self._call is None:
            self._call = self._clock.callLater(waiting[0].deadline - now, self._expire)


class AnswerEchoes:
    """
    Non-INVITE server transactions waiting out Timer J on an unreliable
    transport (RFC 3261 §17.2.2, Completed), reduced to what that state does:
    answer a retransmitted request with the final response, then end.

    A busy registrar has tens of thousands of them at any time (Timer J is 32 s
    on UDP). Kept as transactions, each held five objects the cyclic garbage
    collector tracks (the transaction, its request, response, flow and queue
    entry): with 50,000 bindings, collections of the older generations that
    walked them paused the reactor for 0.2-0.6 s at a time. Here each is a
    tuple of the response's bytes and the peer's address, filed under the
    transaction's key: tuples of such values are not tracked by the collector.

    The waits end in the order they began (the same Timer J for every entry),
    so one DelayedCall at the earliest deadline serves them all; an entry added
    with a shorter delay than those before it (the timers changed on a reload)
    ends when those before it do.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._answers: dict[Hashable, tuple[bytes, str, str, int]] = {}
        self._deadlines: deque[tuple[float, Hashable]] = deque()
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        """Transactions waiting."""
        return len(self._answers)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._answers

    def add(self, key: Hashable, data: bytes, flow: Flow, delay: float) -> None:
        """Answer retransmissions of the request ``key`` with ``data`` for ``delay`` seconds."""
        self._answers[key] = (data, flow.transport, flow.host, flow.port)
        deadline = self._clock.seconds() + delay
        self._deadlines.append((deadline, key))
        if self._call is None:
            self._call = self._clock.callLater(delay, self._expire)

    def answer(self, key: Hashable) -> tuple[bytes, Flow] | None:
        """The response to send again for a retransmission of ``key``, and where; None if none."""
        entry = self._answers.get(key)
        if entry is None:
            return None
        data, transport, host, port = entry
        return data, Flow(transport, host, port)

    def discard(self, key: Hashable) -> None:
        """End the wait of ``key`` early (a send failed)."""
        self._answers.pop(key, None)
        if not self._answers:
            self.clear()

    def clear(self) -> None:
        """End every wait (shutdown)."""
        self._answers.clear()
        self._deadlines.clear()
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _expire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        deadlines, answers = self._deadlines, self._answers
        while deadlines and deadlines[0][0] <= now:
            _, key = deadlines.popleft()
            answers.pop(key, None)
        if deadlines:
            self._call = self._clock.callLater(deadlines[0][0] - now, self._expire)


@implementer(ITransactionObserver)
class NoObserver:
    """The observer of a layer nobody monitors: every report goes nowhere."""

    def response_sent(self, status: int, transport: str, method: str) -> None:
        """Nothing."""

    def exchange_ended(self, method: str, role: str, seconds: float) -> None:
        """Nothing."""


NO_OBSERVER = NoObserver()


@attrs.define(eq=False)
class TransactionContext:
    """
    What a transaction shares with its layer.

    Attributes:
        clock: the time source every timer runs on.
        settings: T1, T2, T4 and the timers derived from them.
        send: hands a message to the transport layer; raises on failure.
        forget: called once when a transaction enters ``Terminated``.
        observer: what responses and latencies are reported to (monitoring).
        echoes: where non-INVITE server transactions wait out Timer J on an
            unreliable transport once they answered (one per layer).
        retransmissions: messages sent again because a timer fired.
        absorbed: received retransmissions that went no further.
    """

    clock: IReactorTime
    settings: TimerSettings
    send: Callable[[Message, Flow], None]
    forget: Callable[[Transaction], None]
    observer: ITransactionObserver = NO_OBSERVER
    echoes: AnswerEchoes = attrs.field(
        default=attrs.Factory(lambda self: AnswerEchoes(self.clock), takes_self=True)
    )
    retransmissions: int = 0
    absorbed: int = 0
    _lingering: dict[float, LingerQueue] = attrs.field(init=False, factory=dict)

    def linger_queue(self, delay: float) -> LingerQueue:
        """The queue of transactions that wait ``delay`` seconds."""
        queue = self._lingering.get(delay)
        if queue is None:
            queue = self._lingering[delay] = LingerQueue(self.clock, delay)
        return queue


#: States that end the request/response exchange: latency is measured up to them.
_FINAL_STATES = frozenset(
    [TransactionState.COMPLETED, TransactionState.ACCEPTED, TransactionState.TERMINATED]
)


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
        self._timers: dict[str, IDelayedCall] | None = None
        self._lingering: _Lingering | None = None
        self._started_at: float | None = context.clock.seconds()

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
        if self._started_at is not None and state in _FINAL_STATES:
            self._observe_latency()
        allowed = self.TABLE[state].timers
        timers = self._timers
        if timers:
            for name in [name for name in timers if name not in allowed]:
                self._cancel_timer(name)
        lingering = self._lingering
        if lingering is not None and lingering.name not in allowed:
            self._lingering = None
            lingering.queue.remove(lingering)
        if state is TransactionState.TERMINATED:
            self._context.forget(self)

    def _observe_latency(self) -> None:
        """Report the time to the first final state to the context's observer."""
        assert self._started_at is not None
        elapsed = self._context.clock.seconds() - self._started_at
        self._started_at = None
        role = "client" if "Client" in type(self).__name__ else "server"
        self._context.observer.exchange_ended(self.request.method, role, max(0.0, elapsed))

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
        if self._timers is None:
            self._timers = {}
        self._timers[name] = self._context.clock.callLater(delay, action)

    def _cancel_timer(self, name: str) -> None:
        """Stop timer ``name`` if it is running (a fired one is just forgotten)."""
        if not self._timers:
            return
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _linger(self, name: str, delay: float) -> None:
        """
        Wait ``delay`` seconds for retransmissions, then terminate (Timers D, I, J,
        K): timer ``name`` runs in the context's L{LingerQueue} for ``delay``. A
        zero delay (reliable transports) terminates at once.
        """
        if delay <= 0:
            self._terminate()
            return
        if name not in self.TABLE[self._state].timers:
            raise TransactionStateError(f"{self!r} cannot run timer {name}")
        if self._lingering is not None:
            self._lingering.queue.remove(self._lingering)
        self._lingering = self._context.linger_queue(delay).add(self, name)

    def _linger_over(self) -> None:
        """The L{LingerQueue} says the wait is over."""
        self._lingering = None
        self._terminate()

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
