"""
The PostgreSQL backend: schema migrations, directory, call records and live calls.

Every method is one named interaction run through L{PostgreSQLPool.run} (which
reconnects and retries transient failures). The stores keep the same contracts
as their SQLite counterparts (the conformance suites in ``tests/store`` run
against both); the SQL differs where the dialects do: ``%s`` parameters,
``ON CONFLICT`` everywhere, a trigger-maintained change counter instead of
SQLite's ``PRAGMA data_version``, ``LOCK TABLE`` instead of ``BEGIN IMMEDIATE``.

Several Warden nodes share one database: migrations take an advisory lock, so
nodes starting together apply each schema file once.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from warden.errors import CallRecordNotFound, ExtensionExists, ExtensionNotFound, StoreError
from warden.interfaces import ICallRecordStore, IDirectory, ILiveCalls
from warden.model import CallRecord, Extension, LiveCall
from warden.store.cdr import (
    _LIVE_COLUMNS,
    _RECORD_COLUMNS,
    _live_from_row,
    _live_row,
    _record_filter,
    _record_from_row,
    _record_row,
)
from warden.store.migrate import (
    CREATE_SCHEMA_VERSION,
    Migration,
    load_migrations,
    pending_migrations,
)
from warden.store.pgpool import Cursor, PostgreSQLPool
from warden.store.sqlite import (
    _EXTENSION_COLUMNS,
    _ON_CONFLICT_UPDATE_EXTENSION,
    _extension_from_row,
)
from warden.store.sqlite import _extension_row as _sqlite_extension_row
from warden.store.tables import plan_upsert

_log = Logger()

Row = tuple[Any, ...]

DIALECT = "postgresql"
# pg_advisory_xact_lock key for migrations: "WARDEN" in ASCII.
_MIGRATION_LOCK = 0x5741_5244_454E
# Rows per multi-row INSERT.
_CHUNK = 1000


def _values(cursor: Cursor, rows: Sequence[Row]) -> str:
    """``(..), (..)`` for a multi-row VALUES list, each row quoted by psycopg2."""
    width = len(rows[0])
    template = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join(cursor.mogrify(template, row).decode("utf-8") for row in rows)


# -- migrations ------------------------------------------------------------------


async def _migrate_txn(cursor: Cursor, migrations: list[Migration]) -> list[str]:
    # One node at a time: the others wait here, then find the files applied.
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    await cursor.execute(CREATE_SCHEMA_VERSION)
    await cursor.execute("SELECT version FROM schema_version")
    applied: list[str] = []
    for migration in pending_migrations(cursor.fetchall(), migrations):
        # No parameters: psycopg2 sends the script as is, every statement in it.
        await cursor.execute(migration.sql)
        await cursor.execute(
            "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )
        applied.append(migration.name)
    return applied


def apply_postgresql_migrations(pool: PostgreSQLPool) -> Deferred[list[str]]:
    """
    Bring the database behind ``pool`` up to the newest schema, in one
    transaction; fire with the names of the files applied (``[]`` when up to
    date). Fails with L{StoreError} when the database is newer than this code.
    """
    try:
        migrations = load_migrations(DIALECT)
    except StoreError as e:
        return defer.fail(e)

    def report(applied: list[str]) -> list[str]:
        if applied:
            _log.info("applied schema migrations {applied}", applied=applied)
        return applied

    return pool.run("migrate", _migrate_txn, migrations).addCallback(report)


# -- directory -------------------------------------------------------------------

_UPSERT_EXTENSIONS = (
    f"INSERT INTO extensions ({_EXTENSION_COLUMNS}) VALUES {{values}}"
    + _ON_CONFLICT_UPDATE_EXTENSION
)


def _extension_row(extension: Extension) -> Row:
    return _sqlite_extension_row(extension, flag=bool)


async def _add_extension_txn(cursor: Cursor, extension: Extension) -> None:
    await cursor.execute(
        f"INSERT INTO extensions ({_EXTENSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (number) DO NOTHING",
        _extension_row(extension),
    )
    if cursor.rowcount == 0:
        raise ExtensionExists(extension.number)


async def _get_extension_txn(cursor: Cursor, number: str) -> Extension | None:
    await cursor.execute(
        f"SELECT {_EXTENSION_COLUMNS} FROM extensions WHERE number = %s", (number,)
    )
    row = cursor.fetchone()
    return None if row is None else _extension_from_row(row)


async def _list_extensions_txn(cursor: Cursor) -> list[Extension]:
    # Shorter numbers first: numeric order for digit strings (see extension_order).
    await cursor.execute(
        f"SELECT {_EXTENSION_COLUMNS} FROM extensions ORDER BY length(number), number"
    )
    return [_extension_from_row(row) for row in cursor.fetchall()]


async def _update_extension_txn(cursor: Cursor, extension: Extension) -> None:
    number, *rest = _extension_row(extension)
    await cursor.execute(
        "UPDATE extensions SET name = %s, realm = %s, ha1_md5 = %s, ha1_sha256 = %s,"
        " algorithms = %s, enabled = %s, qualify = %s WHERE number = %s",
        (*rest, number),
    )
    if cursor.rowcount == 0:
        raise ExtensionNotFound(extension.number)


async def _remove_extension_txn(cursor: Cursor, number: str) -> bool:
    await cursor.execute("DELETE FROM extensions WHERE number = %s", (number,))
    return bool(cursor.rowcount)


async def _upsert_extensions_txn(cursor: Cursor, extensions: list[Extension]) -> tuple[int, int]:
    # Writers wait for each other (readers do not): the rows read below cannot
    # change before we write them.
    await cursor.execute("LOCK TABLE extensions IN SHARE ROW EXCLUSIVE MODE")
    numbers = sorted({e.number for e in extensions})
    existing: dict[str, Extension] = {}
    if numbers:
        await cursor.execute(
            f"SELECT {_EXTENSION_COLUMNS} FROM extensions WHERE number = ANY(%s)", (numbers,)
        )
        existing = {row[0]: _extension_from_row(row) for row in cursor.fetchall()}
    added, updated, writes = plan_upsert(existing, extensions)
    rows = [_extension_row(e) for e in writes.values()]
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        await cursor.execute(_UPSERT_EXTENSIONS.format(values=_values(cursor, chunk)))
    return added, updated


async def _count_extensions_txn(cursor: Cursor) -> int:
    await cursor.execute("SELECT count(*) FROM extensions")
    return int(cursor.fetchone()[0])


async def _data_version_txn(cursor: Cursor) -> int:
    await cursor.execute("SELECT version FROM directory_version WHERE id = 1")
    return int(cursor.fetchone()[0])


@implementer(IDirectory)
class PostgreSQLDirectory:
    """L{IDirectory} in the ``extensions`` table."""

    def __init__(self, pool: PostgreSQLPool) -> None:
        self._pool = pool

    def data_version(self) -> Deferred[int]:
        """A counter that moves whenever any node or wardenctl changes extensions."""
        return self._pool.run("data_version", _data_version_txn)

    def add_extension(self, extension: Extension) -> Deferred[None]:
        """Add ``extension``; fail with ExtensionExists if its number is taken."""
        return self._pool.run("add_extension", _add_extension_txn, extension)

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        """Fire with the extension for ``number``, or None."""
        return self._pool.run("get_extension", _get_extension_txn, number)

    def list_extensions(self) -> Deferred[list[Extension]]:
        """Fire with every extension, ordered by number (shorter numbers first)."""
        return self._pool.run("list_extensions", _list_extensions_txn)

    def update_extension(self, extension: Extension) -> Deferred[None]:
        """Replace the extension with the same number; fail if there is none."""
        return self._pool.run("update_extension", _update_extension_txn, extension)

    def remove_extension(self, number: str) -> Deferred[bool]:
        """Remove the extension; fire with whether it existed."""
        return self._pool.run("remove_extension", _remove_extension_txn, number)

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """Insert or replace many extensions in one transaction; fire with the counts."""
        return self._pool.run("upsert_extensions", _upsert_extensions_txn, list(extensions))

    def count_extensions(self) -> Deferred[int]:
        """Fire with the number of extensions."""
        return self._pool.run("count_extensions", _count_extensions_txn)


# -- call records ----------------------------------------------------------------


async def _add_call_records_txn(cursor: Cursor, rows: list[Row]) -> None:
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        await cursor.execute(
            f"INSERT INTO call_records ({_RECORD_COLUMNS}) VALUES {_values(cursor, chunk)}"
            " ON CONFLICT (call_id) DO NOTHING"
        )


async def _list_call_records_txn(
    cursor: Cursor,
    since: float | None,
    until: float | None,
    extension: str | None,
    disposition: str | None,
    limit: int,
    after_call_id: str | None,
) -> builtins.list[CallRecord]:
    after = None
    if after_call_id is not None:
        await cursor.execute(
            "SELECT started_at FROM call_records WHERE call_id = %s", (after_call_id,)
        )
        found = cursor.fetchone()
        if found is None:
            raise CallRecordNotFound(after_call_id)
        after = (found[0], after_call_id)
    clause, params = _record_filter("%s", since, until, extension, disposition, after)
    order = " ORDER BY started_at, call_id LIMIT %s"
    await cursor.execute(
        f"SELECT {_RECORD_COLUMNS} FROM call_records{clause}{order}", (*params, limit)
    )
    return [_record_from_row(row) for row in cursor.fetchall()]


async def _count_call_records_txn(cursor: Cursor) -> int:
    await cursor.execute("SELECT count(*) FROM call_records")
    return int(cursor.fetchone()[0])


@implementer(ICallRecordStore)
class PostgreSQLCallRecordStore:
    """L{ICallRecordStore} in the ``call_records`` table."""

    def __init__(self, pool: PostgreSQLPool) -> None:
        self._pool = pool

    def add(self, record: CallRecord) -> Deferred[None]:
        """Insert ``record`` unless its call_id is already stored."""
        return self._pool.run("add_call_record", _add_call_records_txn, [_record_row(record)])

    def add_many(self, records: Sequence[CallRecord]) -> Deferred[None]:
        """Insert many records in one transaction (those already stored are skipped)."""
        rows = [_record_row(r) for r in records]
        if not rows:
            return defer.succeed(None)
        return self._pool.run("add_call_records", _add_call_records_txn, rows)

    def list(
        self,
        since: float | None = None,
        until: float | None = None,
        extension: str | None = None,
        disposition: str | None = None,
        limit: int = 100,
        after_call_id: str | None = None,
    ) -> Deferred[builtins.list[CallRecord]]:
        """Fire with one page of records, ordered by ``(started_at, call_id)``."""
        if limit < 0:
            return defer.fail(ValueError(f"limit must be >= 0, got {limit}"))
        return self._pool.run(
            "list_call_records",
            _list_call_records_txn,
            since,
            until,
            extension,
            disposition,
            limit,
            after_call_id,
        )

    def count(self) -> Deferred[int]:
        """Fire with the number of stored records."""
        return self._pool.run("count_call_records", _count_call_records_txn)


# -- live calls ------------------------------------------------------------------

_UPSERT_LIVE = (
    f"INSERT INTO live_calls ({_LIVE_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (call_id) DO UPDATE SET caller = excluded.caller,"
    " callee = excluded.callee, dialled = excluded.dialled, state = excluded.state,"
    " started_at = excluded.started_at, answered_at = excluded.answered_at,"
    " codec = excluded.codec, packets = excluded.packets, node_id = excluded.node_id,"
    " updated_at = excluded.updated_at"
)


async def _publish_live_call_txn(cursor: Cursor, row: Row) -> None:
    await cursor.execute(_UPSERT_LIVE, row)


async def _remove_live_call_txn(cursor: Cursor, call_id: str) -> None:
    await cursor.execute("DELETE FROM live_calls WHERE call_id = %s", (call_id,))


async def _apply_live_calls_txn(cursor: Cursor, rows: list[Row], ids: list[str]) -> None:
    for row in rows:
        await cursor.execute(_UPSERT_LIVE, row)
    if ids:
        await cursor.execute("DELETE FROM live_calls WHERE call_id = ANY(%s)", (ids,))


async def _list_live_calls_txn(cursor: Cursor) -> builtins.list[LiveCall]:
    await cursor.execute(f"SELECT {_LIVE_COLUMNS} FROM live_calls ORDER BY started_at, call_id")
    return [_live_from_row(row) for row in cursor.fetchall()]


async def _clear_node_live_calls_txn(cursor: Cursor, node_id: str) -> int:
    await cursor.execute("DELETE FROM live_calls WHERE node_id = %s", (node_id,))
    return int(cursor.rowcount)


@implementer(ILiveCalls)
class PostgreSQLLiveCalls:
    """L{ILiveCalls} in the ``live_calls`` table, seen by every node and wardenctl."""

    def __init__(self, pool: PostgreSQLPool) -> None:
        self._pool = pool

    def publish(self, call: LiveCall) -> Deferred[None]:
        """Insert or replace the summary of ``call.call_id``."""
        return self._pool.run("publish_live_call", _publish_live_call_txn, _live_row(call))

    def remove(self, call_id: str) -> Deferred[None]:
        """Delete the summary of ``call_id``, if any."""
        return self._pool.run("remove_live_call", _remove_live_call_txn, call_id)

    def apply(self, published: Sequence[LiveCall], removed: Sequence[str]) -> Deferred[None]:
        """Publish and remove several summaries in one transaction (for batching)."""
        rows = [_live_row(call) for call in published]
        return self._pool.run("apply_live_calls", _apply_live_calls_txn, rows, list(removed))

    def list(self) -> Deferred[builtins.list[LiveCall]]:
        """Fire with every summary, ordered by ``(started_at, call_id)``."""
        return self._pool.run("list_live_calls", _list_live_calls_txn)

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Delete the summaries published by ``node_id``; fire with how many."""
        return self._pool.run("clear_node_live_calls", _clear_node_live_calls_txn, node_id)
