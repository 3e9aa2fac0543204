"""ICallCounters: the memory fake and Redis pass the same conformance suite."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance_state import CallCountersConformanceMixin
from warden.interfaces import ICallCounters
from warden.store.redis import RedisState, connect_state
from warden.store.redis_counters import RedisCallCounters
from warden.testing import servers
from warden.testing.counters import MemoryCallCounters


class MemoryCallCountersTests(CallCountersConformanceMixin, TestCase):
    """MemoryCallCounters against the ICallCounters conformance suite."""

    def make_counters(self, node_id: str, peer: Any = None) -> MemoryCallCounters:
        shared = peer._by_node if peer is not None else None
        counters = MemoryCallCounters(node_id, shared)
        self.assertTrue(verifyObject(ICallCounters, counters))
        return counters


class RedisCallCountersTests(CallCountersConformanceMixin, TestCase):
    """
    RedisCallCounters against the ICallCounters conformance suite; every node
    made here has a heartbeat, so its counts are live.
    """

    async def make_counters(self, node_id: str, peer: Any = None) -> RedisCallCounters:
        cluster = peer._cluster if peer is not None else uuid.uuid4().hex
        from twisted.internet import reactor

        state = connect_state(servers.redis().url, reactor, cluster, 5.0)
        self.addCleanup(state.close)
        await state.client.set(state.key("node", node_id), "{}", expire=60)
        counters = RedisCallCounters(state, node_id)
        counters._cluster = cluster  # type: ignore[attr-defined]
        self.assertTrue(verifyObject(ICallCounters, counters))
        return counters

    async def test_dead_node_stops_counting(self) -> None:
        """The calls of a node whose heartbeat is gone no longer count."""
        one = await self.make_counters("n1")
        two = await self.make_counters("n2", one)
        await two.acquire(["100", "200"], 1)
        self.assertFalse(await one.acquire(["100", "300"], 1))
        state: RedisState = two._state
        await state.client.delete(state.key("node", "n2"))
        self.assertEqual(await one.active("100"), 0)
        self.assertTrue(await one.acquire(["100", "300"], 1))
