"""The admin stores (memory and SQLite) against their conformance suites."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.admin.conformance import AdminStoreConformanceMixin, AuditLogConformanceMixin, entry
from warden.interfaces import IAdminStore, IAuditLog
from warden.store.admin import SQLAdminStore, SQLAuditLog
from warden.store.migrate import apply_migrations
from warden.store.sqlite import open_sqlite_pool
from warden.testing.admin import MemoryAdminStore, MemoryAuditLog


class _Pool:
    async def open_pool(self) -> Any:
        pool = open_sqlite_pool(self.mktemp() + ".db")  # type: ignore[attr-defined]
        self.addCleanup(pool.close)  # type: ignore[attr-defined]
        await apply_migrations(pool)
        return pool


class MemoryAdminStoreTests(AdminStoreConformanceMixin, TestCase):
    """MemoryAdminStore passes the IAdminStore suite."""

    def make_store(self) -> MemoryAdminStore:
        store = MemoryAdminStore()
        verifyObject(IAdminStore, store)
        return store


class MemoryAuditLogTests(AuditLogConformanceMixin, TestCase):
    """MemoryAuditLog passes the IAuditLog suite."""

    def make_store(self) -> MemoryAuditLog:
        log = MemoryAuditLog()
        verifyObject(IAuditLog, log)
        return log


class SQLiteAdminStoreTests(_Pool, AdminStoreConformanceMixin, TestCase):
    """SQLAdminStore passes the IAdminStore suite."""

    def make_store(self) -> Deferred[SQLAdminStore]:
        async def make() -> SQLAdminStore:
            store = SQLAdminStore(await self.open_pool())
            verifyObject(IAdminStore, store)
            return store

        return Deferred.fromCoroutine(make())


class SQLiteAuditLogTests(_Pool, AuditLogConformanceMixin, TestCase):
    """SQLAuditLog passes the IAuditLog suite, and the table is append-only."""

    def make_store(self) -> Deferred[SQLAuditLog]:
        async def make() -> SQLAuditLog:
            log = SQLAuditLog(await self.open_pool())
            verifyObject(IAuditLog, log)
            return log

        return Deferred.fromCoroutine(make())

    async def test_append_only(self) -> None:
        """UPDATE and DELETE on audit_log are refused by the database itself."""
        pool = await self.open_pool()
        log = SQLAuditLog(pool)
        await log.append(entry(1.0))
        for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
            with self.assertRaises(sqlite3.IntegrityError):
                await pool.runOperation(statement)
        self.assertEqual([e.actor for e in await log.list()], ["alice"])
