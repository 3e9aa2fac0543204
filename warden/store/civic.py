"""
SQL storage of the e911 plugin's dispatchable locations, one layer for SQLite
and PostgreSQL (L{ICivicLocationStore}); tables from schema ``0013_emergency``:
``civic_locations`` (name -> civic address elements as JSON),
``extension_locations`` (number -> location) and ``subnet_locations``
(network -> location). Apart from the registrar's location service
(L{warden.store.location}), which keeps where phones are reachable.

Each method is one named interaction (``warden_store_interactions_total``; see
L{warden.store.dialect}).
"""

from __future__ import annotations

import builtins
import json

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import ICivicLocationStore
from warden.model.emergency import CivicLocation
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool

__all__ = ["SQLCivicLocationStore"]


def _location(name: str, civic: str) -> CivicLocation:
    return CivicLocation(name, json.loads(civic))


async def _put_txn(cursor: Cursor, location: CivicLocation) -> bool:
    await cursor.execute("SELECT 1 FROM civic_locations WHERE name = ?", (location.name,))
    new = cursor.fetchone() is None
    await cursor.execute(
        "INSERT INTO civic_locations (name, civic) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET civic = excluded.civic",
        (location.name, json.dumps(location.civic)),
    )
    return new


async def _get_txn(cursor: Cursor, name: str) -> CivicLocation | None:
    await cursor.execute("SELECT name, civic FROM civic_locations WHERE name = ?", (name,))
    row = cursor.fetchone()
    return None if row is None else _location(*row)


async def _list_txn(cursor: Cursor) -> list[CivicLocation]:
    await cursor.execute("SELECT name, civic FROM civic_locations ORDER BY name")
    return [_location(*row) for row in cursor.fetchall()]


async def _remove_txn(cursor: Cursor, name: str) -> bool:
    await cursor.execute("DELETE FROM extension_locations WHERE location = ?", (name,))
    await cursor.execute("DELETE FROM subnet_locations WHERE location = ?", (name,))
    await cursor.execute("DELETE FROM civic_locations WHERE name = ?", (name,))
    return bool(cursor.rowcount)


async def _require(cursor: Cursor, name: str) -> None:
    await cursor.execute("SELECT 1 FROM civic_locations WHERE name = ?", (name,))
    if cursor.fetchone() is None:
        raise KeyError(name)


async def _set_extension_txn(cursor: Cursor, number: str, name: str) -> None:
    if not name:
        await cursor.execute("DELETE FROM extension_locations WHERE number = ?", (number,))
        return
    await _require(cursor, name)
    await cursor.execute(
        "INSERT INTO extension_locations (number, location) VALUES (?, ?)"
        " ON CONFLICT (number) DO UPDATE SET location = excluded.location",
        (number, name),
    )


async def _extension_txn(cursor: Cursor, number: str) -> str | None:
    await cursor.execute("SELECT location FROM extension_locations WHERE number = ?", (number,))
    row = cursor.fetchone()
    return None if row is None else str(row[0])


async def _list_extensions_txn(cursor: Cursor) -> list[tuple[str, str]]:
    await cursor.execute("SELECT number, location FROM extension_locations ORDER BY number")
    return [(str(n), str(loc)) for n, loc in cursor.fetchall()]


async def _map_txn(cursor: Cursor, network: str, name: str) -> None:
    await _require(cursor, name)
    await cursor.execute(
        "INSERT INTO subnet_locations (network, location) VALUES (?, ?)"
        " ON CONFLICT (network) DO UPDATE SET location = excluded.location",
        (network, name),
    )


async def _unmap_txn(cursor: Cursor, network: str) -> bool:
    await cursor.execute("DELETE FROM subnet_locations WHERE network = ?", (network,))
    return bool(cursor.rowcount)


async def _list_networks_txn(cursor: Cursor) -> list[tuple[str, str]]:
    await cursor.execute("SELECT network, location FROM subnet_locations ORDER BY network")
    return [(str(n), str(loc)) for n, loc in cursor.fetchall()]


@implementer(ICivicLocationStore)
class SQLCivicLocationStore:
    """L{ICivicLocationStore} on the shared SQLite or PostgreSQL pool."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def put_location(self, location: CivicLocation) -> Deferred[bool]:
        """See L{ICivicLocationStore.put_location}."""
        return self._db.run("put_civic_location", _put_txn, location)

    def get_location(self, name: str) -> Deferred[CivicLocation | None]:
        """See L{ICivicLocationStore.get_location}."""
        return self._db.run("get_civic_location", _get_txn, name)

    def list_locations(self) -> Deferred[builtins.list[CivicLocation]]:
        """See L{ICivicLocationStore.list_locations}."""
        return self._db.run("list_civic_locations", _list_txn)

    def remove_location(self, name: str) -> Deferred[bool]:
        """See L{ICivicLocationStore.remove_location}."""
        return self._db.run("remove_civic_location", _remove_txn, name)

    def set_extension_location(self, number: str, name: str) -> Deferred[None]:
        """See L{ICivicLocationStore.set_extension_location}."""
        return self._db.run("set_extension_location", _set_extension_txn, number, name)

    def extension_location(self, number: str) -> Deferred[str | None]:
        """See L{ICivicLocationStore.extension_location}."""
        return self._db.run("extension_location", _extension_txn, number)

    def list_extension_locations(self) -> Deferred[builtins.list[tuple[str, str]]]:
        """See L{ICivicLocationStore.list_extension_locations}."""
        return self._db.run("list_extension_locations", _list_extensions_txn)

    def map_network(self, network: str, name: str) -> Deferred[None]:
        """See L{ICivicLocationStore.map_network}."""
        return self._db.run("map_network_location", _map_txn, network, name)

    def unmap_network(self, network: str) -> Deferred[bool]:
        """See L{ICivicLocationStore.unmap_network}."""
        return self._db.run("unmap_network_location", _unmap_txn, network)

    def list_networks(self) -> Deferred[builtins.list[tuple[str, str]]]:
        """See L{ICivicLocationStore.list_networks}."""
        return self._db.run("list_network_locations", _list_networks_txn)
