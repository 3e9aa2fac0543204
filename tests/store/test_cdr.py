"""
Call records and live calls: the value objects, and the SQLite stores on a real
``adbapi`` pool (conformance) and on ``SyncPool`` (named interactions, indexes,
constraints).
"""

from __future__ import annotations

import math
import os
import sqlite3
from typing import Any

import attrs
from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import (
    CallRecordStoreConformanceMixin,
    LiveCallsConformanceMixin,
    call_record,
    live_call,
)
from tests.store.syncpool import SyncPool
from tests.store.test_sqlite import _PoolMixin, close_pool
from warden.interfaces import ICallRecordStore, ILiveCalls
from warden.model import CallRecord, LiveCall
from warden.store.cdr import SQLCallRecordStore, SQLLiveCalls, _list_call_records_txn
from warden.store.dialect import sqlite_interaction
from warden.store.migrate import apply_migrations
from warden.store.sqlite import open_sqlite_pool


class CallRecordModelTests(SynchronousTestCase):
    """CallRecord and LiveCall validate their fields and derive durations."""

    def test_duration_and_billsec(self) -> None:
        """duration runs from start to end, billsec from answer to end."""
        record = call_record("c1", 1000.0, answered_at=1004.5, ended_at=1064.75)
        self.assertEqual((record.duration, record.billsec), (64.75, 60.25))

    def test_unanswered_billsec(self) -> None:
        """An unanswered call bills 0 seconds but still has a duration."""
        record = call_record("c1", 1000.0, answered_at=None, ended_at=1030.0)
        self.assertEqual((record.duration, record.billsec), (30.0, 0.0))

    def test_clock_stepping_back(self) -> None:
        """An end before the start (clock stepped back) gives 0, never a negative."""
        record = call_record("c1", 1000.0, answered_at=1001.0, ended_at=999.0)
        self.assertEqual((record.duration, record.billsec), (0.0, 0.0))

    def test_times_are_floats(self) -> None:
        """Integer times are kept as floats."""
        record = call_record("c1", 1000, answered_at=1001, ended_at=1002)
        self.assertEqual(
            [type(t) for t in (record.started_at, record.answered_at, record.ended_at)],
            [float] * 3,
        )

    def test_bad_disposition_and_side(self) -> None:
        """disposition, hangup_side and a live call's state are checked against their sets."""
        self.assertRaises(ValueError, call_record, "c1", 1.0, disposition="answered")
        self.assertRaises(ValueError, call_record, "c1", 1.0, hangup_side="both")
        self.assertRaises(ValueError, live_call, "c1", 1.0, state="talking")

    def test_dispositions(self) -> None:
        """Every documented disposition is accepted."""
        for disposition in ["ANSWERED", "BUSY", "NO ANSWER", "FAILED", "CANCELLED"]:
            self.assertEqual(
                call_record("c", 1.0, disposition=disposition).disposition, disposition
            )

    def test_media_normalised_to_json(self) -> None:
        """media becomes what JSON gives back: tuples turn into lists, keys into strings."""
        record = call_record("c1", 1.0, media={"a": {"peer": ("192.0.2.1", 4000), 1: 2}})
        self.assertEqual(record.media, {"a": {"peer": ["192.0.2.1", 4000], "1": 2}})

    def test_media_must_be_json(self) -> None:
        """media that JSON cannot hold is refused at construction."""
        self.assertRaises(TypeError, call_record, "c1", 1.0, media={"a": object()})
        self.assertRaises(ValueError, call_record, "c1", 1.0, media={"jitter": math.nan})
        self.assertRaises(TypeError, call_record, "c1", 1.0, media=[1, 2])

    def test_wrong_types(self) -> None:
        """A string field given something else is refused."""
        self.assertRaises(TypeError, call_record, 42, 1.0)
        self.assertRaises(TypeError, call_record, "c1", 1.0, caller=None)

    def test_json_round_trip(self) -> None:
        """from_json_dict(to_json_dict()) gives the record back; an unknown or missing
        field is refused."""
        record = call_record("c1", 1.5, answered_at=None, disposition="CANCELLED")
        data = record.to_json_dict()
        self.assertEqual(CallRecord.from_json_dict(data), record)
        self.assertRaises(TypeError, CallRecord.from_json_dict, {**data, "extra": 1})
        del data["caller"]
        self.assertRaises(TypeError, CallRecord.from_json_dict, data)
        self.assertRaises(TypeError, CallRecord.from_json_dict, [1])

    def test_hashable(self) -> None:
        """Records can go in sets despite their media dict."""
        self.assertEqual(len({call_record("c1", 1.0), call_record("c1", 1.0)}), 1)

    def test_live_call_defaults(self) -> None:
        """A LiveCall needs only who, what and when."""
        call = LiveCall("c1", "100", "", "200", "ringing", 5)
        self.assertEqual((call.answered_at, call.packets, call.started_at), (None, 0, 5.0))
        self.assertEqual(attrs.evolve(call, packets=3).packets, 3)


class SQLiteCallRecordStoreConformanceTests(_PoolMixin, CallRecordStoreConformanceMixin, TestCase):
    """SQLCallRecordStore against the ICallRecordStore conformance suite."""

    def make_store(self) -> Deferred[SQLCallRecordStore]:
        async def make() -> SQLCallRecordStore:
            return SQLCallRecordStore(await self.open_pool())

        return Deferred.fromCoroutine(make())


class SQLiteLiveCallsConformanceTests(_PoolMixin, LiveCallsConformanceMixin, TestCase):
    """SQLLiveCalls against the ILiveCalls conformance suite."""

    def make_store(self) -> Deferred[SQLLiveCalls]:
        async def make() -> SQLLiveCalls:
            return SQLLiveCalls(await self.open_pool())

        return Deferred.fromCoroutine(make())


class SQLiteCallsPersistenceTests(_PoolMixin, TestCase):
    """What the call stores keep across reopening the database."""

    def test_provides_interfaces(self) -> None:
        """The SQLite call stores provide their interfaces completely."""
        pool = open_sqlite_pool(os.path.join(self.mktemp(), "warden.db"))
        self.addCleanup(close_pool, pool)
        self.assertTrue(verifyObject(ICallRecordStore, SQLCallRecordStore(pool)))
        self.assertTrue(verifyObject(ILiveCalls, SQLLiveCalls(pool)))

    async def test_survive_reopen(self) -> None:
        """Records and live calls are on disk: a new pool on the file sees them."""
        path = os.path.join(self.mktemp(), "warden.db")
        record, call = call_record("c1", 1000.0), live_call("c2", 1001.0)
        pool = await self.open_pool(path)
        await SQLCallRecordStore(pool).add(record)
        await SQLLiveCalls(pool).publish(call)
        pool.close()
        pool = await self.open_pool(path)
        self.assertEqual(await SQLCallRecordStore(pool).list(), [record])
        self.assertEqual(await SQLLiveCalls(pool).list(), [call])


def _sample(interaction: str) -> float:
    value = REGISTRY.get_sample_value(
        "warden_store_interactions_total", {"interaction": interaction, "outcome": "ok"}
    )
    return value or 0.0


class SQLiteCallsDetailTests(SynchronousTestCase):
    """Named interactions, the schema and its indexes, on SyncPool."""

    def setUp(self) -> None:
        self.pool = SyncPool()
        self.addCleanup(self.pool.close)
        self.successResultOf(apply_migrations(self.pool))  # type: ignore[arg-type]
        self.pool.interactions.clear()
        self.records = SQLCallRecordStore(self.pool)  # type: ignore[arg-type]
        self.live = SQLLiveCalls(self.pool)  # type: ignore[arg-type]

    def test_one_named_interaction_per_method(self) -> None:
        """Each method runs exactly one interaction, counted under its name."""
        calls: list[tuple[str, Any]] = [
            ("add_call_record", lambda: self.records.add(call_record("c1", 1.0))),
            ("list_call_records", lambda: self.records.list(after_call_id="c1")),
            ("count_call_records", self.records.count),
            ("publish_live_call", lambda: self.live.publish(live_call("c1", 1.0))),
            ("list_live_calls", self.live.list),
            ("remove_live_call", lambda: self.live.remove("c1")),
            ("clear_node_live_calls", lambda: self.live.clear_node("n")),
        ]
        for name, call in calls:
            before = _sample(name)
            self.pool.interactions.clear()
            self.successResultOf(call())
            self.assertEqual(len(self.pool.interactions), 1, name)
            self.assertEqual(_sample(name), before + 1, name)

    def test_tables_and_indexes(self) -> None:
        """0002_calls creates both tables and the indexes on started_at, caller,
        callee and dialled."""
        names = {row[0] for row in self.pool.query("SELECT name FROM sqlite_master")}
        expected = {
            "call_records",
            "live_calls",
            "call_records_started_at",
            "call_records_caller",
            "call_records_callee",
            "call_records_dialled",
            "live_calls_node_id",
        }
        self.assertTrue(expected <= names, expected - names)

    def plan(self, **filters: Any) -> list[str]:
        """The query plan lines of the list query with these filters."""
        captured: list[tuple[str, tuple[Any, ...]]] = []

        class Recorder:
            def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
                captured.append((sql, params))

            def fetchall(self) -> list[Any]:
                return []

            def fetchone(self) -> tuple[float]:
                return (1.0,)

        args = [filters.get(k) for k in ("since", "until", "extension", "disposition")]
        list_txn = sqlite_interaction(_list_call_records_txn)
        list_txn(Recorder(), *args, 100, filters.get("after_call_id"))
        sql, params = captured[-1]
        return [row[-1] for row in self.pool.query(f"EXPLAIN QUERY PLAN {sql}", *params)]

    def test_queries_use_indexes(self) -> None:
        """Listing by time, by cursor and by extension reads call_records through
        an index (searching it when there is a bound), never a bare table scan;
        the extension filter searches the caller, callee and dialled indexes."""
        cases: list[dict[str, Any]] = [
            {},
            {"since": 5.0, "until": 9.0},
            {"after_call_id": "c1"},
            {"extension": "100", "since": 5.0},
            {"extension": "100", "after_call_id": "c1"},
        ]
        for filters in cases:
            plan = self.plan(**filters)
            table = [line for line in plan if "call_records" in line]
            self.assertTrue(table, plan)
            for line in table:
                self.assertIn("USING INDEX", line, (filters, plan))
            if filters:
                self.assertTrue(all(line.startswith("SEARCH") for line in table), plan)
        extension_plan = " ".join(self.plan(extension="100"))
        for index in ["call_records_caller", "call_records_callee", "call_records_dialled"]:
            self.assertIn(index, extension_plan)

    def test_constraints(self) -> None:
        """The schema itself refuses a disposition or side outside the sets."""
        row = (
            "c1", "1", "", "", "2", 1.0, None, 2.0, "LOST", "", "caller", "", "{}", "", "", "{}"
        )  # fmt: skip
        self.assertRaises(
            sqlite3.IntegrityError,
            self.pool.connection.execute,
            "INSERT INTO call_records (call_id, caller, caller_name, callee, dialled, started_at,"
            " answered_at, ended_at, disposition, hangup_cause, hangup_side, codec, media,"
            " node_id, recording, recording_info)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def test_media_stored_as_json_text(self) -> None:
        """media is one JSON text column, keys sorted."""
        self.successResultOf(self.records.add(call_record("c1", 1.0, media={"b": 1, "a": [2]})))
        self.assertEqual(self.pool.query("SELECT media FROM call_records"), [('{"a":[2],"b":1}',)])
