"""Tests for warden.runlock: what a running Warden holds, and what a restore is refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from warden.backup.database import SQLiteTarget
from warden.backup.manifest import BackupError
from warden.backup.restore import exclusive_use
from warden.config import parse_config_text
from warden.runlock import (
    LOCK_NAME,
    STORE_LOCK_KEY,
    DirectoryLock,
    InUse,
    LockFailed,
    StoreRunLock,
    describe_process,
    lock_directories,
    run_locks,
)
from warden.tap import Options, makeService


class DirectoryLockTests(SynchronousTestCase):
    """flock on warden.lock: Wardens share it, a restore needs it alone."""

    def setUp(self) -> None:
        """A fresh directory."""
        self.directory = Path(self.mktemp()).resolve()

    def lock(self) -> DirectoryLock:
        lock = DirectoryLock(self.directory)
        self.addCleanup(lock.release)
        return lock

    def test_shared_holders_coexist(self) -> None:
        """Two Wardens on one directory both hold it; the file is private (0600)."""
        self.lock().acquire(exclusive=False, description="pid 1: first")
        self.lock().acquire(exclusive=False, description="pid 2: second")
        self.assertEqual(os.stat(self.directory / LOCK_NAME).st_mode & 0o777, 0o600)

    def test_exclusive_refused_naming_the_holder(self) -> None:
        """While a Warden holds it, an exclusive lock is refused, naming that Warden."""
        self.lock().acquire(exclusive=False, description="pid 4242: twistd -n warden")
        e = self.assertRaises(InUse, self.lock().acquire, True)
        self.assertEqual(str(e), "pid 4242: twistd -n warden")

    def test_released_lock_is_free(self) -> None:
        """Once the holder lets go (or ends), the exclusive lock is granted."""
        first = self.lock()
        first.acquire(exclusive=False, description="pid 1: x")
        first.release()
        self.lock().acquire(exclusive=True)

    def test_made_by_root_belongs_to_the_directory_owner(self) -> None:
        """A lock file a root restore creates is given to the data directory's owner."""
        if os.geteuid() != 0:
            raise SkipTest("needs root to create a file for another user")
        self.directory.mkdir()
        os.chown(self.directory, 65534, 65534)
        self.lock().acquire(exclusive=True)
        owner = os.stat(self.directory / LOCK_NAME)
        self.assertEqual((owner.st_uid, owner.st_gid), (65534, 65534))

    def test_unusable_lock_file_is_one_line(self) -> None:
        """A lock file that cannot be made fails with LockFailed naming it, not OSError."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.directory.write_text("a file where the directory should be")
        e = self.assertRaises(LockFailed, self.lock().acquire, False)
        self.assertIn(f"{self.directory / LOCK_NAME}: cannot open the run lock", str(e))

    def test_describe_process(self) -> None:
        """The holder's line is one line with the pid and the command."""
        line = describe_process(77, ["twistd", "-n", "warden\nx"])
        self.assertEqual(line, "pid 77: twistd -n warden x")

    def test_directories(self) -> None:
        """An SQLite database in the data directory adds nothing; elsewhere its directory."""
        data = self.directory / "data"
        self.assertEqual(lock_directories(str(data), str(data / "warden.db")), [data])
        self.assertEqual(
            lock_directories(str(data), str(self.directory / "db" / "w.db")),
            [data, self.directory / "db"],
        )
        self.assertEqual(lock_directories(str(data), None), [data])


class RestoreLockTests(SynchronousTestCase):
    """exclusive_use: the restore's side."""

    def test_refused_while_warden_runs(self) -> None:
        """A restore into a running Warden's data directory fails with one line naming it."""
        data = Path(self.mktemp()).resolve()
        server = DirectoryLock(data)
        server.acquire(exclusive=False, description="pid 4242: twistd -n warden --config w.toml")
        self.addCleanup(server.release)
        with self.assertRaises(BackupError) as caught:
            with exclusive_use(data, SQLiteTarget(str(data / "warden.db"))):
                self.fail("the restore ran")
        message = str(caught.exception)
        self.assertIn(f"{data} is in use by a running Warden (pid 4242: twistd", message)
        self.assertIn("stop it first (systemctl stop warden, or kill -TERM 4242)", message)
        self.assertNotIn("\n", message)

    def test_sqlite_elsewhere_is_locked_too(self) -> None:
        """A database outside the data directory: its directory's lock counts as well."""
        root = Path(self.mktemp()).resolve()
        server = DirectoryLock(root / "db")
        server.acquire(exclusive=False, description="pid 9: twistd -n warden")
        self.addCleanup(server.release)
        target = SQLiteTarget(str(root / "db" / "warden.db"))
        e = self.assertRaises(BackupError, exclusive_use(root / "restored", target).__enter__)
        self.assertIn(f"{root / 'db'} is in use", str(e))

    def test_free_and_released_after(self) -> None:
        """With no Warden the restore runs, and a Warden may start again afterwards."""
        data = Path(self.mktemp()).resolve()
        with exclusive_use(data, SQLiteTarget(str(data / "warden.db"))):
            e = self.assertRaises(InUse, DirectoryLock(data).acquire, False)
            self.assertIn(f"pid {os.getpid()}:", str(e))
        server = DirectoryLock(data)
        server.acquire(exclusive=False)
        server.release()


class ServerStartTests(SynchronousTestCase):
    """twistd warden takes its locks in makeService."""

    def test_start_refused_while_restoring(self) -> None:
        """While a restore holds the data directory, makeService exits with one line."""
        data_dir = os.path.join(self.mktemp(), "var")
        restoring = DirectoryLock(Path(data_dir).resolve())
        restoring.acquire(exclusive=True, description="pid 31: wardenctl restore b")
        self.addCleanup(restoring.release)
        options = Options()
        options.parseOptions(["--data-dir", data_dir, "--sip-port", "0"])
        e = self.assertRaises(SystemExit, makeService, options, Clock())
        self.assertIn("is being restored (pid 31: wardenctl restore b)", str(e.code))

    def test_running_warden_holds_its_data_directory(self) -> None:
        """After run_locks, a restore of that data directory is refused."""
        data_dir = Path(self.mktemp()).resolve()
        config = parse_config_text(f'[server]\ndata_dir = "{data_dir}"\n')
        locks = run_locks(config, Clock())
        self.addCleanup(locks.directories.release)
        locks.directories.privilegedStartService()
        e = self.assertRaises(InUse, DirectoryLock(data_dir).acquire, True)
        self.assertIn(f"pid {os.getpid()}:", str(e))


class FakeConnection:
    """A txpostgres connection answering the lock's queries."""

    def __init__(self, granted: bool = True) -> None:
        self.granted = granted
        self.queries: list[tuple[str, Any]] = []
        self.closed = False
        self.broken = False

    def runOperation(self, sql: str, args: Any = None) -> Deferred[None]:
        self.queries.append((sql, args))
        return defer.succeed(None)

    def runQuery(self, sql: str, args: Any = None) -> Deferred[list[tuple[Any, ...]]]:
        self.queries.append((sql, args))
        if self.broken:
            return defer.fail(ConnectionError("server closed the connection"))
        if "pg_try_advisory_lock_shared" in sql:
            return defer.succeed([(self.granted,)])
        return defer.succeed([(1,)])

    def close(self) -> None:
        self.closed = True


class StoreRunLockTests(SynchronousTestCase):
    """The shared advisory lock on a PostgreSQL store."""

    def setUp(self) -> None:
        """A lock whose connections are fakes, made in order."""
        self.clock = Clock()
        self.connections: list[FakeConnection] = []
        self.next_granted = True

        def connect() -> Deferred[Any]:
            connection = FakeConnection(self.next_granted)
            self.connections.append(connection)
            return defer.succeed(connection)

        self.lock = StoreRunLock(connect, self.clock, "warden a pid 1", check_interval=10.0)

    def test_hold_names_the_session_and_takes_the_lock(self) -> None:
        """hold() names the connection and takes the shared lock on the store's key."""
        self.successResultOf(self.lock.hold())
        [connection] = self.connections
        self.assertEqual(connection.queries[0][1], ("warden a pid 1",))
        self.assertEqual(connection.queries[1], ("SELECT pg_try_advisory_lock_shared(%s)",
                                                 (STORE_LOCK_KEY,)))  # fmt: skip
        self.assertFalse(connection.closed)

    def test_refused_while_restoring(self) -> None:
        """While a restore holds the lock, hold() fails with InUse and closes the connection."""
        self.next_granted = False
        failure = self.failureResultOf(self.lock.hold(), InUse)
        self.assertIn("being restored", str(failure.value))
        self.assertTrue(self.connections[0].closed)

    def test_unreachable_store_tried_again(self) -> None:
        """A store not reachable at start is tried 5 times (0.2 s back-off, doubling)."""
        connect_failures = [ConnectionRefusedError("refused")] * 4

        def connect() -> Deferred[Any]:
            if connect_failures:
                return defer.fail(connect_failures.pop())
            connection = FakeConnection()
            self.connections.append(connection)
            return defer.succeed(connection)

        lock = StoreRunLock(connect, self.clock, "warden a pid 1")
        d = lock.hold()
        for delay in (0.2, 0.4, 0.8):
            self.clock.advance(delay)
            self.assertNoResult(d)
        self.clock.advance(1.6)
        self.successResultOf(d)
        self.assertEqual(len(self.connections), 1)

    def test_unreachable_store_gives_up(self) -> None:
        """After 5 failed attempts hold() fails (Warden's start fails with it)."""

        def connect() -> Deferred[Any]:
            return defer.fail(ConnectionRefusedError("refused"))

        d = StoreRunLock(connect, self.clock, "warden a pid 1").hold()
        self.clock.pump([0.2, 0.4, 0.8, 1.6])
        self.failureResultOf(d, ConnectionRefusedError)

    def test_lost_connection_taken_again(self) -> None:
        """A lost connection (and with it the lock) is replaced at the next check."""
        self.successResultOf(self.lock.hold())
        self.lock.startService()
        self.addCleanup(self.lock.stopService)
        self.clock.advance(9.9)
        self.assertEqual(len(self.connections), 1)
        self.connections[0].broken = True
        self.clock.advance(0.1)
        self.assertEqual(len(self.connections), 2)
        self.assertTrue(self.connections[0].closed)
        self.assertFalse(self.connections[1].closed)

    def test_stop_keeps_the_lock(self) -> None:
        """Stopping the service keeps the connection: the lock lasts until the process ends."""
        self.successResultOf(self.lock.hold())
        self.lock.startService()
        self.lock.stopService()
        self.assertFalse(self.connections[0].closed)
        self.clock.advance(60)
        self.assertEqual(len(self.connections), 1)
