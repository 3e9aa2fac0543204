"""
The embedded SQLite backend: directory and location service.

One ``adbapi`` connection (``cp_min=cp_max=1``) in WAL mode serves every store, so
interactions run one at a time, in the order they were issued. Each store method
is one named interaction (see L{warden.store.interaction}).

``SQLiteLocationService`` keeps bindings in memory (the read path) and persists
them behind the scenes with group commit: every change waits for the next
transaction that rewrites its AOR, and changes that arrive while one transaction
runs share the next.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import ExtensionExists, ExtensionNotFound, StoreError
from warden.interfaces import IDirectory, ILocationService
from warden.model import Binding, Extension
from warden.store.interaction import run_interaction
from warden.store.tables import BindingTable, plan_upsert

Row = tuple[Any, ...]

# SQLite's default limit on host parameters is 32766 (999 before 3.32).
_CHUNK = 500


def configure_sqlite_connection(connection: sqlite3.Connection) -> None:
    """Set the pragmas every Warden connection uses (WAL, busy timeout, foreign keys)."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.execute("PRAGMA foreign_keys=ON")


def open_sqlite_pool(path: str) -> adbapi.ConnectionPool:
    """
    Open the connection pool for the SQLite database at ``path``.

    Creates the parent directory if needed. One connection, usable from the pool's
    thread, in WAL mode with ``synchronous=NORMAL``, a 5 s busy timeout and foreign
    keys enforced. The pool connects once the reactor runs; the caller closes it.
    """
    if path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
        "sqlite3",
        path,
        cp_min=1,
        cp_max=1,
        check_same_thread=False,
        cp_openfun=configure_sqlite_connection,
    )


# -- directory ---------------------------------------------------------------

_EXTENSION_COLUMNS = "number, name, realm, ha1_md5, ha1_sha256, algorithms, enabled, qualify"
_INSERT_EXTENSION = (
    f"INSERT INTO extensions ({_EXTENSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_NEW_EXTENSION = (
    f"INSERT OR IGNORE INTO extensions ({_EXTENSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# An existing extension takes every new value (both dialects).
_ON_CONFLICT_UPDATE_EXTENSION = (
    " ON CONFLICT (number) DO UPDATE SET name = excluded.name, realm = excluded.realm,"
    " ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256,"
    " algorithms = excluded.algorithms, enabled = excluded.enabled, qualify = excluded.qualify"
)
_UPSERT_EXTENSION = _INSERT_EXTENSION + _ON_CONFLICT_UPDATE_EXTENSION


def _extension_row(extension: Extension, flag: type = int) -> Row:
    """The row of ``extension``; ``flag`` stores the booleans (``int`` for SQLite,
    ``bool`` for PostgreSQL)."""
    return (
        extension.number,
        extension.name,
        extension.realm,
        extension.ha1_md5,
        extension.ha1_sha256,
        ",".join(extension.algorithms),
        flag(extension.enabled),
        flag(extension.qualify),
    )


def _extension_from_row(row: Row) -> Extension:
    number, name, realm, ha1_md5, ha1_sha256, algorithms, enabled, qualify = row
    return Extension(
        number=number,
        name=name,
        realm=realm,
        ha1_md5=ha1_md5,
        ha1_sha256=ha1_sha256,
        algorithms=tuple(a for a in algorithms.split(",") if a),
        enabled=bool(enabled),
        qualify=bool(qualify),
    )


def _add_extension_txn(txn: adbapi.Transaction, extension: Extension) -> None:
    txn.execute(_INSERT_NEW_EXTENSION, _extension_row(extension))
    if txn.rowcount == 0:
        raise ExtensionExists(extension.number)


def _get_extension_txn(txn: adbapi.Transaction, number: str) -> Extension | None:
    txn.execute(f"SELECT {_EXTENSION_COLUMNS} FROM extensions WHERE number = ?", (number,))
    row = txn.fetchone()
    return None if row is None else _extension_from_row(row)


def _list_extensions_txn(txn: adbapi.Transaction) -> list[Extension]:
    # Shorter numbers first: numeric order for digit strings (see extension_order).
    txn.execute(f"SELECT {_EXTENSION_COLUMNS} FROM extensions ORDER BY length(number), number")
    return [_extension_from_row(row) for row in txn.fetchall()]


def _update_extension_txn(txn: adbapi.Transaction, extension: Extension) -> None:
    number, *rest = _extension_row(extension)
    txn.execute(
        "UPDATE extensions SET name = ?, realm = ?, ha1_md5 = ?, ha1_sha256 = ?,"
        " algorithms = ?, enabled = ?, qualify = ? WHERE number = ?",
        (*rest, number),
    )
    if txn.rowcount == 0:
        raise ExtensionNotFound(extension.number)


def _remove_extension_txn(txn: adbapi.Transaction, number: str) -> bool:
    txn.execute("DELETE FROM extensions WHERE number = ?", (number,))
    return bool(txn.rowcount)


def _upsert_extensions_txn(
    txn: adbapi.Transaction, extensions: list[Extension]
) -> tuple[int, int]:
    # The write lock first: the rows read below cannot change before we write.
    txn.execute("BEGIN IMMEDIATE")
    numbers = sorted({e.number for e in extensions})
    existing: dict[str, Extension] = {}
    for start in range(0, len(numbers), _CHUNK):
        chunk = numbers[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        txn.execute(
            f"SELECT {_EXTENSION_COLUMNS} FROM extensions WHERE number IN ({marks})", chunk
        )
        for row in txn.fetchall():
            existing[row[0]] = _extension_from_row(row)
    added, updated, writes = plan_upsert(existing, extensions)
    txn.executemany(_UPSERT_EXTENSION, [_extension_row(e) for e in writes.values()])
    return added, updated


def _count_extensions_txn(txn: adbapi.Transaction) -> int:
    txn.execute("SELECT count(*) FROM extensions")
    return int(txn.fetchone()[0])


def _data_version_txn(txn: adbapi.Transaction) -> int:
    txn.execute("PRAGMA data_version")
    return int(txn.fetchone()[0])


@implementer(IDirectory)
class SQLiteDirectory:
    """L{IDirectory} in the ``extensions`` table."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def data_version(self) -> Deferred[int]:
        """SQLite's change counter: moves when another connection commits."""
        return run_interaction(self._pool, "data_version", _data_version_txn)

    def add_extension(self, extension: Extension) -> Deferred[None]:
        """Add ``extension``; fail with ExtensionExists if its number is taken."""
        return run_interaction(self._pool, "add_extension", _add_extension_txn, extension)

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        """Fire with the extension for ``number``, or None."""
        return run_interaction(self._pool, "get_extension", _get_extension_txn, number)

    def list_extensions(self) -> Deferred[list[Extension]]:
        """Fire with every extension, ordered by number (shorter numbers first)."""
        return run_interaction(self._pool, "list_extensions", _list_extensions_txn)

    def update_extension(self, extension: Extension) -> Deferred[None]:
        """Replace the extension with the same number; fail if there is none."""
        return run_interaction(self._pool, "update_extension", _update_extension_txn, extension)

    def remove_extension(self, number: str) -> Deferred[bool]:
        """Remove the extension; fire with whether it existed."""
        return run_interaction(self._pool, "remove_extension", _remove_extension_txn, number)

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """Insert or replace many extensions in one transaction; fire with the counts."""
        return run_interaction(
            self._pool, "upsert_extensions", _upsert_extensions_txn, list(extensions)
        )

    def count_extensions(self) -> Deferred[int]:
        """Fire with the number of extensions."""
        return run_interaction(self._pool, "count_extensions", _count_extensions_txn)


# -- location service --------------------------------------------------------

_BINDING_COLUMNS = (
    "aor, key, contact, expires_at, q, call_id, cseq, received, user_agent, node_id, sent_by"
)


def _binding_row(binding: Binding) -> Row:
    return (
        binding.aor,
        binding.key,
        binding.contact,
        binding.expires_at,
        binding.q,
        binding.call_id,
        binding.cseq,
        binding.received,
        binding.user_agent,
        binding.node_id,
        binding.sent_by,
    )


def _binding_from_row(row: Row) -> Binding:
    aor, key, contact, expires_at, q, call_id, cseq, received, user_agent, node_id, sent_by = row
    return Binding(
        aor=aor,
        contact=contact,
        key=key,
        expires_at=float(expires_at),
        q=float(q),
        call_id=call_id,
        cseq=int(cseq),
        received=received,
        user_agent=user_agent,
        node_id=node_id,
        sent_by=sent_by,
    )


def _load_bindings_txn(txn: adbapi.Transaction, now: float) -> list[Binding]:
    txn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
    txn.execute(f"SELECT {_BINDING_COLUMNS} FROM bindings")
    return [_binding_from_row(row) for row in txn.fetchall()]


def _flush_bindings_txn(txn: adbapi.Transaction, rows: dict[str, list[Row]]) -> None:
    txn.executemany("DELETE FROM bindings WHERE aor = ?", [(aor,) for aor in rows])
    txn.executemany(
        f"INSERT INTO bindings ({_BINDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [row for aor_rows in rows.values() for row in aor_rows],
    )


@implementer(ILocationService)
class SQLiteLocationService:
    """
    Bindings in memory, persisted to the ``bindings`` table with group commit.

    Reads answer from memory. A write changes memory at once, marks its AOR
    dirty and returns a Deferred that fires when a transaction rewriting that AOR
    has committed. A flush is scheduled with ``clock.callLater(0, ...)`` when
    something becomes dirty; changes made while a flush runs go into the next
    one, started as soon as the running one ends. A failed flush fails the
    Deferreds waiting on it, keeps its AORs dirty and is retried after
    ``retry_delay`` seconds (or at the next L{flush}).

    Call L{load} once, before the first write.

    Args:
        pool: the connection pool (see L{open_sqlite_pool}).
        clock: the time source, for L{load} and for scheduling flushes.
        retry_delay: seconds to wait before retrying a failed flush.
    """

    _log = Logger()

    def __init__(
        self, pool: adbapi.ConnectionPool, clock: IReactorTime, retry_delay: float = 1.0
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._retry_delay = retry_delay
        self._table = BindingTable()
        self._dirty: set[str] = set()
        # Waiting for the flush that will take the current dirty set.
        self._next_waiters: list[Deferred[None]] = []
        # Waiting for the flush in progress; None when no flush runs.
        self._running: list[Deferred[None]] | None = None
        self._scheduled: IDelayedCall | None = None

    def load(self) -> Deferred[int]:
        """
        Read the unexpired bindings (``expires_at > clock.seconds()``) into memory,
        deleting the expired rows; fire with the number loaded.

        Fails with L{StoreError} once a write has been accepted: loading then would
        replace bindings that are not on disk yet.
        """
        if self._written():
            return defer.fail(StoreError("load() must run before the first write"))
        d = self._load_rows(self._clock.seconds())

        def loaded(bindings: list[Binding]) -> int:
            if self._written():
                raise StoreError("a write was accepted while load() ran")
            self._table.load(bindings)
            return len(bindings)

        return d.addCallback(loaded)

    def _written(self) -> bool:
        return bool(self._dirty) or self._running is not None

    # the two database interactions (another backend overrides these)

    def _load_rows(self, now: float) -> Deferred[list[Binding]]:
        """Delete the rows expired at ``now``; fire with the others."""
        return run_interaction(self._pool, "load_bindings", _load_bindings_txn, now)

    def _write_rows(self, rows: dict[str, list[Row]]) -> Deferred[None]:
        """Replace the stored bindings of each AOR in ``rows`` with its rows."""
        return run_interaction(self._pool, "flush_bindings", _flush_bindings_txn, rows)

    # reads: from memory

    def bindings_for(self, aor: str, now: float) -> Deferred[list[Binding]]:
        """Fire with the unexpired bindings of ``aor``."""
        return defer.succeed(self._table.bindings_for(aor, now))

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        """Fire with every unexpired binding, ordered by AOR then key."""
        return defer.succeed(self._table.all_bindings(now))

    def count(self, now: float) -> Deferred[int]:
        """Fire with the number of unexpired bindings."""
        return defer.succeed(self._table.count(now))

    # writes: memory at once, durable at the next commit

    def apply(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """Remove ``removals`` (keys), then add or replace ``upserts``."""
        try:
            self._table.apply(aor, upserts, removals)
        except ValueError as e:
            return defer.fail(e)
        return self._changed([aor])

    def remove_aor(self, aor: str) -> Deferred[int]:
        """Remove every binding of ``aor``; fire with how many there were."""
        removed = self._table.remove_aor(aor)
        if not removed:
            return defer.succeed(0)
        return self._changed([aor]).addCallback(lambda _: removed)

    def expire(self, now: float) -> Deferred[int]:
        """Remove bindings with ``expires_at <= now``; fire with how many."""
        removed, aors = self._table.expire(now)
        if not removed:
            return defer.succeed(0)
        return self._changed(aors).addCallback(lambda _: removed)

    def flush(self) -> Deferred[None]:
        """
        Fire once everything accepted so far has committed.

        Starts the pending flush now rather than waiting for the scheduled call.
        """
        if self._dirty:
            d: Deferred[None] = Deferred()
            self._next_waiters.append(d)
            if self._running is None:
                self._start_flush()
            return d
        if self._running is not None:
            d = Deferred()
            self._running.append(d)
            return d
        return defer.succeed(None)

    def close(self) -> Deferred[None]:
        """Flush, then cancel any retry, so nothing stays scheduled on the clock."""

        def cancel_retry(result: None | Failure) -> None | Failure:
            self._cancel_scheduled()
            return result

        d = self.flush()
        d.addBoth(cancel_retry)
        return d

    # group commit

    def _changed(self, aors: Iterable[str]) -> Deferred[None]:
        self._dirty.update(aors)
        d: Deferred[None] = Deferred()
        self._next_waiters.append(d)
        if self._running is None and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self._start_flush)
        return d

    def _cancel_scheduled(self) -> None:
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None

    def _start_flush(self) -> None:
        self._cancel_scheduled()
        aors, self._dirty = self._dirty, set()
        self._running, self._next_waiters = self._next_waiters, []
        rows = {aor: [_binding_row(b) for b in self._table.stored(aor)] for aor in aors}
        d = self._write_rows(rows)
        d.addCallbacks(self._flushed, self._flush_failed, errbackArgs=(aors,))
        d.addErrback(lambda f: self._log.failure("bug in the bindings write-behind", f))

    def _finish(self) -> list[Deferred[None]]:
        waiters = self._running or []
        self._running = None
        return waiters

    def _flushed(self, _: None) -> None:
        waiters = self._finish()
        if self._dirty:
            self._start_flush()
        for waiter in waiters:
            waiter.callback(None)

    def _flush_failed(self, reason: Failure, aors: set[str]) -> None:
        waiters = self._finish()
        self._dirty |= aors
        self._log.error(
            "could not persist the bindings of {count} AORs ({error});"
            " keeping them and retrying in {delay} s",
            count=len(aors),
            error=reason.getErrorMessage(),
            delay=self._retry_delay,
        )
        self._scheduled = self._clock.callLater(self._retry_delay, self._start_flush)
        for waiter in waiters:
            waiter.errback(reason)
