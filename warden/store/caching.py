"""
A TTL cache in front of any L{IDirectory}.

The registrar looks an extension up on every REGISTER; ``CachingDirectory``
answers repeated lookups from memory for ``ttl`` seconds, so the hot path rarely
reaches the database, while edits made by another process (``wardenctl``) become
visible within ``ttl``. Writes made through the cache invalidate it at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.interfaces import IDirectory
from warden.model import Extension

_T = TypeVar("_T")


@implementer(IDirectory)
class CachingDirectory:
    """
    Cache ``get_extension`` results (found or not) per number for ``ttl`` seconds.

    Other reads pass through. Every write goes to ``inner`` and drops the cached
    entries it may change, both when it is issued and when it completes; a lookup
    that was in flight while a write happened is returned but not cached.

    Args:
        inner: the directory that holds the data.
        clock: the time source.
        ttl: seconds an answer stays fresh; 0 disables the cache.
        max_entries: at most this many numbers are cached (oldest dropped first).
    """

    def __init__(
        self,
        inner: IDirectory,
        clock: IReactorTime,
        ttl: float,
        max_entries: int = 100_000,
    ) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        self._inner = inner
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        # number -> (fresh until, answer); insertion order is expiry order.
        self._cache: dict[str, tuple[float, Extension | None]] = {}
        self._generation = 0

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        """Fire with the extension for ``number`` or None, from the cache when fresh."""
        now = self._clock.seconds()
        entry = self._cache.get(number)
        if entry is not None and entry[0] > now:
            return defer.succeed(entry[1])
        generation = self._generation
        d: Deferred[Extension | None] = self._inner.get_extension(number)

        def remember(extension: Extension | None) -> Extension | None:
            if self._ttl > 0 and generation == self._generation:
                self._store(number, now + self._ttl, extension)
            return extension

        return d.addCallback(remember)

    def _store(self, number: str, fresh_until: float, extension: Extension | None) -> None:
        self._cache.pop(number, None)
        self._cache[number] = (fresh_until, extension)
        now = self._clock.seconds()
        while self._cache:
            oldest = next(iter(self._cache))
            if self._cache[oldest][0] > now and len(self._cache) <= self._max_entries:
                break
            del self._cache[oldest]

    def _invalidate(self, numbers: Iterable[str] | None) -> None:
        self._generation += 1
        if numbers is None:
            self._cache.clear()
            return
        for number in numbers:
            self._cache.pop(number, None)

    def _write(self, d: Deferred[_T], numbers: Iterable[str] | None) -> Deferred[_T]:
        keep = None if numbers is None else list(numbers)
        self._invalidate(keep)

        def after(result: _T | Failure) -> _T | Failure:
            self._invalidate(keep)
            return result

        d.addBoth(after)
        return d

    def add_extension(self, extension: Extension) -> Deferred[None]:
        """Add ``extension`` to the inner directory."""
        return self._write(self._inner.add_extension(extension), [extension.number])

    def update_extension(self, extension: Extension) -> Deferred[None]:
        """Replace ``extension`` in the inner directory."""
        return self._write(self._inner.update_extension(extension), [extension.number])

    def remove_extension(self, number: str) -> Deferred[bool]:
        """Remove ``number`` from the inner directory."""
        return self._write(self._inner.remove_extension(number), [number])

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """Bulk upsert into the inner directory; empties the cache."""
        return self._write(self._inner.upsert_extensions(extensions), None)

    def list_extensions(self) -> Deferred[list[Extension]]:
        """Fire with every extension, from the inner directory."""
        d: Deferred[list[Extension]] = self._inner.list_extensions()
        return d

    def count_extensions(self) -> Deferred[int]:
        """Fire with the number of extensions, from the inner directory."""
        d: Deferred[int] = self._inner.count_extensions()
        return d
