"""
Files holding secrets (the database with HA1 values and password hashes, its
WAL and SHM files, the CDR spool, backups) are private to Warden's user: a real
``twistd warden`` and real ``wardenctl`` runs under the usual umask 022 leave
nothing readable by other users, and a data directory left world-readable by an
older Warden is tightened at start-up with a warning.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.integration.harness import IntegrationTestCase, wardenctl


def open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) with a group or other permission bit."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


class FileModeTests(IntegrationTestCase):
    """The data directory, database, spool and backups are 0700/0600."""

    def setUp(self) -> None:
        """Run the children under the common default umask (022), restored afterwards."""
        super().setUp()
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)

    async def test_new_files_are_private(self) -> None:
        """A fresh Warden, an extension, and a backup: nothing is readable by others."""
        warden = await self.start_warden()
        added = await wardenctl(warden.config_path, "extension", "add", "100")
        self.assertEqual(added.code, 0, added.stderr)
        backup = await wardenctl(warden.config_path, "backup")
        self.assertEqual(backup.code, 0, backup.stderr)
        self.assertTrue((warden.data_dir / "warden.db-wal").exists())
        self.assertTrue(any((warden.data_dir / "backups").iterdir()))
        self.assertEqual(open_to_others(warden.data_dir), [])
        exported = warden.workdir / "calls.csv"
        export = await wardenctl(warden.config_path, "cdr", "export", str(exported))
        self.assertEqual(export.code, 0, export.stderr)
        self.assertEqual(stat.S_IMODE(exported.stat().st_mode), 0o600)

    async def test_existing_files_are_tightened(self) -> None:
        """World-readable files from before are made private, with one warning line."""
        workdir = self.workdir()
        data = workdir / "data"
        (data / "backups" / "old").mkdir(parents=True)
        for path in (data, data / "backups", data / "backups" / "old"):
            path.chmod(0o755)
        (data / "backups" / "old" / "warden.db").write_bytes(b"")
        (data / "backups" / "old" / "warden.db").chmod(0o644)
        warden = await self.start_warden(workdir=workdir)
        self.assertEqual(open_to_others(warden.data_dir), [])
        lines = [line for line in warden.log_text().splitlines() if "other users" in line]
        self.assertEqual(len(lines), 1, warden.log_tail())
        self.assertIn("4 ", lines[0])
