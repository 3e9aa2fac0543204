"""
Call records pending in the CDR spool: taken into database backups, verified,
restored into the data directory's spool, and replayed into the restored
database by the spool at start-up.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.backup.helpers import (
    check,
    keys_of,
    make_installation,
    manifest_of,
    rewrite_manifest,
)
from tests.store.conformance import call_record
from warden.backup import restore
from warden.backup.backup import BackupSources, create_backup
from warden.backup.database import SQLiteTarget, inspect_sqlite
from warden.backup.manifest import SpoolInfo
from warden.backup.spool import SPOOL_COPY, read_spool, restore_spool
from warden.config import parse_config_text
from warden.errors import StoreError
from warden.model import CallRecord
from warden.store.cdr import SQLCallRecordStore
from warden.store.spool import SpooledCallRecordStore, default_spool_path, encode_record
from warden.store.sqlite import open_sqlite_pool
from warden.testing import MemoryCallRecordStore

NOW = 1_764_100_000.0


class DownStore(MemoryCallRecordStore):
    """A call-record store whose database is down: every add fails."""

    def add(self, record: CallRecord) -> Deferred[None]:
        return defer.fail(StoreError("database is down"))


def pending_in_spool(sources: BackupSources, *records: CallRecord) -> SpooledCallRecordStore:
    """Add ``records`` through Warden's spool while the database refuses them."""
    spool = SpooledCallRecordStore(DownStore(), Clock(), default_spool_path(sources.data_dir))
    spool.recover()
    for record in records:
        spool.add(record)
    return spool


class SpoolBackupTestCase(SynchronousTestCase):
    """An installation (5 CDRs in the database, the newest ended at 1000.0)."""

    def setUp(self) -> None:
        """Config, database, voicemail under a fresh directory."""
        self.root = Path(self.mktemp()).resolve()
        self.root.mkdir()
        self.sources = make_installation(self.root)
        self.backups = self.root / "backups"
        self.spool_path = Path(default_spool_path(self.sources.data_dir))

    def backup(self, kind: str = "database") -> Path:
        return create_backup(self.sources, kind, self.backups, NOW)

    @property
    def manifest_key(self) -> bytes:
        return keys_of(self.sources).for_backup(encrypted=False)

    def spool_pending(self, *records: CallRecord) -> None:
        spool = pending_in_spool(self.sources, *records)
        self.addCleanup(spool.close)
        self.assertEqual(spool.spool_depth, len(records))


class SpoolInBackupTests(SpoolBackupTestCase):
    """What a database backup takes from the spool, and how the manifest counts it."""

    def test_pending_records_in_backup(self) -> None:
        """
        Records the database refused are copied, listed with their SHA-256, counted
        apart from the row counts, and the newest one is the last CDR captured.
        """
        self.spool_pending(call_record("pending-1", 1500.0), call_record("pending-2", 1400.0))
        path = self.backup()
        manifest = manifest_of(path, self.sources)
        assert manifest.database is not None
        self.assertEqual(manifest.database.spool, SpoolInfo(SPOOL_COPY, 2, 1565.0))
        self.assertEqual(manifest.database.row_counts["call_records"], 5)
        self.assertEqual(manifest.database.last_cdr_at, 1565.0)
        self.assertEqual(manifest.newest_data_at, 1565.0)
        self.assertIn(SPOOL_COPY, {f.path for f in manifest.files})
        self.assertEqual((path / SPOOL_COPY).read_bytes(), self.spool_path.read_bytes())
        self.assertEqual(check(path, self.sources)[1], [])
        raw = json.loads((path / "manifest.json").read_text())
        self.assertEqual(raw["database"]["spool"]["records"], 2)

    def test_full_backup_takes_spool_files_backup_does_not(self) -> None:
        """A full backup holds the spool's records; a files backup has no database part."""
        self.spool_pending(call_record("pending-1", 1500.0))
        full = manifest_of(self.backup("full"), self.sources)
        assert full.database is not None
        self.assertEqual(full.database.spool.records, 1)
        files = manifest_of(
            create_backup(self.sources, "files", self.backups, NOW + 1), self.sources
        )
        self.assertIsNone(files.database)
        self.assertNotIn(SPOOL_COPY, {f.path for f in files.files})

    def test_nothing_pending(self) -> None:
        """Without a spool (or an empty one) the manifest counts 0 and there is no copy."""
        manifest = manifest_of(self.backup(), self.sources)
        assert manifest.database is not None
        self.assertEqual(manifest.database.spool, SpoolInfo(None, 0, None))
        self.assertEqual(manifest.database.last_cdr_at, 1000.0)
        self.spool_path.write_bytes(b"")
        path = create_backup(self.sources, "database", self.backups, NOW + 1)
        self.assertFalse((path / SPOOL_COPY).exists())

    def test_stored_and_torn_lines_left_out(self) -> None:
        """
        Lines of records the database copy already holds (not yet compacted away),
        unreadable lines and a line still being appended are not taken.
        """
        stored = call_record("call-0", 900.0)  # make_installation stored call-0
        pending = call_record("pending-1", 1500.0)
        torn = encode_record(call_record("being-written", 1600.0))[:40]
        self.spool_path.write_bytes(
            encode_record(stored) + b"{not json\n" + encode_record(pending) + torn
        )
        self.assertEqual([r.call_id for r, _ in read_spool(self.sources.data_dir)],
                         ["call-0", "pending-1"])  # fmt: skip
        path = self.backup()
        self.assertEqual((path / SPOOL_COPY).read_bytes(), encode_record(pending))
        manifest = manifest_of(path, self.sources)
        assert manifest.database is not None
        self.assertEqual(manifest.database.spool.records, 1)

    def test_older_manifest_reads_as_nothing_pending(self) -> None:
        """A manifest from before the spool was backed up has no spool part: nothing pending."""
        path = self.backup()
        data = json.loads((path / "manifest.json").read_text())
        del data["database"]["spool"]
        rewrite_manifest(path, data, self.manifest_key)
        manifest, problems = check(path, self.sources)
        self.assertEqual(problems, [])
        assert manifest is not None and manifest.database is not None
        self.assertEqual(manifest.database.spool, SpoolInfo())


class SpoolVerifyTests(SpoolBackupTestCase):
    """A damaged spool copy is found by verification, which names it."""

    def setUp(self) -> None:
        """A backup with two pending records."""
        super().setUp()
        self.spool_pending(call_record("pending-1", 1500.0), call_record("pending-2", 1400.0))
        self.path = self.backup()
        self.copy = self.path / SPOOL_COPY

    def test_corrupted(self) -> None:
        """A flipped byte: a SHA-256 mismatch and the line that no longer reads."""
        data = bytearray(self.copy.read_bytes())
        data[0] ^= 0x01  # "{" becomes "z"
        self.copy.write_bytes(bytes(data))
        problems = check(self.path, self.sources)[1]
        self.assertIn(f"{SPOOL_COPY}: SHA-256 mismatch", problems[0])
        self.assertIn(f"{SPOOL_COPY}: line 1 is not a call record", problems[1])

    def test_record_dropped_with_consistent_hash(self) -> None:
        """A copy that lost a record (and whose hash was rewritten) fails the count."""
        from warden.backup.manifest import sha256_file

        self.copy.write_bytes(self.copy.read_bytes().splitlines(keepends=True)[0])
        data = json.loads((self.path / "manifest.json").read_text())
        for entry in data["files"]:
            if entry["path"] == SPOOL_COPY:
                entry["sha256"], entry["size"] = sha256_file(self.copy)
        rewrite_manifest(self.path, data, self.manifest_key)
        self.assertEqual(
            check(self.path, self.sources)[1],
            [f"{SPOOL_COPY}: 1 readable call records, the manifest says 2"],
        )

    def test_missing(self) -> None:
        """A deleted copy is named as missing."""
        self.copy.unlink()
        self.assertEqual(check(self.path, self.sources)[1], [f"{SPOOL_COPY}: missing"])

    def test_wardenctl_refuses(self) -> None:
        """wardenctl restore of a backup with a damaged spool copy exits 1 and names it."""
        from warden.ctl.backup import run_standalone
        from warden.ctl.main import build_parser

        self.copy.write_bytes(self.copy.read_bytes()[:-10])
        config = self.sources.config_path
        assert config is not None
        args = build_parser().parse_args(
            ["--config", config, "restore", str(self.path), "--to-database",
             str(self.root / "new.db"), "--data-dir", str(self.root / "new")]
        )  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        code = run_standalone(args, parse_config_text(Path(config).read_text()), Clock(), out, err)
        self.assertEqual(code, 1)
        self.assertIn(f"{SPOOL_COPY}: size", err.getvalue())
        self.assertFalse((self.root / "new.db").exists())


class SpoolRestoreTests(SpoolBackupTestCase):
    """Restoring puts the pending records into the data directory's spool."""

    def setUp(self) -> None:
        """A backup with one pending record."""
        super().setUp()
        self.record = call_record("pending-1", 1500.0)
        self.spool_pending(self.record)
        self.path = self.backup()
        manifest, _ = check(self.path, self.sources)
        assert manifest is not None
        self.manifest = manifest

    def test_into_empty_data_dir(self) -> None:
        """The spool is created with exactly the backed-up lines."""
        data_dir = Path(self.mktemp())
        self.assertEqual(restore_spool(self.path, self.manifest, data_dir), 1)
        spool = Path(default_spool_path(str(data_dir)))
        self.assertEqual(spool.read_bytes(), encode_record(self.record))

    def test_keeps_records_pending_there(self) -> None:
        """Records already pending at the destination stay; a torn last line is not glued."""
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        spool = Path(default_spool_path(str(data_dir)))
        other = encode_record(call_record("other", 1700.0))
        spool.write_bytes(other + b'{"torn')
        restore_spool(self.path, self.manifest, data_dir)
        self.assertEqual(spool.read_bytes(), other + b'{"torn\n' + encode_record(self.record))

    def test_wardenctl_restore(self) -> None:
        """wardenctl restore puts the records into --data-dir's spool and says so."""
        from warden.ctl.backup import run_standalone
        from warden.ctl.main import build_parser

        config = self.sources.config_path
        assert config is not None
        data_dir = self.root / "new"
        args = build_parser().parse_args(
            ["--config", config, "restore", str(self.path), "--to-database",
             str(self.root / "new.db"), "--data-dir", str(data_dir)]
        )  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        code = run_standalone(args, parse_config_text(Path(config).read_text()), Clock(), out, err)
        self.assertEqual(code, 0, err.getvalue())
        said = out.getvalue()
        self.assertIn(f"put 1 pending call records into the CDR spool in {data_dir};", said)
        self.assertEqual(
            Path(default_spool_path(str(data_dir))).read_bytes(), encode_record(self.record)
        )


class SpoolReplayTests(TestCase):
    """The whole way: spooled during an outage, backed up, restored, replayed."""

    async def test_restored_spool_replays_into_restored_database(self) -> None:
        """
        A record that sits in the spool while the database is down is in the
        backup; after a restore, the restored store's spool replays it into the
        restored SQLite database, and the records already there are not duplicated.
        """
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        sources = make_installation(root)
        record = call_record("during-outage", 1500.0)
        spool = pending_in_spool(sources, record, call_record("call-1", 900.0))
        spool.close()
        path = create_backup(sources, "database", root / "backups", NOW)
        manifest, problems = check(path, sources)
        self.assertEqual(problems, [])
        assert manifest is not None and manifest.database is not None
        self.assertEqual(manifest.database.spool.records, 1)  # call-1 is in the database

        data_dir = root / "restored"
        target = data_dir / "warden.db"
        restore.restore_database(path, manifest, SQLiteTarget(str(target)), False)
        self.assertEqual(restore_spool(path, manifest, data_dir), 1)
        self.assertEqual(inspect_sqlite(target).row_counts["call_records"], 5)

        from twisted.internet import reactor

        pool = open_sqlite_pool(str(target))
        self.addCleanup(pool.close)
        replaying = SpooledCallRecordStore(
            SQLCallRecordStore(pool), reactor, default_spool_path(str(data_dir))
        )
        self.addCleanup(replaying.close)
        self.assertEqual(await replaying.recover(), 1)
        await replaying.flush()
        self.assertEqual(await replaying.count(), 6)
        [stored] = await replaying.list(since=1400.0)
        self.assertEqual(stored, record)
        connection = sqlite3.connect(target)
        try:
            ids = [r[0] for r in connection.execute("SELECT call_id FROM call_records")]
        finally:
            connection.close()
        self.assertEqual(sorted(ids), ["call-0", "call-1", "call-2", "call-3", "call-4",
                                       "during-outage"])  # fmt: skip
