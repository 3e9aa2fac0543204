"""
The one SQL layer's view of a database: a small L{Dialect}, a L{Cursor} that
speaks it, and a L{Database} that runs named interactions.

Every store method is one named interaction: an ``async def`` taking a
L{Cursor} (``_get_extension_txn``), written once for SQLite and PostgreSQL, run
as "get_extension" by L{Database.run}. The name labels the interaction metrics
(L{warden.store.interaction}).

Statements are written with ``?`` parameters. What differs between the two
databases stays here:

- the parameter style (``?`` or ``%s``: L{Dialect.sql});
- inserting a row unless its key is taken (L{Dialect.insert_new});
- locks: the write lock a read-then-write interaction takes first
  (L{Dialect.write_lock}), the lock that lets one process at a time migrate
  (L{Dialect.migration_lock}) and the row lock of a read-modify-write
  (L{Dialect.for_update});
- statements over many rows or keys (L{Cursor.insert_rows},
  L{Cursor.delete_keys}, L{Cursor.select_keys}): ``executemany`` and ``IN``
  lists for SQLite, multi-row ``VALUES`` and ``= ANY(%s)`` for PostgreSQL.

SQLite runs an interaction in ``adbapi``'s thread: its cursor completes every
statement at once, so the coroutine finishes without suspending and
L{sqlite_interaction} drives it synchronously there. PostgreSQL runs it on
txpostgres through L{warden.store.pgpool.PostgreSQLPool}, which adds the
retries.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import attrs
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from warden.errors import StoreError
from warden.store.interaction import run_interaction
from warden.store.pgpool import PostgreSQLPool

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "Cursor",
    "Database",
    "Dialect",
    "Interaction",
    "PostgreSQLDatabase",
    "SQLiteDatabase",
    "database",
    "split_sqlite_script",
    "sqlite_interaction",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

Row = tuple[Any, ...]

# SQLite's default limit on host parameters is 32766 (999 before 3.32).
_SQLITE_CHUNK = 500
# Rows per multi-row PostgreSQL INSERT.
_POSTGRESQL_CHUNK = 1000


def split_sqlite_script(sql: str) -> list[str]:
    """
    Split an SQLite script into statements.

    Uses SQLite's own tokenizer (``sqlite3.complete_statement``), so semicolons
    in strings, comments and trigger bodies do not split a statement.

    Raises:
        StoreError: the script ends in an incomplete statement.
    """
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "".join(ln for ln in buffer.splitlines() if not ln.strip().startswith("--"))
    if rest.strip():
        raise StoreError(f"incomplete SQL statement at the end of the script: {rest.strip()!r}")
    return statements


@attrs.frozen
class Dialect:
    """
    How one database spells what Warden's statements need.

    Attributes:
        name: the dialect's name, as in ``warden/store/schema/<name>/``.
        placeholder: the driver's parameter marker (``?`` or ``%s``).
        write_lock: the statement that takes, first in an interaction, the lock
            that keeps other writers of ``{table}`` out until it commits.
        migration_lock: the statement that lets one process at a time migrate.
        for_update: the suffix of a SELECT whose rows the interaction updates.
        data_version: the query of the directory's change counter.
        insert_prefix: how an insert-unless-the-key-is-taken begins.
        insert_suffix: how it ends (``{key}``: the key's columns).
    """

    name: str
    placeholder: str
    write_lock: str
    migration_lock: str
    for_update: str
    data_version: str
    insert_prefix: str
    insert_suffix: str
    _translated: dict[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    def sql(self, text: str) -> str:
        """``text`` (written with ``?`` parameters) in this dialect's parameter style."""
        if self.placeholder == "?":
            return text
        translated = self._translated.get(text)
        if translated is None:
            if "%" in text:
                raise ValueError(f"a literal % in a statement: {text!r}")
            translated = self._translated[text] = text.replace("?", self.placeholder)
        return translated

    def insert_new_rows(self, table: str, columns: str, key: str) -> tuple[str, str]:
        """The head and tail (for L{Cursor.insert_rows}) of an INSERT that skips
        the rows whose ``key`` is taken."""
        head = f"{self.insert_prefix} {table} ({columns})"
        return head, self.insert_suffix.format(key=key)

    def insert_new(self, table: str, columns: str, key: str) -> str:
        """An INSERT of one row (``?`` parameters) that does nothing when ``key`` is taken."""
        head, tail = self.insert_new_rows(table, columns, key)
        marks = ", ".join("?" * len(columns.split(",")))
        return f"{head} VALUES ({marks}){tail}"


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    # The write lock first: the rows read next cannot change before we write.
    write_lock="BEGIN IMMEDIATE",
    # A second process waits (busy_timeout), then finds the migrations applied.
    migration_lock="BEGIN IMMEDIATE",
    # One connection writes at a time: a read is not changed under us.
    for_update="",
    data_version="PRAGMA data_version",
    insert_prefix="INSERT OR IGNORE INTO",
    insert_suffix="",
)

# pg_advisory_xact_lock key for migrations: "WARDEN" in ASCII.
_MIGRATION_LOCK_KEY = 0x5741_5244_454E

POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    # Writers wait for each other (readers do not).
    write_lock="LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
    # Nodes starting together: the others wait, then find the files applied.
    migration_lock=f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})",
    for_update=" FOR UPDATE",
    # A trigger-maintained counter (SQLite's PRAGMA has no equivalent).
    data_version="SELECT version FROM directory_version WHERE id = 1",
    insert_prefix="INSERT INTO",
    insert_suffix=" ON CONFLICT ({key}) DO NOTHING",
)


class Cursor(Protocol):
    """What an interaction runs its statements on (``?`` parameters throughout)."""

    @property
    def dialect(self) -> Dialect:
        """The database's dialect."""

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows``."""

    async def insert_rows(self, head: str, rows: Sequence[Row], tail: str = "") -> None:
        """Insert ``rows``: ``head`` is ``INSERT INTO t (columns)``, ``tail`` an
        ON CONFLICT clause or empty."""

    async def delete_keys(self, table: str, column: str, keys: Sequence[Any]) -> None:
        """Delete the rows of ``table`` whose ``column`` is one of ``keys``."""

    async def select_keys(self, head: str, column: str, keys: Sequence[Any]) -> list[Row]:
        """The rows of ``head`` (a SELECT without WHERE) whose ``column`` is one of ``keys``."""

    async def execute_script(self, script: str) -> None:
        """Run a schema file (several statements, no parameters)."""

    def fetchone(self) -> Any:
        """The next row of the last query, or None."""

    def fetchall(self) -> list[Row]:
        """The remaining rows of the last query."""


#: A named interaction: an ``async def`` on a L{Cursor}.
Interaction = Callable[Concatenate[Cursor, _P], Coroutine[Any, Any, _T]]


class _SQLiteCursor:
    """A L{Cursor} on an ``adbapi`` transaction (or a sqlite3 cursor): every
    statement has completed when its coroutine is first resumed."""

    dialect = SQLITE

    def __init__(self, txn: Any) -> None:
        self._txn = txn

    @property
    def rowcount(self) -> int:
        return int(self._txn.rowcount)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._txn.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._txn.executemany(sql, rows)

    async def insert_rows(self, head: str, rows: Sequence[Row], tail: str = "") -> None:
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            self._txn.executemany(f"{head} VALUES ({marks}){tail}", rows)

    async def delete_keys(self, table: str, column: str, keys: Sequence[Any]) -> None:
        if keys:
            self._txn.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(k,) for k in keys])

    async def select_keys(self, head: str, column: str, keys: Sequence[Any]) -> list[Row]:
        rows: list[Row] = []
        for start in range(0, len(keys), _SQLITE_CHUNK):
            chunk = keys[start : start + _SQLITE_CHUNK]
            self._txn.execute(f"{head} WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk)
            rows += self._txn.fetchall()
        return rows

    async def execute_script(self, script: str) -> None:
        for statement in split_sqlite_script(script):
            self._txn.execute(statement)

    def fetchone(self) -> Any:
        return self._txn.fetchone()

    def fetchall(self) -> list[Row]:
        return list(self._txn.fetchall())


class _PostgreSQLCursor:
    """A L{Cursor} on a txpostgres cursor (whose ``execute`` returns a Deferred)."""

    dialect = POSTGRESQL

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._cursor.execute(POSTGRESQL.sql(sql), params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        statement = POSTGRESQL.sql(sql)
        for row in rows:
            await self._cursor.execute(statement, row)

    async def insert_rows(self, head: str, rows: Sequence[Row], tail: str = "") -> None:
        for start in range(0, len(rows), _POSTGRESQL_CHUNK):
            chunk = rows[start : start + _POSTGRESQL_CHUNK]
            template = "(" + ", ".join(["%s"] * len(chunk[0])) + ")"
            values = ", ".join(
                self._cursor.mogrify(template, row).decode("utf-8") for row in chunk
            )
            # The values are quoted by psycopg2 already: no parameters left.
            await self._cursor.execute(f"{head} VALUES {values}{tail}")

    async def delete_keys(self, table: str, column: str, keys: Sequence[Any]) -> None:
        if keys:
            await self._cursor.execute(
                f"DELETE FROM {table} WHERE {column} = ANY(%s)", (list(keys),)
            )

    async def select_keys(self, head: str, column: str, keys: Sequence[Any]) -> list[Row]:
        if not keys:
            return []
        await self._cursor.execute(f"{head} WHERE {column} = ANY(%s)", (list(keys),))
        return list(self._cursor.fetchall())

    async def execute_script(self, script: str) -> None:
        # No parameters: psycopg2 sends the script as is, every statement in it.
        await self._cursor.execute(script)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        return list(self._cursor.fetchall())


def sqlite_interaction(
    interaction: Interaction[_P, _T],
) -> Callable[Concatenate[Any, _P], _T]:
    """
    ``interaction`` as a plain function of an ``adbapi`` transaction (or a
    sqlite3 cursor), for ``runInteraction`` or a caller holding a connection.
    """
    run: Callable[Concatenate[Any, _P], _T] = _sqlite_function(interaction)
    return run


@functools.cache
def _sqlite_function(
    interaction: Interaction[_P, _T],
) -> Callable[Concatenate[Any, _P], _T]:
    """L{sqlite_interaction}, made once per interaction."""

    @functools.wraps(interaction)
    def run(txn: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        coroutine = interaction(_SQLiteCursor(txn), *args, **kwargs)
        try:
            coroutine.send(None)
        except StopIteration as done:
            result: _T = done.value
            return result
        coroutine.close()
        raise RuntimeError(f"{interaction.__name__} waited for something SQLite does not do")

    return run


@functools.cache
def _postgresql_interaction(
    interaction: Interaction[_P, _T],
) -> Callable[Concatenate[Any, _P], Coroutine[Any, Any, _T]]:
    """``interaction`` as a coroutine function of a txpostgres cursor."""

    @functools.wraps(interaction)
    async def run(cursor: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await interaction(_PostgreSQLCursor(cursor), *args, **kwargs)

    return run


class Database(Protocol):
    """Where the stores run their named interactions."""

    @property
    def dialect(self) -> Dialect:
        """The database's dialect."""

    def run(
        self, name: str, interaction: Interaction[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """Run ``interaction`` in one transaction as ``name``; fire with its result."""


class SQLiteDatabase:
    """A L{Database} on an ``adbapi`` pool of SQLite connections."""

    dialect = SQLITE

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self.pool = pool

    def run(
        self, name: str, interaction: Interaction[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """Run ``interaction`` in the pool's thread (see L{run_interaction})."""
        return run_interaction(self.pool, name, sqlite_interaction(interaction), *args, **kwargs)


class PostgreSQLDatabase:
    """A L{Database} on a L{PostgreSQLPool} (which retries transient failures)."""

    dialect = POSTGRESQL

    def __init__(self, pool: PostgreSQLPool) -> None:
        self.pool = pool

    def run(
        self, name: str, interaction: Interaction[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """Run ``interaction`` through the pool (see L{PostgreSQLPool.run})."""
        return self.pool.run(name, _postgresql_interaction(interaction), *args, **kwargs)


def database(pool: adbapi.ConnectionPool | PostgreSQLPool) -> Database:
    """The L{Database} of ``pool``: PostgreSQL for a L{PostgreSQLPool}, else SQLite."""
    if isinstance(pool, PostgreSQLPool):
        return PostgreSQLDatabase(pool)
    return SQLiteDatabase(pool)
