"""
Backup names are read with ASCII digits only: a file in the backup directory
whose name imitates a backup with other digits is not a backup, and never
stops the listing.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from warden.backup.backup import list_backups


class BackupNameTests(SynchronousTestCase):
    """list_backups over names an attacker who can write the directory may plant."""

    def test_non_ascii_digits_ignored(self) -> None:
        """Full-width or Arabic-Indic digits in a name are passed over; real backups listed."""
        directory = Path(self.mktemp())
        directory.mkdir()
        real = directory / "warden-20261125T100000Z-full"
        real.touch()
        full_width = "\uff12\uff10\uff12\uff16\uff11\uff11\uff12\uff15"  # 20261125
        (directory / f"warden-{full_width}T100000Z-full").touch()
        (directory / "warden-20261125T10000\u0660Z-full").touch()
        self.assertEqual([path for _, path in list_backups(directory)], [real])
