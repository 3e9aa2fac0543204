"""The drill's deployment examples in deploy/drtest: systemd units and the cron line."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.harness import require_binary
from warden.ops.drtest.tap import Options

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "drtest"
#: Where docs/DEPLOYMENT.md installs Warden (a virtualenv), as deploy/systemd's units use it.
TWISTD = "/opt/warden/bin/twistd"


def unit(name: str) -> configparser.RawConfigParser:
    """A systemd unit file read as INI (keys keep their case)."""
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(DEPLOY / name, encoding="utf-8")
    return parser


class DeployTests(SynchronousTestCase):
    """The examples are well-formed and run the drill with valid options."""

    def drill_options(self, command: list[str]) -> Options:
        """Parse the warden-drtest part of a command line (its config swapped for a real one)."""
        args = command[command.index("warden-drtest") + 1 :]
        config = Path(self.mktemp())
        config.write_text("[server]\n")
        args[args.index("--config") + 1] = str(config)
        options = Options()
        options.parseOptions(args)
        return options

    def test_service_runs_the_drill(self) -> None:
        """A oneshot service whose ExecStart is twistd -n warden-drtest with valid options."""
        service = unit("warden-drtest.service")
        self.assertEqual(service["Service"]["Type"], "oneshot")
        command = shlex.split(service["Service"]["ExecStart"])
        self.assertEqual(command[0], TWISTD)
        self.assertIn("--nodaemon", command)
        settings = self.drill_options(command).settings
        assert settings is not None
        self.assertEqual((settings.target_rto, settings.target_rpo), (900.0, 3900.0))
        self.assertEqual(settings.report_path, "/var/lib/warden/drtest-report.json")

    def test_timer_starts_the_service(self) -> None:
        """The timer has a calendar and is installed under timers.target."""
        timer = unit("warden-drtest.timer")
        self.assertEqual(timer["Timer"]["OnCalendar"], "Sun *-*-* 03:30:00")
        self.assertEqual(timer["Install"]["WantedBy"], "timers.target")

    def test_cron_line(self) -> None:
        """Five time fields, a user, and a command that runs the drill with valid options."""
        lines = [
            line
            for line in (DEPLOY / "warden-drtest.cron").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        self.assertEqual(len(lines), 1)
        fields = lines[0].split(None, 6)
        self.assertEqual(fields[:6], ["30", "3", "*", "*", "0", "warden"])
        # What cron and the shell make of it: \% is %, $(date +%F) is today's date.
        shell = fields[6].replace("$(date +\\%F)", "2026-11-25")
        command = shlex.split(shell.split("&&", 1)[1].split("||", 1)[0])
        self.assertEqual(command[0], TWISTD)
        options = self.drill_options(command)
        assert options.settings is not None
        self.assertEqual(
            options.settings.report_path, "/var/lib/warden/drtest-report-2026-11-25.json"
        )
        self.assertIn("%", fields[6])
        self.assertNotIn(" %", fields[6].replace("\\%", ""))

    def test_systemd_analyze_verify(self) -> None:
        """systemd-analyze verifies both units (twistd pointed at this environment's)."""
        analyze = require_binary(self, "systemd-analyze", "systemd")
        twistd = shutil.which("twistd") or str(Path(sys.executable).with_name("twistd"))
        directory = Path(self.mktemp())
        directory.mkdir()
        text = (DEPLOY / "warden-drtest.service").read_text()
        (directory / "warden-drtest.service").write_text(text.replace(TWISTD, twistd))
        shutil.copy(DEPLOY / "warden-drtest.timer", directory)
        result = subprocess.run(
            [analyze, "verify", str(directory / "warden-drtest.service"),
             str(directory / "warden-drtest.timer")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        calendar = subprocess.run(
            [analyze, "calendar", unit("warden-drtest.timer")["Timer"]["OnCalendar"]],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.assertEqual(calendar.returncode, 0, calendar.stderr)
