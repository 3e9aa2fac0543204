"""
The memory fakes of ``warden.testing`` pass the store conformance suites and
provide their interfaces.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.store.conformance import (
    CallRecordStoreConformanceMixin,
    DirectoryConformanceMixin,
    LiveCallsConformanceMixin,
    LocationServiceConformanceMixin,
    binding,
    call_record,
    extension,
    live_call,
)
from tests.store.conformance_state import GuardedLocationConformanceMixin
from warden.errors import CallRecordNotFound, ExtensionExists
from warden.interfaces import ICallRecordStore, IDirectory, ILiveCalls, ILocationService
from warden.testing import (
    MemoryCallRecordStore,
    MemoryDirectory,
    MemoryLiveCalls,
    MemoryLocationService,
)
from warden.testing.memory import MemoryGuardedLocation


class MemoryDirectoryConformanceTests(DirectoryConformanceMixin, TestCase):
    """MemoryDirectory against the IDirectory conformance suite."""

    def make_store(self) -> MemoryDirectory:
        return MemoryDirectory()


class MemoryLocationServiceConformanceTests(LocationServiceConformanceMixin, TestCase):
    """MemoryLocationService against the ILocationService conformance suite."""

    def make_store(self) -> MemoryLocationService:
        return MemoryLocationService()


class MemoryGuardedLocationConformanceTests(LocationServiceConformanceMixin, TestCase):
    """MemoryGuardedLocation against the ILocationService conformance suite."""

    def make_store(self) -> MemoryGuardedLocation:
        return MemoryGuardedLocation()


class MemoryGuardedLocationGuardTests(GuardedLocationConformanceMixin, TestCase):
    """MemoryGuardedLocation against the IGuardedLocation conformance suite."""

    def make_location(self, peer: MemoryGuardedLocation | None = None) -> MemoryGuardedLocation:
        return MemoryGuardedLocation(peer)


class MemoryFakeTests(SynchronousTestCase):
    """Properties of the fakes beyond the interface contracts."""

    def test_directory_provides_interface(self) -> None:
        """MemoryDirectory provides IDirectory completely."""
        self.assertTrue(verifyObject(IDirectory, MemoryDirectory()))

    def test_location_provides_interface(self) -> None:
        """MemoryLocationService provides ILocationService completely."""
        self.assertTrue(verifyObject(ILocationService, MemoryLocationService()))

    def test_directory_answers_synchronously(self) -> None:
        """Every MemoryDirectory Deferred has fired when it is returned, failures too."""
        directory = MemoryDirectory([extension("100")])
        self.assertEqual(self.successResultOf(directory.count_extensions()), 1)
        self.failureResultOf(directory.add_extension(extension("100")), ExtensionExists)

    def test_location_answers_synchronously(self) -> None:
        """Every MemoryLocationService Deferred has fired when it is returned."""
        location = MemoryLocationService()
        self.successResultOf(location.apply("100", [binding("100", "a", 10.0)], []))
        self.assertEqual(self.successResultOf(location.count(0.0)), 1)
        self.failureResultOf(location.apply("100", [binding("200", "a", 10.0)], []), ValueError)

    def test_directory_initial_contents(self) -> None:
        """MemoryDirectory can start with extensions."""
        ext = extension("100")
        directory = MemoryDirectory([ext])
        self.assertEqual(self.successResultOf(directory.get_extension("100")), ext)


class MemoryCallRecordStoreConformanceTests(CallRecordStoreConformanceMixin, TestCase):
    """MemoryCallRecordStore against the ICallRecordStore conformance suite."""

    def make_store(self) -> MemoryCallRecordStore:
        return MemoryCallRecordStore()


class MemoryLiveCallsConformanceTests(LiveCallsConformanceMixin, TestCase):
    """MemoryLiveCalls against the ILiveCalls conformance suite."""

    def make_store(self) -> MemoryLiveCalls:
        return MemoryLiveCalls()


class MemoryCallFakeTests(SynchronousTestCase):
    """The call fakes provide their interfaces and answer synchronously."""

    def test_provide_interfaces(self) -> None:
        """MemoryCallRecordStore and MemoryLiveCalls provide their interfaces completely."""
        self.assertTrue(verifyObject(ICallRecordStore, MemoryCallRecordStore()))
        self.assertTrue(verifyObject(ILiveCalls, MemoryLiveCalls()))

    def test_answers_synchronously(self) -> None:
        """Every Deferred of the call fakes has fired when it is returned."""
        store = MemoryCallRecordStore([call_record("c1", 1.0), call_record("c1", 2.0)])
        self.assertEqual(self.successResultOf(store.count()), 1)
        self.failureResultOf(store.list(after_call_id="nope"), CallRecordNotFound)
        live = MemoryLiveCalls()
        self.successResultOf(live.publish(live_call("c1", 1.0)))
        self.assertEqual(len(self.successResultOf(live.list())), 1)
