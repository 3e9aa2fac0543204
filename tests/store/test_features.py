"""The call-feature stores (memory, SQLite, PostgreSQL) against their conformance suite."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance_features import CallFeatureStoreConformanceMixin
from tests.store.pg import fresh_pool
from warden.features.featurecache import CachedCallFeatures
from warden.interfaces import ICallFeatureStore
from warden.model.features import CallFeatures
from warden.store.features import SQLCallFeatureStore
from warden.store.migrate import apply_migrations
from warden.store.sqlite import open_sqlite_pool
from warden.testing.features import MemoryCallFeatureStore


class MemoryCallFeatureStoreTests(CallFeatureStoreConformanceMixin, TestCase):
    """MemoryCallFeatureStore passes the ICallFeatureStore suite."""

    def make_store(self) -> MemoryCallFeatureStore:
        store = MemoryCallFeatureStore()
        verifyObject(ICallFeatureStore, store)
        return store


class SQLiteCallFeatureStoreTests(CallFeatureStoreConformanceMixin, TestCase):
    """SQLCallFeatureStore on SQLite passes the ICallFeatureStore suite."""

    def make_store(self) -> Deferred[SQLCallFeatureStore]:
        async def make() -> SQLCallFeatureStore:
            pool = open_sqlite_pool(self.mktemp() + ".db")
            self.addCleanup(pool.close)
            await apply_migrations(pool)
            store = SQLCallFeatureStore(pool)
            verifyObject(ICallFeatureStore, store)
            return store

        return Deferred.fromCoroutine(make())


class PostgreSQLCallFeatureStoreTests(CallFeatureStoreConformanceMixin, TestCase):
    """SQLCallFeatureStore on PostgreSQL passes the ICallFeatureStore suite."""

    def make_store(self) -> Deferred[SQLCallFeatureStore]:
        async def make() -> SQLCallFeatureStore:
            store = SQLCallFeatureStore(await fresh_pool(self))
            verifyObject(ICallFeatureStore, store)
            return store

        return Deferred.fromCoroutine(make())


class CachedCallFeatureStoreTests(CallFeatureStoreConformanceMixin, TestCase):
    """CachedCallFeatures over the memory store passes the ICallFeatureStore suite."""

    def make_store(self) -> CachedCallFeatures:
        store = CachedCallFeatures(MemoryCallFeatureStore(), Clock())
        verifyObject(ICallFeatureStore, store)
        return store


class CacheTests(SynchronousTestCase):
    """Reads are served from memory for ttl seconds; changes made here at once."""

    def test_ttl_and_changes(self) -> None:
        """Another node's change shows after the ttl; a change made here at once."""
        backing, clock = MemoryCallFeatureStore(), Clock()
        cache = CachedCallFeatures(backing, clock, ttl=2.0)
        self.assertFalse(self.successResultOf(cache.get_features("1001")).dnd)
        backing.features["1001"] = CallFeatures("1001", dnd=True)  # another node
        clock.advance(1.9)
        self.assertFalse(self.successResultOf(cache.get_features("1001")).dnd)
        clock.advance(0.2)
        self.assertTrue(self.successResultOf(cache.get_features("1001")).dnd)
        self.successResultOf(cache.set_features(CallFeatures("1001", forward_all="1002")))
        self.assertEqual(self.successResultOf(cache.get_features("1001")).forward_all, "1002")

    def test_bounded(self) -> None:
        """At most max_entries numbers are kept."""
        cache = CachedCallFeatures(MemoryCallFeatureStore(), Clock(), max_entries=3)
        for i in range(10):
            cache.get_features(str(i))
            self.assertLessEqual(len(cache._cache), 3)
