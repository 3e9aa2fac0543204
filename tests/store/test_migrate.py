"""
Schema migrations: found as numbered files, applied once each, in order, in one
transaction, recorded in ``schema_version``.
"""

from __future__ import annotations

import sqlite3
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.store.syncpool import SyncPool
from warden.errors import StoreError
from warden.store.migrate import (
    Migration,
    _migrate_sqlite_txn,
    apply_migrations,
    load_migrations,
    split_sqlite_script,
)


class MigrationTests(SynchronousTestCase):
    """apply_migrations against a real SQLite database."""

    def setUp(self) -> None:
        self.pool = SyncPool()
        self.addCleanup(self.pool.close)

    def test_files_found_in_order(self) -> None:
        """
        The SQLite schema files are found in the package, numbered from 0001 and
        in increasing order (numbers may have gaps: each feature has its own).
        """
        migrations = load_migrations("sqlite")
        self.assertEqual(migrations[0].name, "0001_init")
        versions = [m.version for m in migrations]
        self.assertEqual(versions, sorted(set(versions)))

    def test_fresh_database(self) -> None:
        """A fresh database gets every migration, recorded in schema_version, and
        ends with the extensions and bindings tables and the expiry index."""
        applied = self.successResultOf(apply_migrations(self.pool))  # type: ignore[arg-type]
        names = [m.name for m in load_migrations("sqlite")]
        self.assertEqual(applied, names)
        self.assertEqual(
            self.pool.query("SELECT version, name FROM schema_version ORDER BY version"),
            [(m.version, m.name) for m in load_migrations("sqlite")],
        )
        objects = {row[0] for row in self.pool.query("SELECT name FROM sqlite_master")}
        self.assertTrue({"extensions", "bindings", "bindings_expires_at"} <= objects)

    def test_second_run_applies_nothing(self) -> None:
        """Running the migrations again applies none and changes no version row."""
        self.successResultOf(apply_migrations(self.pool))  # type: ignore[arg-type]
        before = self.pool.query("SELECT * FROM schema_version")
        self.assertEqual(self.successResultOf(apply_migrations(self.pool)), [])  # type: ignore[arg-type]
        self.assertEqual(self.pool.query("SELECT * FROM schema_version"), before)

    def test_newer_database_refused(self) -> None:
        """A database with a version this code does not know fails with StoreError."""
        self.successResultOf(apply_migrations(self.pool))  # type: ignore[arg-type]
        self.pool.connection.execute("INSERT INTO schema_version VALUES (9999, '9999_future')")
        self.pool.connection.commit()
        failure = self.failureResultOf(apply_migrations(self.pool), StoreError)  # type: ignore[arg-type]
        self.assertIn("9999", str(failure.value))

    def test_unknown_dialect(self) -> None:
        """A dialect without schema files fails with StoreError."""
        self.assertRaises(StoreError, load_migrations, "oracle")

    def test_failure_rolls_back(self) -> None:
        """A failing migration leaves the database as it was: no table from an
        earlier migration in the same run, no version row."""
        migrations = [
            Migration(1, "0001_ok", "CREATE TABLE a (x INTEGER);"),
            Migration(2, "0002_bad", "CREATE TABLE b (x INTEGER);\nNOT SQL AT ALL;"),
        ]
        d = self.pool.runInteraction(_migrate_sqlite_txn, migrations)
        self.failureResultOf(d, sqlite3.OperationalError)
        tables = {row[0] for row in self.pool.query("SELECT name FROM sqlite_master")}
        self.assertEqual(tables & {"a", "b", "schema_version"}, set())


class SplitScriptTests(SynchronousTestCase):
    """split_sqlite_script cuts scripts with SQLite's own statement tokenizer."""

    def test_semicolons_in_comments_and_strings(self) -> None:
        """Semicolons inside comments and string literals do not end a statement."""
        script = (
            "-- a comment; with a semicolon\n"
            "CREATE TABLE t (x TEXT DEFAULT 'a;b', -- more; here\n y INTEGER);\n"
            "INSERT INTO t (x) VALUES (';');\n"
            "-- trailing comment\n"
        )
        statements = split_sqlite_script(script)
        self.assertEqual(len(statements), 2)
        self.assertTrue(statements[0].startswith("-- a comment"))
        self.assertTrue(statements[1].startswith("INSERT"))

    def test_incomplete_statement(self) -> None:
        """A script ending in an unterminated statement is an error."""
        self.assertRaises(StoreError, split_sqlite_script, "CREATE TABLE t (x INTEGER)")


class AdminCredentialsMigrationTests(SynchronousTestCase):
    """0005_admin_credentials on a database that already holds accounts and tokens."""

    def test_existing_tokens_get_an_expiry(self) -> None:
        """Existing tokens expire 90 days after the upgrade; accounts start at generation 0."""
        pool = SyncPool()
        self.addCleanup(pool.close)
        before = [m for m in load_migrations("sqlite") if m.version < 5]
        self.successResultOf(pool.runInteraction(_migrate_sqlite_txn, before))
        pool.connection.execute(
            "INSERT INTO admin_accounts (name, password_hash, created_at) VALUES ('a', 'x', 1)"
        )
        pool.connection.execute(
            "INSERT INTO api_tokens (token_id, name, secret_hash, scopes, owner, created_at)"
            " VALUES ('t', 'ci', 'h', 'read', 'a', 1)"
        )
        pool.connection.commit()
        upgraded_at = time.time()
        self.successResultOf(apply_migrations(pool))  # type: ignore[arg-type]
        [(expires_at, generation)] = pool.query(
            "SELECT expires_at, owner_generation FROM api_tokens"
        )
        self.assertLess(abs(expires_at - (upgraded_at + 90 * 86400)), 60)
        self.assertEqual(generation, 0)
        self.assertEqual(pool.query("SELECT generation, disabled FROM admin_accounts"), [(0, 0)])
