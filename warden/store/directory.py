"""
The directory of extensions in SQL (the ``extensions`` table), one layer for
SQLite and PostgreSQL.

Each method is one named interaction (see L{warden.store.dialect}); the
statements differ between the databases only through the dialect: inserting
unless the number is taken, the write lock of a bulk upsert, and the change
counter (SQLite's ``PRAGMA data_version``, PostgreSQL's trigger-maintained
``directory_version``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.errors import ExtensionExists, ExtensionNotFound
from warden.interfaces import IDirectory
from warden.model import Extension
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool
from warden.store.tables import plan_upsert

__all__ = ["SQLDirectory"]

Row = tuple[Any, ...]

_EXTENSION_COLUMNS = (
    "number, name, realm, ha1_md5, ha1_sha256, algorithms, enabled, qualify, ring_timeout"
)
_SELECT_EXTENSIONS = f"SELECT {_EXTENSION_COLUMNS} FROM extensions"
_INSERT_EXTENSIONS = f"INSERT INTO extensions ({_EXTENSION_COLUMNS})"
# An existing extension takes every new value (both dialects).
_ON_CONFLICT_UPDATE_EXTENSION = (
    " ON CONFLICT (number) DO UPDATE SET name = excluded.name, realm = excluded.realm,"
    " ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256,"
    " algorithms = excluded.algorithms, enabled = excluded.enabled, qualify = excluded.qualify,"
    " ring_timeout = excluded.ring_timeout"
)


def _extension_row(extension: Extension) -> Row:
    """The row of ``extension`` (booleans as Python bools: SQLite stores 0 and 1)."""
    return (
        extension.number,
        extension.name,
        extension.realm,
        extension.ha1_md5,
        extension.ha1_sha256,
        ",".join(extension.algorithms),
        extension.enabled,
        extension.qualify,
        extension.ring_timeout,
    )


def _extension_from_row(row: Row) -> Extension:
    number, name, realm, ha1_md5, ha1_sha256, algorithms, enabled, qualify, ring_timeout = row
    return Extension(
        number=number,
        name=name,
        realm=realm,
        ha1_md5=ha1_md5,
        ha1_sha256=ha1_sha256,
        algorithms=tuple(a for a in algorithms.split(",") if a),
        enabled=bool(enabled),
        qualify=bool(qualify),
        ring_timeout=float(ring_timeout),
    )


async def _add_extension_txn(cursor: Cursor, extension: Extension) -> None:
    insert = cursor.dialect.insert_new("extensions", _EXTENSION_COLUMNS, "number")
    await cursor.execute(insert, _extension_row(extension))
    if cursor.rowcount == 0:
        raise ExtensionExists(extension.number)


async def _get_extension_txn(cursor: Cursor, number: str) -> Extension | None:
    await cursor.execute(f"{_SELECT_EXTENSIONS} WHERE number = ?", (number,))
    row = cursor.fetchone()
    return None if row is None else _extension_from_row(row)


async def _list_extensions_txn(cursor: Cursor) -> list[Extension]:
    # Shorter numbers first: numeric order for digit strings (see extension_order).
    await cursor.execute(f"{_SELECT_EXTENSIONS} ORDER BY length(number), number")
    return [_extension_from_row(row) for row in cursor.fetchall()]


async def _qualified_numbers_txn(cursor: Cursor) -> list[str]:
    await cursor.execute(
        "SELECT number FROM extensions WHERE qualify = ? ORDER BY length(number), number", (True,)
    )
    return [str(row[0]) for row in cursor.fetchall()]


async def _update_extension_txn(cursor: Cursor, extension: Extension) -> None:
    number, *rest = _extension_row(extension)
    await cursor.execute(
        "UPDATE extensions SET name = ?, realm = ?, ha1_md5 = ?, ha1_sha256 = ?,"
        " algorithms = ?, enabled = ?, qualify = ?, ring_timeout = ? WHERE number = ?",
        (*rest, number),
    )
    if cursor.rowcount == 0:
        raise ExtensionNotFound(extension.number)


async def _remove_extension_txn(cursor: Cursor, number: str) -> bool:
    await cursor.execute("DELETE FROM extensions WHERE number = ?", (number,))
    return bool(cursor.rowcount)


async def _upsert_extensions_txn(cursor: Cursor, extensions: list[Extension]) -> tuple[int, int]:
    # The write lock first: the rows read below cannot change before we write.
    await cursor.execute(cursor.dialect.write_lock.format(table="extensions"))
    numbers = sorted({e.number for e in extensions})
    rows = await cursor.select_keys(_SELECT_EXTENSIONS, "number", numbers)
    existing = {row[0]: _extension_from_row(row) for row in rows}
    added, updated, writes = plan_upsert(existing, extensions)
    await cursor.insert_rows(
        _INSERT_EXTENSIONS,
        [_extension_row(e) for e in writes.values()],
        _ON_CONFLICT_UPDATE_EXTENSION,
    )
    return added, updated


async def _count_extensions_txn(cursor: Cursor) -> int:
    await cursor.execute("SELECT count(*) FROM extensions")
    return int(cursor.fetchone()[0])


async def _data_version_txn(cursor: Cursor) -> int:
    await cursor.execute(cursor.dialect.data_version)
    return int(cursor.fetchone()[0])


@implementer(IDirectory)
class SQLDirectory:
    """L{IDirectory} in the ``extensions`` table of an SQLite or PostgreSQL pool."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def data_version(self) -> Deferred[int]:
        """A counter that moves whenever another connection (node, wardenctl)
        changes extensions."""
        return self._db.run("data_version", _data_version_txn)

    def add_extension(self, extension: Extension) -> Deferred[None]:
        """Add ``extension``; fail with ExtensionExists if its number is taken."""
        return self._db.run("add_extension", _add_extension_txn, extension)

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        """Fire with the extension for ``number``, or None."""
        return self._db.run("get_extension", _get_extension_txn, number)

    def list_extensions(self) -> Deferred[list[Extension]]:
        """Fire with every extension, ordered by number (shorter numbers first)."""
        return self._db.run("list_extensions", _list_extensions_txn)

    def qualified_numbers(self) -> Deferred[list[str]]:
        """Fire with the numbers of the extensions with qualify on, in list order."""
        return self._db.run("qualified_numbers", _qualified_numbers_txn)

    def update_extension(self, extension: Extension) -> Deferred[None]:
        """Replace the extension with the same number; fail if there is none."""
        return self._db.run("update_extension", _update_extension_txn, extension)

    def remove_extension(self, number: str) -> Deferred[bool]:
        """Remove the extension; fire with whether it existed."""
        return self._db.run("remove_extension", _remove_extension_txn, number)

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """Insert or replace many extensions in one transaction; fire with the counts."""
        return self._db.run("upsert_extensions", _upsert_extensions_txn, list(extensions))

    def count_extensions(self) -> Deferred[int]:
        """Fire with the number of extensions."""
        return self._db.run("count_extensions", _count_extensions_txn)
