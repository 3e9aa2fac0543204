"""
The admin site in memory for tests: memory stores, a Clock, and real HTTP/1.0
requests written into the real ``twisted.web`` Site over a StringTransport.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from warden.admin.api import ApiServices
from warden.admin.auth import AdminAuth, AuthSettings
from warden.admin.drain import DrainController
from warden.admin.health import HealthResource, ReadyResource
from warden.admin.metrics import MetricsResource, WardenCollector
from warden.admin.service import api_routes, build_site
from warden.model.admin import AdminAccount
from warden.secrets import hash_password
from warden.testing import (
    MemoryCallRecordStore,
    MemoryDirectory,
    MemoryLiveCalls,
    MemoryLocationService,
)
from warden.testing.admin import MemoryAdminStore, MemoryAuditLog

START = 1_795_000_000.0
PASSWORD = "correct horse battery"


@attrs.frozen
class Response:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        """``error.code`` of a JSON error body."""
        return str(self.json()["error"]["code"])


class FakeCall:
    """Enough of L{warden.sip.call.Call} for the calls resource."""

    def __init__(self, call_id: str, started_at: float) -> None:
        from warden.sip.call import CallState
        from warden.store.credentials import make_extension

        self.call_id = call_id
        self.caller = make_extension("100", "A", "t", "pw")
        self.callee = make_extension("101", "B", "t", "pw")
        self.dialled = "101"
        self.state = CallState.ANSWERED
        self.codec = "PCMU"
        self.started_at = started_at
        self.answered_at = started_at + 1
        self.dialogs: dict[str, Any] = {}
        self.media = None
        self.ended_cause = ""
        self.attempt = SimpleNamespace(recording="", emergency=False)


class FakeCalls:
    """Enough of the CallController: ``calls``, ``draining``, ``end_call``, ``hangup_all``."""

    def __init__(self) -> None:
        self.calls: dict[str, FakeCall] = {}
        self.draining = False

    def end_call(self, call: FakeCall, cause: str) -> None:
        call.ended_cause = cause
        del self.calls[call.call_id]

    def hangup_all(self, cause: str, spare_emergency: bool = False) -> None:
        for call in list(self.calls.values()):
            if not (spare_emergency and call.attempt.emergency):
                self.end_call(call, cause)


class ApiHarness:
    """Everything behind the admin site, in memory."""

    def __init__(
        self,
        settings: AuthSettings | None = None,
        endpoints: Any = (),
        fips: bool = False,
        clock: Clock | None = None,
        workers: Any = None,
    ) -> None:
        self.clock = clock or Clock()
        #: Fire the calls due now after each request (answers from fake workers).
        self.settle = workers is not None
        self.clock.advance(START)
        self.directory = MemoryDirectory()
        self.location = MemoryLocationService()
        self.records = MemoryCallRecordStore()
        self.live = MemoryLiveCalls()
        self.audit = MemoryAuditLog()
        self.admin_store = MemoryAdminStore()
        self.calls = FakeCalls()
        self.drain = DrainController(self.clock, self.calls, 30.0)
        self.services = ApiServices(
            clock=self.clock, directory=self.directory, location=self.location,
            records=self.records, live=self.live, audit=self.audit, realm="t.example",
            node_id="node1", calls=self.calls, drain=self.drain, started_at=START, fips=fips,
            workers=workers,
        )  # fmt: skip
        self.auth = AdminAuth(self.clock, self.admin_store, settings or AuthSettings())
        self.store_ok = True
        self.sip_bound = True
        ready = ReadyResource(self.clock, lambda: self.sip_bound, self._ping,
                              lambda: self.drain.draining)  # fmt: skip
        self.metrics = MetricsResource(WardenCollector(self.calls), self.clock, workers=workers)
        self.site = build_site(
            api_routes(self.services, self.auth, endpoints), self.auth, self.services,
            HealthResource(), ready, self.metrics,
        )  # fmt: skip

    def _ping(self) -> Any:
        from twisted.internet import defer

        return defer.succeed(1) if self.store_ok else defer.fail(RuntimeError("down"))

    def add_account(self, name: str = "alice", password: str = PASSWORD, **kw: Any) -> None:
        """An account with a cheap scrypt hash."""
        self.admin_store.accounts[name] = AdminAccount(
            name, hash_password(password, n=2**10), START, **kw
        )

    def raw(self, data: bytes, source: str = "192.0.2.7") -> Response:
        """Write ``data`` into a new connection; the response, which must be complete."""
        protocol = self.site.buildProtocol(IPv4Address("TCP", source, 40000))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", source, 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        if self.settle:  # answers that wait for others (SIP workers' channel): let them come
            for _ in range(20):
                self.clock.advance(0)
        return parse(transport.value())

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        content_type: str = "application/json",
        raw_body: bytes | None = None,
        source: str = "192.0.2.7",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One HTTP/1.0 request."""
        payload = raw_body if raw_body is not None else (
            json.dumps(body).encode() if body is not None else b"")  # fmt: skip
        lines = [f"{method} {path} HTTP/1.0", "Host: localhost"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if payload or method in ("POST", "PATCH", "PUT"):
            lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(payload)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        return self.raw(("\r\n".join(lines) + "\r\n\r\n").encode() + payload, source)

    def login(self, name: str = "alice", password: str = PASSWORD, **extra: Any) -> str:
        """A session token (the login must succeed)."""
        response = self.request("POST", "/api/v1/auth/login",
                                {"username": name, "password": password, **extra})  # fmt: skip
        assert response.status == 200, response.body
        return str(response.json()["token"])

    def token(self, *scopes: str) -> str:
        """An API token with ``scopes``, created through the API by a logged-in alice."""
        if "alice" not in self.admin_store.accounts:
            self.add_account()
        session = self.login()
        response = self.request("POST", "/api/v1/tokens",
                                {"name": "t", "scopes": list(scopes)}, session)  # fmt: skip
        assert response.status == 201, response.body
        return str(response.json()["token"])


def parse(data: bytes) -> Response:
    """Parse a complete HTTP/1.x response (no chunking: the requests are HTTP/1.0)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"incomplete response: {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, headers, body)


def routes_and_operations(
    harness: ApiHarness, plugins: list[Any]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """
    The (method, path) of every API route with ``plugins``' endpoints, and of
    every operation of the OpenAPI document for them: the two must agree.
    """
    from warden.admin import openapi
    from warden.admin.plugin_endpoints import plugin_paths
    from warden.admin.service import api_routes

    routes = {
        (r.method.lower(), "/" + r.template)
        for r in api_routes(harness.services, harness.auth, plugins)
    }
    document = openapi.document(plugin_paths(plugins))
    operations = {(m, p) for p, ops in document["paths"].items() for m in ops}
    return routes, operations
