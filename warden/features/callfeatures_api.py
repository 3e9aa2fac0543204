"""
The callfeatures plugin's admin API endpoints (L{IAdminEndpoints}): each
extension's forwarding and do-not-disturb, read and changed under
``/api/v1/extensions/{number}/features``, and every extension with a feature
set under ``/api/v1/features``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from warden.errors import ApiError
from warden.features.endpoints import NUMBER_PARAMS, require_extension
from warden.interfaces import ICallFeatureStore, IDirectory
from warden.model.admin import EndpointReply, EndpointRequest, PluginEndpoint
from warden.model.features import CallFeatures

__all__ = ["FeatureEndpoints", "features_json"]

_FORWARDS = ("forward_all", "forward_busy", "forward_no_answer")
_FORWARD = (str, {"type": "string", "pattern": "^(\\+?[0-9]{1,32})?$"})
_FIELDS: dict[str, tuple[type, dict[str, Any]]] = {
    **dict.fromkeys(_FORWARDS, _FORWARD),
    "dnd": (bool, {"type": "boolean"}),
}


def features_json(features: CallFeatures) -> dict[str, Any]:
    """An extension's features for the API."""
    return attrs.asdict(features)


class FeatureEndpoints:
    """
    The endpoints, on the plugin's store and the directory (both looked up
    when a request comes: the plugin is built after the admin plugin).

    Args:
        store: the feature store, or None before the plugin is built.
        directory: the extensions, or None before the plugin is built.
        is_target: whether a forward target is valid.
    """

    def __init__(
        self,
        store: Callable[[], ICallFeatureStore | None],
        directory: Callable[[], IDirectory | None],
        is_target: Callable[[str], bool],
    ) -> None:
        self._store = store
        self._directory = directory
        self._is_target = is_target

    def _parts(self) -> tuple[ICallFeatureStore, IDirectory]:
        store, directory = self._store(), self._directory()
        if store is None or directory is None:
            raise ApiError(503, "unavailable", "call features are not available")
        return store, directory

    async def _extension(self, number: str) -> ICallFeatureStore:
        store, directory = self._parts()
        await require_extension(directory, number)
        return store

    async def list_set(self, request: EndpointRequest) -> EndpointReply:
        """``GET /features``: every extension with a feature set."""
        store, _ = self._parts()
        return EndpointReply({"items": [features_json(f) for f in await store.list_features()]})

    async def show(self, request: EndpointRequest) -> EndpointReply:
        """``GET /extensions/{number}/features``."""
        number = request.params["number"]
        store = await self._extension(number)
        return EndpointReply(features_json(await store.get_features(number)))

    async def change(self, request: EndpointRequest) -> EndpointReply:
        """``PATCH /extensions/{number}/features``: the fields given change."""
        number, body = request.params["number"], request.body
        for name in _FORWARDS:
            target = body.get(name, "")
            if target and (not self._is_target(target) or target == number):
                raise ApiError(
                    400, "invalid_field", f"{name}: '+' and 1 to 32 digits, not the extension"
                )
        store = await self._extension(number)
        features = attrs.evolve(await store.get_features(number), **body)
        await store.set_features(features)
        return EndpointReply(
            features_json(features), target=number, detail={"fields": sorted(body)}
        )

    async def clear(self, request: EndpointRequest) -> EndpointReply:
        """``DELETE /extensions/{number}/features``: every feature off."""
        number = request.params["number"]
        store = await self._extension(number)
        await store.remove_features(number)
        return EndpointReply(None, 204, target=number)

    def endpoints(self) -> list[PluginEndpoint]:
        """The endpoints, with their scopes."""
        path = "extensions/{number}/features"
        return [
            PluginEndpoint("GET", "features", self.list_set, "read",
                           "Extensions with a call feature set"),
            PluginEndpoint("GET", path, self.show, "read",
                           "An extension's forwards and do-not-disturb", NUMBER_PARAMS),
            PluginEndpoint(
                "PATCH", path, self.change, "write",
                "Change an extension's forwards or do-not-disturb ('' turns a forward off)",
                NUMBER_PARAMS, _FIELDS,
            ),
            PluginEndpoint("DELETE", path, self.clear, "write",
                           "Turn every call feature of an extension off", NUMBER_PARAMS, ok=204),
        ]  # fmt: skip
