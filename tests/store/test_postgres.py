"""
The PostgreSQL backend on a real server (the throwaway one of
L{warden.testing.servers}): the conformance suites of every store it implements,
the migrations, and what several processes sharing the database see.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import (
    CallRecordStoreConformanceMixin,
    DirectoryConformanceMixin,
    LiveCallsConformanceMixin,
    LocationServiceConformanceMixin,
    binding,
    by_key,
    call_record,
    extension,
)
from tests.store.pg import fresh_database, fresh_pool, make_pool
from warden.errors import StoreError
from warden.interfaces import ICallRecordStore, IDirectory, ILiveCalls
from warden.store.cdr import SQLCallRecordStore, SQLLiveCalls
from warden.store.directory import SQLDirectory
from warden.store.location import SQLLocationService
from warden.store.migrate import apply_migrations, load_migrations
from warden.testing import servers


class PostgreSQLDirectoryConformanceTests(DirectoryConformanceMixin, TestCase):
    """SQLDirectory against the IDirectory conformance suite."""

    def make_store(self) -> Deferred[SQLDirectory]:
        async def make() -> SQLDirectory:
            return SQLDirectory(await fresh_pool(self))

        return Deferred.fromCoroutine(make())


class PostgreSQLCallRecordConformanceTests(CallRecordStoreConformanceMixin, TestCase):
    """SQLCallRecordStore against the ICallRecordStore conformance suite."""

    def make_store(self) -> Deferred[SQLCallRecordStore]:
        async def make() -> SQLCallRecordStore:
            return SQLCallRecordStore(await fresh_pool(self))

        return Deferred.fromCoroutine(make())


class PostgreSQLLiveCallsConformanceTests(LiveCallsConformanceMixin, TestCase):
    """SQLLiveCalls against the ILiveCalls conformance suite."""

    def make_store(self) -> Deferred[SQLLiveCalls]:
        async def make() -> SQLLiveCalls:
            return SQLLiveCalls(await fresh_pool(self))

        return Deferred.fromCoroutine(make())


class PostgreSQLSchemaTests(TestCase):
    """The PostgreSQL migrations and what the schema guarantees."""

    def setUp(self) -> None:
        servers.postgresql()

    def test_provides_interfaces(self) -> None:
        """The PostgreSQL stores provide their interfaces completely."""
        pool = make_pool(servers.postgresql().dsn("postgres"))
        self.addCleanup(pool.close)
        self.assertTrue(verifyObject(IDirectory, SQLDirectory(pool)))
        self.assertTrue(verifyObject(ICallRecordStore, SQLCallRecordStore(pool)))
        self.assertTrue(verifyObject(ILiveCalls, SQLLiveCalls(pool)))

    def test_same_numbers_as_sqlite(self) -> None:
        """Every dialect has the same numbered migrations, with the same names."""
        self.assertEqual(
            [m.name for m in load_migrations("postgresql")],
            [m.name for m in load_migrations("sqlite")],
        )

    async def test_migrate_fresh_then_noop(self) -> None:
        """A fresh database gets every migration once; a second run applies nothing."""
        pool = await fresh_pool(self, migrated=False)
        applied = await apply_migrations(pool)
        self.assertEqual(applied, [m.name for m in load_migrations("postgresql")])
        self.assertEqual(await apply_migrations(pool), [])

    async def test_concurrent_migrations(self) -> None:
        """Two nodes migrating one fresh database at once apply each file once."""
        first = await fresh_pool(self, migrated=False)
        second = make_pool(servers.postgresql().dsn(await _database_of(first)))
        self.addCleanup(second.close)
        a, b = await _both(apply_migrations(first), apply_migrations(second))
        self.assertEqual(sorted(a + b), sorted(m.name for m in load_migrations("postgresql")))

    async def test_newer_database_refused(self) -> None:
        """A database with a schema version this code does not know is refused."""
        pool = await fresh_pool(self)

        async def future(cursor: Any) -> None:
            await cursor.execute("INSERT INTO schema_version VALUES (9999, '9999_future')")

        await pool.run("test", future)
        failure = await _failure(apply_migrations(pool))
        self.assertIsInstance(failure, StoreError)
        self.assertIn("9999", str(failure))

    async def test_data_version_moves_on_any_change(self) -> None:
        """The directory's change counter moves when another connection writes."""
        pool = await fresh_pool(self)
        other = make_pool(servers.postgresql().dsn(await _database_of(pool)))
        self.addCleanup(other.close)
        watcher, writer = SQLDirectory(pool), SQLDirectory(other)
        before = await watcher.data_version()
        self.assertEqual(await watcher.data_version(), before)
        await writer.add_extension(extension("100"))
        after_add = await watcher.data_version()
        self.assertNotEqual(after_add, before)
        await writer.upsert_extensions([extension("100", "Renamed")])
        self.assertNotEqual(await watcher.data_version(), after_add)

    async def test_upsert_large_batch(self) -> None:
        """10,000 extensions upsert in one call, and a repeat changes nothing."""
        directory = SQLDirectory(await fresh_pool(self))
        batch = [extension(str(10000 + n), password=f"pw{n}") for n in range(10000)]
        self.assertEqual(await directory.upsert_extensions(batch), (10000, 0))
        self.assertEqual(await directory.upsert_extensions(batch), (0, 0))
        self.assertEqual(await directory.count_extensions(), 10000)

    async def test_text_order_is_bytewise(self) -> None:
        """call_id ties order bytewise ("B" < "a"), as SQLite orders them."""
        store = SQLCallRecordStore(await fresh_pool(self))
        for call_id in ["a", "B", "_"]:
            await store.add(call_record(call_id, 5.0))
        self.assertEqual([r.call_id for r in await store.list()], ["B", "_", "a"])

    async def test_media_round_trip(self) -> None:
        """Nested media statistics, floats included, come back equal."""
        store = SQLCallRecordStore(await fresh_pool(self))
        media = {"a": {"jitter": 0.125, "lost": 3, "peer": ["192.0.2.1", 4000]}, "b": {}}
        record = call_record("c1", 1.0, media=media)
        await store.add(record)
        self.assertEqual(await store.list(), [record])


async def _database_of(pool: Any) -> str:
    async def name(cursor: Any) -> str:
        await cursor.execute("SELECT current_database()")
        return str(cursor.fetchone()[0])

    return str(await pool.run("test", name))


async def _both(a: Deferred[Any], b: Deferred[Any]) -> tuple[Any, Any]:
    return (await a, await b)


async def _failure(d: Deferred[Any]) -> BaseException:
    try:
        await d
    except Exception as e:
        return e
    raise AssertionError("the Deferred did not fail")


class PostgreSQLLocationServiceConformanceTests(LocationServiceConformanceMixin, TestCase):
    """SQLLocationService against the ILocationService conformance suite."""

    def make_store(self) -> Deferred[SQLLocationService]:
        async def make() -> SQLLocationService:
            service = SQLLocationService(await fresh_pool(self), self.clock)
            await service.load()
            self.addCleanup(service.close)
            return service

        return Deferred.fromCoroutine(make())


class PostgreSQLLocationPersistenceTests(TestCase):
    """Bindings written through PostgreSQL come back in a new process's service."""

    async def test_bindings_survive_reopen(self) -> None:
        """Flushed bindings are loaded by a new service on a new pool; bindings
        expired by then are neither loaded nor kept."""
        from twisted.internet.task import Clock

        url = await fresh_database(self)
        clock = Clock()
        pool = make_pool(url)
        service = SQLLocationService(pool, clock)
        await service.load()
        keep = [binding("100", "a", 5000.0, q=0.7, cseq=3, node_id="n1")]
        keep[0] = attrs.evolve(keep[0], sent_by="10.0.0.5:5060")  # the NAT evidence
        keep.append(binding("200", "b", 6000.0, user_agent="Phone"))
        service.apply("100", [keep[0], binding("100", "old", 1500.0)], [])
        service.apply("200", [keep[1]], [])
        await service.flush()
        pool.close()

        clock.advance(2000)
        pool = make_pool(url)
        self.addCleanup(pool.close)
        reopened = SQLLocationService(pool, clock)
        self.assertEqual(await reopened.load(), 2)
        self.assertEqual(by_key(await reopened.all_bindings(clock.seconds())), keep)


class SpoolOverPostgreSQLTests(TestCase):
    """The CDR spool in front of PostgreSQL across a real server restart."""

    async def test_records_survive_restart(self) -> None:
        """Records added while PostgreSQL is down are accepted (spooled), and are
        all in PostgreSQL, once each, after it comes back and the spool flushes."""
        from twisted.internet import reactor

        from warden.store.spool import SpooledCallRecordStore

        server = servers.postgresql()
        pool = make_pool(await fresh_database(self), attempts=2, backoff=0.05)
        self.addCleanup(pool.close)
        inner = SQLCallRecordStore(pool)
        spool_path = os.path.join(os.path.abspath(self.mktemp()), "cdr-spool.jsonl")
        spool = SpooledCallRecordStore(inner, reactor, spool_path, retry_delay=0.2)  # type: ignore[arg-type]
        self.addCleanup(spool.close)
        await spool.recover()
        await spool.add(call_record("before", 1.0))
        server.stop()
        self.addCleanup(lambda: None if server.running else server.start())
        for n in range(20):
            await spool.add(call_record(f"during-{n:02d}", 2.0 + n))
        self.assertEqual(spool.spool_depth, 20)
        server.start()
        await spool.flush()
        self.assertEqual(spool.spool_depth, 0)
        self.assertEqual(await inner.count(), 21)
        self.assertEqual(os.path.getsize(spool_path), 0)


class CoalescingOverPostgreSQLConformanceTests(LiveCallsConformanceMixin, TestCase):
    """The batching live-call writer (as makeService builds it) over PostgreSQL."""

    def make_store(self) -> Deferred[Any]:
        async def make() -> Any:
            from twisted.internet import reactor

            from warden.store.live import CoalescingLiveCalls

            inner = SQLLiveCalls(await fresh_pool(self))
            return CoalescingLiveCalls(inner, reactor, interval=0.001)

        return Deferred.fromCoroutine(make())
