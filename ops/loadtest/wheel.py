"""
One timer for many: the load generator's retransmission and time-out timers
(thousands a second) go in slots of ``resolution`` seconds, and one reactor
call is armed at a time, for the earliest slot, instead of one per timer.

A timer fires in the first slot not before its due time, so at most
``resolution`` late; timers of one slot fire in the order they were set.
Cancelling removes the timer at once (what it refers to is freed).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Default slot width, seconds.
RESOLUTION = 0.01
#: Float arithmetic tolerance, in slots: a timer due at a slot's time (give or
#: take this) goes in that slot, and a slot is due once the clock is this close.
_SLACK = 1e-3

Timer = tuple[int, int]
"""What L{TimerWheel.schedule} returns: the slot and the timer's key in it."""


class TimerWheel:
    """
    Timers on ``clock`` in slots of ``resolution`` seconds.

    Args:
        clock: time source; one delayed call is pending while any timer is.
        resolution: slot width in seconds.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, resolution: float = RESOLUTION) -> None:
        if resolution <= 0:
            raise ValueError(f"resolution must be positive: {resolution!r}")
        self.clock = clock
        self.resolution = resolution
        self._slots: dict[int, dict[int, Callable[[], object]]] = {}
        self._order: list[int] = []  # heap of the slots in _slots
        self._keys = itertools.count()
        self._call: IDelayedCall | None = None
        self._armed: int | None = None  # the slot _call is for
        self._count = 0
        self._firing = False

    def __len__(self) -> int:
        """Timers pending."""
        return self._count

    def schedule(self, delay: float, function: Callable[[], object]) -> Timer:
        """Call ``function()`` ``delay`` seconds from now (give or take one slot)."""
        due = (self.clock.seconds() + max(0.0, delay)) / self.resolution
        slot = math.ceil(due - _SLACK)
        timers = self._slots.get(slot)
        if timers is None:
            timers = self._slots[slot] = {}
            heapq.heappush(self._order, slot)
        key = next(self._keys)
        timers[key] = function
        self._count += 1
        if not self._firing and (self._armed is None or slot < self._armed):
            self._arm(slot)
        return (slot, key)

    def cancel(self, timer: Timer) -> None:
        """Forget ``timer`` (nothing happens when it already fired or was cancelled)."""
        slot, key = timer
        timers = self._slots.get(slot)
        if timers is not None and timers.pop(key, None) is not None:
            self._count -= 1
            if not self._count and not self._firing:
                self.clear()  # no delayed call left behind

    def clear(self) -> None:
        """Cancel every timer; no delayed call is left pending."""
        self._slots.clear()
        self._order.clear()
        self._count = 0
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._armed = None

    def _arm(self, slot: int) -> None:
        delay = max(0.0, slot * self.resolution - self.clock.seconds())
        if self._call is not None and self._call.active():
            self._call.reset(delay)
        else:
            self._call = self.clock.callLater(delay, self._fire)
        self._armed = slot

    def _fire(self) -> None:
        self._call = self._armed = None
        self._firing = True
        try:
            self._run_due()
        finally:
            self._firing = False
        order = self._order
        while order and not self._slots.get(order[0]):
            self._slots.pop(heapq.heappop(order), None)  # emptied by cancels
        if order:
            self._arm(order[0])

    def _run_due(self) -> None:
        order = self._order
        while order and order[0] <= int(self.clock.seconds() / self.resolution + _SLACK):
            timers = self._slots.pop(heapq.heappop(order), None)
            if not timers:
                continue
            self._count -= len(timers)
            for function in timers.values():
                try:
                    function()
                except Exception:  # one timer's bug must not stop the others
                    self.log.failure("A timer failed")
