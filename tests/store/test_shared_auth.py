"""
IAuthFailureCounter (memory and Redis) and the cluster's shared nonce secret;
AuthThrottle blocking on the cluster-wide count.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.internet import task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance_state import AuthFailureCounterConformanceMixin
from warden.interfaces import IAuthFailureCounter
from warden.sip.auth import AuthThrottle, NonceManager, NonceState
from warden.store.redis import RedisState, connect_state
from warden.store.redis_counters import RedisAuthFailureCounter, shared_secret
from warden.testing import servers
from warden.testing.counters import MemoryAuthFailureCounter


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


def redis_state(case: TestCase, cluster: str | None = None) -> RedisState:
    state = connect_state(servers.redis().url, reactor(), cluster or uuid.uuid4().hex, 5.0)
    case.addCleanup(state.close)
    return state


class MemoryAuthFailureCounterTests(AuthFailureCounterConformanceMixin, TestCase):
    """MemoryAuthFailureCounter against the IAuthFailureCounter suite."""

    def make_counter(self) -> MemoryAuthFailureCounter:
        self.clock = Clock()
        counter = MemoryAuthFailureCounter(self.clock)
        self.assertTrue(verifyObject(IAuthFailureCounter, counter))
        return counter

    async def window_over(self, counter: Any, source: str) -> None:
        self.clock.advance(self.WINDOW)


class RedisAuthFailureCounterTests(AuthFailureCounterConformanceMixin, TestCase):
    """RedisAuthFailureCounter against the IAuthFailureCounter suite."""

    def make_counter(self) -> RedisAuthFailureCounter:
        self.state = redis_state(self)
        counter = RedisAuthFailureCounter(self.state)
        self.assertTrue(verifyObject(IAuthFailureCounter, counter))
        return counter

    async def window_over(self, counter: Any, source: str) -> None:
        key = self.state.key("authfail", source)
        for _ in range(100):
            if not int(await self.state.client.exists(key)):
                return
            await task.deferLater(reactor(), self.WINDOW / 10, lambda: None)
        raise AssertionError(f"{key} did not expire")


class SharedSecretTests(TestCase):
    """Every node of a cluster ends up with the first node's nonce secret."""

    async def test_first_wins(self) -> None:
        """The first candidate is kept; later nodes get it rather than their own."""
        cluster = uuid.uuid4().hex
        first, second = os.urandom(32), os.urandom(32)
        self.assertEqual(await shared_secret(redis_state(self, cluster), "nonce", first), first)
        self.assertEqual(await shared_secret(redis_state(self, cluster), "nonce", second), first)

    def test_nonce_accepted_by_peer(self) -> None:
        """With one secret, a nonce from node A is recognised by node B (stale, not
        forged: B re-challenges without counting a failure)."""
        clock = Clock()
        a, b = NonceManager(clock, 300.0), NonceManager(clock, 300.0)
        nonce = a.issue()
        self.assertEqual(b.check(nonce), NonceState.INVALID)
        b.use_secret(a._secret)
        self.assertEqual(b.check(nonce), NonceState.STALE)


class SharedThrottleTests(SynchronousTestCase):
    """AuthThrottle blocks a source once the cluster's count reaches the limit."""

    def test_blocked_by_cluster_count(self) -> None:
        """Failures on other nodes count: this node blocks on its first failure."""
        clock = Clock()
        shared = MemoryAuthFailureCounter(clock)
        for _ in range(4):
            shared.record_failure("192.0.2.9", 60.0)  # seen by other nodes
        throttle = AuthThrottle(clock, limit=5, window=60.0, block_seconds=300.0)
        throttle.shared = shared
        self.assertFalse(throttle.is_blocked("192.0.2.9"))
        throttle.record_failure("192.0.2.9")
        self.assertTrue(throttle.is_blocked("192.0.2.9"))
        clock.advance(299.999)
        self.assertTrue(throttle.is_blocked("192.0.2.9"))
        clock.advance(0.001)
        self.assertFalse(throttle.is_blocked("192.0.2.9"))

    def test_extension_at_source_shared(self) -> None:
        """
        Failures for one extension at one source count across the cluster too:
        two nodes each seeing some of them block that extension there, and
        only there (the source and its other extensions stay unblocked).
        """
        clock = Clock()
        shared = MemoryAuthFailureCounter(clock)
        nodes = [AuthThrottle(clock, 10, 60.0, 300.0, extension_limit=4) for _ in range(2)]
        for node in nodes:
            node.shared = shared
        for node in (nodes[0], nodes[1], nodes[0]):
            node.record_failure("192.0.2.9", "1001")
        self.assertFalse(nodes[1].is_blocked("192.0.2.9", "1001"))
        nodes[1].record_failure("192.0.2.9", "1001")
        self.assertTrue(nodes[1].is_blocked("192.0.2.9", "1001"))
        self.assertFalse(nodes[1].is_blocked("192.0.2.9", "1002"))
        self.assertFalse(nodes[1].is_blocked("192.0.2.9"))

    def test_local_only_without_shared(self) -> None:
        """Without a shared counter the local window alone decides."""
        throttle = AuthThrottle(Clock(), limit=2, window=60.0, block_seconds=10.0)
        self.assertFalse(throttle.record_failure("192.0.2.9"))
        self.assertTrue(throttle.record_failure("192.0.2.9"))
