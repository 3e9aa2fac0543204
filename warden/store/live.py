"""
Live-call summaries written in batches (L{CoalescingLiveCalls}).

A call publishes its summary when it starts, when it is answered and every few
seconds while it lasts, and removes it when it ends: at a hundred calls a
second that is several hundred small writes a second, each its own database
transaction and thread hand-off. L{CoalescingLiveCalls} keeps the latest state
of each call in memory and writes what changed every ``interval`` seconds in one
batch: a call published several times in an interval is written once, and a
call that starts and ends within one (a failed or very short call) is never
written at all. Readers see at most ``interval`` seconds of lag; ``list`` in
this process flushes first, so it is exact.

A batch that fails is kept and merged into the next one (newer states win), so a
store outage delays summaries but does not lose the removal of a call.
"""

from __future__ import annotations

import builtins
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.interfaces import ILiveCalls
from warden.model import LiveCall

__all__ = ["CoalescingLiveCalls"]

_REMOVED = None
RETRY_DELAY = 5.0


@implementer(ILiveCalls)
class CoalescingLiveCalls:
    """
    An L{ILiveCalls} that batches writes to ``inner``.

    Args:
        inner: the store written to; if it has ``apply(published, removed)``
            (one transaction for a batch) that is used, otherwise one
            ``publish``/``remove`` per call.
        clock: schedules the flushes.
        interval: seconds between a first change and the flush that writes it.
    """

    log = Logger()

    def __init__(self, inner: ILiveCalls, clock: IReactorTime, interval: float = 0.5) -> None:
        self._inner = inner
        self._clock = clock
        self._interval = interval
        # call_id -> newest summary, or _REMOVED; insertion order is write order.
        self._pending: dict[str, LiveCall | None] = {}
        self._waiters: builtins.list[Deferred[None]] = []
        self._flush_waiters: builtins.list[Deferred[None]] = []
        self._timer: IDelayedCall | None = None
        self._flushing: Deferred[None] | None = None
        self._failing = False

    @property
    def pending(self) -> int:
        """Calls whose latest change is not written yet."""
        return len(self._pending)

    # -- ILiveCalls --------------------------------------------------------------------

    def publish(self, call: LiveCall) -> Deferred[None]:
        """
        Queue ``call``'s summary; fires once the batch holding it is written, or
        has failed and is queued again (the failure is logged here, once).
        """
        return self._change(call.call_id, call)

    def remove(self, call_id: str) -> Deferred[None]:
        """Queue the removal of ``call_id``; fires like L{publish}."""
        return self._change(call_id, _REMOVED)

    def list(self) -> Deferred[builtins.list[LiveCall]]:
        """Write what is pending, then fire with every summary ``inner`` holds."""
        d: Deferred[builtins.list[LiveCall]] = self.flush().addCallback(
            lambda _: self._inner.list()
        )
        return d

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Forget pending summaries of ``node_id`` and clear the node in ``inner``."""
        for call_id, call in list(self._pending.items()):
            if call is not None and call.node_id == node_id:
                del self._pending[call_id]
        d: Deferred[int] = self._inner.clear_node(node_id)
        return d

    # -- batching ----------------------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """Write what is pending now; fire when written, fail if that write fails."""
        self._cancel_timer()
        if self._flushing is None and not self._pending:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._flush_waiters.append(d)
        if self._flushing is None:
            self._write()
        # else: one batch at a time; the pending changes go right after it.
        return d

    def _change(self, call_id: str, state: LiveCall | None) -> Deferred[None]:
        self._pending.pop(call_id, None)  # move to the end: write order follows changes
        self._pending[call_id] = state
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._timer is None and self._flushing is None:
            self._timer = self._clock.callLater(self._interval, self._tick)
        return d

    def _tick(self) -> None:
        self._timer = None
        if self._flushing is None and self._pending:
            self._write()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _write(self) -> None:
        batch, self._pending = self._pending, {}
        waiters, self._waiters = self._waiters, []
        flush_waiters, self._flush_waiters = self._flush_waiters, []
        published = [call for call in batch.values() if call is not None]
        removed = [call_id for call_id, call in batch.items() if call is None]
        apply = getattr(self._inner, "apply", None)
        if apply is not None:
            d: Deferred[Any] = defer.maybeDeferred(apply, published, removed)
        else:
            writes = [self._inner.publish(call) for call in published]
            writes += [self._inner.remove(call_id) for call_id in removed]
            d = defer.gatherResults(writes, consumeErrors=True).addErrback(_first_error)
        self._flushing = d
        d.addCallbacks(self._written, self._failed, errbackArgs=(batch,))
        d.addBoth(self._done, waiters, flush_waiters)

    def _written(self, _: object) -> None:
        if self._failing:
            self._failing = False
            self.log.info("Live-call summaries are written again")

    def _failed(self, failure: Failure, batch: dict[str, LiveCall | None]) -> Failure:
        # Keep the batch for the next write, under anything newer.
        merged = dict(batch)
        merged.update(self._pending)
        self._pending = merged
        if not self._failing:
            self._failing = True
            self.log.warn(
                "Could not write {count} live-call summaries ({error}); retrying",
                count=len(batch),
                error=failure.getErrorMessage(),
            )
        return failure

    def _done(
        self,
        result: object,
        waiters: builtins.list[Deferred[None]],
        flush_waiters: builtins.list[Deferred[None]],
    ) -> None:
        self._flushing = None
        for waiter in waiters:
            waiter.callback(None)
        for waiter in flush_waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)
        if self._flush_waiters:
            if self._pending:
                self._write()
            else:
                rest, self._flush_waiters = self._flush_waiters, []
                for waiter in rest:
                    waiter.callback(None)
        elif self._pending and self._timer is None:
            # While the store refuses writes, try again less often.
            delay = max(self._interval, RETRY_DELAY) if self._failing else self._interval
            self._timer = self._clock.callLater(delay, self._tick)


def _first_error(failure: Failure) -> Failure:
    """The failure of the first write that failed, rather than gatherResults' wrapper."""
    error = failure.value
    if isinstance(error, defer.FirstError):
        inner: Failure = error.subFailure
        return inner
    return failure
