"""
Registrar bindings in SQL (the ``bindings`` table of SQLite or PostgreSQL):
``SQLLocationService`` keeps them in memory (the read path) and persists them
behind the scenes with group commit: every change waits for the next
transaction that rewrites its AOR, and changes that arrive while one
transaction runs share the next. Transactions start at most once per
``FLUSH_INTERVAL`` (5 ms): under load each carries every change of those
milliseconds instead of one or two REGISTERs.

Bindings survive a restart of the node. In PostgreSQL they are not shared
between nodes: a cluster keeps bindings in its shared state backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import StoreError
from warden.interfaces import IDurableLocation
from warden.model import Binding
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool
from warden.store.tables import BindingTable

__all__ = ["SQLLocationService"]

Row = tuple[Any, ...]

#: Seconds between the starts of two write-behind transactions, at least. A
#: transaction with its hop to the database thread and back costs more CPU
#: than the rest of a REGISTER: at a few hundred REGISTERs/s, one each made
#: registrations about a fifth dearer (docs/PERFORMANCE.md). Nothing is
#: acknowledged before its transaction commits, so this only delays 200 OKs,
#: by 5 ms at most; when nothing was written in the last interval a change is
#: written at once.
FLUSH_INTERVAL = 0.005

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


async def _load_bindings_txn(cursor: Cursor, now: float) -> list[Binding]:
    await cursor.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
    await cursor.execute(f"SELECT {_BINDING_COLUMNS} FROM bindings")
    return [_binding_from_row(row) for row in cursor.fetchall()]


async def _flush_bindings_txn(cursor: Cursor, rows: dict[str, list[Row]]) -> None:
    await cursor.delete_keys("bindings", "aor", list(rows))
    await cursor.insert_rows(
        f"INSERT INTO bindings ({_BINDING_COLUMNS})",
        [row for aor_rows in rows.values() for row in aor_rows],
    )


@implementer(IDurableLocation)
class SQLLocationService:
    """
    Bindings in memory, persisted to the ``bindings`` table with group commit.

    Reads answer from memory. A write changes memory at once, marks its AOR
    dirty and returns a Deferred that fires when a transaction rewriting that AOR
    has committed (the durability a REGISTER's 200 OK waits for is unchanged).
    A flush is scheduled when something becomes dirty, with
    ``clock.callLater`` at ``flush_interval`` seconds after the start of the
    last flush (at once when that is past); changes made while a flush runs go
    into the next one, started when the running one ends, or at that time
    when later. A failed flush fails the Deferreds waiting on it, keeps its
    AORs dirty and is retried after ``retry_delay`` seconds (or at the next
    L{flush}).

    Call L{load} once, before the first write.

    Args:
        pool: the SQLite (L{warden.store.sqlite.open_sqlite_pool}) or
            PostgreSQL connection pool.
        clock: the time source, for L{load} and for scheduling flushes.
        retry_delay: seconds to wait before retrying a failed flush.
        flush_interval: seconds between the starts of two flushes, at least
            (L{flush} does not wait for it).
    """

    _log = Logger()

    def __init__(
        self,
        pool: adbapi.ConnectionPool | PostgreSQLPool,
        clock: IReactorTime,
        retry_delay: float = 1.0,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._db = database(pool)
        self._clock = clock
        self._retry_delay = retry_delay
        self._flush_interval = flush_interval
        # When the last flush started (None: none yet).
        self._last_flush_at: float | None = None
        # A flush() caller waits for the next flush: it starts without the interval.
        self._flush_now = False
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

    # the two database interactions

    def _load_rows(self, now: float) -> Deferred[list[Binding]]:
        """Delete the rows expired at ``now``; fire with the others."""
        return self._db.run("load_bindings", _load_bindings_txn, now)

    def _write_rows(self, rows: dict[str, list[Row]]) -> Deferred[None]:
        """Replace the stored bindings of each AOR in ``rows`` with its rows."""
        return self._db.run("flush_bindings", _flush_bindings_txn, rows)

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
            else:
                self._flush_now = True
            return d
        if self._running is not None:
            d = Deferred()
            self._running.append(d)
            return d
        return defer.succeed(None)

    def close(self) -> Deferred[None]:
        """Flush, then cancel any retry, so nothing stays scheduled on the clock."""

        def cancel_retry(result: Failure | None) -> Failure | None:
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
            self._scheduled = self._clock.callLater(self._flush_delay(), self._start_flush)
        return d

    def _flush_delay(self) -> float:
        """Seconds until the next flush may start (``flush_interval`` after the last)."""
        if self._last_flush_at is None:
            return 0.0
        return max(0.0, self._last_flush_at + self._flush_interval - self._clock.seconds())

    def _cancel_scheduled(self) -> None:
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None

    def _start_flush(self) -> None:
        self._cancel_scheduled()
        self._last_flush_at = self._clock.seconds()
        self._flush_now = False
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
            delay = 0.0 if self._flush_now else self._flush_delay()
            if delay > 0.0:
                self._scheduled = self._clock.callLater(delay, self._start_flush)
            else:
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
