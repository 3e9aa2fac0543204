"""
L{warden.store.copy.copy_store}: what ``wardenctl migrate-store`` copies and how
it verifies, on memory stores and from SQLite to the throwaway PostgreSQL.
"""

from __future__ import annotations

import os

import attrs
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.store.conformance import call_record, extension
from tests.store.pg import fresh_database
from warden.errors import StoreError
from warden.store.backend import open_stores
from warden.store.copy import BATCH, CopyMismatch, TargetNotEmpty, copy_store
from warden.store.url import parse_store_url
from warden.testing import MemoryCallRecordStore, MemoryDirectory


class _ShrinkingDirectory(MemoryDirectory):
    """A directory that counts none once listed (as if deleted during the copy)."""

    def count_extensions(self) -> Deferred[int]:
        return defer.succeed(0)


class MemoryCopyTests(TestCase):
    """Copying between memory stores."""

    async def test_copies_everything(self) -> None:
        """Every extension (flags and hashes intact) and every record, across pages."""
        source_directory, source_records = MemoryDirectory(), MemoryCallRecordStore()
        extensions = [
            extension("100", "Desk", enabled=False),
            attrs.evolve(extension("101"), qualify=True),
        ]
        await source_directory.upsert_extensions(extensions)
        records = [call_record(f"c{n:05d}", float(n % 7)) for n in range(BATCH + 5)]
        for record in records:
            await source_records.add(record)
        target_directory, target_records = MemoryDirectory(), MemoryCallRecordStore()
        lines: list[str] = []
        report = await copy_store(
            source_directory, source_records, target_directory, target_records,
            progress=lines.append,
        )  # fmt: skip
        self.assertEqual((report.extensions, report.call_records), (2, BATCH + 5))
        self.assertEqual(await target_directory.list_extensions(), extensions)
        self.assertEqual(
            await target_records.list(limit=BATCH * 2), await source_records.list(limit=BATCH * 2)
        )
        self.assertEqual(lines[-1], f"copied {BATCH + 5} call records")

    async def test_refuses_non_empty_target(self) -> None:
        """A target with data is refused and left untouched unless merging."""
        source_directory, source_records = MemoryDirectory(), MemoryCallRecordStore()
        await source_directory.add_extension(extension("100", "New"))
        target_directory, target_records = MemoryDirectory(), MemoryCallRecordStore()
        await target_directory.add_extension(extension("200"))
        with self.assertRaises(TargetNotEmpty):
            await copy_store(source_directory, source_records, target_directory, target_records)
        self.assertEqual(await target_directory.count_extensions(), 1)
        report = await copy_store(
            source_directory, source_records, target_directory, target_records, merge=True
        )
        self.assertEqual((report.extensions, report.target_extensions), (1, 2))

    async def test_verification_fails(self) -> None:
        """When the source's counts change during the copy, it is reported."""
        source_directory = _ShrinkingDirectory()
        await source_directory.add_extension(extension("100"))
        with self.assertRaises(CopyMismatch) as caught:
            await copy_store(
                source_directory,
                MemoryCallRecordStore(),
                MemoryDirectory(),
                MemoryCallRecordStore(),
            )
        self.assertIn("the source changed", str(caught.exception))


class SQLiteToPostgreSQLTests(TestCase):
    """Copying a real SQLite store into a real PostgreSQL one."""

    async def test_sqlite_to_postgresql(self) -> None:
        """Extensions and records written to SQLite come out of PostgreSQL equal."""
        path = os.path.join(os.path.abspath(self.mktemp()), "warden.db")
        source = open_stores(parse_store_url(f"sqlite:{path}"), reactor)
        self.addCleanup(source.close)
        await source.migrate()
        extensions = [extension(str(n), f"User {n}") for n in range(100, 150)]
        await source.directory.upsert_extensions(extensions)
        media = {"a": {"packets_in": 10, "jitter": 0.5}}
        records = [call_record(f"call-{n}", 1000.0 + n, media=media) for n in range(30)]
        for record in records:
            await source.records.add(record)
        target = open_stores(parse_store_url(await fresh_database(self)), reactor)
        self.addCleanup(target.close)
        report = await copy_store(
            source.directory, source.records, target.directory, target.records
        )
        self.assertEqual((report.target_extensions, report.target_call_records), (50, 30))
        self.assertEqual(await target.directory.list_extensions(), extensions)
        self.assertEqual(await target.records.list(), records)
        with self.assertRaises(StoreError):
            await copy_store(source.directory, source.records, target.directory, target.records)
