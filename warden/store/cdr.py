"""
Call records and live calls in SQLite: ``call_records`` and ``live_calls``
(schema ``0002_calls.sql``).

Each method is one named interaction (see L{warden.store.interaction}). Writing a
record is idempotent by call_id (``INSERT OR IGNORE``), which is what lets the CDR
spool (L{warden.store.spool}) replay records after a crash without duplicating
them. Listing is keyset-paged on ``(started_at, call_id)``.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.errors import CallRecordNotFound
from warden.interfaces import ICallRecordStore, ILiveCalls
from warden.model import CallRecord, LiveCall
from warden.store.interaction import run_interaction

Row = tuple[Any, ...]

# -- call records ----------------------------------------------------------------

_RECORD_COLUMNS = (
    "call_id, caller, caller_name, callee, dialled, started_at, answered_at, ended_at,"
    " disposition, hangup_cause, hangup_side, codec, media, node_id"
)
_RECORD_NAMES = tuple(c.strip() for c in _RECORD_COLUMNS.split(","))


def _record_row(record: CallRecord) -> Row:
    return (
        record.call_id,
        record.caller,
        record.caller_name,
        record.callee,
        record.dialled,
        record.started_at,
        record.answered_at,
        record.ended_at,
        record.disposition,
        record.hangup_cause,
        record.hangup_side,
        record.codec,
        json.dumps(record.media, separators=(",", ":"), sort_keys=True),
        record.node_id,
    )


def _record_from_row(row: Row) -> CallRecord:
    """A call record from a row in ``_RECORD_COLUMNS`` order (``media`` as JSON text
    from SQLite, already decoded from PostgreSQL's jsonb)."""
    fields = dict(zip(_RECORD_NAMES, row, strict=True))
    media = fields["media"]
    if isinstance(media, str):
        fields["media"] = json.loads(media)
    return CallRecord(**fields)


def _record_filter(
    mark: str,
    since: float | None,
    until: float | None,
    extension: str | None,
    disposition: str | None,
    after: tuple[float, str] | None,
) -> tuple[str, builtins.list[Any]]:
    """
    The WHERE clause (``""`` when none) and its parameters of a call-record
    listing, with ``mark`` as the placeholder (``?`` or ``%s``); ``after`` is the
    (started_at, call_id) of the record the page starts after.
    """
    where: builtins.list[str] = []
    params: builtins.list[Any] = []
    if after is not None:
        where.append(f"(started_at, call_id) > ({mark}, {mark})")
        params += list(after)
    if since is not None:
        where.append(f"started_at >= {mark}")
        params.append(since)
    if until is not None:
        where.append(f"started_at < {mark}")
        params.append(until)
    if extension is not None:
        where.append(f"(caller = {mark} OR callee = {mark} OR dialled = {mark})")
        params += [extension] * 3
    if disposition is not None:
        where.append(f"disposition = {mark}")
        params.append(disposition)
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


def _add_call_record_txn(txn: adbapi.Transaction, row: Row) -> None:
    txn.execute(
        f"INSERT OR IGNORE INTO call_records ({_RECORD_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )


def _list_call_records_txn(
    txn: adbapi.Transaction,
    since: float | None,
    until: float | None,
    extension: str | None,
    disposition: str | None,
    limit: int,
    after_call_id: str | None,
) -> builtins.list[CallRecord]:
    after = None
    if after_call_id is not None:
        txn.execute("SELECT started_at FROM call_records WHERE call_id = ?", (after_call_id,))
        found = txn.fetchone()
        if found is None:
            raise CallRecordNotFound(after_call_id)
        after = (found[0], after_call_id)
    clause, params = _record_filter("?", since, until, extension, disposition, after)
    order = " ORDER BY started_at, call_id LIMIT ?"
    txn.execute(f"SELECT {_RECORD_COLUMNS} FROM call_records{clause}{order}", (*params, limit))
    return [_record_from_row(row) for row in txn.fetchall()]


def _count_call_records_txn(txn: adbapi.Transaction) -> int:
    txn.execute("SELECT count(*) FROM call_records")
    return int(txn.fetchone()[0])


@implementer(ICallRecordStore)
class SQLiteCallRecordStore:
    """L{ICallRecordStore} in the ``call_records`` table."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def add(self, record: CallRecord) -> Deferred[None]:
        """Insert ``record`` unless its call_id is already stored."""
        return run_interaction(
            self._pool, "add_call_record", _add_call_record_txn, _record_row(record)
        )

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
        return run_interaction(
            self._pool,
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
        return run_interaction(self._pool, "count_call_records", _count_call_records_txn)


# -- live calls ------------------------------------------------------------------

_LIVE_COLUMNS = (
    "call_id, caller, callee, dialled, state, started_at, answered_at, codec, packets,"
    " node_id, updated_at"
)
_LIVE_NAMES = tuple(c.strip() for c in _LIVE_COLUMNS.split(","))
_UPSERT_LIVE = (
    f"INSERT INTO live_calls ({_LIVE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (call_id) DO UPDATE SET caller = excluded.caller,"
    " callee = excluded.callee, dialled = excluded.dialled, state = excluded.state,"
    " started_at = excluded.started_at, answered_at = excluded.answered_at,"
    " codec = excluded.codec, packets = excluded.packets, node_id = excluded.node_id,"
    " updated_at = excluded.updated_at"
)


def _live_row(call: LiveCall) -> Row:
    return (
        call.call_id,
        call.caller,
        call.callee,
        call.dialled,
        call.state,
        call.started_at,
        call.answered_at,
        call.codec,
        call.packets,
        call.node_id,
        call.updated_at,
    )


def _live_from_row(row: Row) -> LiveCall:
    """A live-call summary from a row in ``_LIVE_COLUMNS`` order."""
    fields = dict(zip(_LIVE_NAMES, row, strict=True))
    fields["packets"] = int(fields["packets"])
    return LiveCall(**fields)


def _publish_live_call_txn(txn: adbapi.Transaction, row: Row) -> None:
    txn.execute(_UPSERT_LIVE, row)


def _remove_live_call_txn(txn: adbapi.Transaction, call_id: str) -> None:
    txn.execute("DELETE FROM live_calls WHERE call_id = ?", (call_id,))


def _apply_live_calls_txn(
    txn: adbapi.Transaction, rows: Sequence[Row], ids: Sequence[tuple[str]]
) -> None:
    if rows:
        txn.executemany(_UPSERT_LIVE, rows)
    if ids:
        txn.executemany("DELETE FROM live_calls WHERE call_id = ?", ids)


def _list_live_calls_txn(txn: adbapi.Transaction) -> builtins.list[LiveCall]:
    txn.execute(f"SELECT {_LIVE_COLUMNS} FROM live_calls ORDER BY started_at, call_id")
    return [_live_from_row(row) for row in txn.fetchall()]


def _clear_node_live_calls_txn(txn: adbapi.Transaction, node_id: str) -> int:
    txn.execute("DELETE FROM live_calls WHERE node_id = ?", (node_id,))
    return int(txn.rowcount)


@implementer(ILiveCalls)
class SQLiteLiveCalls:
    """
    L{ILiveCalls} in the ``live_calls`` table, so that ``wardenctl calls`` (another
    process) sees the calls of a single-node installation.
    """

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def publish(self, call: LiveCall) -> Deferred[None]:
        """Insert or replace the summary of ``call.call_id``."""
        return run_interaction(
            self._pool, "publish_live_call", _publish_live_call_txn, _live_row(call)
        )

    def remove(self, call_id: str) -> Deferred[None]:
        """Delete the summary of ``call_id``, if any."""
        return run_interaction(self._pool, "remove_live_call", _remove_live_call_txn, call_id)

    def apply(self, published: Sequence[LiveCall], removed: Sequence[str]) -> Deferred[None]:
        """Publish and remove several summaries in one transaction."""
        rows = [_live_row(call) for call in published]
        ids = [(call_id,) for call_id in removed]
        return run_interaction(self._pool, "apply_live_calls", _apply_live_calls_txn, rows, ids)

    def list(self) -> Deferred[builtins.list[LiveCall]]:
        """Fire with every summary, ordered by ``(started_at, call_id)``."""
        return run_interaction(self._pool, "list_live_calls", _list_live_calls_txn)

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Delete the summaries published by ``node_id``; fire with how many."""
        return run_interaction(
            self._pool, "clear_node_live_calls", _clear_node_live_calls_txn, node_id
        )
