"""The call-feature stores (memory, SQLite, PostgreSQL) against their conformance suite."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance_features import CallFeatureStoreConformanceMixin
from tests.store.pg import fresh_pool
from warden.interfaces import ICallFeatureStore
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
