"""
The e911 plugin (warden.features.e911) in calls: 911, 9911 and 933 from an
extension with do-not-disturb, a forward and a call limit reached go to the
emergency trunks with failover, carrying the caller's PIDF-LO location
(extension, network, default) in a multipart body, a Geolocation header and
the callback number; observers hear of each call; a full trunk makes room.
"""

from __future__ import annotations

import email.parser
import email.policy
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

from prometheus_client import REGISTRY
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.sip.test_b2bua import ALICE, BOB, only
from warden.features.callfeatures import CallFeaturesPlugin
from warden.features.e911 import (
    EmergencyCall,
    EmergencyMetrics,
    EmergencyPlugin,
    EmergencyService,
    LocationResolver,
)
from warden.features.e911_config import parse_emergency
from warden.features.pidf import CIVIC_NS
from warden.features.trunk_config import parse_routes, parse_trunks
from warden.features.trunks import TrunkService, TrunksPlugin
from warden.interfaces import IEmergencyObserver
from warden.model.emergency import CivicLocation
from warden.model.features import CallFeatures
from warden.sip.message import Message, Request
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.civic import MemoryCivicLocationStore
from warden.testing.features import MemoryCallFeatureStore
from warden.testing.sipstack import REALM

ITSP = ("192.0.2.50", 5060)
BACKUP = ("192.0.2.60", 5070)
OTHER = ("192.0.2.70", 5060)
FLOOR2 = CivicLocation(
    "floor2",
    {"country": "US", "A1": "CA", "A3": "San Jose", "RD": "Main St", "HNO": "100",
     "FLR": "2", "ROOM": "201"},
)  # fmt: skip
LOBBY = CivicLocation("lobby", {"country": "US", "A1": "CA", "A3": "San Jose", "LOC": "Lobby"})
WAREHOUSE = CivicLocation("warehouse", {"country": "US", "A1": "CA", "BLD": "W & <2>"})


def metric(name: str, **labels: str) -> float:
    """A sample's value (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@implementer(IEmergencyObserver)
class Recorder:
    """An observer keeping what it hears."""

    def __init__(self) -> None:
        self.calls: list[EmergencyCall] = []

    def emergency_call_started(self, call: EmergencyCall) -> None:
        """Keep it."""
        self.calls.append(call)


def parts_of(invite: Request) -> dict[str, Any]:
    """The body parts of a multipart INVITE by Content-Type (email.parser reads them)."""
    head = f"Content-Type: {invite.get('Content-Type')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + invite.body)
    assert message.is_multipart(), invite.get("Content-Type")
    return {part.get_content_type(): part for part in message.get_payload()}


class EmergencyTestCase(SynchronousTestCase):
    """Alice (1001, DND and a forward set) and Bob (1002); trunks itsp, backup, other."""

    config: ClassVar[dict[str, Any]] = {
        "trunks": ["itsp", "backup"], "outside_prefix": "9", "default_location": "lobby",
    }  # fmt: skip

    def setUp(self) -> None:
        self.locations = MemoryCivicLocationStore()
        for location in (FLOOR2, LOBBY, WAREHOUSE):
            self.successResultOf(self.locations.put_location(location))
        self.features = MemoryCallFeatureStore()
        self.successResultOf(
            self.features.set_features(CallFeatures("1001", forward_all="1002", dnd=True))
        )
        callfeatures = CallFeaturesPlugin()
        callfeatures.use_store(self.features)
        self.e911 = EmergencyPlugin()
        self.trunks = TrunksPlugin()
        self.stack = CallStack(hooks=[self.e911, callfeatures, self.trunks], max_calls=1)
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack.register("1002", BOB)
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)
        self.itsp = Phone(self.stack, "911", ITSP)
        self.backup = Phone(self.stack, "911", BACKUP)
        self.recorder = Recorder()
        self.configure()

    def configure(self, itsp_max_calls: int = 0, reserve: int = 0, **emergency: Any) -> None:
        trunks = parse_trunks([
            {"name": "itsp", "host": ITSP[0], "register": False, "from_number": "15551230000",
             "max_calls": itsp_max_calls},
            {"name": "backup", "host": BACKUP[0], "port": BACKUP[1], "register": False,
             "from_number": "15551239999", "timeout": 3},
            {"name": "other", "host": OTHER[0], "register": False},
        ])  # fmt: skip
        routes = parse_routes({
            "outbound": [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
                          "trunks": ["itsp"]}],
            "inbound": [{"did": "15551230001", "to": "1001"}],
        })  # fmt: skip
        service = TrunkService(self.stack.clock, self.stack.sip, self.stack.directory, trunks,
                               {}, routes)  # fmt: skip
        self.trunks.service = service
        config = parse_emergency({**self.config, "reserve_calls": reserve, **emergency})
        service.reserve(config.trunks, config.reserve_calls)
        resolver = LocationResolver(self.locations, config.default_location)
        self.e911.service = EmergencyService(
            self.stack.clock, config, service, resolver, [EmergencyMetrics(), self.recorder],
            REALM, "node-a",
        )  # fmt: skip

    def answered_911(self) -> None:
        """Alice dials 911 and the emergency trunk answers."""
        own, sent = self.alice.call("911", body=self.alice.sdp())
        invite = only(sent, ITSP, "INVITE")
        assert isinstance(invite, Request)
        ok = only(self.stack.deliver(self.itsp.answer(invite, 200, body=self.itsp.sdp()), ITSP),
                  ALICE, 200)  # fmt: skip
        self.stack.deliver(self.alice.ack_for(own, ok), ALICE)  # type: ignore[arg-type]

    def dial(self, number: str, to: tuple[str, int] = ITSP) -> Request:
        """Alice dials ``number``; the INVITE Warden sends ``to``."""
        _, sent = self.alice.call(number, body=self.alice.sdp())
        invite = only(sent, to, "INVITE")
        assert isinstance(invite, Request)
        return invite


class RoutingTests(EmergencyTestCase):
    """Kari's Law: nothing set on the extension keeps 911 from the emergency trunk."""

    def test_911_despite_dnd_and_forward(self) -> None:
        """911 goes to the first emergency trunk, not to the forward, as 911."""
        invite = self.dial("911")
        self.assertEqual(invite.uri_text, "sip:911@192.0.2.50")
        self.assertEqual(invite.get("Priority"), "emergency")

    def test_outside_prefix(self) -> None:
        """9911 is 911 (sent as 911); 9933 the test number."""
        self.assertEqual(self.dial("9911").uri_text, "sip:911@192.0.2.50")
        self.assertEqual(self.dial("9933").uri_text, "sip:933@192.0.2.50")
        self.assertEqual([c.test for c in self.recorder.calls], [False, True])
        self.assertEqual([c.dialled for c in self.recorder.calls], ["9911", "9933"])

    def test_not_emergency(self) -> None:
        """91 and 99111 are no emergency numbers: routed as usual (not to the trunk)."""
        for number in ("91", "99111", "9912"):
            _, sent = self.alice.call(number)
            self.assertFalse([m for m, a in sent if tuple(a) == ITSP], number)
        self.assertEqual(self.recorder.calls, [])

    def test_call_limit_does_not_apply(self) -> None:
        """With Alice already in a call ([calls] max 1), 911 still goes out; 1002 does not."""
        self.alice.call_answered("1002", self.bob)
        _, sent = self.alice.call("1002")
        only(sent, ALICE, 486)
        invite = self.dial("911")
        self.assertEqual(invite.uri_text, "sip:911@192.0.2.50")

    def test_draining_node_takes_emergency_calls(self) -> None:
        """
        A draining node refuses 1002 with 503 and Retry-After before asking
        for credentials, but 911 and 933 go out.
        """
        self.stack.calls.draining = True
        sent = self.stack.deliver(self.alice.invite("1002"), ALICE)
        refused = only(sent, ALICE, 503)
        self.assertEqual(refused.get("Retry-After"), "30")
        self.assertEqual(self.dial("911").uri_text, "sip:911@192.0.2.50")
        self.assertEqual(self.dial("9933").uri_text, "sip:933@192.0.2.50")
        self.assertEqual([c.test for c in self.recorder.calls], [False, True])

    def test_failover_keeps_location(self) -> None:
        """A 503 from the first trunk: the backup trunk gets the INVITE with the location."""
        invite = self.dial("911")
        sent = self.stack.deliver(self.itsp.answer(invite, 503), ITSP)
        second = only(sent, BACKUP, "INVITE")
        assert isinstance(second, Request)
        self.assertEqual(second.uri_text, "sip:911@192.0.2.60:5070")
        self.assertIn("application/pidf+xml", parts_of(second))
        self.assertEqual(len(self.recorder.calls), 1)

    def test_rings_past_ring_timeout(self) -> None:
        """
        A ringing emergency call outlasts [calls] ring_timeout (30 s) and the
        media timeout (60 s, no RTP): Warden gives up on it at 170 s, before
        the caller's INVITE transaction's Timer C (180 s).
        """
        invite = self.dial("911")
        self.stack.deliver(self.itsp.answer(invite, 180), ITSP)
        before = self.stack.mark()
        self.stack.clock.advance(169)
        self.assertEqual(self.stack.sent_since(before), [])
        self.stack.clock.advance(2)
        sent = self.stack.sent_since(before)
        only(sent, ITSP, "CANCEL")

    def test_silent_answered_call_kept(self) -> None:
        """An answered emergency call without RTP is not hung up (media timeout)."""
        self.answered_911()
        before = self.stack.mark()
        self.stack.clock.advance(300)
        byes = [a for m, a in self.stack.sent_since(before) if getattr(m, "method", "") == "BYE"]
        self.assertEqual(byes, [])
        self.assertEqual(len(self.stack.calls.calls), 1)

    def test_drain_timeout_spares_emergency_call(self) -> None:
        """A drain's timeout hangs up Alice's call to Bob but not her answered 911 call."""
        from warden.admin.drain import DrainController

        self.alice.call_answered("1002", self.bob)
        self.answered_911()
        self.assertEqual(len(self.stack.calls.calls), 2)
        drain = DrainController(self.stack.clock, self.stack.calls, 10.0)
        drain.start()
        self.stack.clock.advance(10.0)
        [left] = self.stack.calls.calls.values()
        self.assertTrue(left.attempt.emergency)
        self.assertFalse(drain.complete)

    def test_never_to_voicemail(self) -> None:
        """Every trunk failing: the caller gets the failure, no redirect is asked."""
        invite = self.dial("911")
        sent = self.stack.deliver(self.itsp.answer(invite, 503), ITSP)
        second = only(sent, BACKUP, "INVITE")
        assert isinstance(second, Request)
        sent = self.stack.deliver(self.backup.answer(second, 503), BACKUP)
        only(sent, ALICE, 503)

    def test_no_trunks_not_intercepted(self) -> None:
        """Without emergency trunks the plugin leaves 911 alone."""
        self.configure(trunks=[])
        _, sent = self.alice.call("911")
        self.assertFalse([m for m, a in sent if tuple(a) == ITSP])
        self.assertEqual(self.recorder.calls, [])


class LocationTests(EmergencyTestCase):
    """RAY BAUM's Act: the INVITE carries the dispatchable location."""

    def check_pidf(self, invite: Request, location: CivicLocation) -> None:
        parts = parts_of(invite)
        self.assertEqual(list(parts), ["application/sdp", "application/pidf+xml"])
        self.assertIn(b"m=audio", parts["application/sdp"].get_payload(decode=True))
        pidf = parts["application/pidf+xml"]
        geolocation = invite.get("Geolocation") or ""
        self.assertTrue(geolocation.startswith("<cid:"), geolocation)
        self.assertEqual(f"<{geolocation[5:-1]}>", pidf["Content-ID"])
        self.assertEqual(invite.get("Geolocation-Routing"), "yes")
        root = ET.fromstring(pidf.get_payload(decode=True))
        address = root.find(f".//{{{CIVIC_NS}}}civicAddress")
        assert address is not None
        found = {child.tag.split("}")[1]: child.text for child in address}
        self.assertEqual(found, location.civic)

    def test_extension_location(self) -> None:
        """The extension's own location; PAI and From carry its DID (the callback number)."""
        self.successResultOf(self.locations.set_extension_location("1001", "floor2"))
        self.successResultOf(self.locations.map_network("192.0.2.0/24", "warehouse"))
        before = metric("warden_emergency_default_location_total")
        invite = self.dial("911")
        self.check_pidf(invite, FLOOR2)
        self.assertIn("sip:15551230001@", invite.get("P-Asserted-Identity") or "")
        self.assertEqual(invite.from_.uri.user, "15551230001")
        self.assertEqual(metric("warden_emergency_default_location_total"), before)
        [call] = self.recorder.calls
        self.assertEqual(call.location_name, "floor2")
        self.assertEqual(call.callback_number, "15551230001")
        self.assertEqual(call.location_text, "100 Main St, Floor 2, Room 201, San Jose, CA, US")
        self.assertFalse(call.location_is_default)
        self.assertTrue(call.call_id)
        self.assertIn(call.call_id, self.stack.calls.calls)

    def test_network_location(self) -> None:
        """No location of its own: the most specific network holding the phone's address."""
        self.successResultOf(self.locations.map_network("192.0.0.0/8", "lobby"))
        self.successResultOf(self.locations.map_network("192.0.2.0/24", "warehouse"))
        self.successResultOf(self.locations.map_network("10.0.0.0/8", "floor2"))
        invite = self.dial("911")
        self.check_pidf(invite, WAREHOUSE)  # its "&" and "<" stay text
        self.assertEqual(self.recorder.calls[0].location_name, "warehouse")

    def test_default_location_alerts(self) -> None:
        """No location at all: the default is sent and counted as an alert."""
        before = metric("warden_emergency_default_location_total")
        calls = metric("warden_emergency_calls_total", test="false")
        invite = self.dial("911")
        self.check_pidf(invite, LOBBY)
        self.assertEqual(metric("warden_emergency_default_location_total") - before, 1)
        self.assertEqual(metric("warden_emergency_calls_total", test="false") - calls, 1)
        self.assertTrue(self.recorder.calls[0].location_is_default)
        self.flushLoggedErrors()

    def test_no_location_still_goes_out(self) -> None:
        """No location and no default: the call goes out with the SDP alone (counted)."""
        self.configure(default_location="")
        before = metric("warden_emergency_no_location_total")
        invite = self.dial("911")
        self.assertEqual(invite.get("Content-Type"), "application/sdp")
        self.assertIsNone(invite.get("Geolocation"))
        self.assertEqual(metric("warden_emergency_no_location_total") - before, 1)

    def test_store_down(self) -> None:
        """A failing location store delays nothing: the default last read is used."""
        resolver = self.e911.service.resolver  # type: ignore[union-attr]
        self.successResultOf(resolver.default_location())

        def broken(*args: Any) -> Any:
            raise OSError("database is locked")

        self.locations.extension_location = broken  # type: ignore[method-assign]
        self.locations.get_location = broken  # type: ignore[method-assign]
        invite = self.dial("911")
        self.check_pidf(invite, LOBBY)


class CapacityTests(EmergencyTestCase):
    """A full emergency trunk: its reserve, then its newest other call, make room."""

    def outside_call(self, caller: Phone) -> tuple[Request, Request]:
        """``caller`` calls out through itsp, answered: its INVITE and the trunk's."""
        invite, sent = caller.call("95552345678", body=caller.sdp())
        out = only(sent, ITSP, "INVITE")
        assert isinstance(out, Request)
        ok = self.itsp.answer(out, 200, body=self.itsp.sdp())
        reply = only(self.stack.deliver(ok, ITSP), caller.address, 200)
        self.stack.deliver(caller.ack_for(invite, reply), caller.address)  # type: ignore[arg-type]
        return invite, out

    def test_reserve(self) -> None:
        """max_calls 2, reserve 1: a second ordinary call is refused, 911 goes out."""
        self.configure(itsp_max_calls=2, reserve=1)
        self.outside_call(self.bob)
        _, sent = self.alice.call("95552345679")
        only(sent, ALICE, 503)
        self.assertEqual(self.dial("911").uri_text, "sip:911@192.0.2.50")

    def test_newest_call_dropped(self) -> None:
        """A full trunk: its newest ordinary call ends (BYE both legs), 911 goes out."""
        self.configure(itsp_max_calls=1)
        self.outside_call(self.bob)
        before = self.stack.mark()
        invite = self.dial("911")
        sent = self.stack.sent_since(before)
        byes = [a for m, a in sent if isinstance(m, Request) and m.method == "BYE"]
        self.assertEqual(sorted(tuple(a) for a in byes), sorted([BOB, ITSP]))
        self.assertEqual(invite.uri_text, "sip:911@192.0.2.50")
        self.assertEqual(len(self.stack.calls.calls), 1)
        [call] = self.stack.calls.calls.values()
        self.assertTrue(call.attempt.emergency)


class PluginTests(SynchronousTestCase):
    """The plugin as an object."""

    def test_interfaces(self) -> None:
        """The metrics observer and the plugin provide their interfaces."""
        from warden.interfaces import IAdminEndpoints, ICallHook, IEmergencyNumbers, IWardenPlugin

        verifyObject(IEmergencyObserver, EmergencyMetrics())
        plugin = EmergencyPlugin()
        self.assertFalse(plugin.is_emergency_number("911"))  # not made: no trunks
        for interface in (ICallHook, IWardenPlugin, IAdminEndpoints, IEmergencyNumbers):
            verifyObject(interface, plugin)
        self.assertEqual(plugin.sections, ("emergency",))

    def test_observer_error_is_not_the_calls(self) -> None:
        """An observer raising is logged; the next observer still hears of the call."""

        @implementer(IEmergencyObserver)
        class Broken:
            def emergency_call_started(self, call: EmergencyCall) -> None:
                raise RuntimeError("boom")

        recorder = Recorder()
        service = EmergencyService(
            None,
            parse_emergency({}),
            None,
            None,
            [Broken(), recorder],
            REALM,
            "n",  # type: ignore[arg-type]
        )
        from warden.features.e911 import _Pending

        call = EmergencyCall("c1", "1001", "", "", "911", False, "", {})
        service._announce(_Pending(call))
        self.assertEqual(recorder.calls, [call])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


def messages(sent: list[tuple[Message, Any]]) -> list[str]:
    """Method or status of each message (debugging aid)."""
    return [getattr(m, "method", None) or str(getattr(m, "status", "")) for m, _ in sent]
