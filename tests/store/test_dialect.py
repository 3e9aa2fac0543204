"""
L{warden.store.dialect}: the one SQL layer's dialects, its two cursors and how a
named interaction is run on each database (no server: a recording txpostgres
cursor, and SQLite in memory).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.store.syncpool import SyncPool
from warden.store.dialect import (
    POSTGRESQL,
    SQLITE,
    Cursor,
    PostgreSQLDatabase,
    SQLiteDatabase,
    _PostgreSQLCursor,
    _SQLiteCursor,
    database,
    sqlite_interaction,
)
from warden.store.pgpool import PostgreSQLPool


class DialectTests(SynchronousTestCase):
    """What each dialect makes of a statement written with ``?`` parameters."""

    def test_parameter_style(self) -> None:
        """SQLite keeps ``?``; PostgreSQL gets psycopg2's ``%s`` in the same places."""
        sql = "UPDATE t SET a = ? WHERE b = ? AND c = 'x'"
        self.assertIs(SQLITE.sql(sql), sql)
        self.assertEqual(POSTGRESQL.sql(sql), "UPDATE t SET a = %s WHERE b = %s AND c = 'x'")

    def test_literal_percent_refused(self) -> None:
        """A literal % would be read by psycopg2 as a parameter: refused, not sent."""
        self.assertRaises(ValueError, POSTGRESQL.sql, "SELECT 1 WHERE a LIKE 'x%' AND b = ?")

    def test_insert_new(self) -> None:
        """Inserting unless the key is taken: OR IGNORE for SQLite, ON CONFLICT
        DO NOTHING on the key for PostgreSQL."""
        self.assertEqual(
            SQLITE.insert_new("t", "k, v", "k"), "INSERT OR IGNORE INTO t (k, v) VALUES (?, ?)"
        )
        self.assertEqual(
            POSTGRESQL.insert_new("t", "k, v", "k"),
            "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING",
        )

    def test_locks(self) -> None:
        """SQLite takes its one write lock; PostgreSQL locks the table against
        other writers, migrates under an advisory lock and locks rows read for update."""
        self.assertEqual(SQLITE.write_lock.format(table="t"), "BEGIN IMMEDIATE")
        self.assertEqual(
            POSTGRESQL.write_lock.format(table="t"), "LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE"
        )
        self.assertIn("pg_advisory_xact_lock", POSTGRESQL.migration_lock)
        self.assertEqual((SQLITE.for_update, POSTGRESQL.for_update), ("", " FOR UPDATE"))


class RecordingCursor:
    """A txpostgres cursor that records its statements and answers at once."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.rowcount = 3

    def execute(self, sql: str, params: Any = None) -> Deferred[None]:
        self.statements.append((sql, params))
        return defer.succeed(None)

    def mogrify(self, template: str, row: tuple[Any, ...]) -> bytes:
        return (template % tuple(repr(v) for v in row)).encode("utf-8")

    def fetchone(self) -> tuple[int]:
        return (7,)

    def fetchall(self) -> list[tuple[int]]:
        return [(7,)]


class PostgreSQLCursorTests(SynchronousTestCase):
    """The PostgreSQL cursor: one round trip for many rows or keys."""

    def setUp(self) -> None:
        self.raw = RecordingCursor()
        self.cursor = _PostgreSQLCursor(self.raw)

    def test_execute_translates(self) -> None:
        """Statements reach psycopg2 in its parameter style, with their parameters."""
        self.successResultOf(Deferred.fromCoroutine(self.cursor.execute("SELECT ?", (1,))))
        self.assertEqual(self.raw.statements, [("SELECT %s", (1,))])
        self.assertEqual(self.cursor.rowcount, 3)

    def test_insert_rows_chunks(self) -> None:
        """2500 rows go as three multi-row INSERTs (1000, 1000, 500), values quoted
        by psycopg2, the tail after them."""
        rows = [(i, "x") for i in range(2500)]
        d = Deferred.fromCoroutine(self.cursor.insert_rows("INSERT INTO t (a, b)", rows, " TAIL"))
        self.successResultOf(d)
        self.assertEqual([sql.count("(") for sql, _ in self.raw.statements], [1001, 1001, 501])
        first, params = self.raw.statements[0]
        self.assertTrue(first.startswith("INSERT INTO t (a, b) VALUES (0, 'x'), (1, 'x')"))
        self.assertTrue(first.endswith(" TAIL"))
        self.assertIsNone(params)

    def test_keys_in_one_statement(self) -> None:
        """Deleting or selecting by many keys is one statement with an array;
        no keys, no statement."""
        run = Deferred.fromCoroutine
        self.successResultOf(run(self.cursor.delete_keys("t", "k", ["a", "b"])))
        rows = self.successResultOf(run(self.cursor.select_keys("SELECT k FROM t", "k", ["a"])))
        self.successResultOf(run(self.cursor.delete_keys("t", "k", [])))
        self.assertEqual(self.successResultOf(run(self.cursor.select_keys("S", "k", []))), [])
        self.assertEqual(
            self.raw.statements,
            [
                ("DELETE FROM t WHERE k = ANY(%s)", (["a", "b"],)),
                ("SELECT k FROM t WHERE k = ANY(%s)", (["a"],)),
            ],
        )
        self.assertEqual(rows, [(7,)])


async def _count_txn(cursor: Cursor, table: str) -> int:
    await cursor.execute(f"SELECT count(*) FROM {table}")
    return int(cursor.fetchone()[0])


async def _waits_txn(cursor: Cursor) -> None:
    await Deferred()


class SQLiteRunTests(SynchronousTestCase):
    """Interactions on SQLite run to completion in the pool's thread."""

    def setUp(self) -> None:
        self.connection = sqlite3.connect(":memory:")
        self.addCleanup(self.connection.close)
        self.connection.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")

    def test_runs_synchronously(self) -> None:
        """The coroutine finishes within the call, keeping the interaction's name."""
        run = sqlite_interaction(_count_txn)
        self.assertEqual(run(self.connection.cursor(), "t"), 0)
        self.assertEqual(run.__name__, "_count_txn")
        self.assertIs(sqlite_interaction(_count_txn), run)

    def test_waiting_refused(self) -> None:
        """An interaction that waits for something SQLite never does fails
        instead of being left half done."""
        run = sqlite_interaction(_waits_txn)
        self.assertRaises(RuntimeError, run, self.connection.cursor())

    def test_select_keys_chunks(self) -> None:
        """Selecting by more keys than SQLite takes parameters reads them all."""
        keys = [f"k{i}" for i in range(1200)]
        self.connection.executemany("INSERT INTO t (k) VALUES (?)", [(k,) for k in keys])
        cursor = _SQLiteCursor(self.connection.cursor())
        d = Deferred.fromCoroutine(cursor.select_keys("SELECT k FROM t", "k", keys[::-1]))
        self.assertEqual(sorted(row[0] for row in self.successResultOf(d)), sorted(keys))

    def test_database_runs_named(self) -> None:
        """An SQLite database runs an interaction by name in the pool."""
        pool = SyncPool()
        self.addCleanup(pool.connection.close)
        pool.connection.execute("CREATE TABLE t (k TEXT)")
        db = database(pool)  # type: ignore[arg-type]
        self.assertIsInstance(db, SQLiteDatabase)
        self.assertEqual(self.successResultOf(db.run("count", _count_txn, "t")), 0)
        self.assertEqual(pool.interactions, ["_count_txn"])


class DatabaseChoiceTests(SynchronousTestCase):
    """L{database} picks the database by the pool it is given."""

    def test_postgresql_pool(self) -> None:
        """A PostgreSQL pool gives a PostgreSQL database, which runs through the pool."""
        connections: list[Deferred[Any]] = []

        def connect() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            connections.append(d)
            return d

        pool = PostgreSQLPool(Clock(), connect)
        db = database(pool)
        self.assertIsInstance(db, PostgreSQLDatabase)
        self.assertIs(db.dialect, POSTGRESQL)
        db.run("count", _count_txn, "t")
        self.assertEqual(len(connections), 1)
