"""
Conformance suites for the store interfaces.

One mixin per interface, run against every implementation (memory fakes, SQLite,
the directory snapshot, the CDR spool): a subclass mixes it into a trial ``TestCase`` and defines
``make_store()``, returning the store or a Deferred that fires with it. Tests are
coroutines, so stores whose Deferreds fire later (SQLite's thread pool) run the
same checks as the memory fakes.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from warden.errors import CallRecordNotFound, ExtensionExists, ExtensionNotFound
from warden.interfaces import IDurableLocation
from warden.model import Binding, CallRecord, Extension, LiveCall
from warden.store.credentials import make_extension


def extension(number: str, name: str = "", password: str = "secret", **kw: Any) -> Extension:
    """An extension with HA1 values over ``number:test.example:password``."""
    return make_extension(number, name, "test.example", password, **kw)


def binding(aor: str, key: str, expires_at: float, **kw: Any) -> Binding:
    """A binding of ``aor`` whose contact is ``sip:<key>@192.0.2.1``."""
    return Binding(aor=aor, contact=f"sip:{key}@192.0.2.1", key=key, expires_at=expires_at, **kw)


def by_key(bindings: list[Binding]) -> list[Binding]:
    """``bindings`` sorted by AOR then key (the order of bindings_for is not specified)."""
    return sorted(bindings, key=lambda b: (b.aor, b.key))


class DirectoryConformanceMixin:
    """
    The behaviour every L{warden.interfaces.IDirectory} must have.

    Subclasses define ``make_store()`` (store or Deferred of store).
    """

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        return await defer.maybeDeferred(self.make_store)

    async def test_get_missing(self) -> None:
        """get_extension fires with None for a number that was never added."""
        directory = await self.store()
        self.assertIsNone(await directory.get_extension("100"))

    async def test_add_then_get(self) -> None:
        """An added extension comes back from get_extension, every field intact."""
        directory = await self.store()
        ext = extension("100", "Front Desk", algorithms=("SHA-256", "MD5"), enabled=False)
        self.assertIsNone(await directory.add_extension(ext))
        self.assertEqual(await directory.get_extension("100"), ext)

    async def test_flags_round_trip(self) -> None:
        """enabled, qualify, per-extension algorithms and ring timeout are stored as given."""
        directory = await self.store()
        ext = attrs.evolve(
            extension("1001"), enabled=False, qualify=True, algorithms=("SHA-256",),
            ring_timeout=12.5,
        )  # fmt: skip
        await directory.add_extension(ext)
        self.assertEqual(await directory.get_extension("1001"), ext)

    async def test_add_duplicate(self) -> None:
        """Adding a taken number fails with ExtensionExists and keeps the first one."""
        directory = await self.store()
        first = extension("100", "First")
        await directory.add_extension(first)
        with self.assertRaises(ExtensionExists):
            await directory.add_extension(extension("100", "Second"))
        self.assertEqual(await directory.get_extension("100"), first)

    async def test_list_empty(self) -> None:
        """An empty directory lists nothing and counts zero."""
        directory = await self.store()
        self.assertEqual(await directory.list_extensions(), [])
        self.assertEqual(await directory.count_extensions(), 0)

    async def test_list_order(self) -> None:
        """list_extensions orders by number, shorter numbers first (9 < 10 < 100)."""
        directory = await self.store()
        for number in ["200", "30", "1000", "100", "31", "9"]:
            await directory.add_extension(extension(number))
        listed = [e.number for e in await directory.list_extensions()]
        self.assertEqual(listed, ["9", "30", "31", "100", "200", "1000"])

    async def test_count(self) -> None:
        """count_extensions counts what was added."""
        directory = await self.store()
        for number in ["100", "101", "102"]:
            await directory.add_extension(extension(number))
        self.assertEqual(await directory.count_extensions(), 3)

    async def test_qualified_numbers(self) -> None:
        """qualified_numbers lists the extensions with qualify on, in list order,
        and follows updates and removals."""
        directory = await self.store()
        self.assertEqual(await directory.qualified_numbers(), [])
        for number in ["200", "30", "1000", "31"]:
            await directory.add_extension(attrs.evolve(extension(number), qualify=number != "31"))
        self.assertEqual(await directory.qualified_numbers(), ["30", "200", "1000"])
        await directory.update_extension(extension("200"))
        await directory.update_extension(attrs.evolve(extension("31"), qualify=True))
        await directory.remove_extension("1000")
        self.assertEqual(await directory.qualified_numbers(), ["30", "31"])

    async def test_update(self) -> None:
        """update_extension replaces every field of the stored extension."""
        directory = await self.store()
        await directory.add_extension(extension("100", "Old"))
        new = extension("100", "New", password="other", algorithms=("MD5",), enabled=False)
        self.assertIsNone(await directory.update_extension(new))
        self.assertEqual(await directory.get_extension("100"), new)

    async def test_update_missing(self) -> None:
        """Updating an unknown number fails with ExtensionNotFound and creates nothing."""
        directory = await self.store()
        with self.assertRaises(ExtensionNotFound):
            await directory.update_extension(extension("100"))
        self.assertIsNone(await directory.get_extension("100"))

    async def test_remove(self) -> None:
        """remove_extension fires True and the extension is gone; others stay."""
        directory = await self.store()
        await directory.add_extension(extension("100"))
        await directory.add_extension(extension("101"))
        self.assertIs(await directory.remove_extension("100"), True)
        self.assertIsNone(await directory.get_extension("100"))
        self.assertEqual([e.number for e in await directory.list_extensions()], ["101"])

    async def test_remove_missing(self) -> None:
        """remove_extension fires False for a number that is not there."""
        directory = await self.store()
        self.assertIs(await directory.remove_extension("100"), False)

    async def test_upsert_counts(self) -> None:
        """upsert_extensions counts new rows as added, changed rows as updated, and
        unchanged rows as neither; the directory then holds the upserted values."""
        directory = await self.store()
        same, old = extension("100", "Same"), extension("101", "Old")
        await directory.add_extension(same)
        await directory.add_extension(old)
        changed, new = extension("101", "Changed"), extension("102", "New")
        self.assertEqual(await directory.upsert_extensions([same, changed, new]), (1, 1))
        self.assertEqual(await directory.list_extensions(), [same, changed, new])

    async def test_upsert_idempotent(self) -> None:
        """Upserting the same list twice changes nothing the second time."""
        directory = await self.store()
        batch = [extension(str(n), f"Phone {n}") for n in range(100, 150)]
        self.assertEqual(await directory.upsert_extensions(batch), (50, 0))
        self.assertEqual(await directory.upsert_extensions(batch), (0, 0))
        self.assertEqual(await directory.list_extensions(), batch)

    async def test_upsert_empty(self) -> None:
        """Upserting nothing fires (0, 0)."""
        directory = await self.store()
        self.assertEqual(await directory.upsert_extensions([]), (0, 0))

    async def test_upsert_repeated_number(self) -> None:
        """A number given twice in one upsert is added then updated; the last copy wins."""
        directory = await self.store()
        first, last = extension("100", "First"), extension("100", "Last")
        self.assertEqual(await directory.upsert_extensions([first, last]), (1, 1))
        self.assertEqual(await directory.get_extension("100"), last)

    async def test_upsert_changes_password(self) -> None:
        """An upsert with a new password replaces the HA1 values (counted as updated)."""
        directory = await self.store()
        await directory.upsert_extensions([extension("100", password="one")])
        again = extension("100", password="two")
        self.assertEqual(await directory.upsert_extensions([again]), (0, 1))
        self.assertEqual(await directory.get_extension("100"), again)


class LocationServiceConformanceMixin:
    """
    The behaviour every L{warden.interfaces.ILocationService} must have.

    Subclasses define ``make_store()``; it may use ``self.clock`` (a ``Clock``
    made before it is called). Writes are awaited through L{write}, which also
    asks the store to flush, so write-behind stores commit without the clock
    being advanced.
    """

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        self.clock = Clock()
        self.clock.advance(1000)
        return await defer.maybeDeferred(self.make_store)

    async def write(self, store: Any, d: defer.Deferred[Any]) -> Any:
        flushed = store.flush()
        result = await d
        await flushed
        return result

    async def test_durable(self) -> None:
        """It is an IDurableLocation: a new one loads no bindings, and closes."""
        store = await self.store()
        self.assertTrue(verifyObject(IDurableLocation, store))
        self.assertEqual(await store.load(), 0)
        self.assertEqual(await store.count(0.0), 0)
        self.assertIsNone(await store.close())

    async def test_empty(self) -> None:
        """A new location service has no bindings."""
        store = await self.store()
        self.assertEqual(await store.bindings_for("100", 0.0), [])
        self.assertEqual(await store.all_bindings(0.0), [])
        self.assertEqual(await store.count(0.0), 0)

    async def test_apply_adds(self) -> None:
        """apply adds bindings, which bindings_for returns with every field intact."""
        store = await self.store()
        one = binding("100", "a", 2000.0, q=0.5, call_id="c1@x", cseq=7, received="udp:1:2")
        two = binding("100", "b", 2100.0, user_agent="Phone/1", node_id="n1")
        self.assertIsNone(await self.write(store, store.apply("100", [one, two], [])))
        self.assertEqual(by_key(await store.bindings_for("100", 1000.0)), [one, two])

    async def test_apply_replaces_same_key(self) -> None:
        """A binding with a key already bound replaces the old one."""
        store = await self.store()
        await self.write(store, store.apply("100", [binding("100", "a", 2000.0, cseq=1)], []))
        newer = binding("100", "a", 3000.0, cseq=2)
        await self.write(store, store.apply("100", [newer], []))
        self.assertEqual(await store.bindings_for("100", 1000.0), [newer])

    async def test_apply_removes(self) -> None:
        """apply removes the bindings whose keys are listed; unknown keys are ignored."""
        store = await self.store()
        a, b = binding("100", "a", 2000.0), binding("100", "b", 2000.0)
        await self.write(store, store.apply("100", [a, b], []))
        await self.write(store, store.apply("100", [], ["a", "nope"]))
        self.assertEqual(await store.bindings_for("100", 1000.0), [b])

    async def test_apply_removes_then_adds(self) -> None:
        """Removals apply before upserts, in one step: a key in both ends up bound."""
        store = await self.store()
        await self.write(store, store.apply("100", [binding("100", "a", 2000.0)], []))
        c, a = binding("100", "c", 2000.0), binding("100", "a", 2500.0)
        await self.write(store, store.apply("100", [c, a], ["a"]))
        self.assertEqual(by_key(await store.bindings_for("100", 1000.0)), [a, c])

    async def test_apply_wrong_aor(self) -> None:
        """apply fails with ValueError for a binding of another AOR and changes nothing."""
        store = await self.store()
        with self.assertRaises(ValueError):
            await store.apply(
                "100", [binding("100", "a", 2000.0), binding("200", "b", 2000.0)], []
            )
        self.assertEqual(await store.count(0.0), 0)

    async def test_aors_are_independent(self) -> None:
        """Changes to one AOR leave the others alone."""
        store = await self.store()
        a, b = binding("100", "a", 2000.0), binding("200", "a", 2000.0)
        await self.write(store, store.apply("100", [a], []))
        await self.write(store, store.apply("200", [b], []))
        await self.write(store, store.apply("100", [], ["a"]))
        self.assertEqual(await store.bindings_for("100", 1000.0), [])
        self.assertEqual(await store.bindings_for("200", 1000.0), [b])

    async def test_expiry_hides_bindings(self) -> None:
        """Reads leave out bindings whose expires_at is not after ``now``, as the clock
        moves up to and past the expiry."""
        store = await self.store()
        await self.write(store, store.apply("100", [binding("100", "a", 1060.0)], []))
        self.clock.advance(59.999)
        now = self.clock.seconds()
        self.assertEqual(len(await store.bindings_for("100", now)), 1)
        self.assertEqual(await store.count(now), 1)
        self.clock.advance(0.001)
        now = self.clock.seconds()
        self.assertEqual(await store.bindings_for("100", now), [])
        self.assertEqual(await store.all_bindings(now), [])
        self.assertEqual(await store.count(now), 0)

    async def test_expire(self) -> None:
        """expire removes bindings with expires_at <= now, fires with how many, and
        keeps the rest."""
        store = await self.store()
        old, edge = binding("100", "old", 1010.0), binding("200", "edge", 1020.0)
        fresh = binding("100", "fresh", 1030.0)
        await self.write(store, store.apply("100", [old, fresh], []))
        await self.write(store, store.apply("200", [edge], []))
        self.clock.advance(20)
        self.assertEqual(await self.write(store, store.expire(self.clock.seconds())), 2)
        self.assertEqual(await store.all_bindings(0.0), [fresh])
        self.assertEqual(await self.write(store, store.expire(self.clock.seconds())), 0)

    async def test_remove_aor(self) -> None:
        """remove_aor removes every binding of the AOR and fires with the number."""
        store = await self.store()
        await self.write(
            store,
            store.apply("100", [binding("100", "a", 2000.0), binding("100", "b", 2000.0)], []),
        )
        other = binding("200", "a", 2000.0)
        await self.write(store, store.apply("200", [other], []))
        self.assertEqual(await self.write(store, store.remove_aor("100")), 2)
        self.assertEqual(await store.all_bindings(1000.0), [other])

    async def test_remove_unknown_aor(self) -> None:
        """remove_aor of an AOR without bindings fires with 0."""
        store = await self.store()
        self.assertEqual(await self.write(store, store.remove_aor("100")), 0)

    async def test_all_bindings_and_count(self) -> None:
        """all_bindings lists every unexpired binding by AOR (numeric) then key;
        count counts them."""
        store = await self.store()
        b100 = [binding("100", "b", 2000.0), binding("100", "a", 2000.0)]
        b20 = [binding("20", "z", 2000.0), binding("20", "gone", 1000.0)]
        await self.write(store, store.apply("100", b100, []))
        await self.write(store, store.apply("20", b20, []))
        now = self.clock.seconds()
        self.assertEqual(await store.all_bindings(now), [b20[0], b100[1], b100[0]])
        self.assertEqual(await store.count(now), 3)

    async def test_flush(self) -> None:
        """flush fires, with or without pending changes."""
        store = await self.store()
        self.assertIsNone(await store.flush())
        d = store.apply("100", [binding("100", "a", 2000.0)], [])
        self.assertIsNone(await store.flush())
        self.assertIsNone(await d)


def call_record(call_id: str, started_at: float, **kw: Any) -> CallRecord:
    """An answered call from 100 to 200 that lasted 60 s, with fields overridable."""
    fields: dict[str, Any] = {
        "caller": "100",
        "caller_name": "Front Desk",
        "callee": "200",
        "dialled": "200",
        "answered_at": started_at + 5.0,
        "ended_at": started_at + 65.0,
        "disposition": "ANSWERED",
        "hangup_cause": "BYE",
        "hangup_side": "caller",
        "codec": "PCMU",
        "media": {"a": {"packets_in": 3000, "jitter_ms": 1.25}, "b": {"packets_in": 2990}},
        "node_id": "node-1",
    }
    fields.update(kw)
    return CallRecord(call_id=call_id, started_at=started_at, **fields)


def live_call(call_id: str, started_at: float, **kw: Any) -> LiveCall:
    """A ringing call from 100 to 200 on node-1, with fields overridable."""
    fields: dict[str, Any] = {
        "caller": "100",
        "callee": "200",
        "dialled": "200",
        "state": "ringing",
        "node_id": "node-1",
        "updated_at": started_at,
    }
    fields.update(kw)
    return LiveCall(call_id=call_id, started_at=started_at, **fields)


class CallRecordStoreConformanceMixin:
    """
    The behaviour every L{warden.interfaces.ICallRecordStore} must have.

    Subclasses define ``make_store()`` (store or Deferred of store).
    """

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        return await defer.maybeDeferred(self.make_store)

    async def add_all(self, store: Any, records: list[CallRecord]) -> None:
        for record in records:
            self.assertIsNone(await store.add(record))

    async def test_empty(self) -> None:
        """A new store lists nothing and counts zero."""
        store = await self.store()
        self.assertEqual(await store.list(), [])
        self.assertEqual(await store.count(), 0)

    async def test_add_then_list(self) -> None:
        """Added records come back from list with every field intact: a missing
        answer stays None, media keeps nested values, unicode survives."""
        store = await self.store()
        answered = call_record(
            "c1",
            1000.25,
            caller_name="Zoë «Desk»",
            media={"a": {"packets_in": 7, "loss": 0.5, "peer": ["192.0.2.1", 4000]}},
        )
        unanswered = call_record(
            "c2",
            1001.5,
            callee="",
            answered_at=None,
            disposition="NO ANSWER",
            hangup_cause="408",
            hangup_side="system",
            codec="",
            media={},
        )
        await self.add_all(store, [answered, unanswered])
        self.assertEqual(await store.list(), [answered, unanswered])
        self.assertEqual(await store.count(), 2)

    async def test_add_idempotent(self) -> None:
        """Adding a record whose call_id is stored succeeds and changes nothing:
        the first record stays, counted once."""
        store = await self.store()
        first = call_record("c1", 1000.0)
        await store.add(first)
        self.assertIsNone(await store.add(call_record("c1", 2000.0, caller="999")))
        self.assertIsNone(await store.add(first))
        self.assertEqual(await store.list(), [first])
        self.assertEqual(await store.count(), 1)

    async def test_order(self) -> None:
        """list orders by started_at, then call_id for calls that started together."""
        store = await self.store()
        records = [
            call_record("b", 1000.0),
            call_record("z", 900.0),
            call_record("a", 1000.0),
            call_record("c", 1000.5),
        ]
        await self.add_all(store, records)
        self.assertEqual([r.call_id for r in await store.list()], ["z", "a", "b", "c"])

    async def test_since_until(self) -> None:
        """since is inclusive and until exclusive, both on started_at."""
        store = await self.store()
        await self.add_all(store, [call_record(f"c{n}", 1000.0 + n) for n in range(5)])
        listed = await store.list(since=1001.0, until=1003.0)
        self.assertEqual([r.call_id for r in listed], ["c1", "c2"])
        self.assertEqual([r.call_id for r in await store.list(since=1003.5)], ["c4"])
        self.assertEqual([r.call_id for r in await store.list(until=1000.5)], ["c0"])

    async def test_extension_filter(self) -> None:
        """extension matches the caller, the callee or the number dialled."""
        store = await self.store()
        await self.add_all(
            store,
            [
                call_record("from", 1.0, caller="300", callee="400", dialled="400"),
                call_record("to", 2.0, caller="400", callee="300", dialled="300"),
                call_record("missed", 3.0, caller="400", callee="", dialled="300"),
                call_record("other", 4.0, caller="400", callee="500", dialled="500"),
            ],
        )
        listed = await store.list(extension="300")
        self.assertEqual([r.call_id for r in listed], ["from", "to", "missed"])
        self.assertEqual(await store.list(extension="30"), [])

    async def test_disposition_filter(self) -> None:
        """disposition keeps only records with that disposition; filters combine."""
        store = await self.store()
        await self.add_all(
            store,
            [
                call_record("ok", 1.0),
                call_record("busy", 2.0, answered_at=None, disposition="BUSY"),
                call_record("busy2", 3.0, answered_at=None, disposition="BUSY", caller="101"),
            ],
        )
        busy = await store.list(disposition="BUSY")
        self.assertEqual([r.call_id for r in busy], ["busy", "busy2"])
        both = await store.list(disposition="BUSY", extension="101")
        self.assertEqual([r.call_id for r in both], ["busy2"])
        self.assertEqual(await store.list(disposition="FAILED"), [])

    async def test_limit(self) -> None:
        """limit caps the page from the start of the order; 0 lists nothing."""
        store = await self.store()
        await self.add_all(store, [call_record(f"c{n}", 1000.0 + n) for n in range(5)])
        self.assertEqual([r.call_id for r in await store.list(limit=2)], ["c0", "c1"])
        self.assertEqual(await store.list(limit=0), [])
        self.assertEqual(len(await store.list(limit=100)), 5)

    async def test_negative_limit(self) -> None:
        """A negative limit fails with ValueError."""
        store = await self.store()
        with self.assertRaises(ValueError):
            await store.list(limit=-1)

    async def test_recording_round_trip(self) -> None:
        """A record's recording and what is known of it come back intact."""
        store = await self.store()
        info = {"started_at": 1000.5, "trigger": "on_demand", "by": "100"}
        record = call_record("c1", 1000.0, recording="2026/12/05/c1.wav", recording_info=info)
        await self.add_all(store, [record, call_record("c2", 1001.0)])
        self.assertEqual(await store.list(), [record, call_record("c2", 1001.0)])

    async def test_stir_round_trip(self) -> None:
        """A record's STIR/SHAKEN attestation and verification result come back intact."""
        store = await self.store()
        record = call_record("c1", 1000.0, stir_attest="A", stir_verstat="TN-Validation-Passed")
        await self.add_all(store, [record, call_record("c2", 1001.0)])
        listed = await store.list()
        self.assertEqual(listed, [record, call_record("c2", 1001.0)])
        self.assertEqual((listed[1].stir_attest, listed[1].stir_verstat), ("", ""))

    async def test_emergency_round_trip(self) -> None:
        """An emergency call's record says so; others do not."""
        store = await self.store()
        record = attrs.evolve(call_record("c1", 1000.0), dialled="911", emergency=True)
        await self.add_all(store, [record, call_record("c2", 1001.0)])
        listed = await store.list()
        self.assertEqual(listed, [record, call_record("c2", 1001.0)])
        self.assertIs(listed[0].emergency, True)
        self.assertIs(listed[1].emergency, False)

    async def test_expire_recordings(self) -> None:
        """
        The oldest recordings of calls started before the cut-off are
        unlinked, at most ``limit`` at a time; the records keep the rest and
        say when and which file was deleted; newer ones are untouched.
        """
        store = await self.store()
        records = [
            call_record(f"c{n}", 1000.0 + n, recording=f"r/c{n}.wav", recording_info={"n": n})
            for n in range(4)
        ]
        await self.add_all(store, [*records, call_record("plain", 999.0)])
        self.assertEqual(
            await store.expire_recordings(1003.0, 5000.0, limit=2), ["r/c0.wav", "r/c1.wav"]
        )
        self.assertEqual(await store.expire_recordings(1003.0, 5001.0), ["r/c2.wav"])
        self.assertEqual(await store.expire_recordings(1003.0, 5002.0), [])
        stored = {r.call_id: r for r in await store.list()}
        self.assertEqual(stored["c1"].recording, "")
        self.assertEqual(
            stored["c1"].recording_info, {"n": 1, "deleted_at": 5000.0, "file": "r/c1.wav"}
        )
        self.assertEqual(stored["c2"].recording_info["deleted_at"], 5001.0)
        self.assertEqual(stored["c3"], records[3])
        self.assertEqual(stored["c0"].caller, records[0].caller)

    async def test_paging_through_ties(self) -> None:
        """Paging with after_call_id = the last call_id of each page visits every
        record once, in order, even when many calls share a start time."""
        store = await self.store()
        records = [call_record(f"c{n:02d}", 1000.0 + n // 4) for n in range(11)]
        await self.add_all(store, list(reversed(records)))
        seen: list[CallRecord] = []
        cursor = None
        while True:
            page = await store.list(limit=3, after_call_id=cursor)
            seen += page
            if len(page) < 3:
                break
            cursor = page[-1].call_id
        self.assertEqual(seen, records)

    async def test_paging_with_filters(self) -> None:
        """The cursor combines with filters; a cursor naming a record outside the
        filter still marks a position in the order."""
        store = await self.store()
        records = [
            call_record(f"c{n}", 1000.0 + n, caller="100" if n % 2 else "101") for n in range(8)
        ]
        await self.add_all(store, records)
        page = await store.list(extension="100", since=1002.0, limit=2)
        self.assertEqual([r.call_id for r in page], ["c3", "c5"])
        page = await store.list(extension="100", since=1002.0, limit=2, after_call_id="c5")
        self.assertEqual([r.call_id for r in page], ["c7"])
        page = await store.list(extension="100", after_call_id="c4")
        self.assertEqual([r.call_id for r in page], ["c5", "c7"])

    async def test_unknown_cursor(self) -> None:
        """A cursor that names no stored record fails with CallRecordNotFound."""
        store = await self.store()
        await store.add(call_record("c1", 1.0))
        with self.assertRaises(CallRecordNotFound):
            await store.list(after_call_id="nope")

    async def test_count(self) -> None:
        """count counts distinct call_ids."""
        store = await self.store()
        await self.add_all(store, [call_record(f"c{n}", float(n)) for n in range(7)])
        await store.add(call_record("c3", 99.0))
        self.assertEqual(await store.count(), 7)


class LiveCallsConformanceMixin:
    """
    The behaviour every L{warden.interfaces.ILiveCalls} must have.

    Subclasses define ``make_store()`` (store or Deferred of store).
    """

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        return await defer.maybeDeferred(self.make_store)

    async def test_empty(self) -> None:
        """A new store lists no calls."""
        store = await self.store()
        self.assertEqual(await store.list(), [])

    async def test_publish_then_list(self) -> None:
        """Published summaries come back with every field intact."""
        store = await self.store()
        ringing = live_call("c1", 1000.0)
        answered = live_call(
            "c2",
            1000.5,
            state="answered",
            answered_at=1003.25,
            codec="PCMA",
            packets=1234,
            node_id="node-2",
            updated_at=1010.0,
            caller_media="srtp",
            callee_media="rtp",
            caller_signalling="tls",
            callee_signalling="udp",
            recording=True,
        )
        self.assertIsNone(await store.publish(ringing))
        self.assertIsNone(await store.publish(answered))
        self.assertEqual(await store.list(), [ringing, answered])

    async def test_publish_replaces(self) -> None:
        """Publishing a call_id again replaces its summary."""
        store = await self.store()
        await store.publish(live_call("c1", 1000.0))
        held = live_call("c1", 1000.0, state="on hold", answered_at=1002.0, packets=50)
        await store.publish(held)
        self.assertEqual(await store.list(), [held])

    async def test_order(self) -> None:
        """list orders by started_at, then call_id."""
        store = await self.store()
        for call_id, started_at in [("b", 2.0), ("c", 1.0), ("a", 2.0)]:
            await store.publish(live_call(call_id, started_at))
        self.assertEqual([c.call_id for c in await store.list()], ["c", "a", "b"])

    async def test_remove(self) -> None:
        """remove forgets one call; removing an unknown call_id is harmless."""
        store = await self.store()
        await store.publish(live_call("c1", 1.0))
        await store.publish(live_call("c2", 2.0))
        self.assertIsNone(await store.remove("c1"))
        self.assertIsNone(await store.remove("nope"))
        self.assertEqual([c.call_id for c in await store.list()], ["c2"])

    async def test_clear_node(self) -> None:
        """clear_node removes the calls of one node, fires with how many, and
        keeps the other nodes' calls."""
        store = await self.store()
        await store.publish(live_call("c1", 1.0, node_id="node-1"))
        await store.publish(live_call("c2", 2.0, node_id="node-2"))
        await store.publish(live_call("c3", 3.0, node_id="node-1"))
        self.assertEqual(await store.clear_node("node-1"), 2)
        self.assertEqual([c.call_id for c in await store.list()], ["c2"])
        self.assertEqual(await store.clear_node("node-1"), 0)
