"""
SpooledCallRecordStore: conformance over a memory store, and the spool itself:
fsync'd JSON lines, Clock-driven retries, crash recovery without duplicates,
torn and corrupt lines, compaction, flush and close.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import CallRecordStoreConformanceMixin, call_record
from tests.store.test_sqlite import _PoolMixin
from warden.errors import StoreError
from warden.interfaces import ICallRecordStore
from warden.model import CallRecord
from warden.store import spool as spool_module
from warden.store.cdr import SQLCallRecordStore
from warden.store.spool import (
    SpooledCallRecordStore,
    decode_line,
    default_spool_path,
    encode_record,
    fsync_in_thread,
)
from warden.testing import MemoryCallRecordStore


class FlakyStore(MemoryCallRecordStore):
    """A memory store whose next ``failures`` adds fail; it logs every attempt."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.attempts: list[str] = []

    def add(self, record: CallRecord) -> Deferred[None]:
        self.attempts.append(record.call_id)
        if self.failures:
            self.failures -= 1
            return defer.fail(sqlite3.OperationalError("database is locked"))
        return super().add(record)

    def stored(self) -> list[str]:
        return [r.call_id for r in self.list(limit=1000).result]


class HeldStore(MemoryCallRecordStore):
    """A memory store whose adds wait until the test answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[CallRecord, Deferred[None]]] = []

    def add(self, record: CallRecord) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.held.append((record, d))
        return d

    def answer(self, count: int = 1) -> None:
        """Store the oldest ``count`` held records and fire their Deferreds."""
        for _ in range(count):
            record, d = self.held.pop(0)
            super().add(record).chainDeferred(d)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class SpooledConformanceTests(CallRecordStoreConformanceMixin, TestCase):
    """SpooledCallRecordStore over MemoryCallRecordStore against the ICallRecordStore suite."""

    def make_store(self) -> Deferred[SpooledCallRecordStore]:
        store = SpooledCallRecordStore(MemoryCallRecordStore(), Clock(), self.spool_file())
        self.addCleanup(store.close)
        return store.recover().addCallback(lambda _: store)

    def spool_file(self) -> str:
        return default_spool_path(self.mktemp())


class SpooledOverSQLiteConformanceTests(_PoolMixin, CallRecordStoreConformanceMixin, TestCase):
    """The server's arrangement, the spool over SQLite, against the same suite."""

    def make_store(self) -> Deferred[SpooledCallRecordStore]:
        async def make() -> SpooledCallRecordStore:
            inner = SQLCallRecordStore(await self.open_pool())
            store = SpooledCallRecordStore(inner, Clock(), default_spool_path(self.mktemp()))
            self.addCleanup(store.close)
            await store.recover()
            return store

        return Deferred.fromCoroutine(make())


class SpoolTests(SynchronousTestCase):
    """The spool, step by step, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.path = default_spool_path(os.path.abspath(self.mktemp()))
        self.events: list[dict[str, Any]] = []

    def spooled(
        self, inner: ICallRecordStore, recover: bool = True, **kw: Any
    ) -> SpooledCallRecordStore:
        store = SpooledCallRecordStore(inner, self.clock, self.path, **kw)
        store._log = Logger(observer=self.events.append)
        self.addCleanup(store.close)
        if recover:
            self.successResultOf(store.recover())
        return store

    def lines(self) -> list[bytes]:
        with open(self.path, "rb") as f:
            return f.read().splitlines(keepends=True)

    def write_spool(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "wb") as f:
            f.write(data)

    def levels(self) -> list[str]:
        return [e["log_level"].name for e in self.events]

    def test_provides_interface(self) -> None:
        """SpooledCallRecordStore provides ICallRecordStore completely."""
        self.assertTrue(verifyObject(ICallRecordStore, self.spooled(MemoryCallRecordStore())))

    def test_default_path(self) -> None:
        """The spool lives in the data directory as cdr-spool.jsonl."""
        self.assertEqual(default_spool_path("/var/lib/warden"), "/var/lib/warden/cdr-spool.jsonl")

    def test_spooled_and_fsynced_before_store(self) -> None:
        """add writes the record's line and fsyncs the spool before the inner store
        sees the record; its Deferred fires once the store has it, and the spool is
        then empty."""
        fsyncs: list[int] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            fsyncs.append(fd)
            real_fsync(fd)

        inner = HeldStore()
        store = self.spooled(inner)
        self.patch(os, "fsync", fsync)
        record = call_record("c1", 1000.0)
        d = store.add(record)
        self.assertEqual(self.lines(), [encode_record(record)])
        self.assertEqual(len(fsyncs), 1)
        self.assertEqual([r for r, _ in inner.held], [record])
        self.assertNoResult(d)
        self.assertEqual(store.spool_depth, 1)
        inner.answer()
        self.assertIsNone(self.successResultOf(d))
        # The stored line stays until compact_after of them are (or until close).
        self.assertEqual((store.spool_depth, self.lines()), (0, [encode_record(record)]))
        store.close()
        self.assertEqual(self.lines(), [])

    def test_truncated_once_compact_after_stored(self) -> None:
        """With nothing pending, the spool is truncated once compact_after of its
        lines are stored, not after each record: the reactor does not wait on
        the file while the syncer's fsync of it is written out."""
        truncations: list[int] = []
        real_ftruncate = os.ftruncate

        def ftruncate(fd: int, size: int) -> None:
            truncations.append(size)
            real_ftruncate(fd, size)

        self.patch(os, "ftruncate", ftruncate)
        inner = MemoryCallRecordStore()
        store = self.spooled(inner, compact_after=3)
        records = [call_record(f"c{n}", float(n)) for n in range(4)]
        for record in records[:2]:
            self.successResultOf(store.add(record))
        self.assertEqual((truncations, len(self.lines())), ([], 2))
        self.successResultOf(store.add(records[2]))
        self.assertEqual((truncations, self.lines()), ([0], []))
        self.successResultOf(store.add(records[3]))
        self.assertEqual(self.lines(), [encode_record(records[3])])
        self.assertEqual(len(self.successResultOf(inner.list())), 4)

    def test_emptied_once_an_outage_is_over(self) -> None:
        """After the store refused records, the spool is emptied as soon as nothing
        is pending, even when the last record was stored at its first attempt."""
        inner = HeldStore()
        store = self.spooled(inner, retry_delay=1.0)
        store.add(call_record("c1", 1.0))
        inner.held.pop()[1].errback(sqlite3.OperationalError("database is locked"))
        store.add(call_record("c2", 2.0))
        self.clock.advance(1.0)  # the retry of c1 runs while c2's first attempt waits
        self.assertEqual([r.call_id for r, _ in inner.held], ["c2", "c1"])
        record, d = inner.held.pop(1)  # the retry of c1 is stored first
        MemoryCallRecordStore.add(inner, record).chainDeferred(d)
        self.assertEqual((store.spool_depth, len(self.lines())), (1, 2))
        inner.answer()  # then c2, at its first attempt
        self.assertEqual((store.spool_depth, self.lines()), (0, []))
        store.add(call_record("c3", 3.0))
        inner.answer()
        self.assertEqual(len(self.lines()), 1)  # no outage since: kept until compact_after

    def test_stored_lines_replayed_harmlessly(self) -> None:
        """Stored lines a crash left in the spool are replayed at the next start
        without duplicating the records."""
        inner = MemoryCallRecordStore()
        first = self.spooled(inner)
        records = [call_record(f"c{n}", float(n)) for n in range(2)]
        for record in records:
            self.successResultOf(first.add(record))
        self.assertEqual(len(self.lines()), 2)
        second = self.spooled(inner, recover=False)
        self.assertEqual(self.successResultOf(second.recover()), 2)
        self.assertEqual(self.successResultOf(inner.list()), records)

    def test_line_format(self) -> None:
        """Each record is one line: a JSON object of every field, keys sorted, ASCII
        only, ending in a newline; decoding it gives the record back."""
        store = self.spooled(FlakyStore(failures=10))
        records = [
            call_record("c1", 1000.0, caller_name="Zoë\nNewline"),
            call_record("c2", 1001.0, answered_at=None, disposition="BUSY"),
        ]
        for record in records:
            self.successResultOf(store.add(record))
        lines = self.lines()
        self.assertEqual(len(lines), 2)
        for line, record in zip(lines, records):
            self.assertTrue(line.endswith(b"\n"))
            self.assertEqual(line.count(b"\n"), 1)
            self.assertTrue(line.isascii())
            obj = json.loads(line)
            self.assertEqual(obj, record.to_json_dict())
            self.assertEqual(list(obj), sorted(obj))
            self.assertEqual(decode_line(line.rstrip(b"\n")), record)

    def test_recording_in_spool_lines(self) -> None:
        """
        A record's recording and its info travel in the spool line; a line
        written before recordings existed decodes with none.
        """
        record = call_record(
            "r1", 1.0, recording="2026/12/05/r1.wav", recording_info={"trigger": "always"}
        )
        line = encode_record(record).rstrip(b"\n")
        self.assertEqual(json.loads(line)["recording"], "2026/12/05/r1.wav")
        self.assertEqual(decode_line(line), record)
        old = {k: v for k, v in record.to_json_dict().items() if not k.startswith("recording")}
        decoded = decode_line(json.dumps(old).encode())
        self.assertEqual((decoded.recording, decoded.recording_info), ("", {}))

    def test_retries_until_accepted(self) -> None:
        """A store that fails three times: add still fires (the record is spooled),
        an error is logged per failure, retries run every retry_delay seconds on the
        clock (none just before a deadline, one at it), and the fourth attempt
        stores the record exactly once."""
        inner = FlakyStore(failures=3)
        store = self.spooled(inner, retry_delay=4.0)
        failures = _metric("warden_cdr_write_failures_total")
        self.assertIsNone(self.successResultOf(store.add(call_record("c1", 1000.0))))
        self.assertEqual(store.spool_depth, 1)
        self.assertEqual(_metric("warden_cdr_spool_depth"), 1.0)
        for attempts in (1, 2, 3):
            self.assertEqual(len(inner.attempts), attempts)
            self.clock.advance(3.75)
            self.assertEqual(len(inner.attempts), attempts)
            self.clock.advance(0.25)
        self.assertEqual(inner.attempts, ["c1"] * 4)
        self.assertEqual(inner.stored(), ["c1"])
        # A backlog stored in full empties the spool at once.
        self.assertEqual((store.spool_depth, self.lines()), (0, []))
        self.assertEqual(_metric("warden_cdr_spool_depth"), 0.0)
        self.assertEqual(_metric("warden_cdr_write_failures_total"), failures + 3)
        self.assertEqual(self.levels(), ["error"] * 3)
        self.assertIn("database is locked", self.events[0]["error"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backlog_in_order_one_at_a_time(self) -> None:
        """Records refused while the store is down are written oldest first, one
        at a time, when it comes back; a failure stops the round until the next."""
        inner = HeldStore()
        store = self.spooled(inner, retry_delay=2.0)
        for n in range(3):
            store.add(call_record(f"c{n}", 1000.0 + n))
        for _, d in inner.held:
            d.errback(sqlite3.OperationalError("disk I/O error"))
        inner.held.clear()
        self.clock.advance(2.0)
        self.assertEqual([r.call_id for r, _ in inner.held], ["c0"])
        inner.answer()
        self.assertEqual([r.call_id for r, _ in inner.held], ["c1"])
        inner.held.pop(0)[1].errback(sqlite3.OperationalError("disk I/O error"))
        self.assertEqual((inner.held, store.spool_depth), ([], 2))
        self.clock.advance(2.0)
        inner.answer()
        inner.answer()
        self.assertEqual(store.spool_depth, 0)
        self.assertEqual(len(self.successResultOf(inner.list())), 3)

    def test_retry_during_slow_round(self) -> None:
        """A retry that falls due while a round is still writing makes that round
        look again once it is done, so a record refused meanwhile is not stranded."""
        inner = HeldStore()
        store = self.spooled(inner, retry_delay=2.0)
        for n in range(2):
            store.add(call_record(f"c{n}", float(n)))
        for _, d in inner.held:
            d.errback(sqlite3.OperationalError("disk I/O error"))
        inner.held.clear()
        self.clock.advance(2.0)
        self.assertEqual([r.call_id for r, _ in inner.held], ["c0"])
        store.add(call_record("c2", 2.0))
        inner.held.pop()[1].errback(sqlite3.OperationalError("disk I/O error"))
        self.clock.advance(2.0)
        self.assertEqual([r.call_id for r, _ in inner.held], ["c0"])
        inner.answer()
        self.assertEqual([r.call_id for r, _ in inner.held], ["c1"])
        inner.answer()
        self.assertEqual([r.call_id for r, _ in inner.held], ["c2"])
        inner.answer()
        self.assertEqual(store.spool_depth, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_recover_replays_without_duplicates(self) -> None:
        """recover writes every record left in the spool and fires with how many;
        one the store already has (stored just before a crash) is not duplicated."""
        records = [call_record(f"c{n}", 1000.0 + n) for n in range(3)]
        self.write_spool(b"".join(encode_record(r) for r in records))
        inner = FlakyStore()
        self.successResultOf(inner.add(records[0]))
        store = self.spooled(inner, recover=False)
        self.assertEqual(self.successResultOf(store.recover()), 3)
        self.assertEqual(self.successResultOf(inner.list()), records)
        self.assertEqual(self.successResultOf(inner.count()), 3)
        self.assertEqual((store.spool_depth, self.lines()), (0, []))

    def test_crash_between_spool_and_store(self) -> None:
        """A record spooled but never stored (the process died) is stored by the
        next process's recover."""
        first = self.spooled(HeldStore())
        record = call_record("c1", 1000.0)
        first.add(record)
        inner = MemoryCallRecordStore()
        second = self.spooled(inner, recover=False)
        self.assertEqual(self.successResultOf(second.recover()), 1)
        self.assertEqual(self.successResultOf(inner.list()), [record])

    def test_recover_with_store_down(self) -> None:
        """recover fires once every spooled record was tried; those refused are
        retried on the clock, and flush fires when they are stored."""
        self.write_spool(
            encode_record(call_record("c1", 1.0)) + encode_record(call_record("c2", 2.0))
        )
        inner = FlakyStore(failures=1)
        store = self.spooled(inner, recover=False)
        self.assertEqual(self.successResultOf(store.recover()), 2)
        self.assertEqual(store.spool_depth, 2)
        flushed = store.flush()
        self.assertIsNone(self.successResultOf(flushed))
        self.assertEqual(inner.stored(), ["c1", "c2"])

    def test_torn_trailing_line(self) -> None:
        """A partial last line (a write torn by a crash) is skipped with a warning,
        counted, and kept in the .rejected file; the rest is replayed and later
        records append cleanly."""
        good = encode_record(call_record("c1", 1.0))
        torn = encode_record(call_record("c2", 2.0))[:40]
        self.write_spool(good + torn)
        corrupt = _metric("warden_cdr_spool_corrupt_lines_total")
        inner = FlakyStore()
        store = self.spooled(inner, recover=False)
        self.assertEqual(self.successResultOf(store.recover()), 1)
        self.assertEqual(inner.stored(), ["c1"])
        self.assertEqual(self.levels(), ["warn", "info"])
        self.assertEqual((self.events[0]["lineno"], self.events[0]["kind"]), (2, "partial write"))
        self.assertEqual(_metric("warden_cdr_spool_corrupt_lines_total"), corrupt + 1)
        with open(self.path + ".rejected", "rb") as f:
            self.assertEqual(f.read(), torn + b"\n")
        inner.failures = 1
        self.successResultOf(store.add(call_record("c3", 3.0)))
        self.assertEqual([decode_line(line.rstrip()).call_id for line in self.lines()], ["c3"])

    def test_corrupt_middle_line(self) -> None:
        """An unreadable line between good ones (bad JSON, or not a call record) is
        skipped with a warning; the good ones are replayed."""
        lines = [
            encode_record(call_record("c1", 1.0)),
            b"{not json\n",
            b'{"call_id": "x"}\n',
            encode_record(call_record("c2", 2.0)),
        ]
        self.write_spool(b"".join(lines))
        inner = FlakyStore()
        store = self.spooled(inner, recover=False)
        self.assertEqual(self.successResultOf(store.recover()), 2)
        self.assertEqual(inner.stored(), ["c1", "c2"])
        warnings = [e for e in self.events if e["log_level"].name == "warn"]
        self.assertEqual(
            [(e["lineno"], e["kind"]) for e in warnings], [(2, "corrupt"), (3, "corrupt")]
        )

    def test_flush(self) -> None:
        """flush fires at once when nothing is pending; otherwise it starts the
        waiting retry now and fires when the spool is empty."""
        inner = FlakyStore(failures=2)
        store = self.spooled(inner, retry_delay=5.0)
        self.successResultOf(store.flush())
        store.add(call_record("c1", 1.0))
        flushed = store.flush()
        self.assertEqual(len(inner.attempts), 2)
        self.assertNoResult(flushed)
        self.clock.advance(5.0)
        self.assertIsNone(self.successResultOf(flushed))
        self.assertEqual(inner.stored(), ["c1"])

    def test_flush_cancellable(self) -> None:
        """A flush given up on (a shutdown timeout) is cancelled and forgotten."""
        store = self.spooled(FlakyStore(failures=10))
        store.add(call_record("c1", 1.0))
        flushed = store.flush()
        flushed.cancel()
        self.failureResultOf(flushed, defer.CancelledError)
        self.assertEqual(store._flush_waiters, [])

    def test_close_keeps_pending(self) -> None:
        """close stops the retries and fails waiting flushes; the pending record
        stays in the spool for the next start; add then fails."""
        store = self.spooled(FlakyStore(failures=10))
        record = call_record("c1", 1.0)
        store.add(record)
        flushed = store.flush()
        store.close()
        self.failureResultOf(flushed, StoreError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.lines(), [encode_record(record)])
        self.failureResultOf(store.add(call_record("c2", 2.0)), StoreError)
        inner = MemoryCallRecordStore()
        self.assertEqual(self.successResultOf(self.spooled(inner, recover=False).recover()), 1)
        self.assertEqual(self.successResultOf(inner.list()), [record])

    def test_add_before_recover(self) -> None:
        """add before recover fails with StoreError; recover runs once."""
        store = self.spooled(MemoryCallRecordStore(), recover=False)
        self.failureResultOf(store.add(call_record("c1", 1.0)), StoreError)
        self.successResultOf(store.recover())
        self.failureResultOf(store.recover(), StoreError)

    def test_compaction_under_load(self) -> None:
        """A spool that never empties is rewritten without the stored records once
        they reach compact_after and outnumber the pending ones."""
        inner = HeldStore()
        store = self.spooled(inner, compact_after=3)
        records = [call_record(f"c{n}", float(n)) for n in range(5)]
        for record in records:
            store.add(record)
        inner.answer(2)
        self.assertEqual(len(self.lines()), 5)
        inner.answer()
        self.assertEqual(self.lines(), [encode_record(r) for r in records[3:]])
        store.add(call_record("c5", 5.0))
        self.assertEqual(len(self.lines()), 3)
        inner.answer(3)
        self.assertEqual(self.lines(), [])
        self.assertEqual(len(self.successResultOf(inner.list())), 6)

    def test_spool_write_fails(self) -> None:
        """When the spool cannot be written (disk full), the partial line is undone
        and an error logged; add still fires if the store takes the record, and
        fails, while the record is kept and retried, if it does not."""
        inner = FlakyStore()
        store = self.spooled(inner)
        real_write = os.write

        def full(fd: int, data: Any) -> int:
            real_write(fd, bytes(data[:10]))  # a partial line, then the disk is full
            raise OSError(28, "No space left on device")

        self.patch(os, "write", full)
        self.successResultOf(store.add(call_record("c1", 1.0)))
        self.assertEqual(self.lines(), [])
        inner.failures = 1
        self.failureResultOf(store.add(call_record("c2", 2.0)), StoreError)
        self.assertEqual(self.lines(), [])
        self.assertEqual(store.spool_depth, 1)
        self.clock.advance(5.0)
        self.assertEqual(inner.stored(), ["c1", "c2"])
        self.assertEqual(self.levels(), ["error", "error", "error"])

    def test_fsync_fails(self) -> None:
        """A record whose spool line could not be made durable is not reported safe
        while the store refuses it: add fails, the record is kept and retried."""
        inner = FlakyStore(failures=1)
        store = self.spooled(inner)

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        self.patch(os, "fsync", broken)
        self.failureResultOf(store.add(call_record("c1", 1.0)), StoreError)
        self.assertEqual(store.spool_depth, 1)
        self.clock.advance(5.0)
        self.assertEqual(inner.stored(), ["c1"])
        self.assertEqual(store.spool_depth, 0)

    def test_group_commit(self) -> None:
        """Records appended while an fsync runs share the next one: with the syncer
        held, three adds make one pending sync; each add fires only when its line
        is durable (the store refuses them) and the second sync covers two."""
        syncs: list[Deferred[None]] = []

        def held_sync(fd: int) -> Deferred[None]:
            os.close(fd)
            d: Deferred[None] = Deferred()
            syncs.append(d)
            return d

        inner = FlakyStore(failures=10)
        store = self.spooled(inner, sync=held_sync)
        adds = [store.add(call_record(f"c{n}", float(n))) for n in range(3)]
        self.assertEqual(len(syncs), 1)
        for d in adds:
            self.assertNoResult(d)
        syncs[0].callback(None)
        self.successResultOf(adds[0])
        self.assertNoResult(adds[1])
        self.assertEqual(len(syncs), 2)
        syncs[1].callback(None)
        self.successResultOf(adds[1])
        self.successResultOf(adds[2])
        self.assertEqual(len(syncs), 2)

    def test_sync_in_thread(self) -> None:
        """fsync_in_thread runs os.fsync in the reactor's thread pool and closes the
        descriptor it was given."""
        calls: list[Any] = []

        class Reactor:
            def getThreadPool(self) -> str:
                return "pool"

        def defer_to_pool(reactor: Any, pool: Any, f: Any, *args: Any) -> Deferred[None]:
            calls.append(pool)
            f(*args)
            return succeed(None)

        self.patch(spool_module.threads, "deferToThreadPool", defer_to_pool)
        fd = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT, 0o600)
        self.successResultOf(fsync_in_thread(Reactor())(fd))
        self.assertEqual(calls, ["pool"])
        self.assertRaises(OSError, os.fstat, fd)

    def test_creates_directory(self) -> None:
        """recover creates the spool's directory."""
        self.spooled(MemoryCallRecordStore())
        self.assertTrue(os.path.isdir(os.path.dirname(self.path)))
        self.assertEqual(self.lines(), [])
