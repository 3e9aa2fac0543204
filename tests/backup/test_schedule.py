"""Scheduled backups (on a Clock) and the [backup] section of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import make_installation
from warden.backup.backup import list_backups
from warden.backup.schedule import BackupService, backup_service
from warden.config import parse_config_text

NOW = 1_764_100_000.0


def synchronous(f: Any, *args: Any) -> defer.Deferred[Any]:
    """Run ``f`` now (in place of a thread)."""
    return defer.maybeDeferred(f, *args)


class ScheduleTests(SynchronousTestCase):
    """BackupService takes backups every interval and applies retention."""

    def setUp(self) -> None:
        """An installation and a service every 3600 s keeping 2 backups."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        self.directory = root / "backups"
        self.clock = Clock()
        self.clock.advance(NOW)
        self.service = BackupService(
            self.clock, make_installation(root), "full", self.directory, 3600.0, 2, 0.0, "",
            synchronous,
        )  # fmt: skip

    def test_interval_and_retention(self) -> None:
        """Nothing before the interval; one backup per interval; only 2 kept."""
        self.service.startService()
        self.clock.advance(3599.9)
        self.assertEqual(list_backups(self.directory), [])
        self.clock.advance(0.1)
        self.assertEqual(self.service.made, 1)
        for _ in range(3):
            self.clock.advance(3600)
        self.assertEqual(self.service.made, 4)
        backups = list_backups(self.directory)
        self.assertEqual([t for t, _ in backups], [NOW + 3 * 3600, NOW + 4 * 3600])

    def test_stop_cancels(self) -> None:
        """After stopService nothing stays scheduled on the clock."""
        self.service.startService()
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failure_is_logged_and_schedule_continues(self) -> None:
        """A failing backup is counted and logged; the next one is still scheduled."""
        import os

        os.unlink(self.service._sources.database.path)  # type: ignore[union-attr]
        self.service.startService()
        self.clock.advance(3600)
        self.assertEqual((self.service.made, self.service.failed), (0, 1))
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_disabled_by_default(self) -> None:
        """interval = 0 (the default) means no service."""
        reactor = MemoryReactorClock()
        self.assertIsNone(backup_service(parse_config_text(""), None, reactor))
        config = parse_config_text("[backup]\ninterval = 60\nkeep_days = 1\n")
        service = backup_service(config, None, reactor)
        assert service is not None
        self.assertEqual(service._keep_seconds, 86400.0)


class BackupConfigTests(SynchronousTestCase):
    """The [backup] section: defaults and errors that name the file and key."""

    def test_defaults(self) -> None:
        """No scheduled backups, full type, 7 kept, voicemail and recordings."""
        section = parse_config_text("").backup
        self.assertEqual((section.interval, section.type, section.keep_count), (0.0, "full", 7))
        self.assertEqual(section.file_dirs, ("voicemail", "recordings"))

    def test_bad_values_name_file_and_key(self) -> None:
        """Each bad value is reported as file: backup.key: problem."""
        from warden.errors import ConfigError

        for text, key in (
            ('type = "everything"', "backup.type"),
            ("interval = -1", "backup.interval"),
            ("keep_count = 1.5", "backup.keep_count"),
            ('file_dirs = ["", "x"]', "backup.file_dirs"),
            ('include_keys = "yes"', "backup.include_keys"),
            ("nope = 1", "backup.nope"),
        ):
            with self.subTest(text=text):
                e = self.assertRaises(
                    ConfigError, parse_config_text, f"[backup]\n{text}\n", "w.toml"
                )
                self.assertTrue(str(e).startswith(f"w.toml: {key}: "), str(e))
