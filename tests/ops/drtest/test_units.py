"""Scheduled backups (on a Clock), digest answers from HA1, options and the report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import REALM, make_installation, password
from warden.backup.backup import list_backups
from warden.backup.schedule import BackupService, backup_service
from warden.config import parse_config_text
from warden.ops.drtest.probe import Identity, ProbeFailed, authorization
from warden.ops.drtest.report import Report, Step
from warden.ops.drtest.tap import EXIT_USAGE, Options
from warden.sip.auth import challenge, expected_response, parse_credentials
from warden.store.credentials import make_extension

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


class AuthorizationTests(SynchronousTestCase):
    """The probe answers challenges from stored HA1 values, as Warden checks them."""

    def identity(self) -> Identity:
        e = make_extension("100", "", REALM, password("100"))
        return Identity("100", REALM, {"MD5": e.ha1_md5, "SHA-256": e.ha1_sha256})

    def test_both_algorithms_verify(self) -> None:
        """The response computed from HA1 is what the registrar expects."""
        identity = self.identity()
        for algorithm in ("MD5", "SHA-256"):
            value = authorization(
                challenge(REALM, "nonce123", algorithm), identity, "REGISTER", "sip:x"
            )
            creds = parse_credentials(value)
            assert creds is not None
            ha1 = identity.ha1[algorithm]
            self.assertEqual(creds.response, expected_response(creds, ha1, "REGISTER"))
            self.assertEqual(creds.algorithm, algorithm)

    def test_wrong_realm(self) -> None:
        """A challenge for another realm cannot be answered: the message says so."""
        e = self.assertRaises(
            ProbeFailed, authorization, challenge("other", "n", "MD5"), self.identity(),
            "REGISTER", "sip:x",
        )  # fmt: skip
        self.assertIn("realm 'other'", str(e))


class OptionsTests(SynchronousTestCase):
    """twistd warden-drtest options."""

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """Defaults: full test, latest backup in <data_dir>/backups, 900/300 s targets."""
        settings = self.parse("--data-dir", "/srv/w").settings
        assert settings is not None
        self.assertEqual((settings.test_type, settings.backup), ("full", "latest"))
        self.assertEqual(settings.backup_dir, Path("/srv/w/backups"))
        self.assertEqual((settings.target_rto, settings.target_rpo), (900.0, 300.0))
        self.assertFalse(settings.dry_run)

    def test_bad_options_exit_2(self) -> None:
        """Bad options exit with status 2."""
        for argv in (
            ["--test-type", "bogus"],
            ["--target-rto", "-1"],
            ["--create-backup", "--backup", "/x"],
            ["--key-file", "/nonexistent/key"],
            ["--no-such-option"],
        ):
            with self.subTest(argv=argv):
                e = self.assertRaises(SystemExit, self.parse, *argv)
                self.assertEqual(e.code, EXIT_USAGE)


class ReportTests(SynchronousTestCase):
    """Pass/fail and the JSON report."""

    def test_judge(self) -> None:
        """Missed targets fail the report and are named; a passing one says pass."""
        report = Report("full", 60.0, 300.0, NOW)
        report.steps.append(Step("open", True, 0.1))
        report.rto, report.rpo = 10.0, 100.0
        report.judge()
        self.assertTrue(report.passed)
        self.assertEqual(report.as_json()["result"], "pass")
        report.rto = 61.0
        report.judge()
        self.assertFalse(report.passed)
        self.assertEqual(report.problems, ["RTO 61.0s exceeds the target of 60s"])
        out = io.StringIO()
        print(report.summary(), file=out)
        self.assertIn("FAIL", out.getvalue())

    def test_failed_step_fails(self) -> None:
        """A failed step fails the drill even with good RTO/RPO."""
        report = Report("full", 60.0, 300.0, NOW, rto=1.0, rpo=1.0)
        report.steps.append(Step("verify-backup", False, 0.1, "x: missing"))
        self.assertFalse(report.passed)


class WardenctlTests(SynchronousTestCase):
    """wardenctl backup and restore, run in-process on real files."""

    def run_ctl(self, *argv: str) -> tuple[int, str, str]:
        from warden.ctl.backup import run_standalone
        from warden.ctl.main import build_parser

        args = build_parser().parse_args(["--config", str(self.config), *argv])
        config = parse_config_text(self.config.read_text())
        out, err = io.StringIO(), io.StringIO()
        clock = Clock()
        clock.advance(NOW)
        code = run_standalone(args, config, clock, out, err)
        return code, out.getvalue(), err.getvalue()

    def setUp(self) -> None:
        """An installation on disk."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        self.root = root
        sources = make_installation(root)
        assert sources.config_path is not None
        self.config = Path(sources.config_path)

    def test_backup_then_restore_elsewhere(self) -> None:
        """backup prints the new path; restore into an empty file succeeds."""
        code, out, err = self.run_ctl("backup", "--to", str(self.root / "b"), "--type", "database")
        self.assertEqual(code, 0, err)
        path = out.split()[1]
        # The configuration names a backup key: the backup is an encrypted archive.
        self.assertTrue(path.endswith("-database.tar.aesgcm"), path)
        target = self.root / "restored.db"
        code, out, err = self.run_ctl("restore", path, "--to-database", f"sqlite://{target}")
        self.assertEqual(code, 0, err)
        self.assertIn(f"restored the database into sqlite://{target}", out)

    def test_failures_exit_1_and_bad_url_exits_2(self) -> None:
        """A missing backup exits 1 naming it; a malformed database URL exits 2."""
        code, _, err = self.run_ctl("restore", str(self.root / "nope"))
        self.assertEqual(code, 1)
        self.assertIn("nope: no such backup", err)
        code, _, err = self.run_ctl(
            "restore", str(self.root / "nope"), "--to-database", "postgresql://u:pw@h/db"
        )
        self.assertEqual(code, 2)
        self.assertNotIn("pw", err.replace("password", ""))


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
