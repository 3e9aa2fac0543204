"""
deploy/systemd: the hardened ``twistd warden`` unit, the backup service and its
timer. Every command line the units run is parsed by the option parser of the
program it names, so an option Warden drops or renames breaks these tests.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tests.deploy.tools import DEPLOY, drain_running_warden
from tests.integration.harness import IntegrationTestCase, require_binary
from warden.config import AdminConfig
from warden.ctl.main import build_parser

SYSTEMD = DEPLOY / "systemd"
TWISTD = "/opt/warden/bin/twistd"
WARDENCTL = "/opt/warden/bin/wardenctl"
CONFIG = "/etc/warden/warden.toml"
DATA_DIR = "/var/lib/warden"
BACKUP_DIR = "/var/backups/warden"


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file: section -> key -> every value given (systemd keys repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    """The single value of ``key``."""
    values = section[key]
    assert len(values) == 1, (key, values)
    return values[0]


def writable(section: dict[str, list[str]]) -> set[str]:
    """The paths ReadWritePaths= makes writable ("-" = may be missing)."""
    return {p.lstrip("-") for v in section["ReadWritePaths"] for p in v.split()}


def wardenctl(command: str) -> tuple[str, argparse.Namespace]:
    """The ``wardenctl`` command line ``command`` parsed by wardenctl's own parser."""
    argv = shlex.split(command)
    prefix = argv[0].startswith("-")
    argv[0] = argv[0].lstrip("-")
    assert argv[0] == WARDENCTL, argv
    return ("-" if prefix else ""), build_parser().parse_args(argv[1:])


class WardenServiceTests(SynchronousTestCase):
    """warden.service runs twistd warden as a dedicated, confined user."""

    def setUp(self) -> None:
        self.service = unit("warden.service")["Service"]

    def test_exec_start_parses(self) -> None:
        """
        ExecStart is twistd in the foreground, logging to the journal, running the
        warden plugin with options that twistd warden accepts (its --config and
        --data-dir swapped for scratch ones, as postOptions reads them).
        """
        argv = shlex.split(one(self.service, "ExecStart"))
        self.assertEqual(argv[0], TWISTD)
        self.assertEqual(argv[argv.index("--config") + 1], CONFIG)
        self.assertEqual(argv[argv.index("--data-dir") + 1], DATA_DIR)
        config = Path(self.mktemp())
        config.write_text("[sip]\nport = 0\n[admin]\nenabled = false\n", encoding="utf-8")
        scratch = [str(config) if a == CONFIG else a for a in argv[1:]]
        scratch = [self.mktemp() if a == DATA_DIR else a for a in scratch]
        options = ServerOptions()
        options.parseOptions(scratch)
        self.assertEqual(options.subCommand, "warden")
        self.assertTrue(options["nodaemon"])
        self.assertEqual((options["pidfile"], options["logfile"]), ("", "-"))
        self.assertEqual(options.subOptions["config"], str(config))

    def test_data_directory_is_the_writable_one(self) -> None:
        """--data-dir is the working, state and a writable directory; so is the backup one."""
        self.assertEqual(one(self.service, "WorkingDirectory"), DATA_DIR)
        self.assertEqual("/var/lib/" + one(self.service, "StateDirectory"), DATA_DIR)
        self.assertEqual(writable(self.service), {DATA_DIR, BACKUP_DIR})

    def test_hardening(self) -> None:
        """Not root; only CAP_NET_BIND_SERVICE; no new privileges; the system read-only."""
        self.assertEqual(one(self.service, "User"), "warden")
        self.assertEqual(one(self.service, "Group"), "warden")
        self.assertEqual(one(self.service, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE")
        self.assertEqual(one(self.service, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE")
        self.assertEqual(one(self.service, "NoNewPrivileges"), "yes")
        self.assertEqual(one(self.service, "ProtectSystem"), "strict")
        self.assertEqual(one(self.service, "ProtectHome"), "yes")
        self.assertEqual(one(self.service, "PrivateTmp"), "yes")
        self.assertEqual(one(self.service, "UMask"), "0077")
        # /proc/net must stay visible: Warden reads its addresses there (warden.netutil).
        self.assertNotIn("ProcSubset", self.service)

    def test_reload_is_sighup(self) -> None:
        """systemctl reload sends SIGHUP, which re-reads the admin certificate and key."""
        self.assertEqual(one(self.service, "ExecReload"), "/bin/kill -HUP $MAINPID")

    def test_stop_drains(self) -> None:
        """
        ExecStop runs wardenctl drain --wait (its failure ignored: SIGTERM drains too),
        and systemd waits longer than the default drain timeout before killing.
        """
        prefix, args = wardenctl(one(self.service, "ExecStop"))
        self.assertEqual(prefix, "-")
        self.assertEqual(args.area, "drain")
        self.assertTrue(args.wait)
        self.assertEqual(args.config, CONFIG)
        self.assertEqual(args.data_dir, DATA_DIR)
        self.assertEqual(args.token_file, "/etc/warden/drain-token")
        self.assertEqual(one(self.service, "KillSignal"), "SIGTERM")
        stop = one(self.service, "TimeoutStopSec")
        self.assertTrue(stop.endswith("s"))
        self.assertGreater(float(stop[:-1]), AdminConfig().drain_timeout + 15)


def syscalls(analyze: str, group: str, seen: dict[str, set[str]]) -> set[str]:
    """The system calls of a systemd syscall group (``@name``), nested groups expanded."""
    if group not in seen:
        listing = subprocess.run(
            [analyze, "syscall-filter", group],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        names = [line.strip() for line in listing.splitlines()[1:]]
        seen[group] = set()
        for name in names:
            if name.startswith("@"):
                seen[group] |= syscalls(analyze, name, seen)
            elif name and not name.startswith("#"):
                seen[group].add(name)
    return seen[group]


def allowed_syscalls(analyze: str, section: dict[str, list[str]]) -> set[str]:
    """What the unit's SystemCallFilter= lines allow: allow lists, minus ~ deny lists."""
    seen: dict[str, set[str]] = {}
    allowed: set[str] = set()
    denied: set[str] = set()
    for value in section["SystemCallFilter"]:
        target = denied if value.startswith("~") else allowed
        for name in value.lstrip("~").split():
            target |= syscalls(analyze, name, seen) if name.startswith("@") else {name}
    return allowed - denied


class SyscallFilterTests(SynchronousTestCase):
    """The units' system-call filters let Warden do what it does."""

    def test_backups_may_lower_their_priority(self) -> None:
        """
        Both units allow the calls a backup makes to lower its priority
        (warden.backup: setpriority, sched_setscheduler; ionice: ioprio_set), and a
        filtered call fails with EPERM instead of killing Warden with SIGSYS.
        """
        analyze = require_binary(self, "systemd-analyze", "systemd")
        needed = {"setpriority", "getpriority", "sched_setscheduler", "ioprio_set"}
        for name in ("warden.service", "warden-backup.service"):
            service = unit(name)["Service"]
            self.assertEqual(needed - allowed_syscalls(analyze, service), set(), name)
            self.assertEqual(one(service, "SystemCallErrorNumber"), "EPERM", name)
        # Still no privileged calls for the server (~@privileged).
        self.assertNotIn("setuid", allowed_syscalls(analyze, unit("warden.service")["Service"]))


class BackupTests(SynchronousTestCase):
    """warden-backup.service makes a backup with wardenctl; the timer starts it nightly."""

    def test_backup_command(self) -> None:
        """wardenctl backup into a directory the unit (and warden.service) may write."""
        service = unit("warden-backup.service")["Service"]
        self.assertEqual(one(service, "Type"), "oneshot")
        self.assertEqual(one(service, "User"), "warden")
        prefix, args = wardenctl(one(service, "ExecStart"))
        self.assertEqual(prefix, "")
        self.assertEqual(args.area, "backup")
        self.assertEqual(args.to, BACKUP_DIR)
        self.assertEqual(args.config, CONFIG)
        self.assertEqual(args.data_dir, DATA_DIR)
        self.assertEqual(writable(service), {DATA_DIR, BACKUP_DIR})
        self.assertEqual(one(service, "ProtectSystem"), "strict")
        self.assertEqual(one(service, "NoNewPrivileges"), "yes")
        self.assertEqual(one(service, "CapabilityBoundingSet"), "")

    def test_timer(self) -> None:
        """A persistent nightly calendar timer under timers.target."""
        timer = unit("warden-backup.timer")
        self.assertEqual(one(timer["Timer"], "OnCalendar"), "*-*-* 02:15:00")
        self.assertEqual(one(timer["Timer"], "Persistent"), "true")
        self.assertEqual(one(timer["Install"], "WantedBy"), "timers.target")

    def test_directories_and_user(self) -> None:
        """tmpfiles.d makes both writable directories private to the user sysusers.d makes."""
        lines = (SYSTEMD / "warden.tmpfiles").read_text(encoding="utf-8").splitlines()
        made = {tuple(line.split()[1:5]) for line in lines if line.startswith("d ")}
        self.assertLessEqual(
            {(DATA_DIR, "0700", "warden", "warden"), (BACKUP_DIR, "0700", "warden", "warden")},
            made,
        )
        users = (SYSTEMD / "warden.sysusers").read_text(encoding="utf-8").splitlines()
        self.assertIn("u warden", [" ".join(line.split()[:2]) for line in users])


class VerifyTests(SynchronousTestCase):
    """systemd itself accepts the units."""

    def test_systemd_analyze_verify(self) -> None:
        """
        systemd-analyze verify passes for the three units (the executables they name
        replaced by scratch ones, as verify checks that they exist), and the
        timer's calendar expression is valid.
        """
        analyze = require_binary(self, "systemd-analyze", "systemd")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        for name in ("twistd", "wardenctl"):
            program = directory / name
            program.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
            program.chmod(0o755)
        names = ["warden.service", "warden-backup.service", "warden-backup.timer"]
        for name in names:
            text = (SYSTEMD / name).read_text(encoding="utf-8")
            text = text.replace(TWISTD, str(directory / "twistd"))
            text = text.replace(WARDENCTL, str(directory / "wardenctl"))
            (directory / name).write_text(text, encoding="utf-8")
        result = subprocess.run(
            [analyze, "verify", *(str(directory / n) for n in names)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        self.assertEqual(result.stderr.strip(), "", result.stderr)
        calendar = one(unit("warden-backup.timer")["Timer"], "OnCalendar")
        check = subprocess.run(
            [analyze, "calendar", calendar],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.assertEqual(check.returncode, 0, check.stderr)


class StopDrainTests(IntegrationTestCase):
    """warden.service's ExecStop against a real Warden."""

    async def test_exec_stop_drains(self) -> None:
        """The ExecStop command line, with a write-scoped token, drains a running Warden."""
        argv = shlex.split(one(unit("warden.service")["Service"], "ExecStop").lstrip("-"))
        await drain_running_warden(self, argv)
