"""
``twistd -n warden-drtest``: options and the service that runs the drill.

Exit status: 0 when the drill passes (or the dry-run plan is complete), 1 when
it fails, 2 for bad options. The JSON report goes to ``--save-report``; a short
summary goes to standard output.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from warden.backup.backup import sources_from_config
from warden.backup.crypto import load_key
from warden.backup.manifest import BackupError
from warden.config import WardenConfig, load_effective_config
from warden.errors import ConfigError

from .drill import TEST_TYPES, Drill, DrillSettings

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def _seconds(name: str) -> Any:
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise usage.UsageError(f"--{name}: must be a number of seconds > 0, got {value!r}")
        return seconds

    return parse


def backup_directory(config: WardenConfig) -> str:
    """Where the backups are: ``[backup] directory``, else ``<data_dir>/backups``."""
    return config.backup.directory or os.path.join(config.server.data_dir, "backups")


class Options(usage.Options):
    """Options of ``twistd warden-drtest``."""

    optFlags = [  # noqa: RUF012
        ["create-backup", None, "Take a fresh backup first and test that one."],
        ["dry-run", None, "Print the plan; touch nothing."],
        ["keep-scratch", None, "Keep the scratch directory (and say where it is)."],
    ]
    optParameters = [  # noqa: RUF012
        ["test-type", "t", "full", "full, database-only, config-only or files-only."],
        ["backup", "b", "latest", "'latest' (in --backup-dir) or the path of a backup."],
        ["backup-dir", None, None, "Where backups are. Default: [backup] directory."],
        ["config", "c", None, "Configuration of the PBX under test (as for twistd warden)."],
        ["data-dir", "d", None, "Its data directory. Default: ./var"],
        ["key-file", "k", None, "Key of encrypted backups. Default: [backup] key_file."],
        [
            "signing-key",
            None,
            None,
            "Key unencrypted backups' manifests are signed with."
            " Default: [backup] signing_key_file, else <data-dir>/backup-signing.key.",
        ],
        ["target-rto", None, 900.0, "Recovery time objective, seconds.", _seconds("target-rto")],
        ["target-rpo", None, 300.0, "Recovery point objective, seconds.", _seconds("target-rpo")],
        ["save-report", None, None, "Write the JSON report to this file."],
        ["scratch-dir", None, None, "Make scratch directories here. Default: $TMPDIR."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.settings: DrillSettings | None = None

    def parseOptions(self, options: Any = None) -> None:
        """Bad options exit with status 2 (and say why on stderr)."""
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            print(f"warden-drtest: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None

    def postOptions(self) -> None:
        """Check the options and load the configuration of the PBX under test."""
        if self["test-type"] not in TEST_TYPES:
            raise usage.UsageError(
                f"--test-type: one of {', '.join(TEST_TYPES)}, got {self['test-type']!r}"
            )
        if self["create-backup"] and self["backup"] != "latest":
            raise usage.UsageError("--create-backup and --backup PATH exclude each other")
        try:
            config = load_effective_config(self["config"], data_dir=self["data-dir"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        key_file = self["key-file"] or config.backup.key_file
        try:
            key = load_key(key_file) if key_file else None
        except BackupError as e:
            raise usage.UsageError(f"--key-file: {e}") from None
        self.settings = DrillSettings(
            test_type=self["test-type"],
            backup=self["backup"],
            backup_dir=Path(self["backup-dir"] or backup_directory(config)),
            sources=sources_from_config(config, self["config"]),
            create_backup=bool(self["create-backup"]),
            dry_run=bool(self["dry-run"]),
            target_rto=self["target-rto"],
            target_rpo=self["target-rpo"],
            report_path=self["save-report"],
            keep_scratch=bool(self["keep-scratch"]),
            key=key,
            scratch_root=self["scratch-dir"],
            signing_key_file=self["signing-key"] or config.backup.signing_key_file,
        )


def _exit_with(code: int) -> None:
    """Leave the process with ``code`` once twistd has shut down."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(code)


class DrillService(service.Service):
    """Runs the drill once the reactor runs, then stops it with the exit status."""

    log = Logger()

    def __init__(self, reactor: Any, settings: DrillSettings) -> None:
        self._reactor = reactor
        self._settings = settings
        self.exit_code: int | None = None

    def startService(self) -> None:
        """Start the drill."""
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.callWhenRunning(self._run)

    def _run(self) -> None:
        # twistd sends sys.stdout to the log; the plan and summary go to the terminal.
        drill = Drill(self._reactor, self._settings, sys.__stdout__ or sys.stdout)
        d = Deferred.fromCoroutine(drill.run())
        d.addCallbacks(self._finished, self._crashed)

    def _finished(self, report: Any) -> None:
        self._stop(EXIT_PASS if report.passed else EXIT_FAIL)

    def _crashed(self, failure: Any) -> None:
        self.log.failure("warden-drtest failed unexpectedly", failure)
        print(f"warden-drtest: FAIL (internal error: {failure.value})", file=sys.__stdout__)
        self._stop(EXIT_FAIL)

    def _stop(self, code: int) -> None:
        self.exit_code = code
        atexit.register(_exit_with, code)
        self._reactor.stop()


def makeService(options: Options, reactor: Any = None) -> service.IService:
    """Build the drill service from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert options.settings is not None
    return DrillService(reactor, options.settings)
