"""
Run locks: a running Warden holds its data directory and its store, so that a
restore cannot write under it.

A restore that carries call records for the CDR spool must run while Warden is
stopped: a running Warden reads its spool only at start-up and empties it once
its own records are stored, so records appended meanwhile would be lost; and a
database restored under a running Warden is overwritten by its caches. The
locks make that rule hold:

- **Directories** (the data directory, and the directory of an SQLite
  database): ``warden.lock`` in it, locked with ``flock``. Every running Warden
  holds it shared (several may share a directory); a restore takes it
  exclusively and without waiting, so it is refused while any Warden runs
  there, and a Warden does not start while a restore runs. The file holds one
  line naming the holder (``pid 1234: twistd -n warden ...``) for the message.
  The kernel drops the lock when the process ends, so a crash leaves nothing
  stale behind; Warden keeps it until then (past its last spool flush at
  shutdown).
- **PostgreSQL stores** (shared by cluster nodes): the session-level advisory
  lock L{STORE_LOCK_KEY}, held shared on a connection of its own by every
  running Warden (L{StoreRunLock}, taken before the migrations, taken again
  after that connection is lost, dropped when the process ends) and taken
  exclusively by a restore (L{warden.backup.postgres.lock_for_restore}).
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from warden.config import WardenConfig

if TYPE_CHECKING:
    from warden.interfaces import IWardenReactor
    from warden.store.pgpool import Connection

LOCK_NAME = "warden.lock"
#: The advisory lock (one bigint key) every running Warden holds shared on its
#: PostgreSQL store; a restore takes it exclusively.
STORE_LOCK_KEY = 0x5741_5244_5255
_HOLDER_BYTES = 512
_T = TypeVar("_T")
_ATTEMPTS = 5
_BACKOFF = 0.2
_MAX_BACKOFF = 5.0


class LockFailed(Exception):
    """A run lock cannot be taken; the message says why, in one line."""


class InUse(LockFailed):
    """A lock is held by another process; the message names it and what to do."""


def describe_process(pid: int | None = None, argv: Iterable[str] | None = None) -> str:
    """``pid 1234: twistd -n warden --config ...`` for this process (one line, bounded)."""
    pid = os.getpid() if pid is None else pid
    command = " ".join(sys.argv if argv is None else argv)
    line = f"pid {pid}: {command}".replace("\n", " ")
    return line[: _HOLDER_BYTES - 1]


def lock_directories(data_dir: str, sqlite_path: str | None) -> list[Path]:
    """
    The directories a Warden on ``data_dir`` (and an SQLite database at
    ``sqlite_path``) holds, resolved and without duplicates.
    """
    found: list[Path] = []
    directories = [data_dir]
    if sqlite_path is not None:
        directories.append(os.path.dirname(os.path.abspath(sqlite_path)))
    for directory in directories:
        resolved = Path(directory).resolve()
        if resolved not in found:
            found.append(resolved)
    return found


class DirectoryLock:
    """
    ``warden.lock`` in one directory (created 0600 when missing, the directory
    with it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def _open(self) -> int:
        """
        Open (or create) the lock file. Made by root (``wardenctl restore`` run
        as root), it is given to the directory's owner, so that a Warden running
        as that user can still lock it.

        Raises:
            LockFailed: it cannot be opened or created.
        """
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
            if os.geteuid() == 0:
                owner = os.stat(self.directory)
                os.fchown(fd, owner.st_uid, owner.st_gid)
        except OSError as e:
            raise LockFailed(f"{self.path}: cannot open the run lock: {e.strerror}") from None
        return fd

    def holder(self) -> str:
        """The line the holder wrote (``pid ...: command``), or ``another process``."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(_HOLDER_BYTES).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return text.splitlines()[0] if text else "another process"

    def acquire(self, exclusive: bool, description: str | None = None) -> None:
        """
        Take the lock without waiting, and write ``description`` into the file.

        Raises:
            InUse: another process holds it (shared when ``exclusive``, or
                exclusively), naming that process.
            LockFailed: the file cannot be opened or created.
        """
        fd = self._open()
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InUse(self.holder()) from None
        self._fd = fd
        if description is not None:
            self.describe(description)

    def describe(self, description: str) -> None:
        """Write the holder's line (after a fork the pid is the child's)."""
        if self._fd is None:
            return
        data = (description[: _HOLDER_BYTES - 1] + "\n").encode("utf-8", "replace")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Drop the lock (closing the file drops it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class DirectoryRunLocks(service.Service):
    """
    The directory locks of a running Warden: taken (shared) by L{acquire}, the
    holder's line written when the service is started (after twistd has
    forked), held until the process ends.
    """

    def __init__(self, directories: Iterable[Path]) -> None:
        self._locks = [DirectoryLock(d) for d in directories]

    def acquire(self) -> None:
        """
        Take every lock shared.

        Raises:
            InUse: a restore holds one (the message says which and what to do).
            LockFailed: a lock file cannot be opened or created.
        """
        for lock in self._locks:
            try:
                lock.acquire(exclusive=False)
            except InUse as e:
                self.release()
                raise InUse(
                    f"{lock.directory} is being restored ({e}); start Warden when the"
                    " restore has finished"
                ) from None

    def privilegedStartService(self) -> None:
        """Name this process in the lock files (twistd has forked by now)."""
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        for lock in self._locks:
            lock.describe(describe_process())

    def release(self) -> None:
        """Drop every lock held (a process that goes on without serving)."""
        for lock in self._locks:
            lock.release()


class StoreRunLock(service.Service):
    """
    The shared advisory lock a running Warden holds on its PostgreSQL store,
    on a connection of its own (named ``warden <node> pid <pid>`` in
    ``pg_stat_activity``). L{hold} takes it (Warden's start waits for it);
    afterwards the connection is checked every ``check_interval`` seconds and
    the lock taken again on a new connection when it was lost. The connection
    stays open until the process ends.

    Args:
        connect: makes a txpostgres connection (L{warden.store.pgpool.connect_txpostgres}).
        clock: for the checks.
        application_name: how the connection names itself.
    """

    log = Logger()

    def __init__(
        self,
        connect: Callable[[], Deferred[Connection]],
        clock: IReactorTime,
        application_name: str,
        check_interval: float = 10.0,
    ) -> None:
        self._connect = connect
        self._clock = clock
        self._name = application_name
        self._interval = check_interval
        self._connection: Connection | None = None
        self._loop: task.LoopingCall | None = None

    async def _take(self) -> None:
        connection = await self._connect()
        try:
            await connection.runOperation(
                "SELECT set_config('application_name', %s, false)", (self._name,)
            )
            rows = await connection.runQuery(
                "SELECT pg_try_advisory_lock_shared(%s)", (STORE_LOCK_KEY,)
            )
        except Exception:
            connection.close()
            raise
        if not rows[0][0]:
            connection.close()
            raise InUse("the store is being restored; start Warden when the restore has finished")
        self._connection = connection

    async def _take_with_retries(self) -> None:
        delay = _BACKOFF
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                await self._take()
                return
            except InUse:
                raise
            except Exception as e:  # the store unreachable: as the pool, a few more tries
                if attempt == _ATTEMPTS:
                    raise
                self.log.warn(
                    "Store run lock not taken ({error}); attempt {next} in {delay} s",
                    error=e, next=attempt + 1, delay=delay,
                )  # fmt: skip
            await task.deferLater(self._clock, delay, lambda: None)
            delay = min(delay * 2, _MAX_BACKOFF)

    def hold(self) -> Deferred[None]:
        """
        Take the lock now: fails with L{InUse} at once while a restore runs;
        a store that cannot be reached is tried again as the connection pool
        does (L{warden.store.pgpool}: 5 attempts, 0.2 s back-off doubling).
        """
        d: Deferred[None] = Deferred.fromCoroutine(self._take_with_retries())
        return d

    def startService(self) -> None:
        """Check the lock's connection from now on."""
        super().startService()  # type: ignore[no-untyped-call]
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda f: self.log.failure("Store run lock checks stopped", f)
        )

    def _check(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._check_once())

    async def _check_once(self) -> None:
        if self._connection is not None:
            try:
                await self._connection.runQuery("SELECT 1")
                return
            except Exception as e:  # the connection is gone: so is the lock
                self.log.warn("Store run lock lost ({error}); taking it again", error=e)
            self.release()
        try:
            await self.hold()
        except Exception as e:
            self.log.error("Store run lock not taken again: {error}", error=e)

    def stopService(self) -> None:
        """Stop checking; the lock stays held until the process ends."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def release(self) -> None:
        """Close the lock's connection (which drops the lock)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already closed
                pass


class RunLocks(service.MultiService):
    """
    Everything a running Warden holds (see the module docstring): its
    directories at once, its PostgreSQL store before the migrations.
    """

    def __init__(self, directories: DirectoryRunLocks, store: StoreRunLock | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.directories = directories
        self.store = store
        directories.setServiceParent(self)  # type: ignore[no-untyped-call]
        if store is not None:
            store.setServiceParent(self)  # type: ignore[no-untyped-call]

    def before(self, migrate: Callable[[], Deferred[_T]]) -> Callable[[], Deferred[_T]]:
        """``migrate``, run once the store lock is held."""
        store = self.store
        if store is None:
            return migrate

        def guarded() -> Deferred[_T]:
            return store.hold().addCallback(lambda _: migrate())

        return guarded


def run_locks(config: WardenConfig, reactor: IWardenReactor) -> RunLocks:
    """
    Take the directory locks of the Warden configured by ``config`` and prepare
    its store lock (see L{RunLocks}).

    Raises:
        InUse: a restore holds a directory.
        LockFailed: a lock file cannot be opened or created.
    """
    url = config.store_url
    sqlite = url.path if url.dialect == "sqlite" else None
    directories = DirectoryRunLocks(lock_directories(config.server.data_dir, sqlite))
    directories.acquire()
    store = None
    if url.dialect == "postgresql":
        from warden.store.backend import connect_kwargs
        from warden.store.pgpool import connect_txpostgres

        kwargs = connect_kwargs(url, config.store.password_file)
        name = f"warden {config.node_id} pid {os.getpid()}"
        store = StoreRunLock(connect_txpostgres(reactor, kwargs), reactor, name)
    return RunLocks(directories, store)
