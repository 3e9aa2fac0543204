"""
The Redis state backend (``warden.store.redis``) against a throwaway
``redis-server`` (and a Sentinel in front of it): the ILocationService and
ILiveCalls conformance suites, TTLs, key namespaces, URL parsing and the
command timeout that keeps a dead Redis from hanging a SIP transaction.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import (
    LiveCallsConformanceMixin,
    LocationServiceConformanceMixin,
    binding,
    live_call,
)
from tests.store.conformance_state import GuardedLocationConformanceMixin
from warden.errors import StateUnavailable
from warden.interfaces import ILiveCalls, ILocationService
from warden.store.redis import (
    RedisLiveCalls,
    RedisLocationService,
    RedisState,
    StateURL,
    StateURLError,
    connect_state,
    parse_state_url,
)
from warden.testing import servers

TIMEOUT = 5.0


def real_clock() -> Any:
    from twisted.internet import reactor

    return reactor


async def eventually(check: Callable[[], Awaitable[bool]], attempts: int, interval: float) -> None:
    """Await ``check()`` up to ``attempts`` times, ``interval`` seconds apart, until true."""
    for _ in range(attempts):
        if await check():
            return
        await task.deferLater(real_clock(), interval, lambda: None)
    raise AssertionError(f"still false after {attempts} attempts {interval} s apart")


class RedisCase(TestCase):
    """Connects to this process's throwaway Redis under a fresh cluster name."""

    def connect(self, clock: Any = None, cluster: str | None = None) -> RedisState:
        server = servers.redis()
        state = connect_state(
            server.url, clock or real_clock(), cluster or uuid.uuid4().hex, TIMEOUT
        )
        self.addCleanup(state.close)
        return state


class RedisLocationConformanceTests(LocationServiceConformanceMixin, RedisCase):
    """RedisLocationService against the ILocationService conformance suite."""

    def make_store(self) -> RedisLocationService:
        return RedisLocationService(self.connect(self.clock))


class RedisGuardedLocationTests(GuardedLocationConformanceMixin, RedisCase):
    """RedisLocationService against the IGuardedLocation conformance suite."""

    def make_location(self, peer: RedisLocationService | None = None) -> RedisLocationService:
        if peer is None:
            return RedisLocationService(self.connect())
        return RedisLocationService(self.connect(cluster=peer._state.prefix.split(":")[1]))


class RedisLiveCallsConformanceTests(LiveCallsConformanceMixin, RedisCase):
    """RedisLiveCalls against the ILiveCalls conformance suite."""

    def make_store(self) -> RedisLiveCalls:
        return RedisLiveCalls(self.connect())


class RedisLayoutTests(RedisCase):
    """What the backend leaves in Redis: namespaced keys with TTLs."""

    async def test_provides_interfaces(self) -> None:
        """Both stores provide their interfaces completely."""
        state = self.connect()
        self.assertTrue(verifyObject(ILocationService, RedisLocationService(state)))
        self.assertTrue(verifyObject(ILiveCalls, RedisLiveCalls(state)))

    async def test_binding_ttl_follows_latest_expiry(self) -> None:
        """An AOR's hash expires (in Redis time) about when its latest binding does."""
        clock = Clock()
        clock.advance(1000)
        state = self.connect(clock, cluster="ttl")
        store = RedisLocationService(state)
        await store.remove_aor("100")
        a, b = binding("100", "a", 1060.0), binding("100", "b", 1300.0)
        await store.apply("100", [a, b], [])
        ttl_ms = int(await state.client.execute_command("PTTL", "warden:ttl:loc:100"))
        self.assertTrue(300_000 <= ttl_ms <= 301_000, ttl_ms)
        await store.apply("100", [], ["b"])
        ttl_ms = int(await state.client.execute_command("PTTL", "warden:ttl:loc:100"))
        self.assertTrue(59_000 <= ttl_ms <= 61_000, ttl_ms)

    async def test_clusters_do_not_see_each_other(self) -> None:
        """Two cluster names on one Redis keep separate bindings and calls."""
        clock = Clock()
        one = RedisLocationService(self.connect(clock))
        two = RedisLocationService(self.connect(clock))
        await one.apply("100", [binding("100", "a", 2000.0)], [])
        self.assertEqual(await two.count(0.0), 0)
        self.assertEqual(len(await one.bindings_for("100", 0.0)), 1)
        calls_one = RedisLiveCalls(self.connect())
        calls_two = RedisLiveCalls(self.connect())
        await calls_one.publish(live_call("c1", 1.0))
        self.assertEqual(await calls_two.list(), [])

    async def test_keys_are_namespaced(self) -> None:
        """Every key written lives under warden:<cluster>:."""
        cluster = uuid.uuid4().hex
        state = self.connect(Clock(), cluster=cluster)
        await RedisLocationService(state).apply("100", [binding("100", "a", 2000.0)], [])
        await RedisLiveCalls(state).publish(live_call("c1", 1.0))
        keys = sorted(await state.client.keys(f"*{cluster}*"))
        self.assertEqual(
            keys,
            [f"warden:{cluster}:{k}" for k in ["call:c1", "calls", "loc-expiry", "loc:100"]],
        )

    async def test_live_call_expires_without_refresh(self) -> None:
        """A summary nobody republishes disappears after its TTL (a dead node's calls)."""
        calls = RedisLiveCalls(self.connect(), ttl=0.05)
        await calls.publish(live_call("c1", 1.0))

        async def gone() -> bool:
            return await calls.list() == []

        await eventually(gone, attempts=100, interval=0.02)

    async def test_newer_fields_ignored(self) -> None:
        """A summary written by a newer node, with a field this one lacks, still lists."""
        state = self.connect()
        calls = RedisLiveCalls(state)
        await calls.publish(live_call("c1", 1.0))
        key = state.key("call", "c1")
        text = json.loads(await state.client.get(key))
        await state.client.set(key, json.dumps({**text, "from_the_future": 1}))
        self.assertEqual(await calls.list(), [live_call("c1", 1.0)])

    async def test_numbers_stay_text(self) -> None:
        """The connection keeps replies as Redis sent them (convertNumbers=False)."""
        state = self.connect()
        await state.client.set(state.key("n"), "0100")
        self.assertEqual(await state.client.get(state.key("n")), "0100")
        await state.client.delete(state.key("n"))

    async def test_commands_go_direct(self) -> None:
        """Once connected, commands are written straight to a pooled connection."""
        state = self.connect()
        await state.ping()
        self.assertIsNotNone(state._direct.connection())
        store = RedisLocationService(state)
        await store.apply("100", [binding("100", "a", 4e9)], [])
        self.assertEqual(await store.bindings_for("100", 0.0), [binding("100", "a", 4e9)])

    async def test_script_unknown_to_redis(self) -> None:
        """After SCRIPT FLUSH (as after a Redis restart) scripts run again."""
        state = self.connect()
        store = RedisLocationService(state)
        await store.apply("100", [binding("100", "a", 4e9)], [])
        await state.client.execute_command("SCRIPT", "FLUSH")
        await store.apply("100", [binding("100", "b", 4e9)], [])
        self.assertEqual(await store.count(0.0), 2)


class NeverAnswers:
    """A txredisapi stand-in whose commands never get a reply (a Redis that hangs)."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def _wait(self, *args: Any, **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    execute_command = eval = ping = _wait

    def disconnect(self) -> None:
        pass


class TurnClock(Clock):
    """
    A Clock that, like the reactor's ``runUntilCurrent``, runs in one
    ``advance`` only the calls that were due when it began: a call scheduled
    meanwhile (``callLater(0)``) waits for the next turn, after the reactor has
    read its sockets.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in sorted(due, key=lambda c: c.getTime()):
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class TimeoutTests(SynchronousTestCase):
    """Every command is bounded by the timeout on the injected clock."""

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.client = NeverAnswers()
        self.state = RedisState(self.client, self.clock, "t", 0.5)

    def test_read_times_out(self) -> None:
        """A read without a reply fails with StateUnavailable at the timeout, once
        the reactor has had one turn to read replies that arrived in time."""
        d = RedisLocationService(self.state).bindings_for("100", 0.0)
        self.clock.advance(0.499)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.assertNoResult(d)
        self.clock.advance(0)
        failure = self.failureResultOf(d, StateUnavailable)
        self.assertIn("bindings_for", str(failure.value))
        self.assertEqual(self.state.failures, 1)

    def test_write_times_out(self) -> None:
        """A write (Lua script) without a reply fails with StateUnavailable."""
        d = RedisLocationService(self.state).apply("100", [binding("100", "a", 9.0)], [])
        self.clock.pump([0.5, 0])
        self.failureResultOf(d, StateUnavailable)

    def test_reply_read_in_the_deadline_turn(self) -> None:
        """A reply read in the reactor turn the deadline passed in still counts."""
        d = RedisLocationService(self.state).count(0.0)
        self.clock.advance(0.5)
        self.client.pending[0].callback("2")
        self.assertEqual(self.successResultOf(d), 2)
        self.clock.advance(0)
        self.assertEqual(self.state.failures, 0)

    def test_late_reply_is_dropped(self) -> None:
        """A reply after the timeout changes nothing (the caller already had 503)."""
        d = RedisLiveCalls(self.state).list()
        self.clock.pump([0.5, 0])
        self.failureResultOf(d, StateUnavailable)
        self.client.pending[0].callback([])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reply_in_time_cancels_timer(self) -> None:
        """A timely reply fires the result and leaves no timer behind."""
        d = RedisLocationService(self.state).count(0.0)
        self.client.pending[0].callback("3")
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_error_reply(self) -> None:
        """An error from Redis (or the connection) becomes StateUnavailable at once."""
        d = self.state.ping()
        self.client.pending[0].errback(ConnectionError("Not connected"))
        failure = self.failureResultOf(d, StateUnavailable)
        self.assertIn("Not connected", str(failure.value))

    def test_wrong_aor(self) -> None:
        """apply refuses a binding of another AOR before sending anything."""
        d = RedisLocationService(self.state).apply("100", [binding("200", "a", 9.0)], [])
        self.failureResultOf(d, ValueError)
        self.assertEqual(self.client.pending, [])


class DeadRedisTests(TestCase):
    """A Redis that is not there: commands fail within the timeout, never hang."""

    async def test_nothing_listening(self) -> None:
        """With nothing on the port, a read fails with StateUnavailable in time."""
        port = servers.free_tcp_port()
        state = connect_state(f"redis://127.0.0.1:{port}/0", real_clock(), "dead", 0.3)
        self.addCleanup(state.close)
        with self.assertRaises(StateUnavailable):
            await RedisLocationService(state).bindings_for("100", 0.0)

    async def test_recovers_after_restart(self) -> None:
        """Commands fail while Redis is stopped and succeed again once it is back."""
        server = servers.redis()
        state = connect_state(server.url, real_clock(), uuid.uuid4().hex, 0.3)
        self.addCleanup(state.close)
        store = RedisLocationService(state)
        await store.apply("100", [binding("100", "a", 4e9)], [])
        server.stop()
        try:
            with self.assertRaises(StateUnavailable):
                await store.count(0.0)
        finally:
            server.start()

        async def answers() -> bool:
            try:
                await store.count(0.0)
            except StateUnavailable:
                return False
            return True

        await eventually(answers, attempts=100, interval=0.1)
        # The throwaway server keeps no data across a restart.
        self.assertEqual(await store.count(0.0), 0)


async def settle() -> None:
    """
    Let txredisapi finish parsing replies it deferred to a later reactor turn
    (``callLater(0)``) once the connections are closed: bounded reactor turns.
    """
    for _ in range(100):
        pending = [c for c in real_clock().getDelayedCalls() if "dataReceived" in repr(c.func)]
        if not pending:
            return
        await task.deferLater(real_clock(), 0, lambda: None)


class SentinelTests(TestCase):
    """``redis+sentinel://`` finds the master through a real Sentinel process."""

    def start_sentinel(self) -> int:
        server = servers.redis()
        binary = shutil.which("redis-server")
        assert binary is not None
        directory = Path(tempfile.mkdtemp(prefix="warden-sentinel-"))
        port = servers.free_tcp_port()
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor wardenmaster 127.0.0.1 {server.port} 1\n"
            "sentinel down-after-milliseconds wardenmaster 5000\n"
        )
        process = subprocess.Popen(
            [binary, str(conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            process.terminate()
            process.wait(timeout=10)
            shutil.rmtree(directory, ignore_errors=True)

        self.addCleanup(stop)
        return port

    async def test_location_through_sentinel(self) -> None:
        """Bindings written through the Sentinel URL land on the monitored master."""
        port = self.start_sentinel()
        cluster = uuid.uuid4().hex
        state = connect_state(
            f"redis+sentinel://127.0.0.1:{port}/wardenmaster/0", real_clock(), cluster, 1.0
        )
        self.addCleanup(settle)
        self.addCleanup(state.close)
        store = RedisLocationService(state)

        async def reachable() -> bool:
            try:
                await state.ping()
            except StateUnavailable:
                return False
            return True

        await eventually(reachable, attempts=50, interval=0.1)
        await store.apply("100", [binding("100", "a", 4e9)], [])
        direct = connect_state(servers.redis().url, real_clock(), cluster, TIMEOUT)
        self.addCleanup(direct.close)
        self.assertEqual(len(await RedisLocationService(direct).bindings_for("100", 0.0)), 1)


class StateURLTests(SynchronousTestCase):
    """parse_state_url accepts the documented forms and refuses the rest clearly."""

    def test_redis(self) -> None:
        """redis://host:port/db, with defaults for the port and database."""
        self.assertEqual(
            parse_state_url("redis://10.0.0.5:6380/2"), StateURL(hosts=(("10.0.0.5", 6380),), db=2)
        )
        self.assertEqual(parse_state_url("redis://cache"), StateURL(hosts=(("cache", 6379),)))
        self.assertEqual(parse_state_url("redis://[::1]:7000/"), StateURL(hosts=(("::1", 7000),)))

    def test_sentinel(self) -> None:
        """redis+sentinel://h:p,h:p/master/db lists every Sentinel and the master name."""
        url = parse_state_url("redis+sentinel://s1:26380,s2/pbx/3")
        self.assertEqual(url, StateURL(hosts=(("s1", 26380), ("s2", 26379)), db=3, master="pbx"))
        self.assertTrue(url.sentinel)

    def test_refused(self) -> None:
        """Bad schemes, credentials, ports, paths and databases are refused with a reason."""
        cases = {
            "http://x/0": "redis://",
            "redis://user:pw@x/0": "WARDEN_STATE_PASSWORD",
            "redis://x:99999/0": "bad port",
            "redis://x/0/1": "path",
            "redis://x/zero": "number",
            "redis+sentinel://x": "master name",
            "redis://x/0?ssl=1": "query",
            "redis://:6379/0": "missing host",
        }
        for url, reason in cases.items():
            with self.assertRaises(StateURLError) as caught:
                parse_state_url(url)
            self.assertIn(reason, str(caught.exception), url)


class FreshReadTests(RedisCase):
    """The read that follows a write in the same callback needs no round trip."""

    async def test_read_in_apply_callback(self) -> None:
        """bindings_for called from apply's callback sees the result of the apply,
        and a later read goes to Redis again."""
        clock = Clock()
        state = self.connect(clock)
        store = RedisLocationService(state)
        seen: list[list[Any]] = []
        old = binding("100", "old", 1.0)
        await store.apply("100", [old], [])
        d = store.apply("100", [binding("100", "a", 2000.0)], [])
        d.addCallback(lambda _: store.bindings_for("100", 0.5).addCallback(seen.append))
        await d
        self.assertEqual(sorted(b.key for b in seen[0]), ["a", "old"])
        await state.client.delete(state.key("loc", "100"))
        self.assertEqual(await store.bindings_for("100", 0.5), [])
