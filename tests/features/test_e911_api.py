"""
The e911 plugin's admin API endpoints: locations (civic addresses checked),
each extension's location and networks mapped to a location; bad input is
refused; the OpenAPI document has an operation for each route; changes are
audited.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import ApiHarness, routes_and_operations
from warden.features.e911 import EmergencyPlugin
from warden.store.credentials import make_extension
from warden.testing.civic import MemoryCivicLocationStore

V1 = "/api/v1"
CIVIC = {"country": "US", "A1": "CA", "A3": "San Jose", "RD": "Main St", "HNO": "100",
         "FLR": "2", "ROOM": "201"}  # fmt: skip


class LocationApiTests(SynchronousTestCase):
    """``/locations``, ``/extensions/{number}/location``, ``/location-networks``."""

    def setUp(self) -> None:
        self.plugin = EmergencyPlugin()
        self.store = MemoryCivicLocationStore()
        self.h = ApiHarness(endpoints=[self.plugin])
        self.plugin.use_store(self.store, self.h.directory)
        self.h.directory.add_extension(make_extension("100", "", "t.example", "pw"))
        self.token = self.h.token("read", "write")

    def send(self, method: str, path: str, body: object = None, token: str | None = None):  # type: ignore[no-untyped-def]
        return self.h.request(method, V1 + path, body, token or self.token)

    def test_locations(self) -> None:
        """PUT adds (201) or replaces (200), as an object or the CLI's text; GET, DELETE."""
        response = self.send("PUT", "/locations/hq-floor2", {"civic": CIVIC})
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(
            response.json()["text"], "100 Main St, Floor 2, Room 201, San Jose, CA, US"
        )
        response = self.send("PUT", "/locations/lobby", {"civic": "country=US,LOC=Lobby"})
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(self.send("PUT", "/locations/lobby", {"civic": CIVIC}).status, 200)
        items = self.send("GET", "/locations").json()["items"]
        self.assertEqual([i["name"] for i in items], ["hq-floor2", "lobby"])
        self.assertEqual(self.send("GET", "/locations/hq-floor2").json()["civic"], CIVIC)
        self.assertEqual(self.send("DELETE", "/locations/lobby").status, 204)
        self.assertEqual(self.send("DELETE", "/locations/lobby").status, 404)
        self.assertEqual(self.send("GET", "/locations/lobby").status, 404)
        audited = [(e.action, e.target) for e in self.h.audit.entries]
        self.assertIn(("PUT /api/v1/locations/{name}", "hq-floor2"), audited)

    def test_extension_and_networks(self) -> None:
        """An extension's location and a network's are set, read and cleared."""
        self.send("PUT", "/locations/lobby", {"civic": CIVIC})
        response = self.send("PUT", "/extensions/100/location", {"location": "lobby"})
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(
            self.send("GET", "/extensions/100/location").json(),
            {"number": "100", "location": "lobby"},
        )
        self.send("PUT", "/extensions/100/location", {"location": ""})
        self.assertIsNone(self.send("GET", "/extensions/100/location").json()["location"])
        response = self.send("PUT", "/location-networks/10.1.2.0/24", {"location": "lobby"})
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(
            self.send("GET", "/location-networks").json()["items"],
            [{"network": "10.1.2.0/24", "location": "lobby"}],
        )
        self.assertEqual(self.send("DELETE", "/location-networks/10.1.2.0/24").status, 204)
        self.assertEqual(self.send("DELETE", "/location-networks/10.1.2.0/24").status, 404)

    def test_refused(self) -> None:
        """Unknown elements, names, locations, extensions and networks; read-only tokens."""
        for body in ({"civic": {"country": "US", "FLOOR": "2"}}, {"civic": {"A1": "CA"}},
                     {"civic": {"country": "US", "A1": 5}}, {"civic": 5}, {},
                     {"civic": "country=US,,A1"}, {"colour": "red"}):  # fmt: skip
            response = self.send("PUT", "/locations/hq", body)
            self.assertEqual(response.status, 400, body)
        self.assertEqual(self.send("PUT", "/locations/h%20q", {"civic": CIVIC}).status, 404)
        self.assertEqual(self.store.locations, {})
        response = self.send("PUT", "/extensions/100/location", {"location": "nowhere"})
        self.assertEqual(response.status, 400)
        response = self.send("PUT", "/extensions/999/location", {"location": ""})
        self.assertEqual(response.status, 404)
        self.send("PUT", "/locations/lobby", {"civic": CIVIC})
        for path in ("/location-networks/10.1.2.1/24", "/location-networks/10.1.2.0/33"):
            self.assertEqual(self.send("PUT", path, {"location": "lobby"}).status, 400, path)
        response = self.send("PUT", "/location-networks/10.1.2.0/24", {"location": "nowhere"})
        self.assertEqual(response.status, 400)
        reader = self.h.token("read")
        response = self.send("PUT", "/locations/lobby", {"civic": CIVIC}, reader)
        self.assertEqual(response.status, 403)

    def test_openapi(self) -> None:
        """The document has exactly the plugin's routes besides the core's."""
        routes, operations = routes_and_operations(self.h, [self.plugin])
        self.assertEqual(routes, operations)
        self.assertIn(("put", "/locations/{name}"), operations)
        self.assertIn(("put", "/location-networks/{address}/{prefix}"), operations)
