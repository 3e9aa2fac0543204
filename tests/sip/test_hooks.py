"""
Call hooks (warden.sip.hooks, ADR 0020): each point, its order, what a hook may
change there (reject, redirect, mark, headers and body parts), and plugins
answering out-of-dialog methods Warden does not handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.sip.test_b2bua import ALICE, BOB, only
from warden.errors import SipError
from warden.interfaces import ICallHook
from warden.model import CallRecord
from warden.sip.flow import Flow
from warden.sip.hooks import CallAttempt, CallHookBase, OutgoingLeg
from warden.sip.message import Request, Response, make_response
from warden.testing.callstack import CallStack, Phone
from warden.testing.sipstack import FakeSipStack

CAROL = ("192.0.2.14", 5066)


class Recorder(CallHookBase):
    """Records every point it is asked at; ``actions`` say what to do there."""

    def __init__(self, **actions: Any) -> None:
        self.events: list[tuple[str, Any]] = []
        self.actions = actions

    def incoming(self, request: Request, flow: Flow) -> Deferred[None] | None:
        """Record; reject when told to."""
        self.events.append(("incoming", request.method))
        if "reject_incoming" in self.actions:
            raise self.actions["reject_incoming"]
        return None

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """Record; reject, redirect or mark when told to (asynchronously)."""
        self.events.append(("before_routing", attempt.dialled))
        if "reject" in self.actions:
            return defer.fail(self.actions["reject"])
        attempt.dialled = self.actions.get("redirect", attempt.dialled)
        attempt.marks.add("seen")
        return defer.succeed(None)

    def routing_failed(
        self, attempt: CallAttempt, status: int, reason: str
    ) -> Deferred[str | None] | str | None:
        """Record; redirect when told to."""
        self.events.append(("routing_failed", status))
        return defer.succeed(self.actions.get("on_failure"))

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Record; add a header and a body part when told to."""
        self.events.append(("leg_built", leg.request.uri.user))
        if self.actions.get("decorate"):
            leg.add_header("Identity", "signed;info=<https://cert.test/a.pem>")
            leg.add_body_part("application/pidf+xml", b"<presence/>")

    def answered(self, attempt: CallAttempt) -> None:
        """Record."""
        self.events.append(("answered", attempt.call_id != ""))

    def ended(self, attempt: CallAttempt, record: CallRecord) -> None:
        """Record the disposition, the callee and the marks."""
        self.events.append(("ended", (record.disposition, record.callee, sorted(attempt.marks))))


class HookTestCase(SynchronousTestCase):
    """Alice (1001) calls; Bob (1002) and Carol (1003) are registered."""

    def stack(self, hook: Recorder, ring_timeout: float = 30.0) -> CallStack:
        stack = CallStack(ring_timeout=ring_timeout, hooks=[hook])
        stack.register("1002", BOB)
        stack.register("1003", CAROL)
        self.alice = Phone(stack, "1001", ALICE)
        from warden.store.credentials import make_extension
        from warden.testing.sipstack import REALM

        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.bob = Phone(stack, "1002", BOB)
        self.carol = Phone(stack, "1003", CAROL)
        return stack

    def names(self, hook: Recorder) -> list[str]:
        return [name for name, _ in hook.events]


class PointTests(HookTestCase):
    """Every point, in order, for an answered call."""

    def test_base_is_a_call_hook(self) -> None:
        """The no-op base provides ICallHook in full."""
        self.assertTrue(verifyObject(ICallHook, CallHookBase()))

    def test_order(self) -> None:
        """incoming (each INVITE), before routing, leg built, answered, ended."""
        hook = Recorder()
        stack = self.stack(hook)
        invite, _bob_invite, _, ok = self.alice.call_answered("1002", self.bob)
        bye = self.alice.in_dialog("BYE", invite, ok, uac=True)
        stack.deliver(bye, ALICE)
        self.assertEqual(
            self.names(hook),
            ["incoming", "incoming", "before_routing", "leg_built", "answered", "ended"],
        )
        self.assertEqual(hook.events[-1][1], ("ANSWERED", "1002", ["seen"]))
        self.assertEqual(hook.events[-2], ("answered", True))

    def test_reject_incoming(self) -> None:
        """A hook refusing the incoming INVITE answers it before any challenge."""
        hook = Recorder(reject_incoming=SipError(438, "Invalid Identity Header"))
        stack = self.stack(hook)
        sent = stack.deliver(self.alice.invite("1002"), ALICE)
        self.assertEqual([m.status for m, _ in sent if isinstance(m, Response)], [438])

    def test_reject_before_routing(self) -> None:
        """A hook rejecting before routing answers the caller; nobody rings."""
        hook = Recorder(reject=SipError(403, "Barred"))
        _, sent = self.stack(hook) and self.alice.call("1002")
        self.assertEqual(only(sent, ALICE, 403).reason, "Barred")  # type: ignore[attr-defined]
        self.assertEqual([m for m, a in sent if tuple(a) == BOB], [])

    def test_redirect_before_routing(self) -> None:
        """A hook changing the number before routing rings the new number."""
        hook = Recorder(redirect="1003")
        _, sent = self.stack(hook) and self.alice.call("1002")
        only(sent, CAROL, "INVITE")
        self.assertEqual([m for m, a in sent if tuple(a) == BOB], [])


class RoutingFailedTests(HookTestCase):
    """After a routing failure or ring timeout a hook may redirect, once."""

    def test_unroutable_redirected(self) -> None:
        """An unknown number (404) redirected by a hook rings the new number."""
        hook = Recorder(on_failure="1003")
        _, sent = self.stack(hook) and self.alice.call("9999")
        only(sent, CAROL, "INVITE")
        self.assertIn(("routing_failed", 404), hook.events)

    def test_unroutable_not_redirected(self) -> None:
        """Without a redirect the caller gets the failure."""
        hook = Recorder()
        _, sent = self.stack(hook) and self.alice.call("9999")
        only(sent, ALICE, 404)

    def test_busy_redirected(self) -> None:
        """Bob busy: the call rings Carol instead; she answers; the record says so."""
        hook = Recorder(on_failure="1003")
        stack = self.stack(hook)
        _, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        sent = stack.deliver(self.bob.answer(bob_invite, 486), BOB)
        carol_invite = only(sent, CAROL, "INVITE")
        self.assertEqual([m for m, a in sent if tuple(a) == ALICE], [])
        assert isinstance(carol_invite, Request)
        sent = stack.deliver(self.carol.answer(carol_invite, 200, body=self.carol.sdp()), CAROL)
        only(sent, ALICE, 200)
        self.assertIn(("routing_failed", 486), hook.events)

    def test_ring_timeout_redirected_once(self) -> None:
        """No answer: Bob is cancelled and Carol rings; no answer again: 480."""
        hook = Recorder(on_failure="1003")
        stack = self.stack(hook, ring_timeout=10.0)
        _, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        before = stack.mark()
        stack.clock.advance(10.0)
        sent = stack.sent_since(before)
        only(sent, BOB, "CANCEL")
        carol_invite = only(sent, CAROL, "INVITE")
        assert isinstance(carol_invite, Request)
        stack.deliver(self.carol.answer(carol_invite, 180), CAROL)
        before = stack.mark()
        stack.clock.advance(10.0)
        sent = stack.sent_since(before)
        only(sent, ALICE, 480)
        self.assertEqual(hook.events.count(("routing_failed", 480)), 1)
        self.assertEqual(hook.events[-1][1][0], "NO ANSWER")


class LegTests(HookTestCase):
    """A hook adds headers and body parts to the outgoing INVITE."""

    def test_headers_and_parts(self) -> None:
        """The INVITE carries the header, and a multipart body: the SDP, then the part."""
        hook = Recorder(decorate=True)
        _, sent = self.stack(hook) and self.alice.call("1002")
        invite = only(sent, BOB, "INVITE")
        self.assertEqual(invite.get("Identity"), "signed;info=<https://cert.test/a.pem>")
        kind = invite.get("Content-Type") or ""
        self.assertTrue(kind.startswith("multipart/mixed;boundary="), kind)
        boundary = kind.partition("=")[2].encode()
        parts = invite.body.split(b"--" + boundary)
        self.assertIn(b"Content-Type: application/sdp\r\n\r\nv=0", parts[1])
        self.assertIn(b"Content-Type: application/pidf+xml\r\n\r\n<presence/>", parts[2])
        self.assertEqual(parts[-1], b"--\r\n")

    def test_part_headers(self) -> None:
        """A part's own headers (Content-ID) follow its Content-Type."""
        request = Request(
            "INVITE", "sip:1002@pbx.test", [("Content-Type", "application/sdp")], b"v=0\r\n"
        )
        leg = OutgoingLeg(request)
        leg.add_body_part("application/pidf+xml", b"<presence/>", [("Content-ID", "<a@b>")])
        leg.finish()
        self.assertIn(
            b"Content-Type: application/pidf+xml\r\nContent-ID: <a@b>\r\n\r\n<presence/>",
            request.body,
        )
        self.assertIn(b"Content-Type: application/sdp\r\n\r\nv=0", request.body)


class MessageHandler(CallHookBase):
    """Answers MESSAGE out of dialog (and asks for REGISTER, which Warden keeps)."""

    methods = ("MESSAGE", "REGISTER")

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """202 Accepted, saying who answered."""
        return defer.succeed(
            make_response(request, 202, "Accepted", headers=[("X-Handled-By", "plugin")])
        )


class MethodTests(SynchronousTestCase):
    """A plugin answers out-of-dialog methods Warden does not handle itself."""

    def send(self, hooks: Sequence[ICallHook], *methods: str) -> list[Response]:
        """Each request of ``methods`` to a SIP service with ``hooks``; the answers."""
        stack = FakeSipStack(frozenset({"pbx.test"}), hooks=hooks)
        self.allowed = stack.dispatcher.allowed
        answers = []
        for n, method in enumerate(methods):
            text = (
                f"{method} sip:1002@pbx.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bKm{n}\r\nMax-Forwards: 70\r\n"
                "From: <sip:1001@pbx.test>;tag=a\r\nTo: <sip:1002@pbx.test>\r\n"
                f"Call-ID: m{n}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
            (answer,) = stack.send_udp(text.encode(), ALICE)
            assert isinstance(answer, Response)
            answers.append(answer)
        return answers

    def test_message(self) -> None:
        """MESSAGE reaches the plugin's handler; Allow names it; REGISTER stays Warden's."""
        message, register = self.send([MessageHandler()], "MESSAGE", "REGISTER")
        self.assertEqual((message.status, message.get("X-Handled-By")), (202, "plugin"))
        self.assertIn("MESSAGE", self.allowed)
        self.assertIsNone(register.get("X-Handled-By"))

    def test_without_plugin(self) -> None:
        """Without a plugin, MESSAGE out of dialog is not allowed (405)."""
        (message,) = self.send([], "MESSAGE")
        self.assertEqual(message.status, 405)
