"""
Call records and live calls in SQL: ``call_records`` and ``live_calls``
(schema ``0002_calls.sql``), one layer for SQLite and PostgreSQL.

Each method is one named interaction (see L{warden.store.dialect}). Writing a
record is idempotent by call_id (the dialect's insert-unless-taken), which is
what lets the CDR spool (L{warden.store.spool}) replay records after a crash
without duplicating them. Listing is keyset-paged on ``(started_at, call_id)``.
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
from warden.model import CallRecord, LiveCall, expired_recording
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool

__all__ = ["SQLCallRecordStore", "SQLLiveCalls"]

Row = tuple[Any, ...]

# -- call records ----------------------------------------------------------------

_RECORD_COLUMNS = (
    "call_id, caller, caller_name, callee, dialled, started_at, answered_at, ended_at,"
    " disposition, hangup_cause, hangup_side, codec, media, node_id, recording, recording_info,"
    " stir_attest, stir_verstat, emergency"
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
        _json(record.media),
        record.node_id,
        record.recording,
        _json(record.recording_info),
        record.stir_attest,
        record.stir_verstat,
        record.emergency,
    )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _record_from_row(row: Row) -> CallRecord:
    """A call record from a row in ``_RECORD_COLUMNS`` order (``media`` and
    ``recording_info`` as JSON text from SQLite, already decoded from
    PostgreSQL's jsonb)."""
    fields = dict(zip(_RECORD_NAMES, row, strict=True))
    for name in ("media", "recording_info"):
        if isinstance(fields[name], str):
            fields[name] = json.loads(fields[name])
    return CallRecord(**fields)


def _record_filter(
    since: float | None,
    until: float | None,
    extension: str | None,
    disposition: str | None,
    after: tuple[float, str] | None,
) -> tuple[str, builtins.list[Any]]:
    """
    The WHERE clause (``""`` when none) and its parameters of a call-record
    listing; ``after`` is the (started_at, call_id) of the record the page
    starts after.
    """
    where: builtins.list[str] = []
    params: builtins.list[Any] = []
    if after is not None:
        where.append("(started_at, call_id) > (?, ?)")
        params += list(after)
    if since is not None:
        where.append("started_at >= ?")
        params.append(since)
    if until is not None:
        where.append("started_at < ?")
        params.append(until)
    if extension is not None:
        where.append("(caller = ? OR callee = ? OR dialled = ?)")
        params += [extension] * 3
    if disposition is not None:
        where.append("disposition = ?")
        params.append(disposition)
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


async def _add_call_records_txn(cursor: Cursor, rows: builtins.list[Row]) -> None:
    head, tail = cursor.dialect.insert_new_rows("call_records", _RECORD_COLUMNS, "call_id")
    await cursor.insert_rows(head, rows, tail)


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
            "SELECT started_at FROM call_records WHERE call_id = ?", (after_call_id,)
        )
        found = cursor.fetchone()
        if found is None:
            raise CallRecordNotFound(after_call_id)
        after = (found[0], after_call_id)
    clause, params = _record_filter(since, until, extension, disposition, after)
    order = " ORDER BY started_at, call_id LIMIT ?"
    await cursor.execute(
        f"SELECT {_RECORD_COLUMNS} FROM call_records{clause}{order}", (*params, limit)
    )
    return [_record_from_row(row) for row in cursor.fetchall()]


async def _expire_recordings_txn(
    cursor: Cursor, before: float, at: float, limit: int
) -> builtins.list[str]:
    await cursor.execute(
        f"SELECT {_RECORD_COLUMNS} FROM call_records WHERE recording <> '' AND started_at < ?"
        " ORDER BY started_at, call_id LIMIT ?",
        (before, limit),
    )
    old = [_record_from_row(row) for row in cursor.fetchall()]
    for record in old:
        info = expired_recording(record, at).recording_info
        await cursor.execute(
            "UPDATE call_records SET recording = '', recording_info = ? WHERE call_id = ?",
            (_json(info), record.call_id),
        )
    return [r.recording for r in old]


async def _count_call_records_txn(cursor: Cursor) -> int:
    await cursor.execute("SELECT count(*) FROM call_records")
    return int(cursor.fetchone()[0])


@implementer(ICallRecordStore)
class SQLCallRecordStore:
    """L{ICallRecordStore} in the ``call_records`` table of an SQLite or PostgreSQL pool."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def add(self, record: CallRecord) -> Deferred[None]:
        """Insert ``record`` unless its call_id is already stored."""
        return self._db.run("add_call_record", _add_call_records_txn, [_record_row(record)])

    def add_many(self, records: Sequence[CallRecord]) -> Deferred[None]:
        """Insert many records in one transaction (those already stored are skipped)."""
        rows = [_record_row(r) for r in records]
        if not rows:
            return defer.succeed(None)
        return self._db.run("add_call_records", _add_call_records_txn, rows)

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
        return self._db.run(
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
        return self._db.run("count_call_records", _count_call_records_txn)

    def expire_recordings(
        self, before: float, at: float, limit: int = 500
    ) -> Deferred[builtins.list[str]]:
        """Unlink the oldest recordings of calls started before ``before``."""
        return self._db.run("expire_recordings", _expire_recordings_txn, before, at, limit)


# -- live calls ------------------------------------------------------------------

_LIVE_COLUMNS = (
    "call_id, caller, callee, dialled, state, started_at, answered_at, codec, packets,"
    " node_id, updated_at, caller_media, callee_media, caller_signalling, callee_signalling,"
    " recording"
)
_LIVE_NAMES = tuple(c.strip() for c in _LIVE_COLUMNS.split(","))
_UPSERT_LIVE = (
    f"INSERT INTO live_calls ({_LIVE_COLUMNS}) VALUES"
    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (call_id) DO UPDATE SET caller = excluded.caller,"
    " callee = excluded.callee, dialled = excluded.dialled, state = excluded.state,"
    " started_at = excluded.started_at, answered_at = excluded.answered_at,"
    " codec = excluded.codec, packets = excluded.packets, node_id = excluded.node_id,"
    " updated_at = excluded.updated_at, caller_media = excluded.caller_media,"
    " callee_media = excluded.callee_media, caller_signalling = excluded.caller_signalling,"
    " callee_signalling = excluded.callee_signalling, recording = excluded.recording"
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
        call.caller_media,
        call.callee_media,
        call.caller_signalling,
        call.callee_signalling,
        call.recording,
    )


def _live_from_row(row: Row) -> LiveCall:
    """A live-call summary from a row in ``_LIVE_COLUMNS`` order."""
    fields = dict(zip(_LIVE_NAMES, row, strict=True))
    fields["packets"] = int(fields["packets"])
    return LiveCall(**fields)


async def _publish_live_call_txn(cursor: Cursor, row: Row) -> None:
    await cursor.execute(_UPSERT_LIVE, row)


async def _remove_live_call_txn(cursor: Cursor, call_id: str) -> None:
    await cursor.execute("DELETE FROM live_calls WHERE call_id = ?", (call_id,))


async def _apply_live_calls_txn(cursor: Cursor, rows: Sequence[Row], ids: Sequence[str]) -> None:
    await cursor.executemany(_UPSERT_LIVE, rows)
    await cursor.delete_keys("live_calls", "call_id", ids)


async def _list_live_calls_txn(cursor: Cursor) -> builtins.list[LiveCall]:
    await cursor.execute(f"SELECT {_LIVE_COLUMNS} FROM live_calls ORDER BY started_at, call_id")
    return [_live_from_row(row) for row in cursor.fetchall()]


async def _clear_node_live_calls_txn(cursor: Cursor, node_id: str) -> int:
    await cursor.execute("DELETE FROM live_calls WHERE node_id = ?", (node_id,))
    return cursor.rowcount


@implementer(ILiveCalls)
class SQLLiveCalls:
    """
    L{ILiveCalls} in the ``live_calls`` table, so that ``wardenctl calls`` (another
    process) sees the calls of a single-node installation, and with PostgreSQL
    every node sees those of the others.
    """

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def publish(self, call: LiveCall) -> Deferred[None]:
        """Insert or replace the summary of ``call.call_id``."""
        return self._db.run("publish_live_call", _publish_live_call_txn, _live_row(call))

    def remove(self, call_id: str) -> Deferred[None]:
        """Delete the summary of ``call_id``, if any."""
        return self._db.run("remove_live_call", _remove_live_call_txn, call_id)

    def apply(self, published: Sequence[LiveCall], removed: Sequence[str]) -> Deferred[None]:
        """Publish and remove several summaries in one transaction."""
        rows = [_live_row(call) for call in published]
        return self._db.run("apply_live_calls", _apply_live_calls_txn, rows, list(removed))

    def list(self) -> Deferred[builtins.list[LiveCall]]:
        """Fire with every summary, ordered by ``(started_at, call_id)``."""
        return self._db.run("list_live_calls", _list_live_calls_txn)

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Delete the summaries published by ``node_id``; fire with how many."""
        return self._db.run("clear_node_live_calls", _clear_node_live_calls_txn, node_id)
