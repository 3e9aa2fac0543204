"""
Lowering the priority of the PostgreSQL server processes that serve a backup:
recognising the process (/proc), changing it, and, against a throwaway
PostgreSQL server, finding the backends of a real dump.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import manifest_of
from tests.store.conformance import call_record
from warden.backup import postgres
from warden.backup.backup import BackupSources, create_backup, idle_scheduling
from warden.backup.database import PostgresTarget
from warden.backup.priority import (
    BACKUP_NICENESS,
    ServerPriority,
    lower_server_process,
    process_started_at,
)
from warden.backup.spool import SPOOL_COPY
from warden.store.spool import default_spool_path, encode_record


def fake_proc(root: Path, pid: int, name: str, ticks: int, boot: int = 1_700_000_000) -> str:
    """A /proc with ``pid``'s stat (started ``ticks`` clock ticks after ``boot``)."""
    (root / str(pid)).mkdir(parents=True)
    fields = ["S", "1"] + ["0"] * 17 + [str(ticks), "0", "0"]
    (root / str(pid) / "stat").write_text(f"{pid} ({name}) {' '.join(fields)}\n")
    (root / "stat").write_text(f"cpu 1 2 3\nbtime {boot}\nprocesses 9\n")
    return str(root)


class ProcessTests(SynchronousTestCase):
    """Which local process is lowered, and how."""

    def child(self) -> subprocess.Popen[bytes]:
        """
        A child process that lives until the test ends; ``self.base`` is its
        niceness (inherited: other tests may have niced this process) and
        ``self.lower`` a niceness above it.
        """
        process = subprocess.Popen(["sleep", "60"])
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        self.base = os.getpriority(os.PRIO_PROCESS, process.pid)
        self.lower = min(19, self.base + 3)
        return process

    def test_reads_name_and_start(self) -> None:
        """The name may hold spaces and parentheses; the start is boot time plus ticks."""
        proc = fake_proc(Path(self.mktemp()), 4242, "post (gres) x", ticks=250)
        found = process_started_at(4242, proc)
        assert found is not None
        self.assertEqual(found[0], "post (gres) x")
        self.assertAlmostEqual(found[1], 1_700_000_000 + 250 / os.sysconf("SC_CLK_TCK"))
        self.assertIsNone(process_started_at(4243, proc))

    def test_lowers_the_right_process(self) -> None:
        """A process with the expected name and start time gets the niceness asked for."""
        process = self.child()
        found = process_started_at(process.pid)
        assert found is not None
        self.assertEqual(found[0], "sleep")
        done = lower_server_process(process.pid, found[1], niceness=self.lower, name="sleep")
        self.assertEqual(done, f"nice {self.lower}, CPU idle")
        self.assertEqual(os.getpriority(os.PRIO_PROCESS, process.pid), self.lower)
        self.assertEqual(os.sched_getscheduler(process.pid), os.SCHED_IDLE)

    def test_never_raises_priority(self) -> None:
        """A process already nicer than asked is left as it is."""
        process = self.child()
        os.setpriority(os.PRIO_PROCESS, process.pid, 19)
        found = process_started_at(process.pid)
        assert found is not None
        self.assertEqual(
            lower_server_process(process.pid, found[1], 15, name="sleep"), "nice 19, CPU idle"
        )

    def test_leaves_other_processes_alone(self) -> None:
        """Another name, or another start time (a remote backend's PID), changes nothing."""
        process = self.child()
        found = process_started_at(process.pid)
        assert found is not None
        lower = self.lower
        self.assertIsNone(lower_server_process(process.pid, found[1], lower))  # not "postgres"
        self.assertIsNone(lower_server_process(process.pid, found[1] - 60, lower, name="sleep"))
        self.assertIsNone(lower_server_process(2**22 + 1, found[1], lower, name="sleep"))
        self.assertEqual(os.getpriority(os.PRIO_PROCESS, process.pid), self.base)

    def test_io_priority(self) -> None:
        """With ionice, the process is put in the idle I/O class."""
        process = self.child()
        found = process_started_at(process.pid)
        assert found is not None
        ionice = ServerPriority().ionice
        if ionice is None:
            self.skipTest("ionice is not installed (util-linux)")
        done = lower_server_process(process.pid, found[1], self.lower, ionice, name="sleep")
        self.assertEqual(done, f"nice {self.lower}, CPU idle, I/O idle")
        shown = subprocess.run([ionice, "-p", str(process.pid)], capture_output=True, text=True)
        self.assertIn("idle", shown.stdout)


class Recording(ServerPriority):
    """A ServerPriority that remembers what it was asked to lower."""

    def __init__(self) -> None:
        super().__init__(ionice="")
        self.calls: list[tuple[str, str | None]] = []

    def lower(self, pid: int, started_at: float, role: str) -> str | None:
        done = super().lower(pid, started_at, role)
        self.calls.append((role, done))
        return done


class PostgreSQLBackupTests(SynchronousTestCase):
    """pg_dump backups on a throwaway PostgreSQL server (skipped when it cannot run)."""

    def setUp(self) -> None:
        """A migrated database with one call record."""
        from warden.testing.servers import postgresql

        self.url = postgresql().create_database("warden_dr_priority")
        connection = postgres._connect(self.url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL,"
                    " name TEXT NOT NULL)"
                )
            connection.commit()
            postgres._migrate(self.url)
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO call_records (call_id, caller, dialled, started_at, ended_at,"
                    " disposition, hangup_side) VALUES"
                    " ('stored-1', '100', '101', 900, 960, 'ANSWERED', 'caller')"
                )
            connection.commit()
        finally:
            connection.close()

    def test_dump_lowers_its_backends(self) -> None:
        """
        Both server processes of a dump, the one counting rows and the one
        streaming them to pg_dump, are found; as root (the server runs as
        another user) both are lowered.
        """
        priority = Recording()
        destination = Path(self.mktemp())
        info, _, stored = postgres.dump(self.url, destination, ["stored-1", "x"], priority)
        self.assertEqual(info.row_counts["call_records"], 1)
        self.assertEqual(stored, {"stored-1"})
        self.assertTrue(destination.stat().st_size > 0)
        roles = [role.split()[2] for role, _ in priority.calls]
        self.assertEqual(roles, ["counting", "streaming"])
        if os.geteuid() == 0:
            self.assertEqual(
                [done for _, done in priority.calls], [f"nice {BACKUP_NICENESS}, CPU idle"] * 2
            )

    def test_spool_backup(self) -> None:
        """The spool's records the snapshot already holds are left out of the copy."""
        data_dir = Path(self.mktemp()).resolve()
        data_dir.mkdir()
        pending = call_record("pending-1", 1500.0)
        Path(default_spool_path(str(data_dir))).write_bytes(
            encode_record(call_record("stored-1", 900.0)) + encode_record(pending)
        )
        sources = BackupSources(PostgresTarget(self.url), None, str(data_dir))
        path = create_backup(sources, "database", data_dir / "backups", 1_764_100_000.0)
        manifest = manifest_of(path, sources)
        assert manifest.database is not None
        self.assertEqual(manifest.database.row_counts["call_records"], 1)
        self.assertEqual(manifest.database.spool.records, 1)
        self.assertEqual(manifest.database.last_cdr_at, 1565.0)
        self.assertEqual((path / SPOOL_COPY).read_bytes(), encode_record(pending))


class IdleSchedulingTests(SynchronousTestCase):
    """Backup work runs in the idle scheduling class, restored afterwards."""

    def test_idle_while_backing_up(self) -> None:
        """Inside the block the thread is SCHED_IDLE; after it, its old policy again."""
        seen: list[object] = []

        def run() -> None:  # in a thread of its own: the test runner is not touched
            before = os.sched_getscheduler(0)
            with idle_scheduling() as ok:
                seen.append((ok, os.sched_getscheduler(0)))
            seen.append((before, os.sched_getscheduler(0)))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        (ok, during), (before, after) = seen
        self.assertTrue(ok)
        self.assertEqual(during, os.SCHED_IDLE)
        if os.geteuid() == 0:
            self.assertEqual(after, before)
