"""
A whole-directory snapshot in memory in front of any L{IDirectory}.

The registrar and the call controller look an extension up for every REGISTER
and INVITE. Even a TTL cache misses for every phone's first request after the
TTL, and each miss is a round trip through the database thread. The directory
is small (10,000 extensions is a few megabytes), so ``SnapshotDirectory`` keeps
all of it in memory: lookups never leave the reactor thread. Writes go through
to the inner store and update the snapshot. Changes made by another process
(``wardenctl``) are noticed by polling a cheap change counter every
``refresh_interval`` seconds (SQLite's ``PRAGMA data_version``) and reloading
the table when it moved; a number missing from the snapshot is looked up in the
store, so a new extension works at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from warden.interfaces import IDirectory
from warden.model import Extension
from warden.store.tables import qualified_numbers

# Numbers remembered as absent at most (a scanner trying random numbers).
MAX_ABSENT = 100_000


@implementer(IDirectory)
class SnapshotDirectory:
    """
    Args:
        inner: the directory that holds the data.
        clock: drives the refresh loop.
        refresh_interval: seconds between change checks (0: never refresh).
        version: fires with a number that changes when another process changed
            the data (for SQLite, ``PRAGMA data_version``).
    """

    log = Logger()

    def __init__(
        self,
        inner: IDirectory,
        clock: IReactorTime,
        refresh_interval: float,
        version: Callable[[], Deferred[int]],
    ) -> None:
        self._inner = inner
        self._clock = clock
        self._interval = refresh_interval
        self._version = version
        self._seen_version: int | None = None
        self._extensions: dict[str, Extension] = {}
        self._absent: dict[str, float] = {}
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = clock
        self.loaded = False

    def load(self) -> Deferred[int]:
        """Read every extension (and the change counter) into memory; fire with their count."""
        return Deferred.fromCoroutine(self._load())

    async def _load(self) -> int:
        version = await self._version()
        extensions = await self._inner.list_extensions()
        self._extensions = {e.number: e for e in extensions}
        self._absent.clear()
        self._seen_version = version
        self.loaded = True
        return len(extensions)

    def start(self) -> None:
        """Poll for changes made elsewhere."""
        if self._interval > 0 and not self._loop.running:
            d = self._loop.start(self._interval, now=False)
            d.addErrback(lambda f: self.log.failure("Directory refresh stopped", f))

    def stop(self) -> None:
        """Stop polling."""
        if self._loop.running:
            self._loop.stop()

    def refresh(self) -> Deferred[None]:
        """Reload when the change counter moved; a failed check is logged and retried."""
        return Deferred.fromCoroutine(self._refresh())

    async def _refresh(self) -> None:
        try:
            version = await self._version()
            if version != self._seen_version:
                await self.load()
        except Exception:
            self.log.failure("Could not refresh the directory snapshot")

    # -- IDirectory -------------------------------------------------------------------

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        """
        From memory. A number not in the snapshot is looked up in the store (so an
        extension added a moment ago works at once) and, when absent there too,
        remembered as absent for ``refresh_interval`` seconds, so unknown numbers
        (scanners) do not reach the database on every request.
        """
        found = self._extensions.get(number)
        if found is not None:
            return defer.succeed(found)
        now = self._clock.seconds()
        if self._absent.get(number, 0.0) > now:
            return defer.succeed(None)
        d = self._inner.get_extension(number)

        def looked_up(extension: Extension | None) -> Extension | None:
            if extension is None:
                if len(self._absent) >= MAX_ABSENT:
                    self._absent.clear()
                self._absent[number] = now + self._interval
            else:
                self._extensions[number] = extension
            return extension

        d.addCallback(looked_up)
        return d

    def list_extensions(self) -> Deferred[list[Extension]]:
        """From the store (ordered as it orders them)."""
        return self._inner.list_extensions()

    def count_extensions(self) -> Deferred[int]:
        """From the store."""
        return self._inner.count_extensions()

    def qualified_numbers(self) -> Deferred[list[str]]:
        """From memory (the qualify rounds ask every ``interval``; the store is
        asked only until the first load)."""
        if not self.loaded:
            return self._inner.qualified_numbers()
        return defer.succeed(qualified_numbers(self._extensions.values()))

    def add_extension(self, extension: Extension) -> Deferred[None]:
        """Through to the store, then into memory."""
        d = self._inner.add_extension(extension)
        d.addCallback(self._put, [extension])
        return d

    def update_extension(self, extension: Extension) -> Deferred[None]:
        """Through to the store, then into memory."""
        d = self._inner.update_extension(extension)
        d.addCallback(self._put, [extension])
        return d

    def remove_extension(self, number: str) -> Deferred[bool]:
        """Through to the store, then out of memory."""
        d = self._inner.remove_extension(number)

        def removed(existed: bool) -> bool:
            self._extensions.pop(number, None)
            return existed

        d.addCallback(removed)
        return d

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """Through to the store, then into memory."""
        d = self._inner.upsert_extensions(extensions)

        def stored(counts: tuple[int, int]) -> tuple[int, int]:
            self._put(None, extensions)
            return counts

        d.addCallback(stored)
        return d

    def _put(self, result: None, extensions: Sequence[Extension]) -> None:
        for extension in extensions:
            self._absent.pop(extension.number, None)
            self._extensions[extension.number] = attrs.evolve(extension)
        return result
