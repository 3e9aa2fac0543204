"""The pacer: ramp, rate, in-flight bound, count and time limits, on a Clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.pacer import TICK, Pacer, due


class DueTests(SynchronousTestCase):
    """How many operations are due after some time."""

    def test_steady(self) -> None:
        """Without ramp: rate times elapsed."""
        self.assertEqual(due(10, 0, 2.5), 25)
        self.assertEqual(due(10, 0, 0), 0)

    def test_ramp(self) -> None:
        """A linear ramp over 4 s to 10/s: 5 due at 2 s, 20 at 4 s, then 10 more a second."""
        self.assertAlmostEqual(due(10, 4, 2), 5)
        self.assertAlmostEqual(due(10, 4, 4), 20)
        self.assertAlmostEqual(due(10, 4, 5), 30)


class PacerTests(SynchronousTestCase):
    """Starts on schedule, within the bounds."""

    def setUp(self) -> None:
        """A clock and a record of starts; each operation ends when told to."""
        self.clock = Clock()
        self.starts: list[float] = []
        self.pending: list[defer.Deferred[object]] = []
        self.offered = 0.0

    def start(self, index: int) -> defer.Deferred[object]:
        """Record a start; the operation stays in flight until ``finish``."""
        self.starts.append(self.clock.seconds())
        d: defer.Deferred[object] = defer.Deferred()
        self.pending.append(d)
        return d

    def finish_all(self) -> None:
        """End every operation in flight."""
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)

    def offer(self, at: float, count: float) -> None:
        """Sum what the schedule offered."""
        self.offered += count

    def advance(self, seconds: float) -> None:
        """Move the clock in ticks."""
        for _ in range(round(seconds / TICK)):
            self.clock.advance(TICK)

    def test_rate_and_total(self) -> None:
        """5/s for 4 operations: starts at 0.2, 0.4, 0.6, 0.8 s; done when they end."""
        pacer = Pacer(self.clock, 5, 0, 100, 4, None, self.start, self.offer)
        done = pacer.run()
        self.advance(2.0)
        self.assertEqual([round(t, 3) for t in self.starts], [0.2, 0.4, 0.6, 0.8])
        self.assertNoResult(done)
        self.finish_all()
        self.successResultOf(done)
        self.assertAlmostEqual(self.offered, 4, places=1)

    def test_in_flight_bound(self) -> None:
        """At most 2 in flight: the third waits, then starts as soon as one ends."""
        pacer = Pacer(self.clock, 100, 0, 2, 3, None, self.start)
        pacer.run()
        self.advance(0.5)
        self.assertEqual(len(self.starts), 2)
        self.pending.pop(0).callback(None)
        self.advance(TICK)
        self.assertEqual(len(self.starts), 3)

    def test_duration(self) -> None:
        """With a duration and no total: starts stop at the end of it."""
        pacer = Pacer(self.clock, 10, 0, 100, None, 1.0, self.start)
        done = pacer.run()
        self.advance(3.0)
        self.assertEqual(len(self.starts), 10)
        self.finish_all()
        self.successResultOf(done)

    def test_stop(self) -> None:
        """stop() starts nothing more; done fires once the running ones end."""
        pacer = Pacer(self.clock, 10, 0, 100, 100, None, self.start)
        done = pacer.run()
        self.advance(0.55)
        pacer.stop()
        started = len(self.starts)
        self.advance(1.0)
        self.assertEqual(len(self.starts), started)
        self.assertNoResult(done)
        self.finish_all()
        self.successResultOf(done)

    def test_failing_operation_is_logged(self) -> None:
        """An operation that fails still counts as ended; the failure is logged."""
        pacer = Pacer(self.clock, 10, 0, 100, 1, None, lambda i: defer.fail(ValueError("x")))
        done = pacer.run()
        self.advance(0.2)
        self.successResultOf(done)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_needs_a_bound(self) -> None:
        """A pacer with neither count nor time limit is refused."""
        self.assertRaises(ValueError, Pacer, self.clock, 1, 0, 1, None, None, self.start)
