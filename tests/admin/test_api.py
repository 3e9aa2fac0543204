"""
The admin REST API in memory: every resource, the error paths, token scopes,
bad input, the audit log, the OpenAPI document, health and metrics.
"""

from __future__ import annotations

import csv
import io

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import START, ApiHarness, FakeCall
from warden.admin import openapi
from warden.admin.api import SNAPSHOT_SECONDS
from warden.admin.auth import TOKEN_CACHE_SECONDS
from warden.admin.http import MAX_BODY_BYTES
from warden.admin.service import api_routes
from warden.model import Binding, CallRecord, LiveCall
from warden.store.credentials import make_extension

V1 = "/api/v1"


def record(
    call_id: str, started: float, disposition: str = "ANSWERED", caller: str = "100"
) -> CallRecord:
    """A finished call."""
    return CallRecord(
        call_id=call_id, caller=caller, caller_name="A", callee="101", dialled="101",
        started_at=started, answered_at=started + 1 if disposition == "ANSWERED" else None,
        ended_at=started + 10, disposition=disposition, hangup_cause="BYE",
        hangup_side="caller", codec="PCMU",
    )  # fmt: skip


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ApiHarness()
        self.rw = self.h.token("read", "write", "calls")

    def get(self, path: str, token: str | None = None):  # type: ignore[no-untyped-def]
        return self.h.request("GET", V1 + path, token=token or self.rw)

    def send(self, method: str, path: str, body: object = None, token: str | None = None):  # type: ignore[no-untyped-def]
        return self.h.request(method, V1 + path, body, token or self.rw)


class AuthenticationTests(_Base):
    """401 without a valid token, 403 without the scope; public endpoints stay open."""

    def test_unauthenticated(self) -> None:
        """Every non-public route answers 401 JSON without a token, or with a bad one."""
        routes = api_routes(self.h.services, self.h.auth)
        for route in routes:
            if route.scope is None:
                continue
            path = route.template
            for name in route.params:
                path = path.replace("{" + name + "}", "100" if name != "token_id" else "0" * 16)
                path = path.replace("{call_id}", "abc")
            for token in (None, "garbage", "wdn_0000000000000000_nope", "ses.x.y"):
                response = self.h.request(route.method, f"{V1}/{path}", {}, token)
                self.assertEqual(response.status, 401, (route, token))
                self.assertIn(response.error_code, ("unauthenticated", "invalid_token"))

    def test_public(self) -> None:
        """Health, readiness and the OpenAPI document need no token; metrics need read."""
        for path in ("/healthz", "/readyz", f"{V1}/openapi.json"):
            self.assertEqual(self.h.request("GET", path).status, 200, path)
        self.assertEqual(self.h.request("GET", "/metrics").error_code, "unauthenticated")
        self.assertEqual(
            self.h.request("GET", "/metrics", token=self.h.token("write")).status, 403
        )
        self.assertEqual(self.h.request("GET", "/metrics", token=self.rw).status, 200)

    def test_scopes(self) -> None:
        """A read token reads but cannot write, hang up or manage tokens."""
        read = self.h.token("read")
        self.assertEqual(self.get("/extensions", read).status, 200)
        denied = self.send("POST", "/extensions", {"number": "100"}, read)
        self.assertEqual((denied.status, denied.error_code), (403, "forbidden"))
        self.assertEqual(self.send("DELETE", "/calls/abc", None, read).status, 403)
        self.assertEqual(self.get("/tokens", self.rw).status, 403)
        write_only = self.h.token("write")
        self.assertEqual(self.get("/extensions", write_only).status, 403)

    def test_revoked_token(self) -> None:
        """A revoked token is refused; the listing never shows secrets."""
        session = self.h.login()
        listing = self.h.request("GET", f"{V1}/tokens", token=session)
        token_id = listing.json()["items"][0]["id"]
        self.assertNotIn(b"secret", listing.body)
        self.assertNotIn(self.rw.encode(), listing.body)
        self.assertEqual(self.h.request("DELETE", f"{V1}/tokens/{token_id}",
                                        token=session).status, 204)  # fmt: skip
        self.assertEqual(self.get("/status").status, 401)
        again = self.h.request("DELETE", f"{V1}/tokens/{token_id}", token=session)
        self.assertEqual(again.status, 404)

    def test_token_revoked_elsewhere(self) -> None:
        """A token revoked in the store by another node stops working within the cache time."""
        token_id = self.rw.split("_")[1]
        self.assertEqual(self.get("/status").status, 200)
        self.h.admin_store.revoke_token(token_id, self.h.clock.seconds())
        self.h.clock.advance(TOKEN_CACHE_SECONDS - 0.1)
        self.assertEqual(self.get("/status").status, 200)
        self.h.clock.advance(0.1)
        self.assertEqual(self.get("/status").status, 401)

    def test_token_creation_checks(self) -> None:
        """Unknown scopes, empty scopes and bad names are 400."""
        session = self.h.login()
        for body in (
            {"name": "x", "scopes": ["root"]},
            {"name": "x", "scopes": []},
            {"name": "", "scopes": ["read"]},
            {"name": "x\n", "scopes": ["read"]},
        ):
            self.assertEqual(self.h.request("POST", f"{V1}/tokens", body, session).status, 400)


class ExtensionTests(_Base):
    """Extensions CRUD and the SIP password reset."""

    def test_crud(self) -> None:
        """Create (password returned once), read, change, delete; 404 afterwards."""
        created = self.send("POST", "/extensions", {"number": "100", "name": "Desk"})
        self.assertEqual(created.status, 201)
        password = created.json()["password"]
        stored = self.h.directory._extensions["100"]  # type: ignore[attr-defined]
        self.assertEqual(
            stored.ha1_md5, make_extension("100", "Desk", "t.example", password).ha1_md5
        )
        shown = self.get("/extensions/100").json()
        self.assertEqual(shown, {"number": "100", "name": "Desk", "enabled": True,
                                 "qualify": False, "algorithms": [],
                                 "ring_timeout": None})  # fmt: skip
        self.assertNotIn(b"ha1", self.get("/extensions").body)
        changed = self.send("PATCH", "/extensions/100", {"name": "Lobby", "enabled": False,
                                                         "algorithms": ["SHA-256"]})  # fmt: skip
        self.assertEqual(changed.json()["name"], "Lobby")
        self.assertEqual(stored.ha1_md5, self.h.directory._extensions["100"].ha1_md5)  # type: ignore[attr-defined]
        self.assertEqual(self.send("DELETE", "/extensions/100").status, 204)
        self.assertEqual(self.get("/extensions/100").status, 404)
        self.assertEqual(self.send("DELETE", "/extensions/100").status, 404)
        self.assertEqual(self.send("PATCH", "/extensions/100", {"name": "x"}).status, 404)

    def test_ring_timeout(self) -> None:
        """ring_timeout is set at creation and by PATCH (null or 0 clears it); bad values 400."""
        created = self.send("POST", "/extensions", {"number": "100", "ring_timeout": 25})
        self.assertEqual(created.json()["extension"]["ring_timeout"], 25)
        changed = self.send("PATCH", "/extensions/100", {"ring_timeout": 3.5})
        self.assertEqual(changed.json()["ring_timeout"], 3.5)
        self.assertEqual(self.h.directory._extensions["100"].ring_timeout, 3.5)  # type: ignore[attr-defined]
        for bad in (0.5, 601, -1, True, "20", 10**400, [20]):
            response = self.send("PATCH", "/extensions/100", {"ring_timeout": bad})
            self.assertEqual(response.status, 400, bad)
        self.assertEqual(self.get("/extensions/100").json()["ring_timeout"], 3.5)
        for clear in (None, 0):
            self.send("PATCH", "/extensions/100", {"ring_timeout": 9})
            cleared = self.send("PATCH", "/extensions/100", {"ring_timeout": clear})
            self.assertIsNone(cleared.json()["ring_timeout"])

    def test_given_password_not_echoed(self) -> None:
        """A password given at creation is not sent back."""
        created = self.send("POST", "/extensions", {"number": "7", "password": "longenough1"})
        self.assertNotIn("password", created.json())

    def test_conflict(self) -> None:
        """A taken number is 409."""
        self.send("POST", "/extensions", {"number": "100"})
        response = self.send("POST", "/extensions", {"number": "100"})
        self.assertEqual((response.status, response.error_code), (409, "conflict"))

    def test_password_reset(self) -> None:
        """A reset returns a new secret once and changes the HA1 values."""
        self.send("POST", "/extensions", {"number": "100"})
        before = self.h.directory._extensions["100"]  # type: ignore[attr-defined]
        reset = self.send("POST", "/extensions/100/password", {})
        self.assertEqual(reset.status, 200)
        after = self.h.directory._extensions["100"]  # type: ignore[attr-defined]
        self.assertNotEqual(before.ha1_md5, after.ha1_md5)
        self.assertEqual(
            after.ha1_md5, make_extension("100", "", "t.example", reset.json()["password"]).ha1_md5
        )
        self.assertEqual(self.send("POST", "/extensions/999/password", {}).status, 404)


class BadInputTests(_Base):
    """Bad requests get 4xx JSON errors and change nothing."""

    def assert_unchanged(self) -> None:
        self.assertEqual(self.h.directory._extensions, {})  # type: ignore[attr-defined]

    def test_bodies(self) -> None:
        """Invalid JSON, non-objects, unknown or mistyped or missing fields: 400."""
        cases = [
            (b"{", "invalid_json"), (b"[1]", "invalid_body"), (b'"x"', "invalid_body"),
            (b'{"number": "100", "admin": true}', "unknown_field"),
            (b'{"number": 100}', "invalid_field"), (b'{"name": "x"}', "missing_field"),
            (b'{"number": "100", "enabled": "yes"}', "invalid_field"),
            (b'{"number": "1; DROP TABLE extensions"}', "invalid_field"),
            (b'{"number": "100", "name": "\\u0000"}', "invalid_field"),
            (b'{"number": "100", "name": "A\\r\\nP-Asserted-Identity: x"}', "invalid_field"),
            (b'{"number": "100", "name": "\\u202e1001"}', "invalid_field"),
            (b'{"number": "100", "name": "\\u0085"}', "invalid_field"),
            (b"\xff\xfe", "invalid_json"),
        ]  # fmt: skip
        for raw, code in cases:
            response = self.h.request("POST", f"{V1}/extensions", token=self.rw, raw_body=raw)
            self.assertEqual((response.status, response.error_code), (400, code), raw)
            self.assertEqual(response.headers["content-type"], "application/json")
        self.assert_unchanged()

    def test_content_type(self) -> None:
        """A body that is not application/json is 415."""
        response = self.h.request(
            "POST",
            f"{V1}/extensions",
            token=self.rw,
            raw_body=b'{"number": "100"}',
            content_type="text/plain",
        )
        self.assertEqual((response.status, response.error_code), (415, "unsupported_media_type"))
        self.assert_unchanged()

    def test_oversized(self) -> None:
        """A body over the limit is 413, declared or not."""
        big = b'{"number": "100", "name": "' + b"x" * MAX_BODY_BYTES + b'"}'
        response = self.h.request("POST", f"{V1}/extensions", token=self.rw, raw_body=big)
        self.assertEqual((response.status, response.error_code), (413, "body_too_large"))
        chunked = (b"POST /api/v1/extensions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Authorization: Bearer " + self.rw.encode() + b"\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"%x\r\n%s\r\n" % (len(c), c)
                              for c in [big[i:i + 4096] for i in range(0, len(big), 4096)])
                   + b"0\r\n\r\n")  # fmt: skip
        raw = self.h.raw(chunked)
        self.assertEqual(raw.status, 413)
        self.assert_unchanged()

    def test_path_traversal_and_odd_ids(self) -> None:
        """IDs outside their pattern are 404 JSON, never a lookup."""
        for path in ("/extensions/..%2f..%2fetc%2fpasswd", "/extensions/100%00",
                     "/extensions/1%27%20OR%201=1", "/calls/..", "/registrations/abc",
                     "/tokens/../../x", "/nothing", "/extensions/100/password/extra"):  # fmt: skip
            response = self.get(path)
            self.assertEqual((response.status, response.error_code), (404, "not_found"), path)

    def test_sqlish_query(self) -> None:
        """SQL-ish query values are refused or matched literally."""
        response = self.get("/cdrs?extension=1'%20OR%20'1'='1")
        self.assertEqual((response.status, response.error_code), (400, "invalid_parameter"))
        self.assertEqual(self.get("/audit?actor=x'%20OR%201=1").json()["items"], [])

    def test_non_ascii_time(self) -> None:
        """Epoch seconds in non-ASCII digits, with underscores or as nan/inf are a 400."""
        for since in ("%D9%A1%D9%A7%D9%A0%D9%A0", "1_700_000_000", "nan", "inf", "1e9"):
            response = self.get(f"/cdrs?since={since}")
            self.assertEqual((response.status, response.error_code), (400, "invalid_parameter"))

    def test_non_ascii_limit(self) -> None:
        """A limit in non-ASCII digits (``²``, Arabic-Indic one zero) is a 400, never a 500
        or a limit of 10."""
        for limit in ("%C2%B2", "%D9%A1%D9%A0", "1_0", "+5", "%201"):
            response = self.get(f"/cdrs?limit={limit}")
            self.assertEqual((response.status, response.error_code), (400, "invalid_parameter"))

    def test_unknown_query_parameter_and_method(self) -> None:
        """Unknown query parameters are 400; a known path with a wrong method is 405."""
        self.assertEqual(self.get("/extensions?admin=1").error_code, "unknown_parameter")
        response = self.send("PUT", "/extensions", {})
        self.assertEqual(response.status, 405)
        self.assertIn("POST", response.headers["allow"])

    def test_bad_limits_and_cursors(self) -> None:
        """Out-of-range limits and foreign cursors are 400."""
        for path in ("/registrations?limit=0", "/registrations?limit=1001",
                     "/registrations?limit=x", "/registrations?cursor=!!",
                     "/cdrs?cursor=bm9wZQ", "/audit?cursor=WyJ4Il0", "/cdrs?since=yesterday",
                     "/cdrs?disposition=maybe", "/cdrs?format=xml"):  # fmt: skip
            self.assertEqual(self.get(path).status, 400, path)


class RegistrationTests(_Base):
    """Listing, paging and kicking registrations."""

    def setUp(self) -> None:
        super().setUp()
        for aor in ("100", "101", "102"):
            for n in range(2):
                binding = Binding(aor, f"sip:{aor}-{n}@192.0.2.1", f"k{n}", START + 60,
                                  user_agent="Phone/1", received="udp:192.0.2.1:5060",
                                  node_id="node1")  # fmt: skip
                self.h.location.apply(aor, [binding], [])

    def test_list_and_page(self) -> None:
        """Pages of the limit, in order, cover everything once."""
        first = self.get("/registrations?limit=4").json()
        self.assertEqual(len(first["items"]), 4)
        self.assertEqual(first["items"][0]["user_agent"], "Phone/1")
        self.assertEqual(first["items"][0]["source"], "udp:192.0.2.1:5060")
        self.assertEqual(first["items"][0]["expires_in"], 60)
        second = self.get(f"/registrations?limit=4&cursor={first['next_cursor']}").json()
        self.assertIsNone(second["next_cursor"])
        seen = [(b["aor"], b["key"]) for b in first["items"] + second["items"]]
        self.assertEqual(seen, sorted({(a, f"k{n}") for a in ("100", "101", "102")
                                       for n in range(2)}))  # fmt: skip

    def test_snapshot_freshness(self) -> None:
        """The listing may lag new bindings by a second; a kick shows at once."""
        self.assertEqual(len(self.get("/registrations").json()["items"]), 6)
        binding = Binding("103", "sip:103@192.0.2.1", "k0", START + 60)
        self.h.location.apply("103", [binding], [])
        self.assertEqual(len(self.get("/registrations").json()["items"]), 6)
        self.assertEqual(len(self.get("/registrations?aor=103").json()["items"]), 1)
        self.h.clock.advance(SNAPSHOT_SECONDS)
        self.assertEqual(len(self.get("/registrations").json()["items"]), 7)
        self.send("DELETE", "/registrations/100")
        aors = {b["aor"] for b in self.get("/registrations").json()["items"]}
        self.assertEqual(aors, {"101", "102", "103"})

    def test_kick(self) -> None:
        """Removing one binding, then a whole AOR."""
        self.assertEqual(self.send("DELETE", "/registrations/100?key=k0").json(), {"removed": 1})
        self.assertEqual(len(self.get("/registrations/100").json()["items"]), 1)
        self.assertEqual(self.send("DELETE", "/registrations/100?key=k0").status, 404)
        self.assertEqual(self.send("DELETE", "/registrations/101").json(), {"removed": 2})
        self.assertEqual(self.get("/registrations/101").json()["items"], [])


class CallTests(_Base):
    """Active calls and hang-up."""

    def test_list_show_hangup(self) -> None:
        """Local calls show legs, duration and recording; remote ones come from the live store."""
        call = FakeCall("abc123", START - 5)
        call.attempt.recording = "2026/12/06/abc123.wav"
        self.h.calls.calls["abc123"] = call
        self.h.live.publish(LiveCall("zzz", "200", "201", "201", "answered", START - 1,
                                     node_id="node2"))  # fmt: skip
        items = self.get("/calls").json()["items"]
        self.assertEqual([c["id"] for c in items], ["abc123", "zzz"])
        self.assertEqual([c["recording"] for c in items], [True, False])
        self.assertEqual(items[0]["duration"], 5.0)
        self.assertEqual([leg["party"] for leg in items[0]["legs"]], ["100", "101"])
        self.assertEqual(items[1]["node"], "node2")
        self.assertEqual(self.get("/calls/abc123").json()["codec"], "PCMU")
        self.assertEqual(self.send("DELETE", "/calls/abc123").status, 204)
        self.assertEqual(call.ended_cause, "admin hangup")
        self.assertEqual(self.send("DELETE", "/calls/abc123").status, 404)
        self.assertEqual(self.get("/calls/abc123").status, 404)


class RecordTests(_Base):
    """CDR filters, paging and CSV."""

    def setUp(self) -> None:
        super().setUp()
        for i in range(5):
            self.h.records.add(record(f"c{i}", START + i, "BUSY" if i == 2 else "ANSWERED",
                                      caller="=cmd" if i == 4 else "100"))  # fmt: skip

    def test_filters_and_paging(self) -> None:
        """Filters apply; the cursor pages without gaps."""
        busy = self.get("/cdrs?disposition=busy").json()["items"]
        self.assertEqual([r["call_id"] for r in busy], ["c2"])
        window = self.get(f"/cdrs?since={START + 1}&until={START + 3}").json()["items"]
        self.assertEqual([r["call_id"] for r in window], ["c1", "c2"])
        page = self.get("/cdrs?limit=3").json()
        rest = self.get(f"/cdrs?limit=3&cursor={page['next_cursor']}").json()
        self.assertEqual([r["call_id"] for r in page["items"] + rest["items"]],
                         [f"c{i}" for i in range(5)])  # fmt: skip
        self.assertIsNone(rest["next_cursor"])

    def test_csv(self) -> None:
        """CSV export has the header, one row per record, and defuses formulas."""
        response = self.get("/cdrs?format=csv")
        self.assertTrue(response.headers["content-type"].startswith("text/csv"))
        rows = list(csv.reader(io.StringIO(response.body.decode())))
        self.assertEqual(rows[0][0], "call_id")
        self.assertEqual(len(rows), 6)
        self.assertEqual(rows[5][4], "'=cmd")


class AuditTests(_Base):
    """Every state-changing request is audited, successful or not; reads are not."""

    def test_entries(self) -> None:
        """Who, what, target, status and source are recorded; secrets are not."""
        self.h.request("POST", f"{V1}/extensions", {"number": "100", "password": "pw-secret-1"},
                       self.rw, source="198.51.100.9")  # fmt: skip
        self.send("DELETE", "/extensions/555")
        self.h.request("POST", f"{V1}/auth/login", {"username": "eve", "password": "guess"})
        self.get("/extensions")
        entries = self.get("/audit").json()["items"]
        actions = [(e["action"], e["status"]) for e in entries]
        self.assertIn(("POST /api/v1/extensions", 201), actions)
        self.assertIn(("DELETE /api/v1/extensions/{number}", 404), actions)
        self.assertNotIn("GET", " ".join(a for a, _ in actions))
        created = next(e for e in entries if e["status"] == 201 and e["target"] == "100")
        self.assertEqual(created["source"], "198.51.100.9")
        self.assertTrue(created["actor"].startswith("token:"))
        login = entries[-1]
        self.assertEqual((login["actor"], login["status"]), ("eve", 401))
        everything = repr([e.to_json() for e in self.h.audit.entries])
        for secret in ("pw-secret-1", "guess", self.rw):
            self.assertNotIn(secret, everything)

    def test_filter_by_actor(self) -> None:
        """The log is queryable by actor, with paging."""
        for n in range(3):
            self.send("POST", "/extensions", {"number": str(200 + n)})
        actor = self.h.audit.entries[-1].actor
        page = self.get(f"/audit?actor={actor}&limit=2").json()
        rest = self.get(f"/audit?actor={actor}&limit=2&cursor={page['next_cursor']}").json()
        targets = [e["target"] for e in page["items"] + rest["items"]]
        self.assertEqual(targets, ["200", "201", "202"])


class SystemTests(_Base):
    """Status, drain, health."""

    def test_status(self) -> None:
        """Version, node, uptime and counts."""
        self.send("POST", "/extensions", {"number": "100"})
        self.h.clock.advance(12.5)
        status = self.get("/status").json()
        self.assertEqual(status["node"], "node1")
        self.assertEqual(status["uptime"], 12.5)
        self.assertEqual(status["counts"]["extensions"], 1)
        self.assertEqual(status["fips"], {"mode": False, "provider_active": False})

    def test_drain_waits_for_emergency_calls(self) -> None:
        """At the drain timeout an emergency call is not hung up; the drain ends with it."""
        ordinary, emergency = FakeCall("a", START), FakeCall("e", START)
        emergency.attempt.emergency = True
        self.h.calls.calls.update({"a": ordinary, "e": emergency})
        self.send("POST", "/drain", {"timeout": 5})
        self.h.clock.advance(5.0)
        self.assertEqual((ordinary.ended_cause, emergency.ended_cause), ("drain timeout", ""))
        self.h.clock.advance(60.0)
        self.assertFalse(self.get("/drain").json()["finished"])
        del self.h.calls.calls["e"]  # the caller hangs up
        self.h.clock.advance(1.0)
        self.assertTrue(self.get("/drain").json()["finished"])

    def test_drain_and_readiness(self) -> None:
        """Drain waits for calls up to the timeout, then hangs up; readyz says draining."""
        self.assertEqual(self.h.request("GET", "/readyz").status, 200)
        call = FakeCall("abc", START)
        self.h.calls.calls["abc"] = call
        started = self.send("POST", "/drain", {"timeout": 10})
        self.assertEqual(started.status, 202)
        self.assertTrue(self.h.calls.draining)
        ready = self.h.request("GET", "/readyz")
        self.assertEqual((ready.status, ready.json()["status"]), (503, "draining"))
        self.h.clock.advance(9.0)
        self.assertEqual(call.ended_cause, "")
        self.assertFalse(self.get("/drain").json()["finished"])
        self.h.clock.advance(1.0)
        self.assertEqual(call.ended_cause, "drain timeout")
        self.assertTrue(self.get("/drain").json()["finished"])
        self.assertEqual(self.send("POST", "/drain", {"timeout": -1}).status, 400)

    def test_drain_finishes_when_calls_end(self) -> None:
        """A drain ends as soon as the last call does."""
        self.h.calls.calls["abc"] = FakeCall("abc", START)
        self.send("POST", "/drain", {})
        done = self.h.drain.finished()
        self.h.clock.advance(3.0)
        self.assertNoResult(done)
        del self.h.calls.calls["abc"]
        self.h.clock.advance(1.0)
        self.successResultOf(done)

    def test_readiness_checks(self) -> None:
        """An unreachable store or unbound SIP listeners make readyz 503."""
        self.h.store_ok = False
        response = self.h.request("GET", "/readyz")
        self.assertEqual(response.status, 503)
        self.assertFalse(response.json()["checks"]["store"])
        self.h.store_ok = True
        self.h.sip_bound = False
        self.assertEqual(self.h.request("GET", "/readyz").status, 503)


class OpenApiTests(SynchronousTestCase):
    """The OpenAPI document matches the route table."""

    def test_operations_match_routes(self) -> None:
        """Every route has an operation with its path parameters, and nothing else does."""
        h = ApiHarness()
        routes = {(r.method.lower(), "/" + r.template) for r in api_routes(h.services, h.auth)}
        document = openapi.document()
        operations = {(m, p) for p, ops in document["paths"].items() for m in ops}
        self.assertEqual(routes, operations)
        for path, ops in document["paths"].items():
            for op in ops.values():
                params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                self.assertEqual(params, {s[1:-1] for s in path.split("/") if s.startswith("{")})

    def test_served(self) -> None:
        """The document is served without authentication."""
        h = ApiHarness()
        self.assertEqual(h.request("GET", f"{V1}/openapi.json").json()["openapi"], "3.0.3")


class MetricsTests(SynchronousTestCase):
    """/metrics parses with prometheus' parser and has the scrape-time families."""

    def test_exposition(self) -> None:
        """
        The exposition parses; active calls come from the call controller; a
        rendering is reused for one second.
        """
        h = ApiHarness()
        token = h.token("read")
        h.calls.calls["a"] = FakeCall("a", START)
        response = h.request("GET", "/metrics", token=token)
        self.assertTrue(response.headers["content-type"].startswith("text/plain"))
        families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
        self.assertEqual(families["warden_calls_active"].samples[0].value, 1.0)
        self.assertEqual(h.request("GET", "/metrics", token=token).body, response.body)
        h.calls.calls.clear()
        h.clock.advance(0.9)
        self.assertEqual(h.request("GET", "/metrics", token=token).body, response.body)
        h.clock.advance(0.1)
        fresh = h.request("GET", "/metrics", token=token).body.decode()
        self.assertIn("warden_calls_active 0.0", fresh)
        for name in ("warden_sip_requests", "warden_sip_transaction_seconds",
                     "warden_store_interaction_seconds", "warden_cdr_spool_depth",
                     "warden_sip_retransmissions", "warden_rtp_jitter_seconds",
                     "warden_call_setup_seconds", "warden_calls_ended"):  # fmt: skip
            self.assertIn(name, families)
