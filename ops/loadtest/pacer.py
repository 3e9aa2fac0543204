"""
Starting operations at a target rate: a linear ramp up to ``rate`` per second over
``ramp_up`` seconds, then steady, bounded by the number in flight, a total count
and an end time. Starts that fall behind (the in-flight bound was reached) are
made up as soon as operations finish, so the offered and the achieved rate can
be compared second by second.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

#: Seconds between two looks at the schedule.
TICK = 0.005


def due(rate: float, ramp_up: float, elapsed: float) -> float:
    """How many operations should have started ``elapsed`` seconds in."""
    if elapsed <= 0:
        return 0.0
    if ramp_up <= 0:
        return rate * elapsed
    if elapsed < ramp_up:
        return rate * elapsed * elapsed / (2 * ramp_up)
    return rate * (elapsed - ramp_up / 2)


class Pacer:
    """
    Starts ``start(index)`` operations (each returns a Deferred that fires when
    the operation is over; failures are the caller's to handle) on schedule.

    Args:
        clock: time source.
        rate: target starts per second.
        ramp_up: seconds to reach ``rate``.
        max_in_flight: most operations running at once.
        total: stop after this many starts (None: no count limit).
        duration: stop starting after this many seconds (None: no time limit).
        start: begins operation number ``index`` (0, 1, ...).
        offered: told the (fractional) starts the schedule offered at each tick.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        ramp_up: float,
        max_in_flight: int,
        total: int | None,
        duration: float | None,
        start: Callable[[int], defer.Deferred[object]],
        offered: Callable[[float, float], None] | None = None,
    ) -> None:
        if total is None and duration is None:
            raise ValueError("a pacer needs a total, a duration, or both")
        self.clock = clock
        self.rate = rate
        self.ramp_up = ramp_up
        self.max_in_flight = max_in_flight
        self.total = total
        self.duration = duration
        self._start = start
        self._offered = offered
        self.started = 0
        self.in_flight = 0
        self._began = 0.0
        self._last_due = 0.0
        self._stopping = False
        self.done: defer.Deferred[None] = defer.Deferred()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def run(self) -> defer.Deferred[None]:
        """Start; ``done`` (returned) fires once nothing more will start and none is in flight."""
        self._began = self.clock.seconds()
        self._loop.start(TICK, now=True).addErrback(lambda f: self.log.failure("pacer failed", f))
        return self.done

    def stop(self) -> None:
        """Start nothing more; the Deferred of L{run} fires when the running ones end."""
        self._stopping = True
        self._check_done()

    @property
    def finished_starting(self) -> bool:
        """True once nothing more will start."""
        return self._stopping or (self.total is not None and self.started >= self.total)

    def _tick(self) -> None:
        now = self.clock.seconds()
        elapsed = now - self._began
        last_tick = False
        if self.duration is not None and elapsed >= self.duration:
            elapsed, last_tick = self.duration, True  # start what was due by the end
        if self.finished_starting:
            self._check_done()
            return
        target = due(self.rate, self.ramp_up, elapsed)
        if self._offered is not None and target > self._last_due:
            self._offered(now, target - self._last_due)
        self._last_due = target
        wanted = int(target) - self.started
        if self.total is not None:
            wanted = min(wanted, self.total - self.started)
        wanted = min(wanted, self.max_in_flight - self.in_flight)
        for _ in range(max(0, wanted)):
            self._launch()
        if last_tick:
            self._stopping = True
            self._check_done()

    def _launch(self) -> None:
        index = self.started
        self.started += 1
        self.in_flight += 1
        try:
            d = self._start(index)
        except Exception:
            self.log.failure("starting operation {index} failed", index=index)
            d = defer.succeed(None)
        d.addBoth(self._ended, index)

    def _ended(self, result: object, index: int) -> None:
        if isinstance(result, Failure):
            self.log.failure("operation {index} failed", result, index=index)
        self.in_flight -= 1
        self._check_done()

    def _check_done(self) -> None:
        if self.finished_starting and self.in_flight == 0 and not self.done.called:
            if self._loop.running:
                self._loop.stop()
            self.done.callback(None)
