"""
The conformance suite of L{warden.interfaces.ICivicLocationStore}, run against
every implementation (memory, SQLite, PostgreSQL). Subclasses define
``make_store()``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from warden.model.emergency import CivicLocation

LOBBY = CivicLocation("lobby", {"country": "US", "A1": "CA", "A3": "San Jose", "RD": "Main St"})
FLOOR2 = CivicLocation("floor2", {"country": "US", "A1": "CA", "FLR": "2", "ROOM": "201"})


class CivicLocationStoreConformanceMixin:
    """What every ICivicLocationStore does."""

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        store = await defer.maybeDeferred(self.make_store)
        await store.put_location(LOBBY)
        await store.put_location(FLOOR2)
        return store

    async def test_put_get_list(self) -> None:
        """Locations read back as put, listed by name; putting again replaces one."""
        store = await self.store()
        self.assertEqual(await store.get_location("lobby"), LOBBY)  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_location("nowhere"))  # type: ignore[attr-defined]
        self.assertEqual(await store.list_locations(), [FLOOR2, LOBBY])  # type: ignore[attr-defined]
        moved = CivicLocation("lobby", {"country": "CA", "A1": "ON"})
        self.assertFalse(await store.put_location(moved))  # type: ignore[attr-defined]
        self.assertTrue(await store.put_location(CivicLocation("new", {"country": "US"})))  # type: ignore[attr-defined]
        got = await store.get_location("lobby")
        self.assertEqual(got, moved)  # type: ignore[attr-defined]
        self.assertEqual(list(got.civic), ["country", "A1"])  # type: ignore[attr-defined]

    async def test_extension_locations(self) -> None:
        """An extension's location is set, replaced, listed and cleared; unknown ones refused."""
        store = await self.store()
        self.assertIsNone(await store.extension_location("1001"))  # type: ignore[attr-defined]
        await store.set_extension_location("1001", "lobby")
        await store.set_extension_location("1002", "lobby")
        await store.set_extension_location("1001", "floor2")
        self.assertEqual(await store.extension_location("1001"), "floor2")  # type: ignore[attr-defined]
        self.assertEqual(
            await store.list_extension_locations(), [("1001", "floor2"), ("1002", "lobby")]
        )  # type: ignore[attr-defined]
        await store.set_extension_location("1002", "")
        self.assertIsNone(await store.extension_location("1002"))  # type: ignore[attr-defined]
        with self.assertRaises(KeyError):  # type: ignore[attr-defined]
            await store.set_extension_location("1003", "nowhere")
        self.assertIsNone(await store.extension_location("1003"))  # type: ignore[attr-defined]

    async def test_networks(self) -> None:
        """Networks map to a location, are replaced, listed and unmapped; unknown refused."""
        store = await self.store()
        await store.map_network("10.1.2.0/24", "lobby")
        await store.map_network("10.1.3.0/24", "lobby")
        await store.map_network("10.1.2.0/24", "floor2")
        self.assertEqual(
            await store.list_networks(), [("10.1.2.0/24", "floor2"), ("10.1.3.0/24", "lobby")]
        )  # type: ignore[attr-defined]
        self.assertTrue(await store.unmap_network("10.1.3.0/24"))  # type: ignore[attr-defined]
        self.assertFalse(await store.unmap_network("10.1.3.0/24"))  # type: ignore[attr-defined]
        with self.assertRaises(KeyError):  # type: ignore[attr-defined]
            await store.map_network("10.9.0.0/16", "nowhere")
        self.assertEqual(await store.list_networks(), [("10.1.2.0/24", "floor2")])  # type: ignore[attr-defined]

    async def test_remove_cascades(self) -> None:
        """Removing a location forgets the extensions and networks assigned to it."""
        store = await self.store()
        await store.set_extension_location("1001", "lobby")
        await store.set_extension_location("1002", "floor2")
        await store.map_network("10.1.2.0/24", "lobby")
        self.assertTrue(await store.remove_location("lobby"))  # type: ignore[attr-defined]
        self.assertFalse(await store.remove_location("lobby"))  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_location("lobby"))  # type: ignore[attr-defined]
        self.assertEqual(await store.list_extension_locations(), [("1002", "floor2")])  # type: ignore[attr-defined]
        self.assertEqual(await store.list_networks(), [])  # type: ignore[attr-defined]
