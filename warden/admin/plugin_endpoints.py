"""
The endpoints enabled plugins add to the admin API (L{IAdminEndpoints}): each
L{PluginEndpoint} becomes a route with the core's authentication, scope check,
body checks and audit, and an operation in the OpenAPI document. A plugin
speaks only the model's L{EndpointRequest}/L{EndpointReply}, never this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warden.admin import openapi
from warden.admin.http import ApiCall, Handler, Reply, Route
from warden.interfaces import IAdminEndpoints
from warden.model.admin import EndpointRequest, PluginEndpoint

__all__ = ["plugin_paths", "plugin_routes"]


def _handler(endpoint: PluginEndpoint) -> Handler:
    fields = endpoint.fields

    async def handle(call: ApiCall) -> Reply:
        call.query_params(())
        body = (
            call.json({k: kind for k, (kind, _) in fields.items()}) if fields is not None else {}
        )
        reply = await endpoint.handler(EndpointRequest(dict(call.params), body))
        return Reply(reply.status, reply.body, target=reply.target, detail=dict(reply.detail))

    return handle


def _endpoints(parts: Sequence[IAdminEndpoints]) -> list[PluginEndpoint]:
    return [endpoint for part in parts for endpoint in part.admin_endpoints()]


def plugin_routes(parts: Sequence[IAdminEndpoints]) -> list[Route]:
    """The routes of the plugins' endpoints."""
    return [
        Route(e.method, e.template, _handler(e), e.scope, dict(e.params))
        for e in _endpoints(parts)
    ]


def plugin_paths(parts: Sequence[IAdminEndpoints]) -> dict[str, dict[str, Any]]:
    """Path -> method -> OpenAPI operation of the plugins' endpoints."""
    found: dict[str, dict[str, Any]] = {}
    for e in _endpoints(parts):
        params = [
            openapi.parameter(name, "path", {"type": "string", "pattern": f"^{pattern}$"})
            for name, pattern in e.params.items()
        ]
        body = None
        if e.fields is not None:
            body = openapi.request_body({k: dict(schema) for k, (_, schema) in e.fields.items()})
        operation = openapi.operation(e.summary, e.ok, params or None, body)
        found.setdefault("/" + e.template, {})[e.method.lower()] = operation
    return found
