"""
The e911 plugin's admin API endpoints (L{IAdminEndpoints}): dispatchable
locations (``/api/v1/locations``), each extension's location
(``/api/v1/extensions/{number}/location``) and networks mapped to a location
(``/api/v1/location-networks``), on the plugin's L{ICivicLocationStore}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from warden.errors import ApiError
from warden.features.endpoints import NUMBER_PARAMS, require_extension
from warden.interfaces import ICivicLocationStore, IDirectory
from warden.model.admin import EndpointReply, EndpointRequest, PluginEndpoint
from warden.model.emergency import (
    CivicError,
    CivicLocation,
    check_civic,
    check_location_name,
    parse_civic,
    parse_network,
)

__all__ = ["LocationEndpoints", "location_json"]

_NAME_PARAMS = {"name": "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"}
_NETWORK_PARAMS = {"address": "[0-9A-Fa-f.:]{2,45}", "prefix": "[0-9]{1,3}"}
_LOCATION_FIELD = (str, {"type": "string", "description": "a location name ('' clears)"})
_Fields = Mapping[str, tuple[type, Mapping[str, Any]]]
_CIVIC_SCHEMA = {
    "description": "civic address elements (RFC 5139 names: country, A1, A3, RD, HNO, FLR,"
    " ROOM, ...) as an object of strings, or as 'country=US,A1=CA,...'",
    "oneOf": [
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "string"},
    ],
}


def location_json(location: CivicLocation) -> dict[str, Any]:
    """A location for the API: name, civic elements, the one-line text."""
    return {"name": location.name, "civic": dict(location.civic), "text": location.text}


class LocationEndpoints:
    """
    The endpoints, on the plugin's store and the directory (looked up when a
    request comes: the plugin may be built after the admin plugin).

    Args:
        store: the location store, or None before the plugin is built.
        directory: the extensions, or None before the plugin is built.
    """

    def __init__(
        self,
        store: Callable[[], ICivicLocationStore | None],
        directory: Callable[[], IDirectory | None],
    ) -> None:
        self._store = store
        self._directory = directory

    async def _extension(self, number: str) -> ICivicLocationStore:
        store, directory = self._locations(), self._directory()
        if directory is None:
            raise ApiError(503, "unavailable", "emergency locations are not available")
        await require_extension(directory, number)
        return store

    def _locations(self) -> ICivicLocationStore:
        store = self._store()
        if store is None:
            raise ApiError(503, "unavailable", "emergency locations are not available")
        return store

    async def list_locations(self, request: EndpointRequest) -> EndpointReply:
        """``GET /locations``."""
        found = await self._locations().list_locations()
        return EndpointReply({"items": [location_json(loc) for loc in found]})

    async def show(self, request: EndpointRequest) -> EndpointReply:
        """``GET /locations/{name}``."""
        name = request.params["name"]
        location = await self._locations().get_location(name)
        if location is None:
            raise ApiError(404, "not_found", f"no location {name}")
        return EndpointReply(location_json(location))

    async def put(self, request: EndpointRequest) -> EndpointReply:
        """``PUT /locations/{name}``: add or replace a location (201 when new)."""
        name = request.params["name"]
        civic = request.body.get("civic")
        try:
            check_location_name(name)
            if isinstance(civic, str):
                elements = parse_civic(civic)
            elif isinstance(civic, dict):
                if not all(isinstance(v, str) for v in civic.values()):
                    raise CivicError("every civic address element must be a string")
                elements = check_civic(civic)
            else:
                raise CivicError("missing field 'civic'")
        except CivicError as e:
            raise ApiError(400, "invalid_field", f"civic: {e}") from None
        location = CivicLocation(name, elements)
        new = await self._locations().put_location(location)
        return EndpointReply(location_json(location), 201 if new else 200, target=name)

    async def remove(self, request: EndpointRequest) -> EndpointReply:
        """``DELETE /locations/{name}`` (and its extension and network assignments)."""
        name = request.params["name"]
        if not await self._locations().remove_location(name):
            raise ApiError(404, "not_found", f"no location {name}")
        return EndpointReply(None, 204, target=name)

    async def extension(self, request: EndpointRequest) -> EndpointReply:
        """``GET /extensions/{number}/location``: its location's name (null: none)."""
        number = request.params["number"]
        name = await (await self._extension(number)).extension_location(number)
        return EndpointReply({"number": number, "location": name})

    async def set_extension(self, request: EndpointRequest) -> EndpointReply:
        """``PUT /extensions/{number}/location``: assign a location ('' clears)."""
        number, name = request.params["number"], request.body.get("location")
        if name is None:
            raise ApiError(400, "missing_field", "missing field 'location'")
        store = await self._extension(number)
        try:
            await store.set_extension_location(number, name)
        except KeyError:
            raise ApiError(400, "invalid_field", f"location: no location {name!r}") from None
        return EndpointReply({"number": number, "location": name or None}, target=number)

    async def list_networks(self, request: EndpointRequest) -> EndpointReply:
        """``GET /location-networks``."""
        found = await self._locations().list_networks()
        return EndpointReply({"items": [{"network": n, "location": loc} for n, loc in found]})

    @staticmethod
    def _network(request: EndpointRequest) -> str:
        try:
            return parse_network(f"{request.params['address']}/{request.params['prefix']}")
        except CivicError as e:
            raise ApiError(400, "invalid_network", str(e)) from None

    async def map(self, request: EndpointRequest) -> EndpointReply:
        """``PUT /location-networks/{address}/{prefix}``: the network's location."""
        network, name = self._network(request), request.body.get("location")
        if not name:
            raise ApiError(400, "missing_field", "missing field 'location'")
        try:
            await self._locations().map_network(network, name)
        except KeyError:
            raise ApiError(400, "invalid_field", f"location: no location {name!r}") from None
        return EndpointReply({"network": network, "location": name}, target=network)

    async def unmap(self, request: EndpointRequest) -> EndpointReply:
        """``DELETE /location-networks/{address}/{prefix}``."""
        network = self._network(request)
        if not await self._locations().unmap_network(network):
            raise ApiError(404, "not_found", f"no location for network {network}")
        return EndpointReply(None, 204, target=network)

    def endpoints(self) -> list[PluginEndpoint]:
        """The endpoints, with their scopes."""
        one, ext, net = (
            "locations/{name}",
            "extensions/{number}/location",
            ("location-networks/{address}/{prefix}"),
        )
        # The body check takes a tuple of types (L{warden.admin.http.ApiCall.json}).
        civic = cast(_Fields, {"civic": ((dict, str), _CIVIC_SCHEMA)})
        location = {"location": _LOCATION_FIELD}
        return [
            PluginEndpoint("GET", "locations", self.list_locations, "read",
                           "Dispatchable locations (emergency calls)"),
            PluginEndpoint("GET", one, self.show, "read", "A dispatchable location",
                           _NAME_PARAMS),
            PluginEndpoint("PUT", one, self.put, "write",
                           "Add or replace a dispatchable location (civic address)",
                           _NAME_PARAMS, civic),
            PluginEndpoint("DELETE", one, self.remove, "write",
                           "Remove a location and its extension and network assignments",
                           _NAME_PARAMS, ok=204),
            PluginEndpoint("GET", ext, self.extension, "read",
                           "An extension's dispatchable location", NUMBER_PARAMS),
            PluginEndpoint("PUT", ext, self.set_extension, "write",
                           "Set an extension's dispatchable location ('' clears)",
                           NUMBER_PARAMS, location),
            PluginEndpoint("GET", "location-networks", self.list_networks, "read",
                           "Networks mapped to a dispatchable location"),
            PluginEndpoint("PUT", net, self.map, "write",
                           "Map a network (devices that move) to a location", _NETWORK_PARAMS,
                           location),
            PluginEndpoint("DELETE", net, self.unmap, "write", "Unmap a network",
                           _NETWORK_PARAMS, ok=204),
        ]  # fmt: skip
