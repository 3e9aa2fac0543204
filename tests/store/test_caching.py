"""
CachingDirectory: a conforming IDirectory whose lookups are served from memory
for ``ttl`` seconds, with writes made through it visible at once.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import DirectoryConformanceMixin, extension
from tests.store.test_sqlite import close_pool
from warden.interfaces import IDirectory
from warden.model import Extension
from warden.store.caching import CachingDirectory
from warden.store.migrate import apply_migrations
from warden.store.sqlite import SQLiteDirectory, open_sqlite_pool
from warden.testing import MemoryDirectory


class CountingDirectory(MemoryDirectory):
    """A MemoryDirectory that counts lookups and can hold them unanswered."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.held: list[tuple[Deferred[Extension | None], str]] | None = None

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        self.lookups += 1
        if self.held is None:
            return super().get_extension(number)
        d: Deferred[Extension | None] = Deferred()
        self.held.append((d, number))
        return d

    def answer(self) -> None:
        """Answer the held lookups with what the directory holds now."""
        assert self.held is not None
        held, self.held = self.held, None
        for d, number in held:
            super().get_extension(number).chainDeferred(d)


class CachingDirectoryConformanceTests(DirectoryConformanceMixin, TestCase):
    """CachingDirectory over MemoryDirectory against the IDirectory suite."""

    def make_store(self) -> CachingDirectory:
        return CachingDirectory(MemoryDirectory(), Clock(), 5.0)


class CachingDirectoryTests(SynchronousTestCase):
    """Time-to-live, negative caching and invalidation, against a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.inner = CountingDirectory()
        self.cache = CachingDirectory(self.inner, self.clock, 5.0)

    def get(self, number: str = "100") -> Extension | None:
        result: Extension | None = self.successResultOf(self.cache.get_extension(number))
        return result

    def test_provides_interface(self) -> None:
        """CachingDirectory provides IDirectory completely."""
        self.assertTrue(verifyObject(IDirectory, self.cache))

    def test_cached_within_ttl(self) -> None:
        """A second lookup within ttl is answered from the cache, even if the inner
        directory changed behind its back (another process), until just before ttl."""
        old = extension("100", "Old")
        self.successResultOf(self.inner.add_extension(old))
        self.assertEqual(self.get(), old)
        self.successResultOf(self.inner.update_extension(extension("100", "New")))
        self.clock.advance(4.999)
        self.assertEqual(self.get(), old)
        self.assertEqual(self.inner.lookups, 1)

    def test_refetched_after_ttl(self) -> None:
        """At ttl the entry is stale: the next lookup asks the inner directory."""
        self.successResultOf(self.inner.add_extension(extension("100", "Old")))
        self.get()
        new = extension("100", "New")
        self.successResultOf(self.inner.update_extension(new))
        self.clock.advance(5.0)
        self.assertEqual(self.get(), new)
        self.assertEqual(self.inner.lookups, 2)

    def test_negative_cached(self) -> None:
        """Not-found answers are cached for ttl too."""
        self.assertIsNone(self.get())
        self.successResultOf(self.inner.add_extension(extension("100")))
        self.assertIsNone(self.get())
        self.assertEqual(self.inner.lookups, 1)
        self.clock.advance(5.0)
        self.assertIsNotNone(self.get())

    def test_writes_invalidate(self) -> None:
        """add, update, remove and upsert through the cache are visible to the next
        lookup at once."""
        self.assertIsNone(self.get())
        ext = extension("100", "Added")
        self.successResultOf(self.cache.add_extension(ext))
        self.assertEqual(self.get(), ext)
        ext = extension("100", "Updated")
        self.successResultOf(self.cache.update_extension(ext))
        self.assertEqual(self.get(), ext)
        ext = extension("100", "Upserted")
        self.successResultOf(self.cache.upsert_extensions([ext]))
        self.assertEqual(self.get(), ext)
        self.successResultOf(self.cache.remove_extension("100"))
        self.assertIsNone(self.get())
        self.assertEqual(self.inner.lookups, 5)

    def test_failed_write_invalidates(self) -> None:
        """A failed write still drops the entry (the failure passes through)."""
        self.get()
        self.failureResultOf(self.cache.update_extension(extension("100")))
        self.get()
        self.assertEqual(self.inner.lookups, 2)

    def test_lookup_racing_write_not_cached(self) -> None:
        """A lookup in flight when a write happens is answered but not cached."""
        self.inner.held = []
        d = self.cache.get_extension("100")
        self.successResultOf(self.cache.add_extension(extension("100")))
        self.inner.answer()
        self.successResultOf(d)
        self.assertIsNotNone(self.get())
        self.assertEqual(self.inner.lookups, 2)

    def test_ttl_zero_disables(self) -> None:
        """With ttl 0 every lookup reaches the inner directory."""
        cache = CachingDirectory(self.inner, self.clock, 0.0)
        self.successResultOf(cache.get_extension("100"))
        self.successResultOf(cache.get_extension("100"))
        self.assertEqual(self.inner.lookups, 2)

    def test_negative_ttl_rejected(self) -> None:
        """A negative ttl is a programming error."""
        self.assertRaises(ValueError, CachingDirectory, self.inner, self.clock, -1.0)

    def test_bounded(self) -> None:
        """At most max_entries numbers are cached; the oldest go first."""
        cache = CachingDirectory(self.inner, self.clock, 5.0, max_entries=3)
        for number in ["1", "2", "3", "4"]:
            self.successResultOf(cache.get_extension(number))
        for number in ["4", "3", "2"]:
            self.successResultOf(cache.get_extension(number))
        self.assertEqual(self.inner.lookups, 4)
        self.successResultOf(cache.get_extension("1"))
        self.assertEqual(self.inner.lookups, 5)

    def test_other_reads_pass_through(self) -> None:
        """list_extensions and count_extensions always ask the inner directory."""
        self.successResultOf(self.cache.list_extensions())
        self.successResultOf(self.inner.add_extension(extension("100")))
        self.assertEqual(self.successResultOf(self.cache.count_extensions()), 1)
        self.assertEqual(len(self.successResultOf(self.cache.list_extensions())), 1)


class CachingOverSQLiteTests(TestCase):
    """The server's arrangement: a cache over SQLite while wardenctl edits the file."""

    async def test_other_process_edit_visible_after_ttl(self) -> None:
        """An edit made through a second connection (as wardenctl does) is seen by
        the cached directory once ttl has passed, and not before."""
        path = os.path.join(self.mktemp(), "warden.db")
        pools: list[Any] = [open_sqlite_pool(path), open_sqlite_pool(path)]
        for pool in pools:
            self.addCleanup(close_pool, pool)
            await apply_migrations(pool)
        clock = Clock()
        server = CachingDirectory(SQLiteDirectory(pools[0]), clock, 5.0)
        ctl = SQLiteDirectory(pools[1])
        await ctl.add_extension(extension("100", "Old"))
        self.assertEqual((await server.get_extension("100")).name, "Old")
        await ctl.update_extension(extension("100", "New"))
        clock.advance(4.0)
        self.assertEqual((await server.get_extension("100")).name, "Old")
        clock.advance(1.0)
        self.assertEqual((await server.get_extension("100")).name, "New")
