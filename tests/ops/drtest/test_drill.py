"""
Backups and ``twistd warden-drtest`` end to end: real ``twistd warden``
processes, SIPp traffic during the backup, real SQLite and a throwaway
PostgreSQL server, ``wardenctl backup``/``restore`` and ``twistd -n
warden-drtest`` as child processes, and their exit statuses and JSON reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from tests.backup.helpers import make_installation, rewrite_manifest, signing_key
from tests.integration.harness import (
    LOCALHOST,
    TWISTD,
    IntegrationTestCase,
    ProcessResult,
    free_media_port,
    free_port,
    poll,
    provision,
    require_sipp,
    run_process,
    run_sipp,
    sipp_command,
    sipp_register_args,
    spawn,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from warden.backup.backup import create_backup, list_backups
from warden.backup.manifest import read_manifest

SCENARIOS = Path(__file__).resolve().parents[3] / "bench" / "scenarios"


async def drtest(cwd: Path, *args: str, timeout: float = 180.0) -> tuple[ProcessResult, Any]:
    """Run ``twistd -n warden-drtest ARGS --save-report report.json``; (result, report)."""
    report = cwd / "report.json"
    if report.exists():
        report.unlink()
    result = await run_process(
        [*TWISTD, "-n", "--pidfile=", f"--logfile={cwd / 'drtest.log'}", "warden-drtest",
         *args, "--save-report", str(report)],
        cwd, timeout,
    )  # fmt: skip
    data = json.loads(report.read_text()) if report.exists() else None
    return result, data


def tree_state(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: (size, mtime_ns, sha256)."""
    state = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, digest)
    return state


async def traffic_backup_drill(
    case: IntegrationTestCase, settings: dict[str, dict[str, object]]
) -> dict[str, Any]:
    """
    Start Warden with ``settings``, back it up with ``wardenctl backup`` while SIPp
    registers and calls, then run the drill on that backup; returns the report.
    """
    require_sipp(case)
    warden = await case.start_warden(
        {"media": {"port_min": 33000, "port_max": 33200}, "backup": {"directory": "backups"},
         **settings}
    )  # fmt: skip
    users = await provision(warden.config_path, 20, first=3000)
    voicemail = warden.data_dir / "voicemail" / "3000"
    voicemail.mkdir(parents=True)
    (voicemail / "msg0001.wav").write_bytes(os.urandom(50_000))
    run_dir = case.workdir()
    caller, callee = users.numbers[0], users.numbers[1]
    uas_port = free_port()
    callee_csv = run_dir / "callee.csv"
    pw = users.passwords[callee]
    callee_csv.write_text(
        f"SEQUENTIAL\n{callee};{pw};[authentication username={callee} password={pw}]\n"
    )
    reg = await run_sipp(
        sipp_register_args(warden.address, callee_csv, 1, 10, local_port=uas_port), run_dir
    )
    case.assertEqual(reg.code, 0, reg.stderr + read_sipp_errors(run_dir))
    calls = 6
    uas, uas_process = spawn(
        sipp_command(["-sf", str(SCENARIOS / "call_uas.xml"), "-i", LOCALHOST, "-p",
                      str(uas_port), "-mp", str(free_media_port()), "-rtp_echo", "-m", str(calls),
                      f"{LOCALHOST}:{warden.port}"]),
        case.workdir(),
    )  # fmt: skip
    case.addCleanup(lambda: uas_process.signalProcess("KILL") if uas.running else None)
    caller_csv = run_dir / "caller.csv"
    pw = users.passwords[caller]
    caller_csv.write_text(
        f"SEQUENTIAL\n{caller};{pw};{callee};[authentication username={caller} password={pw}]\n"
    )
    uac_dir, reg_dir = case.workdir(), case.workdir()
    uac, _ = spawn(
        sipp_command([f"{LOCALHOST}:{warden.port}", "-sf", str(SCENARIOS / "call_uac.xml"),
                      "-inf", str(caller_csv), "-i", LOCALHOST, "-p", str(free_port()),
                      "-mp", str(free_media_port()), "-m", str(calls), "-r", "2", "-d", "1500",
                      "-l", str(calls), "-timeout", "60s", "-timeout_error", "-trace_stat",
                      "-trace_err"]),
        uac_dir,
    )  # fmt: skip
    registering, _ = spawn(
        sipp_command(sipp_register_args(warden.address, users.sipp_csv, 600, 40)), reg_dir
    )
    # The backup runs while both SIPp instances are busy.
    await poll(lambda: (warden.data_dir / "warden.db").exists(), 5)
    backup = await wardenctl(warden.config_path, "backup")
    case.assertEqual(backup.code, 0, backup.stderr)
    case.assertTrue(
        registering.running,
        f"registrations ended before the backup did (SIPp exit {registering.code}):"
        f" {read_sipp_errors(reg_dir)}",
    )
    case.assertTrue(await poll(lambda: not uac.running and not registering.running, 90))
    case.assertEqual(uac.code, 0, read_sipp_errors(uac_dir))
    case.assertEqual(registering.code, 0, read_sipp_errors(reg_dir))
    case.assertEqual(read_sipp_stats(uac_dir).failed, 0)
    case.assertEqual(read_sipp_stats(reg_dir).failed, 0)

    [(_, path)] = list_backups(warden.workdir / "backups")
    manifest = read_manifest(path, signing_key(warden.data_dir))
    assert manifest.database is not None
    case.assertEqual(manifest.database.row_counts["extensions"], 20)
    result, report = await drtest(
        warden.workdir, "--config", str(warden.config_path), "--backup", str(path)
    )
    case.assertEqual(result.code, 0, f"{result.stdout}{result.stderr}")
    case.assertIn("PASS", result.stdout)
    case.assertEqual(report["result"], "pass", report)
    steps = {s["name"]: s for s in report["steps"]}
    case.assertEqual(steps["prove-call"]["detail"], "3000 called 3001: answered and hung up")
    case.assertTrue(all(s["ok"] for s in report["steps"]), report)
    case.assertLess(report["rto_seconds"], 60)
    case.assertGreaterEqual(report["rpo_seconds"], 0)
    # The live PBX is untouched and still serves.
    case.assertTrue(warden.running)
    return report  # type: ignore[no-any-return]


class DrillOnSQLiteTests(IntegrationTestCase):
    """SQLite: backup under traffic, drill, corrupted backups, dry run, live restore."""

    async def test_backup_during_traffic_then_drill(self) -> None:
        """
        A backup taken while SIPp registers and calls restores into scratch; the
        scratch Warden registers two extensions from the backup and connects a
        call; the drill passes with RTO/RPO measured; SIPp saw no failure.
        """
        await traffic_backup_drill(self, {})

    async def test_encrypted_create_backup_drill(self) -> None:
        """--create-backup with a key: an encrypted backup is made, opened and proven."""
        root = self.workdir()
        sources = make_installation(root)
        result, report = await drtest(
            root, "--config", str(sources.config_path), "--create-backup",
            "--backup-dir", str(root / "backups"), "--key-file", str(root / "backup.key"),
        )  # fmt: skip
        self.assertEqual(result.code, 0, f"{result.stdout}{result.stderr}")
        self.assertTrue(report["backup"].endswith(".tar.aesgcm"))
        self.assertEqual([s["name"] for s in report["steps"]][:2], ["backup", "open"])

    async def corrupted(self, damage: Any, expected: str) -> None:
        root = self.workdir()
        sources = make_installation(root)
        path = create_backup(sources, "full", root / "backups", 1_764_100_000.0)
        damage(path)
        result, report = await drtest(
            root, "--config", str(sources.config_path), "--backup-dir", str(root / "backups"),
            "--target-rpo", "1e12",
        )  # fmt: skip
        self.assertEqual(result.code, 1, result.stdout)
        self.assertEqual(report["result"], "fail")
        self.assertTrue(any(expected in p for p in report["problems"]), report["problems"])
        self.assertIn(expected, result.stdout)
        self.assertEqual(os.listdir(root / "backups"), [path.name])

    async def test_planted_newest_backup_is_not_drilled(self) -> None:
        """
        A newer backup planted in the backup directory (unsigned, or signed with
        another key) is passed over: the drill of "latest" restores the newest
        genuine backup and passes; the planted one is never opened.
        """
        root = self.workdir()
        sources = make_installation(root)
        backups = root / "backups"
        genuine = create_backup(sources, "full", backups, 1_764_100_000.0)
        for name, key in (("warden-20261201T000000Z-full", None),
                          ("warden-20261202T000000Z-full", bytes(32))):  # fmt: skip
            planted = backups / name
            planted.mkdir()
            data = json.loads((genuine / "manifest.json").read_text())
            data["database"]["file"] = "database/../../../etc/passwd"
            rewrite_manifest(planted, data, key)
        result, report = await drtest(
            root, "--config", str(sources.config_path), "--backup-dir", str(backups),
            "--target-rpo", "1e12",
        )  # fmt: skip
        self.assertEqual(result.code, 0, f"{result.stdout}{result.stderr}")
        self.assertEqual(report["backup"], str(genuine))

    async def test_flipped_byte(self) -> None:
        """One flipped byte in a voicemail file: exit 1, the report names the file."""

        def flip(path: Path) -> None:
            wav = path / "files/voicemail/101/msg0001.wav"
            data = bytearray(wav.read_bytes())
            data[0] ^= 1
            wav.write_bytes(bytes(data))

        await self.corrupted(flip, "files/voicemail/101/msg0001.wav: SHA-256 mismatch")

    async def test_missing_file(self) -> None:
        """A missing file: exit 1, the report names it."""
        await self.corrupted(
            lambda p: (p / "config/warden.toml").unlink(), "config/warden.toml: missing"
        )

    async def test_truncated_dump(self) -> None:
        """A truncated database dump: exit 1, the report says truncated."""

        def truncate(path: Path) -> None:
            with open(path / "database/warden.db", "r+b") as f:
                f.truncate(1000)

        await self.corrupted(truncate, "database/warden.db: size 1000")

    async def test_newer_schema(self) -> None:
        """A manifest from a newer schema: exit 1 with a clear message."""

        def newer(path: Path) -> None:
            data = json.loads((path / "manifest.json").read_text())
            data["schema_version"] = 9999
            rewrite_manifest(path, data, signing_key(path.parent.parent / "data"))

        await self.corrupted(newer, "schema version 9999, newer than this Warden")

    async def test_dry_run_changes_nothing(self) -> None:
        """--dry-run prints the plan and leaves every file and the scratch area untouched."""
        root = self.workdir()
        sources = make_installation(root)
        create_backup(sources, "full", root / "data" / "backups", 1_764_100_000.0)
        scratch = self.workdir()
        before = tree_state(root)
        result, report = await drtest(
            root, "--config", str(sources.config_path), "--dry-run", "--scratch-dir", str(scratch),
            timeout=60,
        )  # fmt: skip
        self.assertEqual(result.code, 0, result.stdout + result.stderr)
        self.assertIn("dry run: nothing is touched", result.stdout)
        self.assertIn("register two extensions with their stored credentials", result.stdout)
        after = tree_state(root)
        for name in ("drtest.log",):
            after.pop(name, None)
        self.assertEqual(after, before)
        self.assertEqual(os.listdir(scratch), [])
        self.assertIsNone(report)

    async def test_restore_refused_while_warden_runs(self) -> None:
        """
        While a real twistd warden runs, wardenctl restore of a real backup is
        refused with one line naming its pid and how to stop it, even with
        --force and even into another database (the CDR spool of its data
        directory is Warden's); nothing changes. Once Warden is stopped, the
        restore refuses a database with data without --force, and with it
        goes through.
        """
        warden = await self.start_warden()
        await provision(warden.config_path, 2, first=4000)
        made = await wardenctl(warden.config_path, "backup", "--type", "database")
        self.assertEqual(made.code, 0, made.stderr)
        path = made.stdout.split()[1]
        with sqlite3.connect(warden.database_path) as connection:
            connection.execute("DELETE FROM extensions WHERE number = '4001'")
        elsewhere = warden.workdir / "elsewhere.db"
        for extra in ((), ("--force",), ("--to-database", str(elsewhere))):
            refused = await wardenctl(warden.config_path, "restore", path, *extra)
            self.assertEqual(refused.code, 1, extra)
            self.assertEqual(refused.stderr.count("\n"), 1, refused.stderr)
            self.assertIn(
                f"{warden.data_dir.resolve()} is in use by a running Warden (pid {warden.pid}:",
                refused.stderr,
            )
            self.assertIn(f"kill -TERM {warden.pid}) and restore again", refused.stderr)
        listed = await wardenctl(warden.config_path, "extension", "list", "--json")
        self.assertEqual([e["number"] for e in json.loads(listed.stdout)], ["4000"])
        self.assertFalse(elsewhere.exists())
        await warden.stop()
        refused = await wardenctl(warden.config_path, "restore", path)
        self.assertEqual(refused.code, 1)
        self.assertIn("holds a live database; stop Warden and pass --force", refused.stderr)
        listed = await wardenctl(warden.config_path, "extension", "list", "--json")
        self.assertEqual([e["number"] for e in json.loads(listed.stdout)], ["4000"])
        forced = await wardenctl(warden.config_path, "restore", path, "--force")
        self.assertEqual(forced.code, 0, forced.stderr)
        listed = await wardenctl(warden.config_path, "extension", "list", "--json")
        self.assertEqual([e["number"] for e in json.loads(listed.stdout)], ["4000", "4001"])

    async def test_scheduled_backups(self) -> None:
        """[backup] interval makes backups inside twistd warden, keeping keep_count."""
        warden = await self.start_warden({"backup": {"interval": 0.5, "keep_count": 2}})
        await provision(warden.config_path, 2, first=5000)
        backups = warden.data_dir / "backups"
        self.assertTrue(await poll(lambda: len(list_backups(backups)) == 2, 20))
        first_two = {p for _, p in list_backups(backups)}
        # A third backup replaces the oldest: retention at work.
        self.assertTrue(await poll(lambda: {p for _, p in list_backups(backups)} != first_two, 20))
        await warden.stop()
        kept = list_backups(backups)
        self.assertEqual(len(kept), 2)
        self.assertEqual([p for p in os.listdir(backups) if p.startswith(".")], [])
        manifest = read_manifest(kept[-1][1], signing_key(warden.data_dir))
        assert manifest.database is not None
        self.assertEqual(manifest.database.row_counts["extensions"], 2)


class DrillOnPostgreSQLTests(IntegrationTestCase):
    """PostgreSQL: pg_dump backup of a running Warden, restore into a scratch database."""

    def setUp(self) -> None:
        """A throwaway PostgreSQL server (skipped locally when it cannot run)."""
        super().setUp()
        from warden.testing.servers import postgresql

        self.pg = postgresql()

    async def test_backup_during_traffic_then_drill(self) -> None:
        """
        On PostgreSQL: a pg_dump backup taken while SIPp registers and calls is
        restored into a scratch database, proven with a call, and dropped.
        """
        url = self.pg.create_database("warden_dr_traffic")
        report = await traffic_backup_drill(self, {"store": {"url": url}})
        steps = {s["name"]: s for s in report["steps"]}
        self.assertIn("into postgresql://", steps["restore-database"]["detail"])
        self.assertIn("/warden_drtest_", steps["restore-database"]["detail"])
        databases = self.pg.psql("SELECT datname FROM pg_database ORDER BY datname")
        self.assertNotIn("warden_drtest_", databases)

    async def test_backup_and_drill(self) -> None:
        """The drill restores the dump into a scratch database, proves a call, drops it."""
        url = self.pg.create_database("warden_dr_live")
        warden = await self.start_warden({"store": {"url": url}})
        await provision(warden.config_path, 3, first=6000)
        made = await wardenctl(warden.config_path, "backup")
        self.assertEqual(made.code, 0, made.stderr)
        path = Path(made.stdout.split()[1])
        manifest = read_manifest(path, signing_key(warden.data_dir))
        assert manifest.database is not None
        self.assertEqual(manifest.database.dialect, "postgresql")
        self.assertEqual(manifest.database.row_counts["extensions"], 3)
        result, report = await drtest(
            warden.workdir, "--config", str(warden.config_path), "--backup", str(path)
        )
        self.assertEqual(result.code, 0, f"{result.stdout}{result.stderr}")
        self.assertEqual(report["result"], "pass")
        databases = self.pg.psql("SELECT datname FROM pg_database ORDER BY datname")
        self.assertNotIn("warden_drtest_", databases)
        refused = await wardenctl(warden.config_path, "restore", str(path))
        self.assertEqual(refused.code, 1)
        self.assertIn("is in use by a running Warden", refused.stderr)
        # Another node's data directory, the same store: the store's lock refuses.
        other = await wardenctl(
            warden.config_path, "restore", str(path), "--force",
            "--data-dir", str(warden.workdir / "other-node"),
        )  # fmt: skip
        self.assertEqual(other.code, 1)
        self.assertEqual(other.stderr.count("\n"), 1, other.stderr)
        self.assertIn("is in use by warden integration pid", other.stderr)
        self.assertIn("stop every Warden on this store first", other.stderr)
        listed = await wardenctl(warden.config_path, "extension", "list", "--json")
        self.assertEqual(len(json.loads(listed.stdout)), 3)

    def tearDown(self) -> Deferred[None] | None:
        """Nothing beyond the harness's cleanups."""
        return None


class DrillTypesTests(IntegrationTestCase):
    """Each test type on a fresh installation, and a backup of the wrong type."""

    async def test_each_type_passes(self) -> None:
        """database-only, config-only and files-only drills pass on their own backups."""
        root = self.workdir()
        sources = make_installation(root)
        for test_type, first_step in (
            ("database-only", "restore-database"),
            ("config-only", "restore-config"),
            ("files-only", "restore-files"),
        ):
            result, report = await drtest(
                root, "--config", str(sources.config_path), "--create-backup",
                "--test-type", test_type,
            )  # fmt: skip
            self.assertEqual(result.code, 0, f"{test_type}: {result.stdout}{result.stderr}")
            names = [s["name"] for s in report["steps"]]
            self.assertIn(first_step, names)
            if test_type == "files-only":
                self.assertNotIn("start-scratch-warden", names)
            else:
                self.assertIn("start-scratch-warden", names)

    async def test_wrong_backup_type_fails(self) -> None:
        """A files backup cannot serve a database-only drill: exit 1, named."""
        root = self.workdir()
        sources = make_installation(root)
        path = create_backup(sources, "files", root / "backups", 1_764_100_000.0)
        result, report = await drtest(
            root, "--config", str(sources.config_path), "--backup", str(path),
            "--test-type", "database-only",
        )  # fmt: skip
        self.assertEqual(result.code, 1)
        self.assertIn("a files backup cannot serve a database-only test", report["problems"][0])
