"""
Scheduled backups inside ``twistd warden`` (``[backup] interval``).

L{BackupService} takes a backup every ``interval`` seconds, in a thread so that
SIP traffic never waits for it (the SQLite online backup reads a snapshot; the
writer is not blocked in WAL mode), then deletes the backups beyond the
retention limits. The next backup is scheduled when the previous one ends, so
two never overlap; stopping the service waits for a running one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from warden.backup.backup import (
    BackupSources,
    create_backup,
    idle_scheduling,
    lower_priority,
    prune_backups,
    restore_priority,
    sources_from_config,
)
from warden.backup.crypto import load_key
from warden.config import WardenConfig

ThreadRunner = Callable[..., Deferred[Any]]
_DAY = 86400.0


class BackupService(service.Service):
    """
    Periodic backups with retention.

    Args:
        clock: schedules the backups and stamps them.
        sources: what to back up.
        kind: the backup type.
        directory: where backups go.
        interval: seconds between backups (> 0).
        keep_count: newest backups kept (0: no limit).
        keep_seconds: age beyond which backups are deleted (0: no limit).
        key_file: encrypt with this key file ("" for none); read at each backup.
        in_thread: runs a blocking function and returns a Deferred (a thread pool
            in production; synchronous in unit tests).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        sources: BackupSources,
        kind: str,
        directory: Path,
        interval: float,
        keep_count: int,
        keep_seconds: float,
        key_file: str,
        in_thread: ThreadRunner,
    ) -> None:
        self._clock = clock
        self._sources = sources
        self._kind = kind
        self._directory = directory
        self._interval = interval
        self._keep_count = keep_count
        self._keep_seconds = keep_seconds
        self._key_file = key_file
        self._in_thread = in_thread
        self._next: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self.made = 0
        self.failed = 0
        self.last_backup: Path | None = None

    def startService(self) -> None:
        """Schedule the first backup one interval from now."""
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule()

    def _schedule(self) -> None:
        if self.running:
            self._next = self._clock.callLater(self._interval, self._start_backup)

    def _start_backup(self) -> None:
        self._next = None
        self._running = self.backup_now()
        self._running.addBoth(self._ended)

    def _ended(self, _: object) -> None:
        self._running = None
        self._schedule()

    def backup_now(self) -> Deferred[None]:
        """Take one backup and apply retention; never fails (errors are logged)."""
        now = self._clock.seconds()

        def work() -> tuple[Path, list[Path]]:
            thread = threading.get_native_id()
            previous = lower_priority(thread)
            try:
                key = load_key(self._key_file) if self._key_file else None
                with idle_scheduling():  # this pool's one thread only does backups
                    made = create_backup(self._sources, self._kind, self._directory, now, key)
                pruned = prune_backups(self._directory, self._keep_count, self._keep_seconds, now)
            finally:
                restore_priority(previous, thread)
            return made, pruned

        def done(result: tuple[Path, list[Path]]) -> None:
            made, pruned = result
            self.made += 1
            self.last_backup = made
            self.log.info(
                "Backup {path} made in {seconds:.2f}s; {pruned} old backups deleted",
                path=str(made), seconds=self._clock.seconds() - now, pruned=len(pruned),
            )  # fmt: skip

        def failed(failure: Any) -> None:
            self.failed += 1
            self.log.error("Scheduled backup failed: {error}", error=str(failure.value))

        d = self._in_thread(work)
        d.addCallbacks(done, failed)
        return d

    def stopService(self) -> Deferred[None]:
        """Cancel the next backup and wait for a running one."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._running is not None:
            running: Deferred[None] = Deferred()
            self._running.addBoth(lambda _: running.callback(None))
            return running
        return defer.succeed(None)


def backup_service(
    config: WardenConfig, config_path: str | None, reactor: Any
) -> BackupService | None:
    """The scheduled backup service for ``twistd warden``, or None when disabled."""
    section = config.backup
    if section.interval <= 0:
        return None
    sources = sources_from_config(config, config_path)
    directory = Path(section.directory or Path(config.server.data_dir) / "backups")

    # A thread of its own, run at low CPU priority: the reactor's pool keeps
    # its normal priority for the work SIP handling waits on.
    pool = ThreadPool(minthreads=0, maxthreads=1, name="warden-backup")
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)

    def in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, f, *args)

    return BackupService(
        reactor, sources, section.type, directory, section.interval, section.keep_count,
        section.keep_days * _DAY, section.key_file, in_thread,
    )  # fmt: skip
