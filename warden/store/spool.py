"""
The CDR spool: call records survive a database outage and a crash.

L{SpooledCallRecordStore} wraps any L{ICallRecordStore}. ``add`` first appends
the record as one JSON line to a spool file and then writes it to the inner
store; the line is made durable (``fsync``) at the same time, by a
L{Syncer} that the server runs in a thread and that serves every record
appended while the previous ``fsync`` ran (group commit), so a slow disk never
stalls the reactor. ``add`` fires once the record is stored, or once it is
durable in the spool; a record the inner store refuses stays in the
spool and is retried every ``retry_delay`` seconds until it is accepted.

The file is truncated once nothing in it is pending and at least
``compact_after`` of its lines are stored; also, with nothing pending,
as soon as the store has refused a record since it was last emptied (once
an outage's backlog and whatever came after it are stored), after the
replay at start-up, by L{SpooledCallRecordStore.flush} and at
L{SpooledCallRecordStore.close}.
Under a load that never lets it empty, it is rewritten without the stored
records once they outnumber the pending ones (and number at least
``compact_after``). Stored lines left in it are replayed harmlessly at the
next start. Not truncating after every record keeps the reactor from
waiting on the file while the syncer's ``fsync`` of it is written out.

At start-up L{SpooledCallRecordStore.recover} replays whatever the spool holds: a
crash between the spool write and the database write loses nothing, and since
writing a record is idempotent by call_id, a record stored just before the crash
is not duplicated. A line that cannot be read (a write torn by the crash) is
skipped with a warning and kept in ``<spool>.rejected`` for a human to look at.

Spool format: UTF-8, one JSON object per line (L{CallRecord.to_json_dict}, keys
sorted, ASCII only), each line ending in ``\\n``.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from prometheus_client import Counter, Gauge
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import StoreError
from warden.interfaces import ICallRecordStore
from warden.model import CallRecord

SPOOL_FILENAME = "cdr-spool.jsonl"

SPOOL_DEPTH = Gauge(
    "warden_cdr_spool_depth", "Call records accepted but not yet written to the store"
)
WRITE_FAILURES = Counter(
    "warden_cdr_write_failures_total", "Failed attempts to write a call record to the store"
)
CORRUPT_LINES = Counter(
    "warden_cdr_spool_corrupt_lines_total",
    "Unreadable CDR spool lines skipped at recovery (kept in the .rejected file)",
)


def default_spool_path(data_dir: str) -> str:
    """Where the spool lives: ``<data_dir>/cdr-spool.jsonl``."""
    return os.path.join(data_dir, SPOOL_FILENAME)


def encode_record(record: CallRecord) -> bytes:
    """``record`` as one spool line: a JSON object and ``\\n`` (never another one)."""
    text = json.dumps(record.to_json_dict(), separators=(",", ":"), sort_keys=True)
    return text.encode("ascii") + b"\n"


def decode_line(line: bytes) -> CallRecord:
    """
    The record on one spool line (without its ``\\n``).

    Raises:
        ValueError: not UTF-8 JSON, or not a valid call record.
    """
    try:
        return CallRecord.from_json_dict(json.loads(line.decode("utf-8")))
    except (UnicodeDecodeError, TypeError) as e:
        raise ValueError(str(e)) from None


@attrs.define
class _Entry:
    """One record accepted by ``add`` (or found in the spool) and not yet stored."""

    seq: int
    record: CallRecord
    line: bytes
    spooled: bool
    in_flight: bool = False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


Syncer = Callable[[int], Deferred[None]]
"""``fsync`` a file descriptor, then close it (it is a duplicate made for the call)."""


def fsync_now(fd: int) -> Deferred[None]:
    """A L{Syncer} that syncs in the calling thread (tests, tools)."""
    try:
        os.fsync(fd)
    except OSError as e:
        return defer.fail(e)
    finally:
        os.close(fd)
    return defer.succeed(None)


def fsync_in_thread(reactor: Any) -> Syncer:
    """A L{Syncer} that syncs in ``reactor``'s thread pool, off the reactor thread."""

    def work(fd: int) -> None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(fd: int) -> Deferred[None]:
        d: Deferred[None] = threads.deferToThreadPool(reactor, reactor.getThreadPool(), work, fd)
        return d

    return sync


def _fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(ICallRecordStore)
class SpooledCallRecordStore:
    """
    An L{ICallRecordStore} that loses no record: spool file first, then ``inner``.

    Call L{recover} once, before the first ``add``. ``list`` and ``count`` read
    ``inner``: records still in the spool are not seen until they are stored.

    Args:
        inner: the store that keeps the records (SQLite, PostgreSQL...); its
            ``add`` must be idempotent by call_id.
        clock: schedules the retries.
        spool_path: the spool file, normally L{default_spool_path} of the data
            directory; its directory is created if needed.
        retry_delay: seconds between attempts while ``inner`` refuses records.
        compact_after: truncate the spool once this many of its lines are
            stored and none is pending, or rewrite it once they also outnumber
            the pending ones, if it never empties.
        sync: makes appended lines durable; L{fsync_now} unless given (the
            server passes L{fsync_in_thread}).
    """

    _log = Logger()

    def __init__(
        self,
        inner: ICallRecordStore,
        clock: IReactorTime,
        spool_path: str,
        retry_delay: float = 5.0,
        compact_after: int = 1000,
        sync: Syncer | None = None,
    ) -> None:
        self._inner = inner
        self._clock = clock
        self._path = spool_path
        self._retry_delay = retry_delay
        self._compact_after = compact_after
        self._fd: int | None = None
        self._recovered = False
        self._closed = False
        self._pending: dict[int, _Entry] = {}
        self._seq = 0
        self._done_lines = 0
        #: The spool file's size, as this process wrote it (to undo a torn append).
        self._size = 0
        #: The store refused a record since the spool was last emptied (an outage).
        self._backlog = False
        self._retry: IDelayedCall | None = None
        self._draining = False
        self._rescan = False
        self._flush_waiters: builtins.list[Deferred[None]] = []
        self._sync = sync if sync is not None else fsync_now
        self._unsynced: builtins.list[Deferred[bool]] = []
        self._syncing = False

    @property
    def spool_depth(self) -> int:
        """Records accepted and not yet stored by ``inner`` (the gauge's value)."""
        return len(self._pending)

    # -- ICallRecordStore ----------------------------------------------------------

    def add(self, record: CallRecord) -> Deferred[None]:
        """
        Spool ``record``, then write it to ``inner``.

        Fires with None once ``inner`` has stored it, or, if that first attempt
        fails, as soon as it has failed: the record is safe in the spool and is
        retried until stored. Fails with L{StoreError} only when the record could
        be neither spooled nor stored (it is still retried while the process
        lives), or when L{recover} has not run or L{close} has.
        """
        if not self._recovered or self._closed:
            problem = "closed" if self._closed else "recover() must run before add()"
            return defer.fail(StoreError(f"CDR spool {self._path}: {problem}"))
        line = encode_record(record)
        written = self._append(record, line)
        entry = self._enqueue(record, line, written)
        durable = self._request_sync() if written else defer.succeed(False)
        result: Deferred[None] = Deferred()

        def settled(is_durable: bool) -> None:
            if is_durable:
                result.callback(None)
            else:
                result.errback(
                    StoreError(
                        f"call record {record.call_id} could be neither spooled nor stored;"
                        " it is kept in memory and retried"
                    )
                )

        def first_attempt(stored: bool) -> None:
            if stored:
                result.callback(None)
            else:
                durable.addCallback(settled)

        self._attempt(entry).addCallback(first_attempt)
        return result

    def list(
        self,
        since: float | None = None,
        until: float | None = None,
        extension: str | None = None,
        disposition: str | None = None,
        limit: int = 100,
        after_call_id: str | None = None,
    ) -> Deferred[builtins.list[CallRecord]]:
        """Fire with a page of the records ``inner`` holds."""
        d: Deferred[builtins.list[CallRecord]] = self._inner.list(
            since, until, extension, disposition, limit, after_call_id
        )
        return d

    def count(self) -> Deferred[int]:
        """Fire with the number of records ``inner`` holds."""
        d: Deferred[int] = self._inner.count()
        return d

    def expire_recordings(
        self, before: float, at: float, limit: int = 500
    ) -> Deferred[builtins.list[str]]:
        """Unlink old recordings in ``inner`` (records still spooled are newer)."""
        d: Deferred[builtins.list[str]] = self._inner.expire_recordings(before, at, limit)
        return d

    # -- life cycle ----------------------------------------------------------------

    def recover(self) -> Deferred[int]:
        """
        Open the spool and replay the records it holds into ``inner``.

        Unreadable lines are skipped with a warning, counted in
        ``warden_cdr_spool_corrupt_lines_total`` and appended to
        ``<spool>.rejected``; the spool is rewritten without them. ``add`` may be
        called as soon as this returns. Fires with the number of records found,
        once each has been tried (those ``inner`` refused are retried later: use
        L{flush} to wait for them). Fails with L{StoreError} if the spool cannot
        be read or written, or when called twice.
        """
        if self._recovered:
            return defer.fail(StoreError(f"CDR spool {self._path}: recover() runs once"))
        try:
            found = self._load()
        except OSError as e:
            return defer.fail(StoreError(f"cannot open the CDR spool {self._path}: {e}"))
        self._recovered = True
        for record, line in found:
            self._enqueue(record, line, spooled=True)
        if found:
            self._log.info(
                "replaying {count} call records from the spool {path}",
                count=len(found),
                path=self._path,
            )

        def replayed(_: None) -> int:
            self._truncate_if_settled()
            return len(found)

        return self._drain().addCallback(replayed)

    def flush(self) -> Deferred[None]:
        """
        Fire once every record accepted so far is stored and the spool is empty.

        A retry waiting on the clock starts now. While ``inner`` keeps failing
        this does not fire: at shutdown, bound it (``addTimeout``) and then
        L{close}; what is left stays in the spool for the next start.
        """
        if not self._pending:
            self._truncate_if_settled()
            return defer.succeed(None)

        def cancel(d: Deferred[None]) -> None:
            if d in self._flush_waiters:
                self._flush_waiters.remove(d)

        d: Deferred[None] = Deferred(cancel)
        self._flush_waiters.append(d)
        if self._retry is not None and self._retry.active():
            self._cancel_retry()
            self._retry_now()
        return d

    def close(self) -> None:
        """
        Stop retrying and close the spool file; pending records stay in it.

        Waiting L{flush} Deferreds fail with L{StoreError}; ``add`` fails from now on.
        """
        self._closed = True
        self._cancel_retry()
        if self._fd is not None:
            self._truncate_if_settled()
            os.close(self._fd)
            self._fd = None
        waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            waiter.errback(StoreError(f"CDR spool {self._path} closed with records pending"))

    # -- the spool file --------------------------------------------------------------

    def _load(self) -> builtins.list[tuple[CallRecord, bytes]]:
        os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        try:
            with open(self._path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        found: builtins.list[tuple[CallRecord, bytes]] = []
        rejected: builtins.list[bytes] = []
        lines = data.split(b"\n")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                found.append((decode_line(line), line + b"\n"))
            except ValueError as e:
                torn = lineno == len(lines)
                self._reject(lineno, torn, str(e))
                rejected.append(line + b"\n")
        if rejected:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(self._path + ".rejected", flags, 0o600)
            try:
                _write_all(fd, b"".join(rejected))
                os.fsync(fd)
            finally:
                os.close(fd)
        kept = b"".join(line for _, line in found)
        if kept != data:
            self._rewrite(kept)
        self._fd = self._open()
        return found

    def _reject(self, lineno: int, torn: bool, problem: str) -> None:
        CORRUPT_LINES.inc()
        self._log.warn(
            "skipping unreadable line {lineno} of the CDR spool {path}"
            " ({kind}: {problem}); it is kept in {path}.rejected",
            lineno=lineno,
            path=self._path,
            kind="partial write" if torn else "corrupt",
            problem=problem,
        )

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self._path, flags, 0o600)
        try:
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        return fd

    def _rewrite(self, data: bytes) -> None:
        """Replace the spool with ``data`` atomically and durably, and reopen it."""
        temporary = self._path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._path)
        _fsync_directory(self._path)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._open()

    def _append(self, record: CallRecord, line: bytes) -> bool:
        """Append ``line`` (L{_request_sync} makes it durable); undo a partial write."""
        assert self._fd is not None
        size = self._size
        try:
            _write_all(self._fd, line)
        except OSError as e:
            self._log.error(
                "could not spool call record {call_id} to {path} ({error})",
                call_id=record.call_id,
                path=self._path,
                error=str(e),
            )
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            return False
        self._size = size + len(line)
        return True

    def _request_sync(self) -> Deferred[bool]:
        """Fire with whether the lines appended so far are durable (group commit)."""
        d: Deferred[bool] = Deferred()
        self._unsynced.append(d)
        if not self._syncing:
            self._start_sync()
        return d

    def _start_sync(self) -> None:
        batch, self._unsynced = self._unsynced, []
        if self._fd is None:
            for waiter in batch:
                waiter.callback(False)
            return
        try:
            fd = os.dup(self._fd)
        except OSError as e:
            synced: Deferred[None] = defer.fail(e)
        else:
            self._syncing = True
            synced = self._sync(fd)
        synced.addBoth(self._sync_done, batch)

    def _sync_done(self, result: Failure | None, batch: builtins.list[Deferred[bool]]) -> None:
        self._syncing = False
        if isinstance(result, Failure):
            self._log.error(
                "could not fsync the CDR spool {path} ({error}); {count} call records"
                " are kept in memory until stored",
                path=self._path,
                error=result.getErrorMessage(),
                count=len(batch),
            )
        for d in batch:
            d.callback(result is None)
        if self._unsynced:
            self._start_sync()

    def _truncate_if_settled(self) -> None:
        """Empty the spool when it holds only stored lines (see the module docstring)."""
        if self._fd is None or self._pending or not self._done_lines:
            return
        try:
            # Not fsynced: should the truncation be lost, the replay is harmless.
            os.ftruncate(self._fd, 0)
        except OSError as e:
            self._compact_failed(e)
            return
        self._size = 0
        self._done_lines = 0
        self._backlog = False

    def _compact_failed(self, error: OSError) -> None:
        self._log.error(
            "could not compact the CDR spool {path} ({error});"
            " stored records in it are replayed harmlessly at the next start",
            path=self._path,
            error=str(error),
        )

    def _compact(self) -> None:
        """Drop stored records from the spool (see the module docstring)."""
        if self._fd is None or not self._done_lines:
            return
        if not self._pending:
            if self._done_lines >= self._compact_after or self._backlog:
                self._truncate_if_settled()
            return
        if self._done_lines < max(self._compact_after, len(self._pending)):
            return
        entries = list(self._pending.values())
        try:
            self._rewrite(b"".join(e.line for e in entries))
        except OSError as e:
            self._compact_failed(e)
            return
        for entry in entries:
            entry.spooled = True
        self._done_lines = 0

    # -- writing to the inner store ------------------------------------------------

    def _enqueue(self, record: CallRecord, line: bytes, spooled: bool) -> _Entry:
        self._seq += 1
        entry = _Entry(self._seq, record, line, spooled)
        self._pending[entry.seq] = entry
        SPOOL_DEPTH.set(len(self._pending))
        return entry

    def _attempt(self, entry: _Entry) -> Deferred[bool]:
        """Write one record to ``inner``; fire with whether it was stored."""
        entry.in_flight = True
        d: Deferred[None] = defer.maybeDeferred(self._inner.add, entry.record)

        def stored(_: None) -> bool:
            entry.in_flight = False
            self._stored(entry)
            return True

        def failed(reason: Failure) -> bool:
            entry.in_flight = False
            self._backlog = True
            WRITE_FAILURES.inc()
            self._log.error(
                "could not store call record {call_id} ({error}); it stays in the"
                " spool and is retried in {delay} s",
                call_id=entry.record.call_id,
                error=reason.getErrorMessage(),
                delay=self._retry_delay,
            )
            self._schedule_retry()
            return False

        def bug(reason: Failure) -> bool:
            self._log.failure("bug in the CDR spool", reason)
            return False

        return d.addCallbacks(stored, failed).addErrback(bug)

    def _stored(self, entry: _Entry) -> None:
        if self._pending.pop(entry.seq, None) is None:
            return
        if entry.spooled:
            self._done_lines += 1
        SPOOL_DEPTH.set(len(self._pending))
        self._compact()
        if not self._pending:
            self._cancel_retry()
            if self._flush_waiters:
                self._truncate_if_settled()
            waiters, self._flush_waiters = self._flush_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _schedule_retry(self) -> None:
        if self._closed or (self._retry is not None and self._retry.active()):
            return
        self._retry = self._clock.callLater(self._retry_delay, self._retry_now)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _retry_now(self) -> None:
        self._retry = None
        self._drain().addErrback(lambda f: self._log.failure("bug in the CDR spool", f))

    def _drain(self) -> Deferred[None]:
        """
        Write the pending records to ``inner`` one at a time, oldest first,
        stopping at the first failure (which schedules the next retry).
        """
        if self._draining:
            self._rescan = True
            return defer.succeed(None)
        self._draining = True

        def finished(result: Failure | None) -> Failure | None:
            self._draining = False
            return result

        return Deferred.fromCoroutine(self._drain_passes()).addBoth(finished)

    async def _drain_passes(self) -> None:
        while True:
            self._rescan = False
            if not await self._drain_pass(list(self._pending)):
                return
            if not self._rescan:
                return

    async def _drain_pass(self, seqs: Iterable[int]) -> bool:
        for seq in seqs:
            if self._closed:
                return False
            entry = self._pending.get(seq)
            if entry is None or entry.in_flight:
                continue
            if not await self._attempt(entry):
                return False
        return True
