"""An in-memory L{ICivicLocationStore}, passing the same conformance suite as SQL."""

from __future__ import annotations

import builtins

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import ICivicLocationStore
from warden.model.emergency import CivicLocation

__all__ = ["MemoryCivicLocationStore"]


@implementer(ICivicLocationStore)
class MemoryCivicLocationStore:
    """L{ICivicLocationStore} in dictionaries."""

    def __init__(self) -> None:
        self.locations: dict[str, CivicLocation] = {}
        self.extensions: dict[str, str] = {}
        self.networks: dict[str, str] = {}

    def put_location(self, location: CivicLocation) -> Deferred[bool]:
        """See L{ICivicLocationStore.put_location}."""
        new = location.name not in self.locations
        self.locations[location.name] = location
        return defer.succeed(new)

    def get_location(self, name: str) -> Deferred[CivicLocation | None]:
        """See L{ICivicLocationStore.get_location}."""
        return defer.succeed(self.locations.get(name))

    def list_locations(self) -> Deferred[builtins.list[CivicLocation]]:
        """See L{ICivicLocationStore.list_locations}."""
        return defer.succeed([self.locations[k] for k in sorted(self.locations)])

    def remove_location(self, name: str) -> Deferred[bool]:
        """See L{ICivicLocationStore.remove_location}."""
        for table in (self.extensions, self.networks):
            for key in [k for k, v in table.items() if v == name]:
                del table[key]
        return defer.succeed(self.locations.pop(name, None) is not None)

    def set_extension_location(self, number: str, name: str) -> Deferred[None]:
        """See L{ICivicLocationStore.set_extension_location}."""
        if not name:
            self.extensions.pop(number, None)
        elif name not in self.locations:
            return defer.fail(KeyError(name))
        else:
            self.extensions[number] = name
        return defer.succeed(None)

    def extension_location(self, number: str) -> Deferred[str | None]:
        """See L{ICivicLocationStore.extension_location}."""
        return defer.succeed(self.extensions.get(number))

    def list_extension_locations(self) -> Deferred[builtins.list[tuple[str, str]]]:
        """See L{ICivicLocationStore.list_extension_locations}."""
        return defer.succeed(sorted(self.extensions.items()))

    def map_network(self, network: str, name: str) -> Deferred[None]:
        """See L{ICivicLocationStore.map_network}."""
        if name not in self.locations:
            return defer.fail(KeyError(name))
        self.networks[network] = name
        return defer.succeed(None)

    def unmap_network(self, network: str) -> Deferred[bool]:
        """See L{ICivicLocationStore.unmap_network}."""
        return defer.succeed(self.networks.pop(network, None) is not None)

    def list_networks(self) -> Deferred[builtins.list[tuple[str, str]]]:
        """See L{ICivicLocationStore.list_networks}."""
        return defer.succeed(sorted(self.networks.items()))
