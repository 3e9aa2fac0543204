"""
``/healthz`` (the process answers) and ``/readyz`` (SIP listeners bound, the
store reachable, not draining), for Kubernetes probes and load balancers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server

STORE_PING_TIMEOUT = 2.0


class HealthResource(resource.Resource):
    """``GET /healthz``: 200 while the reactor runs."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        """Always ok."""
        request.setHeader("content-type", "application/json")
        return b'{"status": "ok"}'


class ReadyResource(resource.Resource):
    """
    ``GET /readyz``: 200 ``{"status": "ready", "checks": {...}}`` or 503 with the
    checks that failed.

    Args:
        clock: for the store check's timeout.
        sip_bound: whether the SIP listeners are bound.
        store_ping: a Deferred firing when the store answers.
        draining: whether the node is draining.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        sip_bound: Callable[[], bool],
        store_ping: Callable[[], Deferred[Any]],
        draining: Callable[[], bool],
    ) -> None:
        super().__init__()
        self._clock = clock
        self._sip_bound = sip_bound
        self._store_ping = store_ping
        self._draining = draining

    def render_GET(self, request: server.Request) -> int:
        """Run the checks, then answer."""
        d = defer.Deferred.fromCoroutine(self._answer(request))
        d.addErrback(lambda f: self.log.failure("readyz failed", f))
        return server.NOT_DONE_YET

    async def check(self) -> dict[str, bool]:
        """Each check and whether it passed."""
        try:
            await defer.maybeDeferred(self._store_ping).addTimeout(STORE_PING_TIMEOUT, self._clock)
            store = True
        except Exception:  # any store failure means not ready
            store = False
        return {"sip": self._sip_bound(), "store": store, "not_draining": not self._draining()}

    async def _answer(self, request: server.Request) -> None:
        checks = await self.check()
        ready = all(checks.values())
        if request.finished or request._disconnected:
            return
        request.setResponseCode(200 if ready else 503)
        request.setHeader("content-type", "application/json")
        status = "ready" if ready else ("draining" if not checks["not_draining"] else "not ready")
        request.write(json.dumps({"status": status, "checks": checks}).encode())
        request.finish()
