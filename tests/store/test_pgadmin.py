"""The admin plugin's PostgreSQL stores against the admin conformance suites."""

from __future__ import annotations

from typing import Any

import psycopg2
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.admin.conformance import AdminStoreConformanceMixin, AuditLogConformanceMixin, entry
from tests.store.pg import fresh_pool
from warden.interfaces import IAdminStore, IAuditLog
from warden.store.admin import SQLAdminStore, SQLAuditLog


class PostgreSQLAdminStoreTests(AdminStoreConformanceMixin, TestCase):
    """SQLAdminStore passes the IAdminStore suite."""

    def make_store(self) -> Deferred[SQLAdminStore]:
        async def make() -> SQLAdminStore:
            store = SQLAdminStore(await fresh_pool(self))
            verifyObject(IAdminStore, store)
            return store

        return Deferred.fromCoroutine(make())


class PostgreSQLAuditLogTests(AuditLogConformanceMixin, TestCase):
    """SQLAuditLog passes the IAuditLog suite, and the table is append-only."""

    def make_store(self) -> Deferred[SQLAuditLog]:
        async def make() -> SQLAuditLog:
            log = SQLAuditLog(await fresh_pool(self))
            verifyObject(IAuditLog, log)
            return log

        return Deferred.fromCoroutine(make())

    async def test_append_only(self) -> None:
        """UPDATE, DELETE and TRUNCATE on audit_log are refused by the database itself."""
        pool = await fresh_pool(self)
        log = SQLAuditLog(pool)
        await log.append(entry(1.0))
        for statement in (
            "UPDATE audit_log SET actor = 'mallory'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):

            async def change(cursor: Any, sql: str = statement) -> None:
                await cursor.execute(sql)

            with self.assertRaises(psycopg2.Error) as caught:
                await pool.run("test", change)
            self.assertIn("append-only", str(caught.exception))
        self.assertEqual([e.actor for e in await log.list()], ["alice"])
