"""
BLF (warden.features.blf): SUBSCRIBE to the ``dialog`` event package (RFC
4235, RFC 6665) through the SIP stack: authentication, the immediate NOTIFY,
NOTIFYs as a watched extension's call rings, is answered and ends, refreshes,
expiry, bounds, and refusals of bad SUBSCRIBEs; SUBSCRIBE shared by plugins
by event package.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import ALICE, BOB
from warden.errors import SipError
from warden.features.blf import DialogEventsService, EventSettings
from warden.features.callfeatures import CallFeaturesPlugin, dialog_events
from warden.sip.auth import answer_challenge
from warden.sip.flow import Flow
from warden.sip.hooks import CallHookBase, CallHooks, EventPackages
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.parser import parse_datagram
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.features import MemoryCallFeatureStore
from warden.testing.sipstack import REALM

CAROL = ("192.0.2.14", 5066)


class BlfTestCase(SynchronousTestCase):
    """Bob (1002) watches Carol (1003); Alice (1001) calls Carol."""

    def setUp(self) -> None:
        self.plugin = CallFeaturesPlugin()
        self.plugin.use_store(MemoryCallFeatureStore())
        stack = CallStack(hooks=CallHooks([self.plugin]))
        stack.register("1002", BOB)
        stack.register("1003", CAROL)
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.plugin.dialog_events = dialog_events(stack.clock, stack.directory, stack.sip)
        self.events = self.plugin.dialog_events
        self.stack = stack
        self.alice = Phone(stack, "1001", ALICE)
        self.carol = Phone(stack, "1003", CAROL)
        self.call_id = f"{new_tag()}@bob"
        self.cseq = 0

    def subscribe(
        self, target: str = "1003", headers: dict[str, str] | None = None, body: bytes = b"",
        to_tag: str | None = None, authenticate: bool = True,
    ) -> tuple[Response, list[tuple[Any, Any]]]:  # fmt: skip
        """Bob's SUBSCRIBE (answering the 401 when asked): the final response and all sent."""
        values = {"Event": "dialog", "Accept": "application/dialog-info+xml", "Expires": "600"}
        values.update(headers or {})
        authorization = None
        while True:
            self.cseq += 1
            lines = [
                f"SUBSCRIBE sip:{target}@{REALM} SIP/2.0",
                f"Via: SIP/2.0/UDP {BOB[0]}:{BOB[1]};branch=z9hG4bK{new_tag()};rport",
                "Max-Forwards: 70",
                f"From: <sip:1002@{REALM}>;tag=bobtag",
                f"To: <sip:{target}@{REALM}>" + (f";tag={to_tag}" if to_tag else ""),
                f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} SUBSCRIBE",
                f"Contact: <sip:1002@{BOB[0]}:{BOB[1]}>",
                *(f"{k}: {v}" for k, v in values.items() if v),
            ]  # fmt: skip
            if authorization:
                lines.append(f"Authorization: {authorization}")
            if body:
                lines.append("Content-Type: application/xml")
            text = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
            before = self.stack.mark()
            self.stack.deliver(text.encode() + body, BOB)
            self.stack.clock.advance(0)  # the NOTIFY follows the 200
            sent = self.stack.sent_since(before)
            response = next(m for m, a in sent if isinstance(m, Response) and m.status >= 200)
            if response.status != 401 or not authenticate or authorization:
                if response.status != 200 or to_tag is not None or values["Expires"] != "0":
                    self.notifies(sent)  # the phone answers the NOTIFYs
                return response, sent
            authorization = answer_challenge(
                response.get("WWW-Authenticate") or "", "1002", "pw1002", "SUBSCRIBE",
                f"sip:{target}@{REALM}",
            )  # fmt: skip

    def notifies(self, sent: list[tuple[Any, Any]]) -> list[Request]:
        """The NOTIFYs to Bob in ``sent``; his phone answers each 200."""
        found = [m for m, a in sent if isinstance(m, Request) and m.method == "NOTIFY"
                 and tuple(a) == BOB]  # fmt: skip
        for notify in found:
            self.stack.deliver(make_response(notify, 200), BOB)
        return found

    def flushed(self) -> list[Request]:
        before = self.stack.mark()
        self.stack.clock.advance(0)
        return self.notifies(self.stack.sent_since(before))

    def state(self, notify: Request) -> str:
        body = notify.body.decode()
        if "<state>" not in body:
            return "idle"
        return body.split("<state>")[1].split("</state>")[0]


class SubscribeTests(BlfTestCase):
    """Subscribing and the NOTIFYs of a watched extension's calls."""

    def test_subscribe_and_call(self) -> None:
        """
        200 with the granted Expires and a NOTIFY at once (idle); then early
        while Carol's phone rings, confirmed once answered, idle after the BYE.
        """
        response, sent = self.subscribe()
        self.assertEqual((response.status, response.get("Expires")), (200, "600"))
        (first,) = self.notifies(sent)
        self.assertEqual(first.get("Event"), "dialog")
        self.assertEqual(first.get("Subscription-State"), "active;expires=600")
        self.assertEqual(first.get("Content-Type"), "application/dialog-info+xml")
        self.assertEqual(first.to.tag, "bobtag")
        self.assertEqual(first.from_.tag, response.to.tag)
        self.assertIn(b'entity="sip:1003@', first.body)
        self.assertEqual(self.state(first), "idle")
        invite, sent = self.alice.call("1003")
        carol_invite = next(m for m, a in sent if tuple(a) == CAROL and isinstance(m, Request))
        (ringing,) = self.flushed()
        self.assertEqual(self.state(ringing), "early")
        self.assertIn(b'direction="recipient"', ringing.body)
        self.assertIn(b'version="1"', ringing.body)
        ok = next(m for m, a in self.stack.deliver(
            self.carol.answer(carol_invite, 200, body=self.carol.sdp()), CAROL)
            if isinstance(m, Response) and tuple(a) == ALICE)  # fmt: skip
        self.stack.deliver(self.alice.ack_for(invite, ok), ALICE)
        (answered,) = self.flushed()
        self.assertEqual(self.state(answered), "confirmed")
        self.stack.deliver(self.alice.in_dialog("BYE", invite, ok, uac=True), ALICE)
        (ended,) = self.flushed()
        self.assertEqual(self.state(ended), "idle")

    def test_caller_side(self) -> None:
        """A call the watched extension places is an initiator dialog."""
        self.subscribe("1001")
        self.alice.call("1003")
        (notify,) = self.flushed()
        self.assertIn(b'direction="initiator"', notify.body)

    def test_refresh_and_unsubscribe(self) -> None:
        """A SUBSCRIBE in the dialog refreshes; Expires 0 ends with a final NOTIFY."""
        response, _ = self.subscribe()
        tag = response.to.tag
        refreshed, sent = self.subscribe(headers={"Expires": "1200"}, to_tag=tag)
        self.assertEqual((refreshed.status, refreshed.get("Expires")), (200, "1200"))
        self.assertEqual(len(self.notifies(sent)), 1)
        ended, sent = self.subscribe(headers={"Expires": "0"}, to_tag=tag)
        self.assertEqual(ended.status, 200)
        (final,) = self.notifies(sent)
        self.assertEqual(final.get("Subscription-State"), "terminated")
        self.assertEqual(self.events.subscriptions, {})
        gone, _ = self.subscribe(to_tag=tag)
        self.assertEqual(gone.status, 481)

    def test_expiry(self) -> None:
        """A subscription not refreshed ends at its expiry with a final NOTIFY."""
        self.subscribe(headers={"Expires": "60"})
        before = self.stack.mark()
        self.stack.clock.advance(59.9)
        self.assertEqual(self.notifies(self.stack.sent_since(before)), [])
        self.stack.clock.advance(0.2)
        (final,) = self.notifies(self.stack.sent_since(before))
        self.assertEqual(final.get("Subscription-State"), "terminated;reason=timeout")
        self.assertEqual(self.events.subscriptions, {})

    def test_expires_bounded(self) -> None:
        """A longer Expires is granted at most max_expires; none means max_expires."""
        response, _ = self.subscribe(headers={"Expires": "99999999"})
        self.assertEqual(response.get("Expires"), "3600")
        self.call_id = "other@bob"
        response, _ = self.subscribe(headers={"Expires": ""})
        self.assertEqual(response.get("Expires"), "3600")

    def test_notify_refused_ends_it(self) -> None:
        """A phone answering a NOTIFY 481 has no subscription any more."""
        self.subscribe()
        self.alice.call("1003")
        before = self.stack.mark()
        self.stack.clock.advance(0)
        notify = next(m for m, a in self.stack.sent_since(before)
                      if isinstance(m, Request) and m.method == "NOTIFY")  # fmt: skip
        self.stack.deliver(make_response(notify, 481), BOB)
        self.assertEqual(self.events.subscriptions, {})

    def test_stop(self) -> None:
        """When Warden stops, each subscription ends with a final NOTIFY."""
        self.subscribe()
        stopper = DialogEventsService(self.events)
        stopper.startService()
        before = self.stack.mark()
        stopper.stopService()
        (final,) = self.notifies(self.stack.sent_since(before))
        self.assertEqual(final.get("Subscription-State"), "terminated;reason=noresource")
        self.assertEqual(self.events.subscriptions, {})

    def test_per_watcher_bound(self) -> None:
        """Beyond max_per_watcher subscriptions of one phone: 403."""
        self.events.settings = EventSettings(max_per_watcher=2)
        for i in range(2):
            self.call_id = f"c{i}@bob"
            self.assertEqual(self.subscribe()[0].status, 200)
        self.call_id = "c3@bob"
        self.assertEqual(self.subscribe()[0].status, 403)


class RefusalTests(BlfTestCase):
    """What cannot be served is refused with the RFC's status."""

    def test_unauthenticated(self) -> None:
        """Without credentials: 401 with a challenge; nothing is subscribed."""
        response, _ = self.subscribe(authenticate=False)
        self.assertEqual(response.status, 401)
        self.assertIsNotNone(response.get("WWW-Authenticate"))
        self.assertEqual(self.events.subscriptions, {})

    def test_refused(self) -> None:
        """Bad event package 489, Accept 406, Expires 423/400, body 400, unknown 404."""
        cases: list[tuple[dict[str, str], bytes, str, int]] = [
            ({"Event": ""}, b"", "1003", 489),
            ({"Event": "presence"}, b"", "1003", 489),
            ({"Accept": "text/plain"}, b"", "1003", 406),
            ({"Expires": "10"}, b"", "1003", 423),
            ({"Expires": "1e3"}, b"", "1003", 400),
            ({"Expires": "\u0661\u0662\u0663"}, b"", "1003", 400),
            ({}, b"<filter/>", "1003", 400),
            ({}, b"", "1099", 404),
        ]
        for headers, body, target, status in cases:
            response, _ = self.subscribe(target, headers, body)
            self.assertEqual(response.status, status, (headers, body, target))
        self.assertEqual(self.events.subscriptions, {})
        response, _ = self.subscribe(headers={"Event": "presence"})
        self.assertEqual(response.get("Allow-Events"), "dialog")
        response, _ = self.subscribe(headers={"Expires": "10"})
        self.assertEqual(response.get("Min-Expires"), "60")


class Mwi(CallHookBase):
    """Another SUBSCRIBE owner, for message-summary."""

    methods = ("SUBSCRIBE",)
    events = ("message-summary",)

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Answer 200, marked."""
        return defer.succeed(make_response(request, 200, "MWI"))


class EventPackageTests(SynchronousTestCase):
    """SUBSCRIBE owned by several plugins goes by its Event package."""

    def request(self, event: str) -> Request:
        text = (
            "SUBSCRIBE sip:1003@t SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
            "From: <sip:1002@t>;tag=a\r\nTo: <sip:1003@t>\r\nCall-ID: c\r\n"
            f"CSeq: 1 SUBSCRIBE\r\nEvent: {event}\r\nContent-Length: 0\r\n\r\n"
        )
        request = parse_datagram(text.encode())
        assert isinstance(request, Request)
        return request

    def test_dispatch(self) -> None:
        """Each package to its plugin; an unknown one 489 listing the packages."""
        plugin = CallFeaturesPlugin()
        handlers = CallHooks([plugin, Mwi()]).method_handlers()
        dispatch = handlers["SUBSCRIBE"]
        self.assertIsInstance(dispatch, EventPackages)
        flow = Flow("udp", "192.0.2.1", 5060)
        response = self.successResultOf(
            dispatch.handle_request(self.request("message-summary"), flow)
        )
        self.assertEqual(response.reason, "MWI")
        with self.assertRaises(SipError) as caught:
            dispatch.handle_request(self.request("dialog"), flow)  # the plugin is not built
        self.assertEqual(caught.exception.status, 503)
        with self.assertRaises(SipError) as caught:
            dispatch.handle_request(self.request("presence"), flow)
        self.assertEqual(caught.exception.status, 489)
        self.assertIn(("Allow-Events", "dialog, message-summary"), caught.exception.headers)

    def test_single_owner(self) -> None:
        """One owner gets every SUBSCRIBE itself."""
        plugin = CallFeaturesPlugin()
        self.assertIs(CallHooks([plugin]).method_handlers()["SUBSCRIBE"], plugin)
