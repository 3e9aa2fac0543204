"""The civic location stores (memory, SQLite, PostgreSQL) against their conformance suite."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance_civic import CivicLocationStoreConformanceMixin
from tests.store.pg import fresh_pool
from warden.interfaces import ICivicLocationStore
from warden.store.civic import SQLCivicLocationStore
from warden.store.migrate import apply_migrations
from warden.store.sqlite import open_sqlite_pool
from warden.testing.civic import MemoryCivicLocationStore


class MemoryCivicLocationStoreTests(CivicLocationStoreConformanceMixin, TestCase):
    """MemoryCivicLocationStore passes the ICivicLocationStore suite."""

    def make_store(self) -> MemoryCivicLocationStore:
        store = MemoryCivicLocationStore()
        verifyObject(ICivicLocationStore, store)
        return store


class SQLiteCivicLocationStoreTests(CivicLocationStoreConformanceMixin, TestCase):
    """SQLCivicLocationStore on SQLite passes the ICivicLocationStore suite."""

    def make_store(self) -> Deferred[SQLCivicLocationStore]:
        async def make() -> SQLCivicLocationStore:
            pool = open_sqlite_pool(self.mktemp() + ".db")
            self.addCleanup(pool.close)
            await apply_migrations(pool)
            store = SQLCivicLocationStore(pool)
            verifyObject(ICivicLocationStore, store)
            return store

        return Deferred.fromCoroutine(make())


class PostgreSQLCivicLocationStoreTests(CivicLocationStoreConformanceMixin, TestCase):
    """SQLCivicLocationStore on PostgreSQL passes the ICivicLocationStore suite."""

    def make_store(self) -> Deferred[SQLCivicLocationStore]:
        async def make() -> SQLCivicLocationStore:
            store = SQLCivicLocationStore(await fresh_pool(self))
            verifyObject(ICivicLocationStore, store)
            return store

        return Deferred.fromCoroutine(make())
