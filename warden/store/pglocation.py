"""
Registrar bindings kept in PostgreSQL, for a deployment without a shared state
backend.

``PostgreSQLLocationService`` answers reads from memory and persists changes with
the same group-commit write-behind as the SQLite backend
(L{warden.store.sqlite.SQLiteLocationService}); only its two interactions differ.
Bindings survive a restart of the node. They are not shared between nodes: a
cluster keeps bindings in its shared state backend.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from warden.interfaces import ILocationService
from warden.model import Binding
from warden.store.pgpool import Cursor, PostgreSQLPool
from warden.store.postgres import _values
from warden.store.sqlite import (
    _BINDING_COLUMNS,
    SQLiteLocationService,
    _binding_from_row,
)

Row = tuple[Any, ...]


async def _load_bindings_txn(cursor: Cursor, now: float) -> list[Binding]:
    await cursor.execute("DELETE FROM bindings WHERE expires_at <= %s", (now,))
    await cursor.execute(f"SELECT {_BINDING_COLUMNS} FROM bindings")
    return [_binding_from_row(row) for row in cursor.fetchall()]


async def _flush_bindings_txn(cursor: Cursor, rows: dict[str, list[Row]]) -> None:
    await cursor.execute("DELETE FROM bindings WHERE aor = ANY(%s)", (list(rows),))
    flat = [row for aor_rows in rows.values() for row in aor_rows]
    for start in range(0, len(flat), 1000):
        chunk = flat[start : start + 1000]
        await cursor.execute(
            f"INSERT INTO bindings ({_BINDING_COLUMNS}) VALUES {_values(cursor, chunk)}"
        )


@implementer(ILocationService)
class PostgreSQLLocationService(SQLiteLocationService):
    """
    Bindings in memory, persisted to PostgreSQL's ``bindings`` table with group
    commit (see L{SQLiteLocationService} for the behaviour).

    Args:
        pool: the PostgreSQL pool.
        clock: the time source, for L{load} and for scheduling flushes.
        retry_delay: seconds to wait before retrying a failed flush.
    """

    def __init__(
        self, pool: PostgreSQLPool, clock: IReactorTime, retry_delay: float = 1.0
    ) -> None:
        super().__init__(pool, clock, retry_delay)  # type: ignore[arg-type]
        self._pg = pool

    def _load_rows(self, now: float) -> Deferred[list[Binding]]:
        return self._pg.run("load_bindings", _load_bindings_txn, now)

    def _write_rows(self, rows: dict[str, list[Row]]) -> Deferred[None]:
        return self._pg.run("flush_bindings", _flush_bindings_txn, rows)
