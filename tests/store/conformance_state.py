"""
The conformance suite of L{warden.interfaces.ICallCounters}, run against the
memory fake and Redis. Subclasses define ``make_counters(node_id, peer)``: a
store for ``node_id``; with ``peer`` (a store made before), one that shares its
data, as two nodes of a cluster do.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer


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
