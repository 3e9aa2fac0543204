"""
The SQLite backend: conformance on a real ``adbapi`` pool, persistence across
reopening, and the location service's group-commit write-behind.

Conformance and persistence tests use trial's ``TestCase`` with real Deferreds
(adbapi runs SQLite in a thread). The write-behind tests use ``SyncPool``, which
runs each transaction in the test's thread when the test says so, and a
``Clock``, so every step of the group commit is checked deterministically.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import attrs
from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import (
    DirectoryConformanceMixin,
    LocationServiceConformanceMixin,
    binding,
    by_key,
    extension,
)
from tests.store.syncpool import SyncPool
from warden.errors import StoreError
from warden.interfaces import IDirectory, ILocationService
from warden.store.directory import SQLDirectory
from warden.store.location import FLUSH_INTERVAL, SQLLocationService
from warden.store.migrate import apply_migrations
from warden.store.sqlite import open_sqlite_pool


def close_pool(pool: Any) -> None:
    """Close ``pool`` unless the test already did."""
    if pool.running:
        pool.close()


class _PoolMixin:
    """Opens a migrated pool on a fresh database file, closed at cleanup."""

    async def open_pool(self, path: str | None = None) -> Any:
        path = path or os.path.join(self.mktemp(), "warden.db")
        pool = open_sqlite_pool(path)
        self.addCleanup(close_pool, pool)
        await apply_migrations(pool)
        return pool


class SQLiteDirectoryConformanceTests(_PoolMixin, DirectoryConformanceMixin, TestCase):
    """SQLDirectory against the IDirectory conformance suite."""

    def make_store(self) -> Deferred[SQLDirectory]:
        async def make() -> SQLDirectory:
            return SQLDirectory(await self.open_pool())

        return Deferred.fromCoroutine(make())


class SQLiteLocationServiceConformanceTests(_PoolMixin, LocationServiceConformanceMixin, TestCase):
    """SQLLocationService against the ILocationService conformance suite."""

    def make_store(self) -> Deferred[SQLLocationService]:
        async def make() -> SQLLocationService:
            service = SQLLocationService(await self.open_pool(), self.clock)
            await service.load()
            self.addCleanup(service.close)
            return service

        return Deferred.fromCoroutine(make())


class SQLitePersistenceTests(_PoolMixin, TestCase):
    """What the SQLite stores keep across a restart, on a real pool."""

    def test_provides_interfaces(self) -> None:
        """The SQLite stores provide their interfaces completely."""
        pool = open_sqlite_pool(os.path.join(self.mktemp(), "warden.db"))
        self.addCleanup(close_pool, pool)
        self.assertTrue(verifyObject(IDirectory, SQLDirectory(pool)))
        self.assertTrue(verifyObject(ILocationService, SQLLocationService(pool, Clock())))

    async def test_pool_settings(self) -> None:
        """open_sqlite_pool creates the parent directories and sets WAL, synchronous
        NORMAL, a 5 s busy timeout and foreign keys on the connection."""
        path = os.path.join(self.mktemp(), "deep", "er", "warden.db")
        pool = await self.open_pool(path)
        self.assertTrue(os.path.exists(path))
        pragmas = {}
        for name in ["journal_mode", "synchronous", "busy_timeout", "foreign_keys"]:
            rows = await pool.runQuery(f"PRAGMA {name}")
            pragmas[name] = rows[0][0]
        self.assertEqual(
            pragmas,
            {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1},
        )

    async def test_bindings_survive_reopen(self) -> None:
        """Flushed bindings come back after the pool is closed and a new service
        loads them; bindings expired by then are neither loaded nor kept on disk."""
        path = os.path.join(self.mktemp(), "warden.db")
        clock = Clock()
        pool = await self.open_pool(path)
        service = SQLLocationService(pool, clock)
        await service.load()
        keep = [binding("100", "a", 5000.0, q=0.7, cseq=3, node_id="n1")]
        keep[0] = attrs.evolve(keep[0], sent_by="10.0.0.5:5060")  # the NAT evidence
        keep.append(binding("200", "b", 6000.0, user_agent="Phone"))
        gone = binding("100", "old", 1500.0)
        service.apply("100", [keep[0], gone], [])
        service.apply("200", [keep[1]], [])
        await service.flush()
        pool.close()

        clock.advance(2000)
        pool = await self.open_pool(path)
        reopened = SQLLocationService(pool, clock)
        self.assertEqual(await reopened.load(), 2)
        self.assertEqual(by_key(await reopened.all_bindings(clock.seconds())), keep)
        self.assertEqual(await pool.runQuery("SELECT count(*) FROM bindings"), [(2,)])

    async def test_directory_survives_reopen(self) -> None:
        """Extensions are on disk: a new pool on the same file sees them."""
        path = os.path.join(self.mktemp(), "warden.db")
        ext = extension("100", "Desk", algorithms=("SHA-256",), enabled=False)
        pool = await self.open_pool(path)
        await SQLDirectory(pool).add_extension(ext)
        pool.close()
        pool = await self.open_pool(path)
        self.assertEqual(await SQLDirectory(pool).get_extension("100"), ext)

    async def test_write_fires_after_tick_and_commit(self) -> None:
        """A write's Deferred has not fired when apply returns; the flush scheduled
        on the clock commits it, and the row is then on disk."""
        clock = Clock()
        pool = await self.open_pool()
        service = SQLLocationService(pool, clock)
        d = service.apply("100", [binding("100", "a", 9000.0)], [])
        self.assertFalse(d.called)
        self.assertEqual(await pool.runQuery("SELECT count(*) FROM bindings"), [(0,)])
        clock.advance(0)
        await d
        self.assertEqual(await pool.runQuery("SELECT aor, key FROM bindings"), [("100", "a")])

    async def test_upsert_10000_quickly(self) -> None:
        """10,000 extensions upsert in well under a second, and again as a no-op."""
        directory = SQLDirectory(await self.open_pool())
        batch = [extension(str(10000 + n), password=f"pw{n}") for n in range(10000)]
        started = time.perf_counter()
        self.assertEqual(await directory.upsert_extensions(batch), (10000, 0))
        first = time.perf_counter() - started
        started = time.perf_counter()
        self.assertEqual(await directory.upsert_extensions(batch), (0, 0))
        second = time.perf_counter() - started
        self.assertLess(first, 1.0)
        self.assertLess(second, 1.0)
        self.assertEqual(await directory.count_extensions(), 10000)


def _sample(interaction: str, outcome: str = "ok") -> float:
    value = REGISTRY.get_sample_value(
        "warden_store_interactions_total", {"interaction": interaction, "outcome": outcome}
    )
    return value or 0.0


class NamedInteractionTests(SynchronousTestCase):
    """Each store method is one named interaction, counted by name."""

    def setUp(self) -> None:
        self.pool = SyncPool()
        self.addCleanup(self.pool.close)
        self.successResultOf(apply_migrations(self.pool))  # type: ignore[arg-type]

    def test_one_interaction_per_call(self) -> None:
        """get_extension runs exactly one interaction and counts it as get_extension."""
        directory = SQLDirectory(self.pool)  # type: ignore[arg-type]
        before = _sample("get_extension")
        self.pool.interactions.clear()
        self.assertIsNone(self.successResultOf(directory.get_extension("100")))
        self.assertEqual(self.pool.interactions, ["_get_extension_txn"])
        self.assertEqual(_sample("get_extension"), before + 1)

    def test_failures_counted(self) -> None:
        """A failed interaction is counted with outcome="error"."""
        directory = SQLDirectory(self.pool)  # type: ignore[arg-type]
        before = _sample("count_extensions", "error")
        self.pool.fail_next(sqlite3.OperationalError("disk I/O error"))
        self.failureResultOf(directory.count_extensions(), sqlite3.OperationalError)
        self.assertEqual(_sample("count_extensions", "error"), before + 1)


class WriteBehindTests(SynchronousTestCase):
    """The group-commit write-behind of SQLLocationService, step by step."""

    def setUp(self) -> None:
        self.pool = SyncPool()
        self.addCleanup(self.pool.close)
        self.successResultOf(apply_migrations(self.pool))  # type: ignore[arg-type]
        self.pool.interactions.clear()
        self.clock = Clock()
        self.service = SQLLocationService(self.pool, self.clock)  # type: ignore[arg-type]
        self.events: list[dict[str, Any]] = []
        self.service._log = Logger(observer=self.events.append)

    def rows(self) -> list[tuple[str, str]]:
        return self.pool.query("SELECT aor, key FROM bindings ORDER BY aor, key")

    def apply(self, aor: str, key: str) -> Deferred[None]:
        return self.service.apply(aor, [binding(aor, key, 5000.0)], [])

    def test_write_waits_for_commit(self) -> None:
        """apply changes memory at once; its Deferred fires only after the flush that
        the clock's next tick starts has committed."""
        self.pool.hold = True
        d = self.apply("100", "a")
        self.assertEqual(len(self.successResultOf(self.service.bindings_for("100", 0.0))), 1)
        self.assertNoResult(d)
        self.assertEqual(self.pool.queue, [])
        self.clock.advance(0)
        self.assertEqual(len(self.pool.queue), 1)
        self.assertNoResult(d)
        self.pool.run_next()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.rows(), [("100", "a")])

    def test_burst_is_one_transaction(self) -> None:
        """Changes made before the flush starts share one transaction."""
        ds = [self.apply(str(100 + n), "a") for n in range(50)]
        self.clock.advance(0)
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(self.pool.interactions, ["_flush_bindings_txn"])
        self.assertEqual(len(self.rows()), 50)

    def test_group_commit(self) -> None:
        """Changes made while a flush runs wait for the next one, which starts as soon
        as the running one commits when the last started FLUSH_INTERVAL ago, and
        takes them all in one transaction."""
        self.pool.hold = True
        first = self.apply("100", "a")
        self.clock.advance(0)
        later = [self.apply("200", "b"), self.apply("300", "c"), self.apply("100", "d")]
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.pool.queue), 1)
        self.clock.advance(FLUSH_INTERVAL)
        self.pool.run_next()
        self.successResultOf(first)
        for d in later:
            self.assertNoResult(d)
        self.assertEqual(len(self.pool.queue), 1)
        self.pool.run_next()
        for d in later:
            self.successResultOf(d)
        self.assertEqual(self.pool.interactions, ["_flush_bindings_txn"] * 2)
        self.assertEqual(self.rows(), [("100", "a"), ("100", "d"), ("200", "b"), ("300", "c")])

    def test_one_flush_per_interval(self) -> None:
        """Under load a flush starts at most once per FLUSH_INTERVAL: the changes of
        that time wait for it and share it; none is acknowledged before it commits."""
        first = self.apply("100", "a")
        self.clock.advance(0)
        self.successResultOf(first)
        later = [self.apply(str(200 + n), "a") for n in range(20)]
        self.clock.advance(FLUSH_INTERVAL / 2)
        for d in later:
            self.assertNoResult(d)
        self.assertEqual(self.pool.interactions, ["_flush_bindings_txn"])
        self.clock.advance(FLUSH_INTERVAL / 2)
        for d in later:
            self.successResultOf(d)
        self.assertEqual(self.pool.interactions, ["_flush_bindings_txn"] * 2)
        self.assertEqual(len(self.rows()), 21)

    def test_quiet_node_writes_at_once(self) -> None:
        """A change FLUSH_INTERVAL or more after the last flush started is written at
        the clock's next tick, without waiting."""
        self.apply("100", "a")
        self.clock.advance(0)
        self.clock.advance(FLUSH_INTERVAL)
        d = self.apply("200", "a")
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.pool.interactions, ["_flush_bindings_txn"] * 2)

    def test_flush_skips_the_interval(self) -> None:
        """flush during a running flush: the next one starts as soon as that one
        commits, without waiting for FLUSH_INTERVAL."""
        self.pool.hold = True
        self.apply("100", "a")
        self.clock.advance(0)
        d = self.apply("200", "a")
        flushed = self.service.flush()
        self.pool.run_next()
        self.assertEqual(len(self.pool.queue), 1)
        self.pool.run_next()
        self.successResultOf(d)
        self.successResultOf(flushed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_starts_now(self) -> None:
        """flush commits pending changes without waiting for the clock, and leaves
        nothing scheduled."""
        d = self.apply("100", "a")
        self.successResultOf(self.service.flush())
        self.successResultOf(d)
        self.assertEqual(self.rows(), [("100", "a")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_waits_for_running_flush(self) -> None:
        """flush during a running flush fires when that one commits."""
        self.pool.hold = True
        self.apply("100", "a")
        self.clock.advance(0)
        flushed = self.service.flush()
        self.assertNoResult(flushed)
        self.pool.run_next()
        self.successResultOf(flushed)

    def test_flush_idle(self) -> None:
        """flush with nothing pending fires at once and runs no transaction."""
        self.successResultOf(self.service.flush())
        self.assertEqual(self.pool.interactions, [])

    def test_failed_flush_retries(self) -> None:
        """A failed flush fails the waiting Deferreds, logs an error, keeps the
        binding in memory and retries after retry_delay, which commits it."""
        self.pool.fail_next(sqlite3.OperationalError("disk I/O error"))
        d = self.apply("100", "a")
        self.clock.advance(0)
        self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(self.rows(), [])
        self.assertEqual(self.successResultOf(self.service.count(0.0)), 1)
        self.assertEqual([e["log_level"].name for e in self.events], ["error"])
        self.assertIn("disk I/O error", self.events[0]["error"])
        self.clock.advance(0.999)
        self.assertEqual(self.rows(), [])
        self.clock.advance(0.001)
        self.assertEqual(self.rows(), [("100", "a")])

    def test_failed_flush_keeps_later_changes(self) -> None:
        """Changes accepted while a failing flush ran are committed by the retry,
        together with the failed ones."""
        self.pool.hold = True
        first = self.apply("100", "a")
        self.clock.advance(0)
        second = self.apply("200", "b")
        self.pool.fail_next(sqlite3.OperationalError("database is locked"))
        self.pool.run_next()
        self.failureResultOf(first, sqlite3.OperationalError)
        self.assertNoResult(second)
        self.assertEqual(self.pool.queue, [])
        self.clock.advance(1.0)
        self.pool.run_next()
        self.successResultOf(second)
        self.assertEqual(self.rows(), [("100", "a"), ("200", "b")])

    def test_close_cancels_retry(self) -> None:
        """close flushes what is pending; when that flush fails, close fails and
        leaves no retry scheduled, and the changes stay pending for the next flush."""
        self.successResultOf(self.service.close())
        d = self.apply("100", "a")
        self.pool.fail_next(sqlite3.OperationalError("disk I/O error"))
        self.failureResultOf(self.service.close(), sqlite3.OperationalError)
        self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.service.close())
        self.assertEqual(self.rows(), [("100", "a")])

    def test_removals_persist(self) -> None:
        """remove_aor and expire delete the rows of the AORs they change."""
        self.service.apply("100", [binding("100", "a", 10.0), binding("100", "b", 50.0)], [])
        self.service.apply("200", [binding("200", "a", 50.0)], [])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(self.service.expire(9.0)), 0)
        d = self.service.expire(10.0)
        self.assertNoResult(d)
        self.clock.advance(FLUSH_INTERVAL)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.rows(), [("100", "b"), ("200", "a")])
        d = self.service.remove_aor("200")
        self.clock.advance(FLUSH_INTERVAL)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.rows(), [("100", "b")])

    def test_no_change_no_transaction(self) -> None:
        """Removing an unknown AOR, expiring nothing or a rejected apply schedule no
        flush."""
        self.assertEqual(self.successResultOf(self.service.remove_aor("100")), 0)
        self.assertEqual(self.successResultOf(self.service.expire(0.0)), 0)
        bad = self.service.apply("100", [binding("200", "a", 10.0)], [])
        self.failureResultOf(bad, ValueError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_load_replaces_memory_and_drops_expired(self) -> None:
        """load reads the unexpired rows (expires_at > clock) and deletes the rest."""
        self.service.apply("100", [binding("100", "a", 10.0), binding("100", "b", 20.0)], [])
        self.successResultOf(self.service.flush())
        self.clock.advance(10)
        fresh = SQLLocationService(self.pool, self.clock)  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(fresh.load()), 1)
        self.assertEqual([b.key for b in self.successResultOf(fresh.all_bindings(0.0))], ["b"])
        self.assertEqual(self.rows(), [("100", "b")])

    def test_load_after_write_refused(self) -> None:
        """load after a write was accepted fails rather than replace unsaved bindings."""
        self.pool.hold = True
        self.apply("100", "a")
        self.failureResultOf(self.service.load(), StoreError)
        self.assertEqual(self.successResultOf(self.service.count(0.0)), 1)
