"""
``--provision`` against an HTTP server on 127.0.0.1 that answers as Warden's admin
API does (``POST /api/v1/extensions``, ``DELETE /api/v1/extensions/<number>``),
and the live Prometheus metrics of a run.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.integration.harness import real_reactor
from warden.ops.loadtest.provision import Provisioner, ProvisionError
from warden.ops.loadtest.results import Account

TOKEN = "wdn_test.secret"


class FakeExtensionsApi(Resource):
    """Extensions kept in a dict; the bearer token is checked; 409 for a duplicate."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.extensions: dict[str, str] = {}
        self.refuse: set[str] = set()

    def render(self, request: Any) -> bytes:
        """POST /api/v1/extensions, DELETE /api/v1/extensions/<n>."""
        if request.getHeader("authorization") != f"Bearer {TOKEN}":
            request.setResponseCode(401)
            return b'{"error": {"message": "send Authorization: Bearer <token>"}}'
        path = request.path.decode()
        if request.method == b"POST" and path == "/api/v1/extensions":
            body = json.loads(request.content.read())
            number = body["number"]
            if number in self.extensions or number in self.refuse:
                request.setResponseCode(409)
                return b'{"error": {"message": "extension exists"}}'
            self.extensions[number] = body["password"]
            request.setResponseCode(201)
            return json.dumps({"extension": {"number": number}}).encode()
        if request.method == b"DELETE" and path.startswith("/api/v1/extensions/"):
            number = path.rsplit("/", 1)[1]
            request.setResponseCode(204 if self.extensions.pop(number, None) else 404)
            return b""
        request.setResponseCode(405)
        return b""


class ProvisionTests(unittest.TestCase):
    """Creating and deleting users through the API."""

    def setUp(self) -> None:
        """The fake API on a free port."""
        self.api = FakeExtensionsApi()
        self.port = real_reactor().listenTCP(0, Site(self.api), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.provisioner = Provisioner(real_reactor(), url, TOKEN)
        self.accounts = [Account(str(100 + i), f"password-{i}") for i in range(12)]

    async def test_create_and_delete(self) -> None:
        """Every user is created with its password, then deleted."""
        await self.provisioner.create(self.accounts)
        self.assertEqual(self.api.extensions, {a.user: a.password for a in self.accounts})
        await self.provisioner.delete(self.accounts)
        self.assertEqual(self.api.extensions, {})

    async def test_refused_creation_rolls_back(self) -> None:
        """One refusal: ProvisionError naming the user and reason; the others are deleted."""
        self.api.refuse.add("105")
        error = await self.assertFailure(
            defer.Deferred.fromCoroutine(self.provisioner.create(self.accounts)), ProvisionError
        )
        self.assertIn("105", str(error))
        self.assertIn("409", str(error))
        self.assertEqual(self.api.extensions, {})

    async def test_wrong_token(self) -> None:
        """A wrong token is reported as the API's 401, and the token is not in the message."""
        url = f"http://127.0.0.1:{self.port.getHost().port}"
        provisioner = Provisioner(real_reactor(), url, "wrong-token")
        error = await self.assertFailure(
            defer.Deferred.fromCoroutine(provisioner.create(self.accounts[:1])), ProvisionError
        )
        self.assertIn("401", str(error))
        self.assertNotIn("wrong-token", str(error))


class MetricsTests(unittest.SynchronousTestCase):
    """The Prometheus exposition of a run's recorder."""

    def test_exposition(self) -> None:
        """Counters by phase and cause, and the in-flight gauge, parse as Prometheus text."""
        from prometheus_client import CollectorRegistry, generate_latest

        from warden.ops.loadtest.metrics import LoadTestCollector
        from warden.ops.loadtest.recorder import Recorder
        from warden.ops.loadtest.results import RegistrationResult

        class Run:
            recorder = Recorder(0.0)

        run = Run()
        run.recorder.started("register", 0.0)
        run.recorder.started("register", 0.0)
        failed = RegistrationResult("1", False, 403, "403", 0.0, 0.1, 0.05, (401, 403))
        run.recorder.registration("register", failed, 0.2)
        registry = CollectorRegistry()
        registry.register(LoadTestCollector(run))  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.assertEqual(
            samples[("warden_loadtest_operations_started_total", (("phase", "register"),))], 2
        )
        key = ("warden_loadtest_failures_total", (("cause", "403"), ("phase", "register")))
        self.assertEqual(samples[key], 1)
        self.assertEqual(samples[("warden_loadtest_in_flight", ())], 1)
