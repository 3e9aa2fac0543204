"""CoalescingLiveCalls (warden.store.live): batched live-call summaries, on a Clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import LiveCallsConformanceMixin, live_call
from tests.store.test_sqlite import _PoolMixin
from warden.interfaces import ILiveCalls
from warden.model import LiveCall
from warden.store.cdr import SQLLiveCalls
from warden.store.live import RETRY_DELAY, CoalescingLiveCalls
from warden.testing import MemoryLiveCalls


class CountingLiveCalls(MemoryLiveCalls):
    """MemoryLiveCalls that counts writes and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []
        self.broken = False

    def publish(self, call: LiveCall) -> Deferred[None]:
        if self.broken:
            return defer.fail(OSError("database is locked"))
        self.writes.append(("publish", call.call_id))
        return super().publish(call)

    def remove(self, call_id: str) -> Deferred[None]:
        if self.broken:
            return defer.fail(OSError("database is locked"))
        self.writes.append(("remove", call_id))
        return super().remove(call_id)


class BatchLiveCalls(CountingLiveCalls):
    """Also offers apply(), which the coalescer prefers."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[list[str], list[str]]] = []

    def apply(self, published: Sequence[LiveCall], removed: Sequence[str]) -> Deferred[None]:
        self.batches.append(([c.call_id for c in published], list(removed)))
        for call in published:
            super().publish(call)
        for call_id in removed:
            super().remove(call_id)
        return defer.succeed(None)


# The conformance suites await each write, so these run on the reactor (as the
# SQLite pool does) with a short interval.


class CoalescingOverMemoryConformanceTests(LiveCallsConformanceMixin, TestCase):
    def make_store(self) -> Any:
        return CoalescingLiveCalls(MemoryLiveCalls(), reactor, interval=0.001)


class CoalescingOverSQLiteConformanceTests(_PoolMixin, LiveCallsConformanceMixin, TestCase):
    def make_store(self) -> Any:
        async def make() -> CoalescingLiveCalls:
            inner = SQLLiveCalls(await self.open_pool())
            return CoalescingLiveCalls(inner, reactor, interval=0.001)

        return Deferred.fromCoroutine(make())


class CoalescingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = CountingLiveCalls()
        self.events: list[dict[str, Any]] = []
        self.live = CoalescingLiveCalls(self.inner, self.clock, interval=0.5)
        self.live.log = Logger(observer=self.events.append)

    def listed(self) -> list[str]:
        return [c.call_id for c in self.successResultOf(self.inner.list())]

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ILiveCalls, self.live))

    def test_written_after_interval(self) -> None:
        """Nothing is written before the interval; then the latest state, once."""
        d = self.live.publish(live_call("c1", 1.0))
        self.live.publish(live_call("c1", 1.0, state="answered"))
        self.live.publish(live_call("c1", 1.0, state="answered"))
        self.assertEqual((self.inner.writes, self.live.pending), ([], 1))
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertEqual(self.inner.writes, [("publish", "c1")])
        self.assertEqual(self.successResultOf(self.inner.list())[0].state, "answered")
        self.assertIsNone(self.successResultOf(d))

    def test_short_call_never_written(self) -> None:
        """Published and removed within one interval: the store sees nothing."""
        self.live.publish(live_call("c1", 1.0))
        self.live.remove("c1")
        self.clock.advance(0.5)
        self.assertEqual(self.inner.writes, [("remove", "c1")])
        self.assertEqual(self.listed(), [])

    def test_apply_batches(self) -> None:
        """A store with apply() gets one batch per interval."""
        inner = BatchLiveCalls()
        live = CoalescingLiveCalls(inner, self.clock, interval=0.5)
        inner.publish(live_call("old", 0.5))
        for n in range(3):
            live.publish(live_call(f"c{n}", float(n)))
        live.remove("old")
        self.clock.advance(0.5)
        self.assertEqual(inner.batches, [(["c0", "c1", "c2"], ["old"])])

    def test_list_flushes(self) -> None:
        """list() in this process sees what is still pending."""
        self.live.publish(live_call("c1", 1.0))
        self.assertEqual([c.call_id for c in self.successResultOf(self.live.list())], ["c1"])

    def test_failure_kept_and_retried(self) -> None:
        """A failed batch is logged once, kept under newer changes, and retried
        every RETRY_DELAY seconds until written; the callers' Deferreds fire."""
        self.inner.publish(live_call("gone", 0.5))
        self.inner.writes.clear()
        self.inner.broken = True
        d = self.live.publish(live_call("c1", 1.0))
        self.live.remove("gone")
        self.clock.advance(0.5)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.live.pending, 2)
        self.live.publish(live_call("c1", 1.0, state="answered"))
        self.clock.advance(RETRY_DELAY - 0.1)
        self.inner.broken = False
        self.clock.advance(0.1)
        self.assertEqual(sorted(self.inner.writes), [("publish", "c1"), ("remove", "gone")])
        self.assertEqual(self.successResultOf(self.inner.list())[0].state, "answered")
        levels = [e["log_level"].name for e in self.events]
        self.assertEqual(levels, ["warn", "info"])

    def test_flush_reports_failure(self) -> None:
        """flush() fails when the write fails (shutdown wants to know)."""
        self.live.publish(live_call("c1", 1.0))
        self.inner.broken = True
        self.failureResultOf(self.live.flush(), OSError)
        self.inner.broken = False
        self.successResultOf(self.live.flush())
        self.assertEqual(self.listed(), ["c1"])

    def test_clear_node_drops_pending(self) -> None:
        """clear_node forgets the node's pending summaries too."""
        self.live.publish(live_call("c1", 1.0))
        self.assertEqual(self.successResultOf(self.live.clear_node("node-1")), 0)
        self.clock.advance(0.5)
        self.assertEqual(self.listed(), [])
