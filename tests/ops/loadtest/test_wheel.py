"""The load generator's timer wheel on a Clock: order, lateness, cancelling, re-arming."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.wheel import TimerWheel


class TimerWheelTests(SynchronousTestCase):
    """Many timers, one delayed call."""

    def setUp(self) -> None:
        """A wheel of 10 ms slots on a Clock; ``fired`` records (label, time)."""
        self.clock = Clock()
        self.wheel = TimerWheel(self.clock, 0.01)
        self.fired: list[tuple[str, float]] = []

    def at(self, label: str) -> Callable[[], None]:
        """A timer function recording ``label`` and the time it ran."""
        return lambda: self.fired.append((label, self.clock.seconds()))

    def test_fires_in_order_at_most_one_slot_late(self) -> None:
        """Each fires in the first slot not before its time; one slot runs in the order set."""
        self.wheel.schedule(0.5, self.at("b"))
        self.wheel.schedule(0.105, self.at("a"))
        self.wheel.schedule(0.5, self.at("c"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(self.wheel), 3)
        self.clock.advance(0.1)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.01)
        self.assertEqual([label for label, _ in self.fired], ["a"])
        self.assertAlmostEqual(self.fired[0][1], 0.11)
        self.clock.advance(0.389)
        self.assertEqual(len(self.fired), 1)
        self.clock.advance(0.001)
        self.assertEqual([label for label, _ in self.fired], ["a", "b", "c"])
        self.assertEqual(len(self.wheel), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_earlier_timer_rearms(self) -> None:
        """A timer earlier than the armed slot moves the one delayed call forward."""
        self.wheel.schedule(5.0, self.at("late"))
        self.wheel.schedule(0.02, self.at("early"))
        (call,) = self.clock.getDelayedCalls()
        self.assertAlmostEqual(call.getTime(), 0.02)
        self.clock.advance(0.02)
        self.assertEqual([label for label, _ in self.fired], ["early"])
        (call,) = self.clock.getDelayedCalls()
        self.assertAlmostEqual(call.getTime(), 5.0)

    def test_cancel(self) -> None:
        """A cancelled timer never fires and is forgotten at once; others still fire."""
        kept = self.wheel.schedule(0.1, self.at("kept"))
        gone = self.wheel.schedule(0.1, self.at("gone"))
        self.wheel.cancel(gone)
        self.wheel.cancel(gone)  # twice is harmless
        self.assertEqual(len(self.wheel), 1)
        self.clock.advance(0.1)
        self.assertEqual([label for label, _ in self.fired], ["kept"])
        self.wheel.cancel(kept)  # after it fired: harmless
        self.assertEqual(len(self.wheel), 0)

    def test_slot_emptied_by_cancels_leaves_no_call_behind(self) -> None:
        """When every pending timer was cancelled the wheel ends with no delayed call."""
        first = self.wheel.schedule(0.1, self.at("x"))
        self.wheel.schedule(0.05, self.at("y"))
        self.wheel.cancel(first)
        self.clock.advance(0.05)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_set_while_firing(self) -> None:
        """A timer may set timers; a due one runs in the same pass, a later one is armed."""

        def first() -> None:
            self.fired.append(("first", self.clock.seconds()))
            self.wheel.schedule(0.0, self.at("now"))
            self.wheel.schedule(1.0, self.at("later"))

        self.wheel.schedule(0.01, first)
        self.clock.advance(0.01)
        self.assertEqual([label for label, _ in self.fired], ["first", "now"])
        self.clock.advance(1.0)
        self.assertEqual([label for label, _ in self.fired], ["first", "now", "later"])

    def test_failing_timer_does_not_stop_others(self) -> None:
        """A timer that raises is logged; the rest of its slot and later slots still fire."""

        def broken() -> None:
            raise RuntimeError("bug")

        self.wheel.schedule(0.01, broken)
        self.wheel.schedule(0.01, self.at("same slot"))
        self.wheel.schedule(0.02, self.at("next slot"))
        self.clock.advance(0.02)
        self.assertEqual([label for label, _ in self.fired], ["same slot", "next slot"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_clear(self) -> None:
        """clear() drops every timer and the delayed call."""
        for delay in (0.1, 0.2, 3.0):
            self.wheel.schedule(delay, self.at(str(delay)))
        self.wheel.clear()
        self.assertEqual((len(self.wheel), self.clock.getDelayedCalls()), (0, []))
        self.clock.advance(5)
        self.assertEqual(self.fired, [])

    def test_late_reactor_runs_every_due_slot(self) -> None:
        """When the reactor wakes late, every slot now due fires, in order."""
        for delay in (0.3, 0.1, 0.2):
            self.wheel.schedule(delay, self.at(str(delay)))
        self.clock.advance(10)
        self.assertEqual([label for label, _ in self.fired], ["0.1", "0.2", "0.3"])

    def test_resolution_must_be_positive(self) -> None:
        """A zero slot width is refused."""
        self.assertRaises(ValueError, TimerWheel, self.clock, 0)
