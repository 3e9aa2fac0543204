"""Tests for warden.store.snapshot.SnapshotDirectory."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import DirectoryConformanceMixin, extension
from warden.interfaces import IDirectory
from warden.store.snapshot import SnapshotDirectory
from warden.testing.memory import MemoryDirectory


class SnapshotConformanceTests(DirectoryConformanceMixin, TestCase):
    """SnapshotDirectory over MemoryDirectory against the IDirectory suite."""

    def make_store(self) -> SnapshotDirectory:
        snapshot = SnapshotDirectory(MemoryDirectory(), Clock(), 5.0, lambda: defer.succeed(0))
        snapshot.load()
        return snapshot


class SnapshotTests(SynchronousTestCase):
    """Loading, serving from memory, noticing changes made elsewhere."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = MemoryDirectory([extension("100")])
        self.version = 1
        self.probes = 0
        self.snapshot = SnapshotDirectory(self.inner, self.clock, 5.0, self.probe)

    def probe(self) -> defer.Deferred[int]:
        """The fake change counter."""
        self.probes += 1
        return defer.succeed(self.version)

    def test_provides(self) -> None:
        """It is an IDirectory."""
        self.assertTrue(verifyObject(IDirectory, self.snapshot))

    def test_lookups_from_memory(self) -> None:
        """After load, lookups of known extensions do not reach the inner store."""
        self.assertEqual(self.successResultOf(self.snapshot.load()), 1)
        self.inner.get_extension = None  # type: ignore[assignment, method-assign]
        self.assertEqual(self.successResultOf(self.snapshot.get_extension("100")).number, "100")

    def test_new_extension_found_at_once(self) -> None:
        """A number missing from the snapshot is looked up in the store."""
        self.snapshot.load()
        self.successResultOf(self.inner.add_extension(extension("300")))
        self.assertEqual(self.successResultOf(self.snapshot.get_extension("300")).number, "300")

    def test_unknown_numbers_remembered(self) -> None:
        """An unknown number reaches the store once per refresh interval."""
        self.snapshot.load()
        calls = []
        real = self.inner.get_extension

        def counting(number: str) -> defer.Deferred:  # type: ignore[type-arg]
            calls.append(number)
            return real(number)

        self.inner.get_extension = counting  # type: ignore[method-assign]
        for _ in range(3):
            self.assertIsNone(self.successResultOf(self.snapshot.get_extension("666")))
        self.assertEqual(calls, ["666"])
        self.clock.advance(5.1)
        self.snapshot.get_extension("666")
        self.assertEqual(calls, ["666", "666"])

    def test_outside_change_noticed_on_refresh(self) -> None:
        """A change made elsewhere shows after the next check that sees the counter move."""
        self.snapshot.load()
        self.snapshot.start()
        self.successResultOf(self.inner.update_extension(extension("100", "Renamed")))
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(self.snapshot.get_extension("100")).name, "")
        self.version = 2
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(self.snapshot.get_extension("100")).name, "Renamed")
        self.snapshot.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failed_check_retried(self) -> None:
        """A failing change check is logged and the loop goes on."""
        self.snapshot.load()
        self.snapshot.start()
        self.version = 3
        self.inner.list_extensions = lambda: defer.fail(RuntimeError("db down"))  # type: ignore[method-assign]
        self.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.snapshot.stop()
