"""Backups, manifests, encryption and restores, on real files and SQLite databases."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import (
    REALM,
    check,
    edit_manifest,
    keys_of,
    make_database,
    make_installation,
    manifest_of,
)
from warden.backup import crypto, restore
from warden.backup.backup import (
    create_backup,
    latest_backup,
    list_backups,
    prune_backups,
)
from warden.backup.database import (
    SQLiteTarget,
    inspect_sqlite,
    newest_schema_version,
    sqlite_schema_version,
)
from warden.backup.manifest import BackupError, Manifest, read_manifest
from warden.backup.signing import ManifestKeys
from warden.rtp.recorder import CallRecorder

NOW = 1_764_100_000.0


class BackupTestCase(SynchronousTestCase):
    """A fresh installation per test."""

    def setUp(self) -> None:
        """Config, database with 3 extensions and 5 CDRs, 3 voicemail files."""
        self.root = Path(self.mktemp()).resolve()
        self.root.mkdir()
        self.sources = make_installation(self.root)
        self.backups = self.root / "backups"

    def backup(self, kind: str = "full", now: float = NOW, key: bytes | None = None) -> Path:
        return create_backup(self.sources, kind, self.backups, now, key)

    def manifest(self, path: Path) -> Manifest:
        return manifest_of(path, self.sources)

    def keys(self, backup_key: bytes | None = None) -> ManifestKeys:
        return keys_of(self.sources, backup_key)


class CreateBackupTests(BackupTestCase):
    """What a backup holds and how it is published."""

    def test_full_backup_manifest(self) -> None:
        """The manifest has the version, schema, time, row counts, last CDR and every file."""
        path = self.backup()
        self.assertEqual(path.name, "warden-20251125T194640Z-full")
        manifest = self.manifest(path)
        self.assertEqual(manifest.type, "full")
        self.assertEqual(manifest.schema_version, newest_schema_version())
        self.assertEqual(manifest.created_at, NOW)
        assert manifest.database is not None
        self.assertEqual(manifest.database.row_counts["extensions"], 3)
        self.assertEqual(manifest.database.row_counts["call_records"], 5)
        self.assertEqual(manifest.database.last_cdr_at, 1000.0)
        paths = sorted(f.path for f in manifest.files)
        self.assertIn("database/warden.db", paths)
        self.assertIn("config/warden.toml", paths)
        self.assertIn("files/voicemail/100/msg0001.wav", paths)
        self.assertEqual(restore.verify_files(path, manifest), [])
        raw = json.loads((path / "manifest.json").read_text())
        self.assertEqual(raw["created_at_iso"], "2025-11-25T19:46:40Z")

    def test_database_copy_is_self_contained(self) -> None:
        """The copy is in rollback-journal mode: reading it creates no -wal file."""
        path = self.backup("database")
        inspect_sqlite(path / "database" / "warden.db")
        self.assertEqual(sorted(os.listdir(path / "database")), ["warden.db"])
        self.assertEqual(check(path, self.sources)[1], [])

    def test_secrets_excluded_unless_encrypted(self) -> None:
        """A password file named by the configuration is left out of a plain backup."""
        manifest = self.manifest(self.backup("config"))
        assert manifest.config is not None
        self.assertEqual(manifest.config["excluded_keys"], ["store.pass"])
        self.assertEqual(manifest.config["referenced"], {})
        self.assertNotIn("backup.key", json.dumps(manifest.config["referenced"]))

    def test_secrets_in_encrypted_backup_but_never_the_backup_key(self) -> None:
        """Encrypted backups hold the password file, never the backup key itself."""
        key = bytes(range(32))
        archive = self.backup("config", key=key)
        root, manifest_key = restore.open_backup(archive, self.keys(key), Path(self.mktemp()))
        manifest = read_manifest(root, manifest_key)
        assert manifest.config is not None
        self.assertEqual(list(manifest.config["referenced"].values()), ["store.pass"])
        self.assertEqual(manifest.config["excluded_keys"], [])
        for f in manifest.files:
            self.assertNotIn("backup.key", f.path)

    def test_types(self) -> None:
        """config and files backups hold only their part."""
        config = self.manifest(self.backup("config"))
        self.assertIsNone(config.database)
        self.assertTrue(all(f.path.startswith("config/") for f in config.files))
        files = self.manifest(self.backup("files", now=NOW + 1))
        self.assertEqual(files.file_dirs, ("voicemail",))
        self.assertTrue(all(f.path.startswith("files/") for f in files.files))

    def test_atomic_nothing_visible_on_failure(self) -> None:
        """A failing backup (missing database) leaves nothing behind, not even a partial."""
        os.unlink(self.sources.database.path)  # type: ignore[union-attr]
        self.assertRaises(BackupError, self.backup)
        self.assertEqual(os.listdir(self.backups), [])

    def test_link_in_file_directory_refused(self) -> None:
        """
        A symbolic link inside a voicemail directory (to a file outside it) is not
        followed into the backup: the backup fails naming it and publishes nothing.
        """
        secret = self.root / "secret.txt"
        secret.write_text("not for the backup")
        link = Path(self.sources.data_dir) / "voicemail" / "100" / "msg0002.wav"
        link.symlink_to(secret)
        e = self.assertRaises(BackupError, self.backup, "files")
        self.assertIn(f"{link}: a symbolic link; backups copy regular files only", str(e))
        self.assertEqual(os.listdir(self.backups), [])

    def test_linked_directory_in_file_directory_refused(self) -> None:
        """A link to a directory inside a voicemail directory is refused, not copied through."""
        outside = self.root / "outside"
        outside.mkdir()
        (outside / "x.wav").write_bytes(b"x")
        (Path(self.sources.data_dir) / "voicemail" / "elsewhere").symlink_to(outside)
        e = self.assertRaises(BackupError, self.backup, "full")
        self.assertIn("elsewhere: a symbolic link", str(e))
        self.assertEqual(os.listdir(self.backups), [])

    def test_special_file_in_file_directory_refused(self) -> None:
        """A named pipe in a voicemail directory fails the backup instead of blocking it."""
        os.mkfifo(Path(self.sources.data_dir) / "voicemail" / "100" / "pipe")
        e = self.assertRaises(BackupError, self.backup, "files")
        self.assertIn("pipe: a special file", str(e))

    def test_configured_directory_may_be_a_link(self) -> None:
        """The configured voicemail directory itself may be a link (another disk)."""
        data = Path(self.sources.data_dir)
        (data / "voicemail").rename(self.root / "disk")
        (data / "voicemail").symlink_to(self.root / "disk")
        manifest = self.manifest(self.backup("files"))
        self.assertIn("files/voicemail/100/msg0001.wav", {f.path for f in manifest.files})

    def test_same_second_gets_new_name(self) -> None:
        """Two backups in one second get distinct names; latest is the second."""
        first, second = self.backup(), self.backup()
        self.assertNotEqual(first, second)
        self.assertEqual(
            latest_backup(self.backups, self.keys(getattr(self, "key", None))), second
        )

    def test_retention(self) -> None:
        """prune_backups keeps the newest N and deletes those too old, never the newest."""
        paths = [self.backup(now=NOW + i * 3600) for i in range(5)]
        deleted = prune_backups(self.backups, 3, 0, NOW + 5 * 3600)
        self.assertEqual(deleted, paths[:2])
        self.assertEqual([p for _, p in list_backups(self.backups)], paths[2:])
        deleted = prune_backups(self.backups, 0, 60, NOW + 100 * 3600)
        self.assertEqual([p for _, p in list_backups(self.backups)], paths[4:])


class VerifyTests(BackupTestCase):
    """Damaged backups are detected and the problem is named."""

    def check(self, path: Path) -> list[str]:
        return check(path, self.sources)[1]

    def test_flipped_byte(self) -> None:
        """One flipped byte in a voicemail file: a SHA-256 mismatch naming the file."""
        path = self.backup()
        target = path / "files/voicemail/101/msg0001.wav"
        data = bytearray(target.read_bytes())
        data[10] ^= 0x01
        target.write_bytes(bytes(data))
        [problem] = self.check(path)
        self.assertIn("files/voicemail/101/msg0001.wav: SHA-256 mismatch", problem)

    def test_missing_file(self) -> None:
        """A deleted file is named as missing."""
        path = self.backup()
        (path / "files/voicemail/100/msg0001.wav").unlink()
        self.assertEqual(self.check(path), ["files/voicemail/100/msg0001.wav: missing"])

    def test_truncated_dump(self) -> None:
        """A truncated database dump is named, with its size."""
        path = self.backup()
        dump = path / "database/warden.db"
        size = dump.stat().st_size
        with open(dump, "r+b") as f:
            f.truncate(size // 2)
        [problem] = self.check(path)
        self.assertIn(f"database/warden.db: size {size // 2}, the manifest says {size}", problem)

    def test_newer_schema(self) -> None:
        """A manifest from a newer Warden's schema is refused with a clear message."""
        path = self.backup()
        edit_manifest(path, self.sources, schema_version=9999)
        [problem] = self.check(path)
        self.assertIn("schema version 9999, newer than this Warden", problem)

    def test_extra_file_and_bad_manifest(self) -> None:
        """Unlisted files are reported; a manifest that is not JSON is named."""
        path = self.backup()
        (path / "database" / "extra").write_text("x")
        self.assertEqual(self.check(path), ["database/extra: not listed in the manifest"])
        (path / "manifest.json").write_text("{nope")
        [problem] = self.check(path)
        self.assertIn("manifest.json: not valid JSON", problem)

    def test_not_a_backup(self) -> None:
        """A directory without a manifest is not a backup."""
        empty = Path(self.mktemp())
        empty.mkdir()
        self.assertIn("no manifest.json", restore.check_backup(empty, bytes(32))[1][0])


class CryptoTests(BackupTestCase):
    """AES-GCM archives: round trip, wrong key, tampering, truncation."""

    key = bytes(range(32))

    def test_round_trip(self) -> None:
        """An encrypted backup opens with its key and verifies."""
        archive = self.backup(key=self.key)
        self.assertTrue(archive.name.endswith(".tar.aesgcm"))
        self.assertEqual(
            latest_backup(self.backups, self.keys(getattr(self, "key", None))), archive
        )
        self.assertEqual(self.check_ok(archive), [])

    def check_ok(self, archive: Path) -> list[str]:
        root, manifest_key = restore.open_backup(archive, self.keys(self.key), Path(self.mktemp()))
        return restore.check_backup(root, manifest_key)[1]

    def test_wrong_key(self) -> None:
        """Another key fails authentication."""
        archive = self.backup(key=self.key)
        e = self.assertRaises(
            BackupError, restore.open_backup, archive, self.keys(bytes(32)), Path(self.mktemp())
        )
        self.assertIn("fails authentication", str(e))

    def test_flipped_byte_in_archive(self) -> None:
        """A flipped ciphertext byte fails authentication."""
        archive = self.backup(key=self.key)
        data = bytearray(archive.read_bytes())
        data[100] ^= 0x80
        archive.write_bytes(bytes(data))
        e = self.assertRaises(
            BackupError, restore.open_backup, archive, self.keys(self.key), Path(self.mktemp())
        )
        self.assertIn("fails authentication", str(e))

    def test_truncated_archive(self) -> None:
        """An archive cut short is named as truncated."""
        archive = self.backup(key=self.key)
        data = archive.read_bytes()
        archive.write_bytes(data[: len(data) - 20])
        e = self.assertRaises(
            BackupError, restore.open_backup, archive, self.keys(self.key), Path(self.mktemp())
        )
        self.assertIn("truncated", str(e))

    def test_no_key(self) -> None:
        """An encrypted backup without a key is refused with a clear message."""
        archive = self.backup(key=self.key)
        e = self.assertRaises(
            BackupError, restore.open_backup, archive, self.keys(), Path(self.mktemp())
        )
        self.assertIn("encrypted; give its key file", str(e))

    def test_key_files(self) -> None:
        """Key files: 32 raw bytes or 64 hex digits; anything else is refused."""
        raw, text, bad = (Path(self.mktemp()) for _ in range(3))
        raw.write_bytes(self.key)
        text.write_text(self.key.hex() + "\n")
        bad.write_text("short")
        self.assertEqual(crypto.load_key(raw), self.key)
        self.assertEqual(crypto.load_key(text), self.key)
        self.assertIn("32 bytes", str(self.assertRaises(BackupError, crypto.load_key, bad)))

    def test_large_multi_record(self) -> None:
        """Files larger than one record round-trip (records chain and authenticate)."""
        big = Path(self.sources.data_dir) / "recordings" / "big.raw"
        big.parent.mkdir()
        big.write_bytes(os.urandom(crypto.RECORD_BYTES * 2 + 17))
        archive = self.backup("files", key=self.key)
        self.assertEqual(self.check_ok(archive), [])
        root, _ = restore.open_backup(archive, self.keys(self.key), Path(self.mktemp()))
        self.assertEqual((root / "files/recordings/big.raw").read_bytes(), big.read_bytes())


class RestoreTests(BackupTestCase):
    """Restoring into databases and directories."""

    def test_restore_into_empty(self) -> None:
        """Database, files and configuration come back, equal to the manifest."""
        path = self.backup()
        manifest, _problems = check(path, self.sources)
        assert manifest is not None and manifest.database is not None
        target = Path(self.mktemp()) / "restored.db"
        applied = restore.restore_database(path, manifest, SQLiteTarget(str(target)), False)
        self.assertEqual(applied, [])
        self.assertEqual(inspect_sqlite(target).row_counts, manifest.database.row_counts)
        data_dir = Path(self.mktemp())
        self.assertEqual(restore.restore_files(path, manifest, data_dir, False), 3)
        self.assertEqual((data_dir / "voicemail/102/msg0001.wav").read_bytes(), b"\x02" * 1002)
        written = restore.restore_config(path, manifest, Path(self.mktemp()))
        self.assertEqual([p.name for p in written], ["warden.toml"])

    def test_recordings_round_trip(self) -> None:
        """
        A call recording (a WAV file the recorder wrote under
        ``data_dir/recordings``) and its call record's link are in a full
        backup and come back from it: the file byte for byte, the link in the
        restored database.
        """
        data_dir = Path(self.sources.data_dir)
        name = "2026/12/05/call-0.wav"
        recorder = CallRecorder(str(data_dir / "recordings" / name), 0.0, lambda work: work())
        for n in range(100):
            recorder.rtp("a" if n % 2 else "b", 1, 160 * (n // 2), 0, b"\x80" * 160, 0.02 * n)
        recorder.close(2.0)
        with sqlite3.connect(self.sources.database.path) as db:  # type: ignore[union-attr]
            db.execute("UPDATE call_records SET recording = ? WHERE call_id = 'call-0'", (name,))
        path = self.backup()
        manifest, _ = check(path, self.sources)
        assert manifest is not None
        restored = Path(self.mktemp())
        self.assertEqual(restore.restore_files(path, manifest, restored, False), 4)
        original = (data_dir / "recordings" / name).read_bytes()
        self.assertEqual((restored / "recordings" / name).read_bytes(), original)
        self.assertGreater(len(original), 44)
        target = Path(self.mktemp()) / "restored.db"
        restore.restore_database(path, manifest, SQLiteTarget(str(target)), False)
        with sqlite3.connect(target) as db:
            rows = db.execute("SELECT recording FROM call_records WHERE call_id = 'call-0'")
            self.assertEqual(rows.fetchall(), [(name,)])

    def test_emergency_locations_round_trip(self) -> None:
        """
        The e911 plugin's locations (civic addresses, extension and network
        assignments) and an emergency call's record mark are in a backup and
        come back from it.
        """
        civic = '{"country": "US", "A1": "CA", "FLR": "2"}'
        with sqlite3.connect(self.sources.database.path) as db:  # type: ignore[union-attr]
            db.execute("INSERT INTO civic_locations VALUES ('hq-floor2', ?)", (civic,))
            db.execute("INSERT INTO extension_locations VALUES ('100', 'hq-floor2')")
            db.execute("INSERT INTO subnet_locations VALUES ('10.1.2.0/24', 'hq-floor2')")
            db.execute("UPDATE call_records SET emergency = 1 WHERE call_id = 'call-0'")
        path = self.backup()
        manifest, _ = check(path, self.sources)
        assert manifest is not None
        target = Path(self.mktemp()) / "restored.db"
        restore.restore_database(path, manifest, SQLiteTarget(str(target)), False)
        with sqlite3.connect(target) as db:
            self.assertEqual(
                db.execute("SELECT name, civic FROM civic_locations").fetchall(),
                [("hq-floor2", civic)],
            )
            self.assertEqual(
                db.execute("SELECT * FROM extension_locations").fetchall(), [("100", "hq-floor2")]
            )
            self.assertEqual(
                db.execute("SELECT * FROM subnet_locations").fetchall(),
                [("10.1.2.0/24", "hq-floor2")],
            )
            rows = db.execute("SELECT call_id FROM call_records WHERE emergency = 1")
            self.assertEqual(rows.fetchall(), [("call-0",)])

    def test_refuses_live_database(self) -> None:
        """A database that holds data is not overwritten without force."""
        path = self.backup()
        manifest, _ = check(path, self.sources)
        assert manifest is not None
        live = self.sources.database
        before = Path(live.path).read_bytes()  # type: ignore[union-attr]
        e = self.assertRaises(BackupError, restore.restore_database, path, manifest, live, False)
        self.assertIn("holds a live database; stop Warden and pass --force", str(e))
        self.assertEqual(Path(live.path).read_bytes(), before)  # type: ignore[union-attr]
        restore.restore_database(path, manifest, live, True)

    def test_refuses_differing_files(self) -> None:
        """A voicemail file with other content is not overwritten without force."""
        path = self.backup()
        manifest, _ = check(path, self.sources)
        assert manifest is not None
        wav = Path(self.sources.data_dir) / "voicemail/100/msg0001.wav"
        wav.write_bytes(b"changed")
        self.assertRaises(
            BackupError, restore.restore_files, path, manifest, Path(self.sources.data_dir), False
        )
        self.assertEqual(wav.read_bytes(), b"changed")
        restore.restore_files(path, manifest, Path(self.sources.data_dir), True)
        self.assertEqual(wav.read_bytes(), b"\x00" * 1000)

    def test_older_schema_is_migrated_forward(self) -> None:
        """A backup taken at schema 0001 restores and ends at the newest schema."""
        old = Path(self.mktemp()) / "old.db"
        old.parent.mkdir()
        connection = sqlite3.connect(old)
        from warden.store.migrate import load_migrations, split_sqlite_script

        first = load_migrations("sqlite")[0]
        for statement in split_sqlite_script(first.sql):
            connection.execute(statement)
        connection.execute(
            "CREATE TABLE schema_version"
            " (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL)"
        )
        connection.execute("INSERT INTO schema_version VALUES (1, ?)", (first.name,))
        connection.execute(
            "INSERT INTO extensions (number, realm, ha1_md5, ha1_sha256)"
            " VALUES ('100', ?, 'a', 'b')",
            (REALM,),
        )
        connection.commit()
        connection.close()
        sources = make_installation(Path(self.mktemp()))
        sources = type(sources)(SQLiteTarget(str(old)), None, sources.data_dir)
        path = create_backup(sources, "database", self.backups, NOW)
        manifest, problems = check(path, sources)
        self.assertEqual(problems, [])
        assert manifest is not None
        self.assertEqual(manifest.schema_version, 1)
        target = Path(self.mktemp()) / "new.db"
        applied = restore.restore_database(path, manifest, SQLiteTarget(str(target)), False)
        # Every migration after the first (numbers may have gaps).
        self.assertEqual(len(applied), len(load_migrations("sqlite")) - 1)
        self.assertEqual(sqlite_schema_version(target), newest_schema_version())

    def test_newer_database_refused_at_migration(self) -> None:
        """A database file newer than this Warden fails to migrate, naming the versions."""
        db = Path(self.mktemp()) / "x.db"
        make_database(db)
        connection = sqlite3.connect(db)
        connection.execute("INSERT INTO schema_version VALUES (9999, '9999_future')")
        connection.commit()
        connection.close()
        e = self.assertRaises(BackupError, restore.migrate_sqlite_file, db)
        self.assertIn("newer than this Warden knows", str(e))
