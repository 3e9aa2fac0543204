"""
Hostile backups: whoever can write the backup directory must not be able to
make a restore write, read or run anything outside its destination.

Each test crafts a malicious backup (signed with the node's key when the
test is about a check behind the signature, so that check alone stands
between the backup and the file system), runs ``wardenctl restore`` or the
restore functions on it, and checks that it is refused and that nothing
outside the destination changed.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import keys_of, make_installation, rewrite_manifest
from warden.backup import restore
from warden.backup.backup import create_backup, latest_backup
from warden.backup.manifest import (
    MANIFEST_NAME,
    BackupError,
    copy_regular_file,
    sha256_file,
)
from warden.config import parse_config_text

NOW = 1_764_100_000.0


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (its bytes) and link (its target) under ``root``."""
    found: dict[str, bytes | str] = {}
    for directory, subdirs, names in os.walk(root):
        for name in subdirs + names:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[relative] = os.readlink(path)
            elif path.is_file():
                found[relative] = path.read_bytes()
    return found


class InstalledTestCase(SynchronousTestCase):
    """An installation and one genuine full backup of it."""

    def setUp(self) -> None:
        """Config, database, voicemail, and the backup ``self.path``."""
        self.root = Path(self.mktemp()).resolve()
        self.root.mkdir()
        self.sources = make_installation(self.root)
        self.path = create_backup(self.sources, "full", self.root / "backups", NOW)


class HostileBackupTests(InstalledTestCase):
    """A crafted backup is refused by wardenctl restore; nothing outside changes."""

    def setUp(self) -> None:
        """An installation, one genuine backup, and a directory standing for /etc."""
        super().setUp()
        self.outside = self.root / "etc"
        (self.outside / "cron.d").mkdir(parents=True)
        (self.outside / "shadow").write_text("root:$6$secret:20000::::::\n")
        self.restored = self.root / "restored"
        self.config_to = self.root / "config-to"
        self.before = tree(self.outside)

    @property
    def key(self) -> bytes:
        return keys_of(self.sources).for_backup(encrypted=False)

    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / MANIFEST_NAME).read_text())
        return data

    def plant(self, relative: str, content: bytes) -> dict[str, Any]:
        """Add ``content`` as ``relative`` to the backup's files; the new entry."""
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        sha, size = sha256_file(target)
        return {"path": relative, "sha256": sha, "size": size}

    def wardenctl_restore(self, *extra: str) -> tuple[int, str]:
        from warden.ctl.backup import run_standalone
        from warden.ctl.main import build_parser

        config = self.sources.config_path
        assert config is not None
        args = build_parser().parse_args(
            ["--config", config, "restore", str(self.path), "--to-database",
             str(self.restored / "warden.db"), "--data-dir", str(self.restored),
             "--config-to", str(self.config_to), *extra]
        )  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        code = run_standalone(args, parse_config_text(Path(config).read_text()), Clock(), out, err)
        return code, err.getvalue()

    def assert_refused(self, expected: str) -> None:
        """wardenctl restore exits 1 naming ``expected``; nothing was restored anywhere."""
        code, err = self.wardenctl_restore("--force")
        self.assertEqual(code, 1, err)
        self.assertIn(expected, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertEqual(tree(self.outside), self.before)
        # Only the restore's own run lock (warden.runlock) was created.
        self.assertEqual(list(tree(self.restored)), ["warden.lock"])
        self.assertFalse(self.config_to.exists())

    def test_absolute_path_entry(self) -> None:
        """An entry files//<absolute path> (once written to that path) is refused."""
        data = self.manifest()
        entry = self.plant("files/x", b"* * * * * root sh -c 'id > /tmp/pwned'\n")
        entry["path"] = "files/" + str(self.outside / "cron.d" / "x")
        data["files"].append(entry)
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("is not a plain relative path")

    def test_leading_slash_entry(self) -> None:
        """An entry that is an absolute path is refused as such."""
        data = self.manifest()
        entry = self.plant("files/x", b"x")
        entry["path"] = str(self.outside / "cron.d" / "x")
        data["files"].append(entry)
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("is an absolute path")

    def test_dot_dot_entry(self) -> None:
        """An entry climbing out with .. is refused."""
        data = self.manifest()
        entry = self.plant("files/x", b"x")
        entry["path"] = "files/../../etc/cron.d/x"
        data["files"].append(entry)
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("is not a plain relative path")

    def test_duplicate_entry(self) -> None:
        """A file listed twice (which hid an unlisted file before) is refused."""
        data = self.manifest()
        data["files"].append(dict(data["files"][0]))
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("is listed twice")

    def test_symlinked_file(self) -> None:
        """A listed file that is a symbolic link (to /etc/shadow) is refused."""
        data = self.manifest()
        link = self.path / "files/voicemail/100/msg0001.wav"
        link.unlink()
        link.symlink_to(self.outside / "shadow")
        for entry in data["files"]:
            if entry["path"] == "files/voicemail/100/msg0001.wav":
                entry["sha256"], entry["size"] = sha256_file(self.outside / "shadow")
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("files/voicemail/100/msg0001.wav: not a regular file")

    def test_symlinked_directory(self) -> None:
        """A directory of the backup replaced by a link to another directory is refused."""
        data = self.manifest()
        (self.outside / "cron.d" / "msg0001.wav").write_bytes(b"\x01" * 1001)
        self.before = tree(self.outside)
        box = self.path / "files/voicemail/101"
        (box / "msg0001.wav").unlink()
        box.rmdir()
        box.symlink_to(self.outside / "cron.d")
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("files/voicemail/101/msg0001.wav: not a regular file")

    def test_referenced_config_outside(self) -> None:
        """config.referenced naming /etc/shadow (to copy it out) is refused."""
        data = self.manifest()
        data["config"]["referenced"] = {str(self.outside / "shadow"): "shadow"}
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("config.referenced")
        self.assertFalse((self.config_to / "shadow").exists())

    def test_database_dump_outside(self) -> None:
        """A database.file that is not one of the backup's listed files is refused."""
        data = self.manifest()
        data["database"]["file"] = "database/../../etc/shadow"
        rewrite_manifest(self.path, data, self.key)
        self.assert_refused("database.file")

    def test_unsigned(self) -> None:
        """A manifest without a signature is refused before anything else is read."""
        data = self.manifest()
        data["files"].append(self.plant("files/x", b"x"))
        rewrite_manifest(self.path, data, None)
        self.assert_refused("manifest.json: not signed")

    def test_signed_with_another_key(self) -> None:
        """A manifest signed with another key is refused, saying how to give the right one."""
        data = self.manifest()
        rewrite_manifest(self.path, data, bytes(32))
        self.assert_refused("the signature does not match the manifest key")

    def test_tampered_after_signing(self) -> None:
        """A field changed after signing (a file's hash) breaks the signature."""
        text = (self.path / MANIFEST_NAME).read_text()
        data = json.loads(text)
        data["files"][0]["sha256"] = "0" * 64
        (self.path / MANIFEST_NAME).write_text(json.dumps(data))
        self.assert_refused("the signature does not match")

    def test_genuine_backup_restores(self) -> None:
        """The same run on the untouched backup restores (the checks refuse only the bad)."""
        code, err = self.wardenctl_restore()
        self.assertEqual(code, 0, err)
        self.assertTrue((self.restored / "voicemail/100/msg0001.wav").is_file())
        self.assertEqual(tree(self.outside), self.before)

    def test_restore_elsewhere_needs_the_signing_key(self) -> None:
        """
        Disaster recovery: on a node without the signing key the backup is
        refused until the key is given with --signing-key.
        """
        key_file = self.root / "data" / "backup-signing.key"
        saved = self.root / "saved-signing.key"
        key_file.rename(saved)
        code, err = self.wardenctl_restore()
        self.assertEqual(code, 1)
        self.assertIn("no backup signing key; give the key", err)
        code, err = self.wardenctl_restore("--signing-key", str(saved))
        self.assertEqual(code, 0, err)


class ConfinedDestinationTests(InstalledTestCase):
    """Restore functions never write through a link or outside their destination."""

    def setUp(self) -> None:
        """An installation, a genuine full backup and its verified manifest."""
        super().setUp()
        key = keys_of(self.sources).for_backup(encrypted=False)
        manifest, problems = restore.check_backup(self.path, key)
        self.assertEqual(problems, [])
        assert manifest is not None
        self.manifest = manifest

    def test_link_in_destination(self) -> None:
        """A link in the data directory pointing elsewhere is not written through."""
        data_dir = self.root / "restored"
        elsewhere = self.root / "elsewhere"
        elsewhere.mkdir()
        data_dir.mkdir()
        (data_dir / "voicemail").symlink_to(elsewhere)
        e = self.assertRaises(
            BackupError, restore.restore_files, self.path, self.manifest, data_dir, True
        )
        self.assertIn("outside", str(e))
        self.assertEqual(os.listdir(elsewhere), [])

    def test_referenced_original_climbing_out(self) -> None:
        """A referenced file whose original name climbs out lands under files/ instead."""
        stored = "config/files/0-x.txt"
        (self.path / "config" / "files").mkdir(parents=True)
        (self.path / stored).write_text("x")
        config = dict(self.manifest.config or {})
        config["referenced"] = {stored: "../../../escaped.txt"}
        import attrs

        manifest = attrs.evolve(self.manifest, config=config)
        destination = self.root / "config-to"
        written = restore.restore_config(self.path, manifest, destination)
        self.assertEqual(written[-1], destination.resolve() / "files" / "0-x.txt")
        self.assertFalse((self.root / "escaped.txt").exists())


class CopyTests(SynchronousTestCase):
    """The one copy routine of backups and restores follows no link."""

    def test_link_swapped_in_is_not_followed(self) -> None:
        """A source that is (or became, after the checks) a link is refused, not read."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        (root / "secret").write_text("secret")
        (root / "link").symlink_to(root / "secret")
        e = self.assertRaises(BackupError, copy_regular_file, root / "link", root / "copy")
        self.assertIn("a symbolic link?", str(e))
        self.assertFalse((root / "copy").exists())


class LatestTests(SynchronousTestCase):
    """``latest`` is the newest authentic backup, never a planted newer one."""

    def test_planted_newest_is_passed_over(self) -> None:
        """Unsigned and wrongly signed newer backups are skipped; the genuine one is chosen."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        sources = make_installation(root)
        backups = root / "backups"
        genuine = create_backup(sources, "full", backups, NOW)
        for offset, key in ((1, None), (2, bytes(32))):
            planted = backups / f"warden-2025112{5 + offset}T000000Z-full"
            planted.mkdir()
            data = json.loads((genuine / MANIFEST_NAME).read_text())
            rewrite_manifest(planted, data, key)
        self.assertEqual(latest_backup(backups, keys_of(sources)), genuine)

    def test_planted_archive_is_passed_over(self) -> None:
        """An archive sealed with another key is skipped when picking the latest."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        sources = make_installation(root)
        backups = root / "backups"
        key = bytes(range(32))
        genuine = create_backup(sources, "full", backups, NOW, key)
        create_backup(sources, "full", backups, NOW + 60, bytes(32))
        self.assertEqual(latest_backup(backups, keys_of(sources, key)), genuine)

    def test_none_authentic(self) -> None:
        """Only planted backups: latest fails, saying none is signed with this node's key."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        sources = make_installation(root)
        create_backup(sources, "full", root / "other", NOW)
        backups = root / "backups"
        planted = backups / "warden-20251126T000000Z-full"
        planted.mkdir(parents=True)
        rewrite_manifest(planted, {"format": 1}, bytes(32))
        e = self.assertRaises(BackupError, latest_backup, backups, keys_of(sources))
        self.assertIn("none of the 1 backups is signed", str(e))
