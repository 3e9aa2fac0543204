"""
The trunks plugin in calls (warden.features.trunks, warden.sip.external): an
extension's call sent to a trunk with the number rewritten and the caller ID
presented, the provider's digest challenge answered, failover to the next
trunk on 5xx and on silence, the callee's own refusal passed back; calls from
a trunk's address routed by DID without extension credentials, unknown DIDs
refused and counted.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import ALICE, BOB, only
from warden.features.trunk_config import parse_routes, parse_trunks
from warden.features.trunks import TrunkService, TrunksPlugin, target_kinds
from warden.sip.auth import challenge, expected_response, parse_credentials
from warden.sip.hooks import CallAttempt, CallHookBase, CallHooks
from warden.sip.message import Request, Response, make_response
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.sipstack import REALM

ITSP = ("192.0.2.50", 5060)
BACKUP = ("192.0.2.60", 5070)
PASSWORD = "s3cret-trunk"


def metric(name: str, **labels: str) -> float:
    """A sample's value (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TrunkCallTestCase(SynchronousTestCase):
    """Alice (1001) and Bob (1002) are extensions; two trunks, itsp and backup."""

    def setUp(self) -> None:
        self.plugin = TrunksPlugin()
        self.stack = CallStack(hooks=[self.plugin])
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack.register("1002", BOB)
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)
        self.itsp = Phone(self.stack, "15559876543", ITSP)
        self.backup = Phone(self.stack, "15559876543", BACKUP)
        self.configure()

    def configure(self, inbound: list[dict[str, Any]] | None = None) -> None:
        trunks = parse_trunks([
            {"name": "itsp", "host": ITSP[0], "username": "acct", "password_env": "X",
             "from_number": "15551230000"},
            {"name": "backup", "host": BACKUP[0], "port": BACKUP[1], "register": False,
             "from_number": "15551239999", "timeout": 3},
        ])  # fmt: skip
        routes = parse_routes({
            "outbound": [
                {"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
                 "trunks": ["itsp", "backup"]},
                {"pattern": "_X.", "trunks": ["backup"]},
            ],
            "inbound": inbound if inbound is not None else [{"did": "15551230002", "to": "1002"}],
        })  # fmt: skip
        passwords = {"itsp": PASSWORD}
        self.plugin.service = TrunkService(
            self.stack.clock, self.stack.sip, self.stack.directory, trunks, passwords, routes
        )

    def dial(self, number: str) -> Request:
        """Alice dials ``number``; the INVITE Warden sends the ITSP."""
        _, sent = self.alice.call(number)
        invite = only(sent, ITSP, "INVITE")
        assert isinstance(invite, Request)
        return invite

    def challenge_407(self, invite: Request) -> Response:
        return make_response(
            invite, 407, to_tag="itsp407",
            headers=[("Proxy-Authenticate", challenge("itsp.example", "n0nce", "MD5"))],
        )  # fmt: skip


class OutboundTests(TrunkCallTestCase):
    """An extension's call to a number of an outbound route."""

    def test_number_and_caller_id(self) -> None:
        """9 stripped, 1 added; From and P-Asserted-Identity carry the trunk's number."""
        before = metric("warden_trunk_calls_total", trunk="itsp", direction="outbound")
        invite = self.dial("95552345678")
        self.assertEqual(invite.uri_text, "sip:15552345678@192.0.2.50")
        self.assertEqual(invite.from_.uri.user, "15551230000")
        self.assertIn("sip:15551230000@192.0.2.50", invite.get("P-Asserted-Identity") or "")
        self.assertEqual(invite.to.uri.user, "15552345678")
        after = metric("warden_trunk_calls_total", trunk="itsp", direction="outbound")
        self.assertEqual(after - before, 1)

    def test_extension_number_as_caller_id(self) -> None:
        """An extension with a DID of its own presents it."""
        self.configure(inbound=[{"did": "15551230001", "to": "1001"}])
        invite = self.dial("95552345678")
        self.assertEqual(invite.from_.uri.user, "15551230001")
        self.assertIn("sip:15551230001@", invite.get("P-Asserted-Identity") or "")

    def test_answered(self) -> None:
        """The provider's 200 reaches the caller; the call is in progress on the trunk."""
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.itsp.answer(invite, 200, body=self.itsp.sdp()), ITSP)
        only(sent, ALICE, 200)
        assert self.plugin.service is not None
        self.assertEqual(self.plugin.service.in_progress(), {"itsp": 1, "backup": 0})

    def test_digest_answered(self) -> None:
        """A 407 is answered: same Call-ID and From tag, next CSeq, a valid digest."""
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.challenge_407(invite), ITSP)
        again = only(sent, ITSP, "INVITE")
        assert isinstance(again, Request)
        self.assertEqual(again.call_id, invite.call_id)
        self.assertEqual(again.from_.tag, invite.from_.tag)
        self.assertEqual(again.cseq.number, invite.cseq.number + 1)
        self.assertNotEqual(again.top_via.branch, invite.top_via.branch)
        self.assertIsNone(again.to.tag)
        creds = parse_credentials(again.get("Proxy-Authorization") or "")
        assert creds is not None
        self.assertEqual(creds.username, "acct")
        self.assertEqual(creds.uri, invite.uri_text)
        ha1 = expected_ha1("acct", "itsp.example", PASSWORD)
        self.assertEqual(creds.response, expected_response(creds, ha1, "INVITE"))
        self.assertEqual([m for m, a in sent if tuple(a) == ALICE], [])
        sent = self.stack.deliver(self.itsp.answer(again, 200, body=self.itsp.sdp()), ITSP)
        only(sent, ALICE, 200)

    def test_credentials_refused_fails_over(self) -> None:
        """A second challenge is not answered again: the next trunk is tried."""
        before = metric("warden_trunk_failures_total", trunk="itsp", reason="call_auth")
        invite = self.dial("95552345678")
        again = only(self.stack.deliver(self.challenge_407(invite), ITSP), ITSP, "INVITE")
        assert isinstance(again, Request)
        sent = self.stack.deliver(self.challenge_407(again), ITSP)
        only(sent, BACKUP, "INVITE")
        self.assertEqual([m for m, a in sent if tuple(a) == ALICE], [])
        after = metric("warden_trunk_failures_total", trunk="itsp", reason="call_auth")
        self.assertEqual(after - before, 1)

    def test_failover_on_503(self) -> None:
        """503 from the first trunk: the second gets the call, with its own caller ID."""
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.itsp.answer(invite, 503), ITSP)
        second = only(sent, BACKUP, "INVITE")
        assert isinstance(second, Request)
        self.assertEqual(second.uri_text, "sip:15552345678@192.0.2.60:5070")
        self.assertEqual(second.from_.uri.user, "15551239999")
        self.assertEqual([m for m, a in sent if tuple(a) == ALICE], [])
        sent = self.stack.deliver(self.backup.answer(second, 200, body=self.backup.sdp()), BACKUP)
        only(sent, ALICE, 200)

    def test_failover_on_silence(self) -> None:
        """No answer at all within the trunk's timeout: the next trunk is tried."""
        self.dial("95552345678")
        before = self.stack.mark()
        self.stack.clock.advance(4.9)
        self.assertEqual([m for m, a in self.stack.sent_since(before) if tuple(a) == BACKUP], [])
        self.stack.clock.advance(0.2)
        only(self.stack.sent_since(before), BACKUP, "INVITE")

    def test_ringing_trunk_not_failed_over(self) -> None:
        """A trunk that answered 180 keeps the call past its timeout."""
        invite = self.dial("95552345678")
        self.stack.deliver(self.itsp.answer(invite, 180), ITSP)
        before = self.stack.mark()
        self.stack.clock.advance(10)
        self.assertEqual([m for m, a in self.stack.sent_since(before) if tuple(a) == BACKUP], [])

    def test_last_trunk_fails(self) -> None:
        """Every trunk failing with 5xx: the caller gets the failure."""
        invite = self.dial("95552345678")
        second = only(self.stack.deliver(self.itsp.answer(invite, 503), ITSP), BACKUP, "INVITE")
        assert isinstance(second, Request)
        sent = self.stack.deliver(self.backup.answer(second, 502), BACKUP)
        only(sent, ALICE, 502)

    def test_busy_not_failed_over(self) -> None:
        """486 is the callee's answer: passed back, no other trunk tried."""
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.itsp.answer(invite, 486), ITSP)
        only(sent, ALICE, 486)
        self.assertEqual([m for m, a in sent if tuple(a) == BACKUP], [])

    def test_extension_number_stays_inside(self) -> None:
        """A number a catch-all route matches but that is an extension rings it."""
        _, sent = self.alice.call("1002")
        only(sent, BOB, "INVITE")
        self.assertEqual([m for m, a in sent if tuple(a) in (ITSP, BACKUP)], [])

    def test_never_answering_trunk_bounded(self) -> None:
        """A trunk that rings for ever is cancelled at the ring timeout."""
        invite = self.dial("95552345678")
        self.stack.deliver(self.itsp.answer(invite, 180), ITSP)
        before = self.stack.mark()
        self.stack.clock.advance(30.1)
        sent = self.stack.sent_since(before)
        only(sent, ITSP, "CANCEL")
        only(sent, ALICE, 480)


class InboundTests(TrunkCallTestCase):
    """Calls from a trunk's address."""

    def test_did_rings_extension(self) -> None:
        """No challenge: the DID's extension rings, with the caller's number."""
        before = metric("warden_trunk_calls_total", trunk="itsp", direction="inbound")
        sent = self.stack.deliver(self.itsp.invite("15551230002"), ITSP)
        self.assertEqual([m for m, a in sent if isinstance(m, Response) and m.status == 407], [])
        invite = only(sent, BOB, "INVITE")
        assert isinstance(invite, Request)
        self.assertEqual(invite.from_.uri.user, "15559876543")
        after = metric("warden_trunk_calls_total", trunk="itsp", direction="inbound")
        self.assertEqual(after - before, 1)
        assert self.plugin.service is not None
        self.assertEqual(self.plugin.service.in_progress()["itsp"], 1)

    def test_did_in_to(self) -> None:
        """A provider sending to the registered user names the DID in To."""
        invite = self.itsp.invite("acct")
        invite.set("To", "<sip:15551230002@pbx.test>")
        only(self.stack.deliver(invite, ITSP), BOB, "INVITE")

    def test_unknown_did(self) -> None:
        """A DID no inbound route has: 404, counted."""
        before = metric("warden_trunk_unknown_did_total", trunk="itsp")
        sent = self.stack.deliver(self.itsp.invite("15550000000"), ITSP)
        only(sent, ITSP, 404)
        self.assertEqual(metric("warden_trunk_unknown_did_total", trunk="itsp") - before, 1)

    def test_no_call_out_through_warden(self) -> None:
        """A trunk's call to an outbound route's number is not sent out again."""
        sent = self.stack.deliver(self.itsp.invite("95552345678"), ITSP)
        only(sent, ITSP, 404)
        self.assertEqual([m for m, a in sent if tuple(a) == BACKUP], [])

    def test_extension_still_challenged(self) -> None:
        """A phone elsewhere still needs its credentials."""
        sent = self.stack.deliver(self.alice.invite("1002"), ALICE)
        only(sent, ALICE, 407)


def expected_ha1(user: str, realm: str, password: str) -> str:
    """MD5(user:realm:password)."""
    from warden.sip.auth import digest_hex

    return digest_hex("MD5", f"{user}:{realm}:{password}")


class StatusTests(TrunkCallTestCase):
    """What the admin API (GET /trunks) and wardenctl trunks show."""

    def test_endpoint(self) -> None:
        """One read endpoint listing each trunk's state and calls in progress."""
        from warden.model.admin import EndpointRequest

        [endpoint] = self.plugin.admin_endpoints()
        self.assertEqual((endpoint.method, endpoint.template, endpoint.scope),
                         ("GET", "trunks", "read"))  # fmt: skip
        invite = self.dial("95552345678")
        self.stack.deliver(self.itsp.answer(invite, 180), ITSP)
        reply = self.stack.successResultOf_(
            Deferred.fromCoroutine(endpoint.handler(EndpointRequest({})))  # type: ignore[arg-type]
        )
        states = {t["name"]: t for t in reply.body["trunks"]}
        self.assertEqual(states["itsp"]["state"], "unregistered")  # not started here
        self.assertEqual(states["backup"]["state"], "ip-authenticated")
        self.assertEqual(states["itsp"]["calls_in_progress"], 1)
        self.assertEqual(states["itsp"]["address"], ITSP[0])
        self.assertNotIn(PASSWORD, repr(reply.body))

    def test_openapi(self) -> None:
        """The OpenAPI document lists GET /trunks."""
        from warden.admin import openapi
        from warden.admin.plugin_endpoints import plugin_paths

        document = openapi.document(plugin_paths([self.plugin]))
        self.assertIn("get", document["paths"]["/trunks"])

    def test_registration_state(self) -> None:
        """Started, the registering trunk sends REGISTER and shows registering."""
        assert self.plugin.service is not None
        before = self.stack.mark()
        self.plugin.service.startService()
        self.addCleanup(self.plugin.service.stopService)
        only(self.stack.sent_since(before), ITSP, "REGISTER")
        [itsp] = [t for t in self.plugin.service.status() if t["name"] == "itsp"]
        self.assertEqual(itsp["state"], "registering")


class FeatureCodeTests(TrunkCallTestCase):
    """Only telephone numbers leave through a trunk."""

    def test_feature_code_not_sent_out(self) -> None:
        """A catch-all route does not take *97: it is routed inside (404 here)."""
        trunks = parse_trunks([{"name": "itsp", "host": ITSP[0], "register": False}])
        routes = parse_routes({"outbound": [{"pattern": "_.", "trunks": ["itsp"]}]})
        self.plugin.service = TrunkService(
            self.stack.clock, self.stack.sip, self.stack.directory, trunks, {}, routes
        )
        _, sent = self.alice.call("*97")
        only(sent, ALICE, 404)
        self.assertEqual([m for m, a in sent if tuple(a) == ITSP], [])
        _, sent = self.alice.call("+15552345678")
        only(sent, ITSP, "INVITE")


class SeenDialled(CallHookBase):
    """Records the number and marks every hook sees before routing."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, frozenset[str]]] = []

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        self.seen.append((attempt.dialled, frozenset(attempt.marks)))
        return None


class HookOrderTests(SynchronousTestCase):
    """Every hook before routing sees an inbound call as for its extension."""

    def test_earlier_hook_sees_extension(self) -> None:
        """A hook listed before trunks (call forwarding) sees 1002, not the DID."""
        seen = SeenDialled()
        plugin = TrunksPlugin()
        stack = CallStack(hooks=CallHooks([seen, plugin]))
        stack.register("1002", BOB)
        trunks = parse_trunks([{"name": "itsp", "host": ITSP[0], "register": False}])
        routes = parse_routes({"inbound": [{"did": "15551230002", "to": "1002"}]})
        plugin.service = TrunkService(stack.clock, stack.sip, stack.directory, trunks, {}, routes)
        itsp = Phone(stack, "15559876543", ITSP)
        only(stack.deliver(itsp.invite("15551230002"), ITSP), BOB, "INVITE")
        self.assertEqual(seen.seen, [("1002", frozenset({"trunk-inbound", "trunk:itsp"}))])


class CallerTests(TrunkCallTestCase):
    """Who an inbound call is from, and which addresses are the provider's."""

    def test_asserted_identity_first(self) -> None:
        """The provider's P-Asserted-Identity names the caller before From."""
        invite = self.itsp.invite("15551230002")
        invite.add("P-Asserted-Identity", '"Real Caller" <sip:+15557654321@itsp.example>')
        bob_invite = only(self.stack.deliver(invite, ITSP), BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        self.assertEqual(bob_invite.from_.uri.user, "+15557654321")
        self.assertEqual(bob_invite.from_.display, "Real Caller")

    def test_garbage_caller(self) -> None:
        """An unusable From user is 'anonymous'."""
        invite = self.itsp.invite("15551230002")
        invite.set("From", "<sip:%00evil@itsp.example>;tag=x1")
        bob_invite = only(self.stack.deliver(invite, ITSP), BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        self.assertEqual(bob_invite.from_.uri.user, "anonymous")

    def test_other_provider_address(self) -> None:
        """A call from one of a trunk's ``addresses`` is the trunk's."""
        trunks = parse_trunks([{"name": "itsp", "host": ITSP[0], "register": False,
                                "addresses": ["198.51.100.0/24"]}])  # fmt: skip
        routes = parse_routes({"inbound": [{"did": "15551230002", "to": "1002"}]})
        self.plugin.service = TrunkService(
            self.stack.clock, self.stack.sip, self.stack.directory, trunks, {}, routes
        )
        elsewhere = ("198.51.100.7", 5060)
        phone = Phone(self.stack, "15559876543", elsewhere)
        only(self.stack.deliver(phone.invite("15551230002"), elsewhere), BOB, "INVITE")


class TargetKindTests(SynchronousTestCase):
    """Which ``kind:name`` inbound targets the enabled plugins answer."""

    def test_default_plugins(self) -> None:
        """The default plugins answer ring groups (callfeatures)."""
        from warden.plugin import DEFAULT_PLUGINS, discover

        available = discover()
        kinds = target_kinds([available[name] for name in DEFAULT_PLUGINS])
        self.assertIn("ringgroup", kinds)
        self.assertEqual(target_kinds([available["sip"], available["trunks"]]), frozenset())


class RingGroupTargetTests(SynchronousTestCase):
    """A DID routed to ``ringgroup:sales`` rings the group (callfeatures listed first)."""

    def test_did_rings_group(self) -> None:
        """Both members ring; the caller needed no credentials."""
        from tests.features.test_ringgroups import CAROL, group
        from warden.features.callfeatures import CallFeaturesPlugin
        from warden.features.ringgroups import parse_ringgroups
        from warden.testing.features import MemoryCallFeatureStore

        features = CallFeaturesPlugin()
        features.use_store(MemoryCallFeatureStore())
        features.groups = parse_ringgroups([group(members=["1002", "1003"])])
        plugin = TrunksPlugin()
        stack = CallStack(hooks=CallHooks([features, plugin]))
        stack.register("1002", BOB)
        stack.register("1003", CAROL)
        trunks = parse_trunks([{"name": "itsp", "host": ITSP[0], "register": False}])
        routes = parse_routes({"inbound": [{"did": "15551230009", "to": "ringgroup:sales"}]})
        plugin.service = TrunkService(stack.clock, stack.sip, stack.directory, trunks, {}, routes)
        itsp = Phone(stack, "15559876543", ITSP)
        sent = stack.deliver(itsp.invite("15551230009"), ITSP)
        only(sent, BOB, "INVITE")
        only(sent, CAROL, "INVITE")


class GarbageTests(TrunkCallTestCase):
    """A provider answering nonsense does not break or hold the call."""

    def test_unreadable_challenge_fails_over(self) -> None:
        """A challenge without realm or nonce, or of an unknown algorithm: next trunk."""
        for value in ("Digest garbage", 'Digest realm="x", nonce="y", algorithm=ROT13', "!!"):
            invite = self.dial("95552345678")
            response = make_response(
                invite, 407, to_tag="t", headers=[("Proxy-Authenticate", value)]
            )
            sent = self.stack.deliver(response, ITSP)
            only(sent, BACKUP, "INVITE")
            self.assertEqual([m for m, a in sent if tuple(a) == ITSP and
                              isinstance(m, Request) and m.method == "INVITE"], [])  # fmt: skip

    def test_bad_sdp_in_answer(self) -> None:
        """A 200 whose SDP cannot be used: the caller gets 500, the provider a BYE."""
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.itsp.answer(invite, 200, body=b"garbage"), ITSP)
        only(sent, ALICE, 500)
        only(sent, ITSP, "BYE")


class WorkerTests(TrunkCallTestCase):
    """
    With ``[sip] workers`` above 1 only worker 0 registers the trunks (one
    binding per account at the provider); every worker places and takes calls.
    """

    def build(self, worker: int) -> TrunkService:
        """The trunks plugin built as SIP worker ``worker`` (-1: the only process)."""
        import attrs

        from warden.config import WardenConfig
        from warden.plugin import BuildContext

        stack = self.stack
        sections = {
            "trunks": parse_trunks([{"name": "itsp", "host": ITSP[0], "username": "acct",
                                     "password_env": "WARDEN_TEST_TRUNK_PASSWORD"}]),
            "routes": parse_routes({
                "outbound": [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
                              "trunks": ["itsp"]}],
                "inbound": [{"did": "15551230002", "to": "1002"}],
            }),
        }  # fmt: skip
        config = attrs.evolve(WardenConfig(), worker=worker, plugin_sections=sections)
        plugin = TrunksPlugin()
        context = BuildContext(
            stack.clock,  # type: ignore[arg-type]
            config, None, {"sip": lambda: stack.sip, "directory": lambda: stack.directory},
            [plugin],
        )  # fmt: skip
        self.patch(os, "environ", {**os.environ, "WARDEN_TEST_TRUNK_PASSWORD": PASSWORD})
        plugin.make(context)
        assert plugin.service is not None
        self.assertEqual([s for s, _ in context.services], [plugin.service])
        plugin.service.startService()
        self.addCleanup(plugin.service.stopService)
        return plugin.service

    def test_only_worker_0_registers(self) -> None:
        """Two workers of one node: one REGISTER reaches the provider, from worker 0."""
        mark = self.stack.mark()
        zero, one = self.build(0), self.build(1)
        only(self.stack.sent_since(mark), ITSP, "REGISTER")
        self.assertTrue(zero.registers)
        self.assertFalse(one.registers)
        self.assertIsNotNone(zero.trunks["itsp"].registration)
        self.assertIsNone(one.trunks["itsp"].registration)
        self.stack.clock.advance(3600)  # re-resolution never makes worker 1 register
        self.assertIsNone(one.trunks["itsp"].registration)

    def test_single_process_registers(self) -> None:
        """Without workers (``worker`` -1) the one process registers."""
        mark = self.stack.mark()
        service = self.build(-1)
        self.assertTrue(service.registers)
        only(self.stack.sent_since(mark), ITSP, "REGISTER")

    def test_other_worker_calls_out_and_in(self) -> None:
        """Worker 1 sends calls to the trunk and takes the provider's by DID."""
        self.plugin.service = self.build(1)
        invite = self.dial("95552345678")
        self.assertEqual(invite.uri_text, "sip:15552345678@192.0.2.50")
        incoming = self.itsp.invite("15551230002")
        sent = self.stack.deliver(incoming, ITSP)
        only(sent, BOB, "INVITE")
