"""
``warden.cluster``: a node's membership of the cluster in Redis (heartbeat with
TTL, the list of live nodes, the shared nonce secret, starting the SIP service
only once joined).
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from warden.cluster import NodeService, live_nodes, shared_state
from warden.config import parse_config_text
from warden.sip.auth import NonceManager, NonceState
from warden.sip.hop import ROUTE, NodeHop, TokenLifetimes
from warden.store.redis import connect_state
from warden.store.redis_counters import RedisCallCounters
from warden.testing import servers


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


class Child(service.Service):
    """Records when it was started."""

    started_count = 0

    def startService(self) -> None:
        super().startService()
        self.started_count += 1


class NodeServiceTests(TestCase):
    """NodeService against the throwaway Redis, its loop on a Clock."""

    def setUp(self) -> None:
        self.cluster = uuid.uuid4().hex
        self.clock = Clock()
        self.clock.advance(1000)

    def node(self, node_id: str, counters: bool = False) -> NodeService:
        state = connect_state(servers.redis().url, self.clock, self.cluster, 5.0)
        self.addCleanup(state.close)
        node = NodeService(
            state,
            node_id,
            f"127.0.0.1:{5060 + len(node_id)}",
            2.0,
            RedisCallCounters(state, node_id) if counters else None,
        )
        return node

    async def started(self, node: NodeService) -> None:
        """Start ``node``; return once it joined and a heartbeat of it is stored."""
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        for _ in range(100):
            if node._loop.running:
                # The loop's first beat is still on its way to Redis: wait for one.
                await node.beat()
                return
            await task.deferLater(reactor(), 0.01, lambda: None)
        raise AssertionError("node did not join")

    async def observer(self) -> Any:
        state = connect_state(servers.redis().url, reactor(), self.cluster, 5.0)
        self.addCleanup(state.close)
        return state

    async def test_heartbeat_and_nodes(self) -> None:
        """A started node's heartbeat lives 3 intervals; both nodes are listed."""
        a, b = self.node("a"), self.node("bb")
        await self.started(a)
        await self.started(b)
        state = await self.observer()
        nodes = await live_nodes(state)
        expected = [("a", "127.0.0.1:5061", 1000.0), ("bb", "127.0.0.1:5062", 1000.0)]
        self.assertEqual([(n.node_id, n.sip, n.seen_at) for n in nodes], expected)
        ttl = int(await state.client.execute_command("PTTL", state.key("node", "a")))
        self.assertTrue(5000 < ttl <= 6000, ttl)

    async def test_beats_every_interval(self) -> None:
        """The heartbeat is republished every interval (seen_at moves on)."""
        a = self.node("a")
        await self.started(a)
        self.clock.advance(2.0)
        await a.beat()
        nodes = await live_nodes(await self.observer())
        self.assertEqual(nodes[0].seen_at, 1002.0)
        self.assertEqual(nodes[0].started_at, 1000.0)

    async def test_stop_leaves(self) -> None:
        """Stopping a node removes its heartbeat: it is no longer listed."""
        a, b = self.node("a"), self.node("b")
        await self.started(a)
        await self.started(b)
        await a.stopService()
        nodes = await live_nodes(await self.observer())
        self.assertEqual([n.node_id for n in nodes], ["b"])

    async def test_dead_node_disappears(self) -> None:
        """A node whose heartbeat expired (it died) is not listed."""
        a = self.node("a")
        await self.started(a)
        state = await self.observer()
        await state.client.delete(state.key("node", "a"))
        self.assertEqual(await live_nodes(state), [])

    async def test_children_start_after_join(self) -> None:
        """The SIP service (a child) starts once the nonce secret is adopted; a
        node's nonces are then valid on its peer."""
        a, b = self.node("a"), self.node("b")
        children = []
        for node in (a, b):
            node.nonces = NonceManager(self.clock, 300.0)
            child = Child()
            child.setServiceParent(node)
            children.append(child)
        await self.started(a)
        await self.started(b)
        self.assertEqual([c.started_count for c in children], [1, 1])
        assert a.nonces is not None and b.nonces is not None
        self.assertEqual(b.nonces.check(a.nonces.issue()), NonceState.STALE)

    async def test_hop_secret_and_nodes(self) -> None:
        """Both nodes' hops get the same secret at join and, after a heartbeat,
        each other's SIP address (the bound port when it differs)."""
        a, b = self.node("a"), self.node("b")
        hops = []
        for node in (a, b):
            hop = NodeHop(
                node.node_id, self.clock, TokenLifetimes(62.0, 3600.0), list.append,
                lambda h, p: None, str, lambda m, f: None,
            )  # fmt: skip
            node.hop = hop
            hops.append(hop)
        b.port = lambda: 7000
        await self.started(a)
        await self.started(b)
        await a.beat()
        await b.beat()
        token = hops[1].token(ROUTE, "a", "tcp:127.0.0.1:4000", "call")
        self.assertEqual(
            hops[0].read_token((ROUTE,), "a", token, "call"), (ROUTE, "tcp:127.0.0.1:4000")
        )
        self.assertEqual(hops[0].nodes, {"b": ("127.0.0.1", 7000)})
        self.assertEqual(hops[1].nodes, {"a": ("127.0.0.1", 5061)})

    async def test_restart_clears_own_counts(self) -> None:
        """A node starting again forgets the calls it counted in its previous run."""
        before = self.node("a", counters=True)
        assert before._counters is not None
        await before._counters.acquire(["100", "200"], 5)
        again = self.node("a", counters=True)
        await self.started(again)
        assert again._counters is not None
        self.assertEqual(await again._counters.active("100"), 0)


class SharedStateConfigTests(TestCase):
    """shared_state builds the Redis stores only when [state] url is set."""

    def test_absent(self) -> None:
        """No [state] url: no shared state (in-process stores)."""
        self.assertIsNone(shared_state(parse_config_text(""), Clock()))

    @defer.inlineCallbacks
    def test_present(self):  # type: ignore[no-untyped-def]
        """With a URL: the stores share one connection; the node is named by config."""
        config = parse_config_text(
            f'[state]\nurl = "{servers.redis().url}"\n[cluster]\nnode_id = "n7"\nname = "c"\n'
        )
        shared = shared_state(config, Clock())
        assert shared is not None
        self.addCleanup(shared.state.close)
        self.assertEqual(shared.node_id, "n7")
        self.assertEqual(shared.state.prefix, "warden:c:")
        yield shared.state.ping()
