"""
The conformance suites of L{warden.interfaces.ICallCounters} and
L{warden.interfaces.IGuardedLocation}, run against the memory fakes and Redis.
Subclasses define ``make_counters(node_id, peer)`` (or ``make_location(peer)``):
a store for ``node_id``; with ``peer`` (a store made before), one that shares
its data, as two nodes of a cluster do.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tests.store.conformance import binding, by_key
from warden.errors import StaleBindings
from warden.interfaces import IGuardedLocation


class CallCountersConformanceMixin:
    """The behaviour every ICallCounters must have."""

    def make_counters(self, node_id: str, peer: Any = None) -> Any:
        raise NotImplementedError

    async def counters(self, node_id: str = "n1", peer: Any = None) -> Any:
        return await defer.maybeDeferred(self.make_counters, node_id, peer)

    async def test_nothing_active(self) -> None:
        """A number nobody called has no active calls."""
        counters = await self.counters()
        self.assertEqual(await counters.active("100"), 0)

    async def test_acquire_counts_each_number(self) -> None:
        """acquire counts one call for caller and callee."""
        counters = await self.counters()
        self.assertTrue(await counters.acquire(["100", "200"], 2))
        self.assertEqual(await counters.active("100"), 1)
        self.assertEqual(await counters.active("200"), 1)

    async def test_limit(self) -> None:
        """At the limit acquire fires False and counts nothing for any number."""
        counters = await self.counters()
        self.assertTrue(await counters.acquire(["100", "200"], 2))
        self.assertTrue(await counters.acquire(["100", "300"], 2))
        self.assertFalse(await counters.acquire(["400", "100"], 2))
        self.assertEqual(await counters.active("100"), 2)
        self.assertEqual(await counters.active("400"), 0)

    async def test_repeated_number_counts_twice(self) -> None:
        """A number listed twice (calling itself) counts twice."""
        counters = await self.counters()
        self.assertTrue(await counters.acquire(["100", "100"], 5))
        self.assertEqual(await counters.active("100"), 2)

    async def test_release(self) -> None:
        """release counts a call less, never below zero, and frees the limit."""
        counters = await self.counters()
        await counters.acquire(["100", "200"], 1)
        self.assertFalse(await counters.acquire(["100", "300"], 1))
        self.assertIsNone(await counters.release(["100", "200"]))
        self.assertEqual(await counters.active("100"), 0)
        await counters.release(["100"])
        self.assertEqual(await counters.active("100"), 0)
        self.assertTrue(await counters.acquire(["100", "300"], 1))

    async def test_nodes_share_counts(self) -> None:
        """Two nodes of a cluster see each other's calls against the same limit."""
        one = await self.counters("n1")
        two = await self.counters("n2", one)
        self.assertTrue(await one.acquire(["100", "200"], 2))
        self.assertTrue(await two.acquire(["100", "300"], 2))
        self.assertFalse(await one.acquire(["100", "400"], 2))
        self.assertEqual(await two.active("100"), 2)
        await two.release(["100", "300"])
        self.assertEqual(await one.active("100"), 1)

    async def test_clear_node(self) -> None:
        """clear_node forgets one node's counts and fires with how many."""
        one = await self.counters("n1")
        two = await self.counters("n2", one)
        await one.acquire(["100", "200"], 5)
        await one.acquire(["100", "300"], 5)
        await two.acquire(["100", "400"], 5)
        self.assertEqual(await two.clear_node("n1"), 4)
        self.assertEqual(await two.active("100"), 1)
        self.assertEqual(await one.active("200"), 0)
        self.assertEqual(await two.clear_node("n1"), 0)


class AuthFailureCounterConformanceMixin:
    """
    The behaviour every IAuthFailureCounter must have. Subclasses define
    ``make_counter()`` and ``window_over(counter, source)``, which returns once
    the window of ``source`` (``WINDOW`` seconds) is over.
    """

    WINDOW = 0.2

    def make_counter(self) -> Any:
        raise NotImplementedError

    async def window_over(self, counter: Any, source: str) -> None:
        raise NotImplementedError

    async def test_counts_per_source(self) -> None:
        """Failures of one source count up; other sources count separately."""
        counter = await defer.maybeDeferred(self.make_counter)
        counts = [await counter.record_failure("192.0.2.1", 60.0) for _ in range(3)]
        self.assertEqual(counts, [1, 2, 3])
        self.assertEqual(await counter.record_failure("192.0.2.2", 60.0), 1)

    async def test_window_restarts(self) -> None:
        """Once the window that began with the first failure is over, counting restarts."""
        counter = await defer.maybeDeferred(self.make_counter)
        await counter.record_failure("192.0.2.1", self.WINDOW)
        self.assertEqual(await counter.record_failure("192.0.2.1", self.WINDOW), 2)
        await self.window_over(counter, "192.0.2.1")
        self.assertEqual(await counter.record_failure("192.0.2.1", self.WINDOW), 1)


class GuardedLocationConformanceMixin:
    """
    The behaviour every L{warden.interfaces.IGuardedLocation} must have.
    Subclasses define ``make_location(peer)``: a node's handle on the bindings;
    with ``peer`` (one made before), another node's handle on the same ones.
    """

    def make_location(self, peer: Any = None) -> Any:
        raise NotImplementedError

    async def location(self, peer: Any = None) -> Any:
        return await defer.maybeDeferred(self.make_location, peer)

    async def test_provides(self) -> None:
        """It provides IGuardedLocation completely."""
        self.assertTrue(verifyObject(IGuardedLocation, await self.location()))

    async def test_no_view(self) -> None:
        """Without a view of the AOR: view is None, and a guarded write writes nothing."""
        store = await self.location()
        self.assertIsNone(store.view("100", 0.0))
        failure = await self.failure_of(
            store.apply_unchanged("100", [binding("100", "a", 2e9)], [])
        )
        failure.trap(StaleBindings)
        self.assertEqual(await store.bindings_for("100", 0.0), [])

    async def test_view_of_own_write(self) -> None:
        """After a write, the view is what was written, without expired bindings."""
        store = await self.location()
        a, b = binding("100", "a", 1500.0), binding("100", "b", 2e9)
        await store.apply("100", [a, b], [])
        self.assertEqual(by_key(store.view("100", 1000.0)), [a, b])
        self.assertEqual(store.view("100", 1600.0), [b])

    async def test_guarded_write_when_unchanged(self) -> None:
        """A guarded write over an accurate view changes the bindings like apply."""
        store = await self.location()
        peer = await self.location(store)
        a, b = binding("100", "a", 2e9), binding("100", "b", 2e9)
        await peer.apply("100", [a], [])
        self.assertEqual(await store.bindings_for("100", 0.0), [a])  # the view, from a read
        await store.apply_unchanged("100", [b], ["a"])
        self.assertEqual(await peer.bindings_for("100", 0.0), [b])
        self.assertEqual(store.view("100", 0.0), [b])
        refreshed = binding("100", "b", 3e9, cseq=2)
        await store.apply_unchanged("100", [refreshed], [])
        self.assertEqual(await peer.bindings_for("100", 0.0), [refreshed])

    async def test_stale_view(self) -> None:
        """
        Another node's write makes the view stale: the guarded write writes
        nothing, fails with StaleBindings, and the next view is the new content.
        """
        store = await self.location()
        peer = await self.location(store)
        a, b, c = (binding("100", k, 2e9) for k in "abc")
        await store.apply("100", [a], [])
        await peer.apply("100", [b], [])
        self.assertEqual(store.view("100", 0.0), [a])  # unchecked
        failure = await self.failure_of(store.apply_unchanged("100", [c], ["a"]))
        failure.trap(StaleBindings)
        self.assertEqual(by_key(await peer.bindings_for("100", 0.0)), [a, b])
        self.assertEqual(by_key(store.view("100", 0.0)), [a, b])
        await store.apply_unchanged("100", [c], ["a"])
        self.assertEqual(by_key(await peer.bindings_for("100", 0.0)), [b, c])

    async def test_removal_elsewhere_makes_stale(self) -> None:
        """Bindings another node removed make the view stale too."""
        store = await self.location()
        peer = await self.location(store)
        a = binding("100", "a", 2e9)
        await store.apply("100", [a], [])
        await peer.remove_aor("100")
        failure = await self.failure_of(store.apply_unchanged("100", [a], []))
        failure.trap(StaleBindings)
        self.assertEqual(await peer.bindings_for("100", 0.0), [])
        self.assertEqual(store.view("100", 0.0), [])

    async def failure_of(self, d: defer.Deferred[Any]) -> Failure:
        """The Failure ``d`` fails with (the test fails if it succeeds)."""
        try:
            await d
        except Exception:
            return Failure()
        raise AssertionError("expected a failure")
