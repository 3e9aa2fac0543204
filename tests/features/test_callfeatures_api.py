"""
The callfeatures plugin's admin API endpoints: read, change and clear an
extension's forwards and do-not-disturb, list those set; bad input is refused;
the OpenAPI document has an operation for each route; changes are audited.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import ApiHarness, routes_and_operations
from warden.features.callfeatures import CallFeaturesPlugin
from warden.model.features import CallFeatures
from warden.store.credentials import make_extension
from warden.testing.features import MemoryCallFeatureStore

V1 = "/api/v1"


class FeatureApiTests(SynchronousTestCase):
    """``/extensions/{number}/features`` and ``/features``."""

    def setUp(self) -> None:
        self.plugin = CallFeaturesPlugin()
        self.store = MemoryCallFeatureStore()
        self.h = ApiHarness(endpoints=[self.plugin])
        self.plugin.use_store(self.store, self.h.directory)
        for number in ("100", "101"):
            self.h.directory.add_extension(make_extension(number, "", "t.example", "pw"))
        self.token = self.h.token("read", "write")

    def send(self, method: str, path: str, body: object = None, token: str | None = None):  # type: ignore[no-untyped-def]
        return self.h.request(method, V1 + path, body, token or self.token)

    def test_read_change_clear(self) -> None:
        """PATCH changes the fields given; GET reads them; DELETE turns all off."""
        self.assertEqual(
            self.send("GET", "/extensions/100/features").json(),
            {"number": "100", "forward_all": "", "forward_busy": "",
             "forward_no_answer": "", "dnd": False},
        )  # fmt: skip
        change = {"forward_busy": "101", "forward_no_answer": "+4930123", "dnd": True}
        response = self.send("PATCH", "/extensions/100/features", change)
        self.assertEqual(response.status, 200, response.body)
        expected = CallFeatures("100", "", "101", "+4930123", True)
        self.assertEqual(self.successResultOf(self.store.get_features("100")), expected)
        self.send("PATCH", "/extensions/100/features", {"dnd": False})
        self.assertEqual(self.send("GET", "/features").json()["items"][0]["forward_busy"], "101")
        self.assertEqual(self.send("DELETE", "/extensions/100/features").status, 204)
        self.assertEqual(self.send("GET", "/features").json(), {"items": []})
        audited = [(e.action, e.target) for e in self.h.audit.entries]
        self.assertIn(("PATCH /api/v1/extensions/{number}/features", "100"), audited)
        self.assertIn(("DELETE /api/v1/extensions/{number}/features", "100"), audited)

    def test_refused(self) -> None:
        """Unknown extension 404; bad target, unknown field or wrong type 400; read-only 403."""
        self.assertEqual(self.send("GET", "/extensions/999/features").status, 404)
        self.assertEqual(self.send("PATCH", "/extensions/999/features", {"dnd": True}).status, 404)
        for body in ({"forward_all": "12a"}, {"forward_all": "100"}, {"forward_all": "1" * 33},
                     {"colour": "red"}, {"dnd": "yes"}, {"forward_busy": 101}):  # fmt: skip
            response = self.send("PATCH", "/extensions/100/features", body)
            self.assertEqual(response.status, 400, body)
        self.assertEqual(self.successResultOf(self.store.list_features()), [])
        reader = self.h.token("read")
        response = self.send("PATCH", "/extensions/100/features", {"dnd": True}, reader)
        self.assertEqual(response.status, 403)

    def test_openapi(self) -> None:
        """The document has exactly the plugin's routes besides the core's."""
        routes, operations = routes_and_operations(self.h, [self.plugin])
        self.assertEqual(routes, operations)
        self.assertIn(("patch", "/extensions/{number}/features"), operations)
