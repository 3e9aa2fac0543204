"""The voicemail stores (memory, SQLite, PostgreSQL) against their conformance suite."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance_voicemail import VoicemailStoreConformanceMixin
from tests.store.pg import fresh_pool
from warden.interfaces import IVoicemailStore
from warden.store.migrate import apply_migrations
from warden.store.sqlite import open_sqlite_pool
from warden.store.voicemail import SQLVoicemailStore
from warden.testing.voicemail import MemoryVoicemailStore


class MemoryVoicemailStoreTests(VoicemailStoreConformanceMixin, TestCase):
    """MemoryVoicemailStore passes the IVoicemailStore suite."""

    def make_store(self) -> MemoryVoicemailStore:
        store = MemoryVoicemailStore()
        verifyObject(IVoicemailStore, store)
        return store


class SQLiteVoicemailStoreTests(VoicemailStoreConformanceMixin, TestCase):
    """SQLVoicemailStore on SQLite passes the IVoicemailStore suite."""

    def make_store(self) -> Deferred[SQLVoicemailStore]:
        async def make() -> SQLVoicemailStore:
            pool = open_sqlite_pool(self.mktemp() + ".db")
            self.addCleanup(pool.close)
            await apply_migrations(pool)
            store = SQLVoicemailStore(pool)
            verifyObject(IVoicemailStore, store)
            return store

        return Deferred.fromCoroutine(make())


class PostgreSQLVoicemailStoreTests(VoicemailStoreConformanceMixin, TestCase):
    """SQLVoicemailStore on PostgreSQL passes the IVoicemailStore suite."""

    def make_store(self) -> Deferred[SQLVoicemailStore]:
        async def make() -> SQLVoicemailStore:
            store = SQLVoicemailStore(await fresh_pool(self))
            verifyObject(IVoicemailStore, store)
            return store

        return Deferred.fromCoroutine(make())
