"""
The admin API's HTTP plumbing on ``twisted.web``: a request class that refuses
oversized bodies, a route table (method + path template -> handler, scope),
JSON body and query parsing that rejects what it does not know, the audit of
every state-changing request, and the one place errors become responses::

    {"error": {"code": "not_found", "message": "no extension 100"}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from warden.admin.auth import AdminAuth, Principal
from warden.errors import (
    AdminAccountExists,
    ApiError,
    CallRecordNotFound,
    ExtensionExists,
    ExtensionNotFound,
)
from warden.interfaces import IAuditLog
from warden.model.admin import AuditEntry

#: The largest request body accepted, in bytes (413 beyond).
MAX_BODY_BYTES = 64 * 1024
_PARAM = re.compile(r"\{(\w+)\}")
JSON_TYPE = "application/json"


class LimitedRequest(server.Request):
    """A request that stops buffering its body past ``MAX_BODY_BYTES``."""

    max_body = MAX_BODY_BYTES

    def gotLength(self, length: int | None) -> None:
        """Note a declared length that is already too long; buffer the rest in memory."""
        self.body_too_large = length is not None and length > self.max_body
        self._received = 0
        super().gotLength(None if self.body_too_large else length)

    def handleContentChunk(self, data: bytes) -> None:
        """Buffer body bytes up to the limit; past it, only remember that it was too long."""
        self._received += len(data)
        if self._received > self.max_body:
            self.body_too_large = True
        if not self.body_too_large:
            super().handleContentChunk(data)


@attrs.frozen
class Reply:
    """
    What a handler answers.

    Attributes:
        status: HTTP status.
        body: JSON-able value; None for an empty body (204).
        raw: bytes sent as they are, with ``content_type`` (CSV, metrics).
        target: the object acted on, for the audit log.
        detail: extra audit facts (never secrets).
        audit: record a reading request too (an export of call records).
    """

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    content_type: str = JSON_TYPE
    target: str = ""
    detail: Mapping[str, Any] = attrs.field(factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    audit: bool = False


@attrs.define
class ApiCall:
    """One request as a handler sees it."""

    request: server.Request
    params: dict[str, str]
    principal: Principal | None
    source: str
    #: Who the audit log names when there is no principal (a login's user name).
    audit_actor: str = "-"

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value of each); names and values decoded."""
        args = self.request.args or {}
        return {
            k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
            for k, v in args.items()
            if v
        }

    def query_params(self, allowed: Sequence[str]) -> dict[str, str]:
        """The query parameters, refusing unknown ones with 400."""
        query = self.query
        for name in query:
            if name not in allowed:
                raise ApiError(400, "unknown_parameter", f"unknown query parameter {name!r}")
        return query

    def json(
        self, fields: Mapping[str, type | tuple[type, ...]], required: Sequence[str] = ()
    ) -> dict[str, Any]:
        """
        The JSON object body, checked: ``fields`` maps each allowed name to its
        type(s); ``required`` must be present.

        Raises:
            ApiError: 415 not JSON, 400 invalid JSON, not an object, an unknown
                field, a missing one or one of the wrong type.
        """
        content_type = (self.request.getHeader("content-type") or "").split(";")[0].strip()
        if content_type.lower() != JSON_TYPE:
            raise ApiError(415, "unsupported_media_type", f"send {JSON_TYPE}")
        assert self.request.content is not None
        self.request.content.seek(0)
        raw = self.request.content.read()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", "the body must be a JSON object")
        for name, value in data.items():
            if name not in fields:
                raise ApiError(400, "unknown_field", f"unknown field {name!r}")
            expected = fields[name]
            if isinstance(value, bool) and bool not in (
                expected if isinstance(expected, tuple) else (expected,)
            ):
                raise ApiError(400, "invalid_field", f"{name}: wrong type")
            if not isinstance(value, expected):
                raise ApiError(400, "invalid_field", f"{name}: wrong type")
        for name in required:
            if name not in data:
                raise ApiError(400, "missing_field", f"missing field {name!r}")
        return data


Handler = Callable[[ApiCall], Awaitable[Reply]]


@attrs.frozen
class Route:
    """
    One endpoint.

    Attributes:
        method: HTTP method.
        template: path under the API root, with ``{name}`` parameters.
        handler: the coroutine answering it.
        scope: the scope needed; None for a public endpoint.
        params: a regular expression each path parameter must match fully.
    """

    method: str
    template: str
    handler: Handler
    scope: str | None
    params: Mapping[str, str] = attrs.field(factory=dict)

    def pattern(self) -> re.Pattern[str]:
        """The template as a regular expression over the decoded path segments."""
        parts = []
        for segment in self.template.strip("/").split("/"):
            match = _PARAM.fullmatch(segment)
            parts.append(f"(?P<{match.group(1)}>[^/]+)" if match else re.escape(segment))
        return re.compile("/".join(parts))


def error_body(code: str, message: str) -> bytes:
    """The JSON error document."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


#: Store errors the handlers let through, and what they mean over HTTP.
_STORE_ERRORS: dict[type[Exception], tuple[int, str, str]] = {
    ExtensionExists: (409, "conflict", "that extension number is taken"),
    ExtensionNotFound: (404, "not_found", "no such extension"),
    CallRecordNotFound: (400, "invalid_cursor", "the cursor names no record"),
    AdminAccountExists: (409, "conflict", "that account exists"),
}


def api_error_of(failure: Failure) -> ApiError | None:
    """The ApiError a failure stands for; None for a bug (answered with 500)."""
    value = failure.value
    if isinstance(value, ApiError):
        return value
    for kind, (status, code, message) in _STORE_ERRORS.items():
        if isinstance(value, kind):
            return ApiError(status, code, message)
    return None


class ApiResource(resource.Resource):
    """
    Every endpoint under one prefix (``/api/v1``), dispatched by L{Route}.

    Args:
        routes: the endpoints.
        auth: authenticates requests.
        audit: where state-changing requests are recorded.
        clock: for audit times.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self, routes: Sequence[Route], auth: AdminAuth, audit: IAuditLog, clock: IReactorTime
    ) -> None:
        super().__init__()
        self._routes = [(route, route.pattern()) for route in routes]
        self._auth = auth
        self._audit = audit
        self._clock = clock

    def render(self, request: server.Request) -> int:
        """Answer asynchronously."""
        d = defer.Deferred.fromCoroutine(self._answer(request))
        d.addErrback(lambda f: self.log.failure("Admin API response failed", f))
        return server.NOT_DONE_YET

    def _match(self, request: server.Request) -> tuple[Route, dict[str, str]]:
        segments = [
            unquote(raw.decode("utf-8", "replace")) for raw in (request.postpath or []) if raw
        ]
        path = "/".join(segments)
        allowed: list[str] = []
        for route, pattern in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            params = match.groupdict()
            if any(not re.fullmatch(route.params.get(k, r"[A-Za-z0-9._-]{1,128}"), v)
                   for k, v in params.items()):  # fmt: skip
                continue
            if route.method != request.method.decode("ascii", "replace"):
                allowed.append(route.method)
                continue
            return route, params
        if allowed:
            raise ApiError(
                405, "method_not_allowed", "method not allowed here",
                (("Allow", ", ".join(sorted(set(allowed)))),),
            )  # fmt: skip
        raise ApiError(404, "not_found", "no such resource")

    async def _answer(self, request: server.Request) -> None:
        source = _client_host(request)
        route: Route | None = None
        call: ApiCall | None = None
        try:
            route, params = self._match(request)
            principal = None
            if route.scope is not None:
                principal = await self._auth.authenticate(_header(request, "authorization"))
                if route.scope not in principal.scopes:
                    raise ApiError(403, "forbidden", f"this needs the {route.scope!r} scope")
            call = ApiCall(request, params, principal, source)
            if getattr(request, "body_too_large", False):
                raise ApiError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
            reply = await route.handler(call)
        except Exception:  # the I/O boundary: every failure becomes a response
            reply = self._error_reply(Failure())
        await self._record(request, route, call, reply, source)
        _write(request, reply)

    def _error_reply(self, failure: Failure) -> Reply:
        error = api_error_of(failure)
        if error is None:
            self.log.failure("Admin API request failed", failure)
            error = ApiError(500, "internal_error", "the server failed; see its log")
        return Reply(
            error.status,
            {"error": {"code": error.code, "message": error.message}},
            headers=error.headers,
        )

    async def _record(
        self,
        request: server.Request,
        route: Route | None,
        call: ApiCall | None,
        reply: Reply,
        source: str,
    ) -> None:
        method = request.method.decode("ascii", "replace")
        if method in ("GET", "HEAD", "OPTIONS") and not reply.audit:
            return
        principal = call.principal if call is not None else None
        detail = dict(reply.detail)
        if reply.status >= 400 and isinstance(reply.body, dict):
            detail["error"] = reply.body["error"]["code"]
        entry = AuditEntry(
            at=self._clock.seconds(),
            actor=principal.name if principal else (call.audit_actor if call else "-"),
            source=source,
            action=f"{method} /api/v1/{route.template}" if route else f"{method} (no route)",
            target=reply.target or (next(iter(call.params.values()), "") if call else ""),
            status=reply.status,
            detail=detail,
        )
        try:
            await self._audit.append(entry)
        except Exception:  # the I/O boundary: never lose the response
            self.log.failure("Could not write the audit entry", Failure())


def _header(request: server.Request, name: str) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _client_host(request: server.Request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "") or "-")


def _write(request: server.Request, reply: Reply) -> None:
    if request.finished or request._disconnected:
        return
    request.setResponseCode(reply.status)
    for name, value in reply.headers:
        request.setHeader(name, value)
    request.setHeader("cache-control", "no-store")
    request.setHeader("x-content-type-options", "nosniff")
    request.setHeader("strict-transport-security", "max-age=31536000")
    data = b""
    if reply.raw is not None:
        request.setHeader("content-type", reply.content_type)
        data = reply.raw
    elif reply.body is not None:
        request.setHeader("content-type", JSON_TYPE)
        data = json.dumps(reply.body).encode()
    # One write with a length: no chunked trailer sent as a separate small segment.
    request.setHeader("content-length", str(len(data)))
    if data:
        request.write(data)
    request.finish()


def json_reply(body: Any, status: int = 200, **audit: Any) -> Reply:
    """A JSON reply."""
    return Reply(status, body, **audit)


class ScopedResource(resource.Resource):
    """
    A leaf resource served only to requests whose bearer token has ``scope``
    (``/metrics`` on the HTTPS listener); 401/403 JSON otherwise.

    Args:
        inner: a leaf resource whose ``render`` returns bytes, or
            NOT_DONE_YET and finishes the request itself.
        auth: authenticates requests.
        scope: the scope needed.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, inner: resource.Resource, auth: AdminAuth, scope: str) -> None:
        super().__init__()
        self._inner = inner
        self._auth = auth
        self._scope = scope

    def render(self, request: server.Request) -> int:
        """Authenticate, then render the inner resource."""
        d = defer.Deferred.fromCoroutine(self._answer(request))
        d.addErrback(lambda f: self.log.failure("Scoped resource failed", f))
        return server.NOT_DONE_YET

    async def _answer(self, request: server.Request) -> None:
        try:
            principal = await self._auth.authenticate(_header(request, "authorization"))
            if self._scope not in principal.scopes:
                raise ApiError(403, "forbidden", f"this needs the {self._scope!r} scope")
        except ApiError as e:
            error = Reply(e.status, {"error": {"code": e.code, "message": e.message}})
            _write(request, error)
            return
        body = self._inner.render(request)
        if body == server.NOT_DONE_YET or request.finished or request._disconnected:
            return
        request.setHeader("content-length", str(len(body)))
        request.write(body)
        request.finish()


class JsonErrorPage(resource.Resource):
    """Answers every path it is asked for with a JSON 404."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        """404 as JSON."""
        request.setResponseCode(404)
        request.setHeader("content-type", JSON_TYPE)
        return error_body("not_found", "no such resource")


RouteFactory = Callable[[], list[Route]]
__all__ = ["ApiCall", "ApiResource", "LimitedRequest", "Reply", "Route", "json_reply"]
