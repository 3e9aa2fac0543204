"""
The conformance suite of L{warden.interfaces.ICallFeatureStore}, run against
every implementation (memory, SQLite, PostgreSQL). Subclasses define
``make_store()``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from warden.model.features import CallFeatures


class CallFeatureStoreConformanceMixin:
    """What every ICallFeatureStore does."""

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        return await defer.maybeDeferred(self.make_store)

    async def test_unknown_number_all_off(self) -> None:
        """A number never set has every feature off."""
        store = await self.store()
        self.assertEqual(await store.get_features("1001"), CallFeatures("1001"))  # type: ignore[attr-defined]

    async def test_set_get_replace(self) -> None:
        """Features read back as set; setting again replaces them all."""
        store = await self.store()
        first = CallFeatures("1001", forward_all="1002", forward_busy="1003", dnd=True)
        await store.set_features(first)
        self.assertEqual(await store.get_features("1001"), first)  # type: ignore[attr-defined]
        second = CallFeatures("1001", forward_no_answer="15551230000")
        await store.set_features(second)
        self.assertEqual(await store.get_features("1001"), second)  # type: ignore[attr-defined]
        self.assertEqual(await store.get_features("1002"), CallFeatures("1002"))  # type: ignore[attr-defined]

    async def test_list_only_set(self) -> None:
        """The list has the numbers with a feature set, by number; all off removes one."""
        store = await self.store()
        await store.set_features(CallFeatures("1002", dnd=True))
        await store.set_features(CallFeatures("1001", forward_all="1003"))
        await store.set_features(CallFeatures("1004", dnd=True))
        await store.set_features(CallFeatures("1004"))
        listed = await store.list_features()
        self.assertEqual([f.number for f in listed], ["1001", "1002"])  # type: ignore[attr-defined]
        self.assertEqual(listed[1], CallFeatures("1002", dnd=True))  # type: ignore[attr-defined]

    async def test_remove(self) -> None:
        """Removing forgets the features and says whether there were any."""
        store = await self.store()
        await store.set_features(CallFeatures("1001", dnd=True))
        self.assertTrue(await store.remove_features("1001"))  # type: ignore[attr-defined]
        self.assertFalse(await store.remove_features("1001"))  # type: ignore[attr-defined]
        self.assertEqual(await store.get_features("1001"), CallFeatures("1001"))  # type: ignore[attr-defined]
