"""
Local applications (warden.sip.local, ADR 0022): a hook sends a call to
``name:argument``; Warden answers it with an RTP endpoint behind the media
relay, runs the application, hangs up when it is done, and writes the call
record as for any call.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.sip.test_b2bua import ALICE, BOB, only
from warden.interfaces import ILocalApplication
from warden.rtp import g711
from warden.rtp.endpoint import HungUp, RtpEndpoint
from warden.sip.hooks import CallAttempt, CallHookBase
from warden.sip.local import LocalCall, info_digit
from warden.sip.message import Request, Response
from warden.sip.sdp import parse_sdp
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.rtpnet import dtmf, rtp
from warden.testing.sipstack import REALM


class ToApplication(CallHookBase):
    """Sends failed calls to ``echo:<number>``, and ``*97`` to ``echo:mine``."""

    def __init__(self, target: str = "echo") -> None:
        self.target = target

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        if attempt.dialled == "*97":
            attempt.dialled = f"{self.target}:mine"
        return None

    def routing_failed(self, attempt: CallAttempt, status: int, reason: str) -> str | None:
        if ":" in attempt.dialled:
            return None
        return f"{self.target}:{attempt.dialled}"


@implementer(ILocalApplication)
class Echo:
    """Plays a short tone, waits for one digit, and ends."""

    applications = ("echo",)

    def __init__(self) -> None:
        self.calls: list[LocalCall] = []
        self.digits: list[str] = []
        self.outcome: list[str] = []

    def run_application(self, name: str, argument: str, call: LocalCall) -> Deferred[None]:
        self.calls.append(call)
        return Deferred.fromCoroutine(self._run(call))

    async def _run(self, call: LocalCall) -> None:
        try:
            await call.endpoint.play(g711.tone(1000, 0.1))
            self.digits.append(await call.endpoint.next_digit(30))
        except HungUp:
            self.outcome.append("hung up")
            raise
        self.outcome.append("done")


class LocalApplicationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Echo()
        self.stack = CallStack(
            ring_timeout=10.0, hooks=[ToApplication()], applications=(self.app,)
        )
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack.register("1002", BOB)
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)

    def answered(self, sent: list[tuple[Any, Any]], invite: Request) -> Response:
        ok = only(sent, ALICE, 200)
        assert isinstance(ok, Response)
        self.stack.deliver(self.alice.ack_for(invite, ok), ALICE)
        return ok

    def shuttle(self, endpoint: RtpEndpoint) -> None:
        """Carry datagrams between the endpoint and the relay's callee side."""
        self.stack.shuttle()

    def relay_port(self, ok: Response) -> int:
        """The relay's port for Alice's media, from Warden's answer."""
        return parse_sdp(ok.body).media[0].port

    def test_busy_goes_to_the_application(self) -> None:
        """Bob busy: Warden answers; Alice hears the endpoint via the relay; a digit ends it."""
        invite, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        sent = self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)
        ok = self.answered(sent, invite)
        self.assertEqual([c.argument for c in self.app.calls], ["1002"])
        relay_a = self.relay_port(ok)
        endpoint = self.app.calls[0].endpoint
        for _ in range(6):
            self.shuttle(endpoint)
            self.stack.clock.advance(0.02)
        self.shuttle(endpoint)
        to_alice = [
            d
            for d, a in self.stack.network.sent_from(relay_a)
            if a == (ALICE[0], self.alice.rtp_port)
        ]
        self.assertEqual(len(to_alice), 5)  # the 0.1 s tone, relayed
        # Alice's digit reaches the endpoint through the relay; the application ends: BYE.
        before = self.stack.mark()
        self.stack.network.deliver(relay_a, dtmf(1, 0, event=3), (ALICE[0], self.alice.rtp_port))
        self.shuttle(endpoint)
        only(self.stack.sent_since(before), ALICE, "BYE")
        self.assertEqual((self.app.digits, self.app.outcome), (["3"], ["done"]))
        record = list(self.stack.records._records.values())[-1]
        self.assertEqual((record.disposition, record.callee), ("ANSWERED", "1002"))
        self.assertEqual(record.hangup_side, "system")
        self.assertEqual(self.stack.media.sessions(), [])
        self.assertEqual(self.stack.network.ports.get(self.stack.endpoint_ports[0]), None)

    def test_unregistered_goes_to_the_application(self) -> None:
        """1003 has no phone (480): answered by the application at once."""
        invite, sent = self.alice.call("1003")
        self.answered(sent, invite)
        self.assertEqual([c.argument for c in self.app.calls], ["1003"])

    def test_before_routing(self) -> None:
        """A hook turns ``*97`` into ``echo:mine``: no phone rings."""
        invite, sent = self.alice.call("*97")
        self.answered(sent, invite)
        self.assertEqual([m for m, a in sent if tuple(a) == BOB], [])
        self.assertEqual([(c.argument, c.dialled) for c in self.app.calls], [("mine", "*97")])

    def test_a_phone_cannot_dial_an_application(self) -> None:
        """``echo:1002`` dialled by a phone is a number (404), not the application."""
        _, sent = self.alice.call("echo%3A1002")
        self.assertEqual(self.app.calls, [])
        self.assertEqual(self.app.outcome, [])
        self.assertTrue([m for m, a in sent if isinstance(m, Response) and m.status >= 400])

    def test_caller_hangs_up(self) -> None:
        """Alice's BYE ends the application (HungUp) and the endpoint; the record says so."""
        invite, sent = self.alice.call("1003")
        ok = self.answered(sent, invite)
        bye = self.alice.in_dialog("BYE", invite, ok, uac=True)
        sent = self.stack.deliver(bye, ALICE)
        only(sent, ALICE, 200)
        self.assertEqual(self.app.outcome, ["hung up"])
        record = list(self.stack.records._records.values())[-1]
        self.assertEqual((record.disposition, record.hangup_side), ("ANSWERED", "caller"))
        self.assertEqual(self.stack.clock.getDelayedCalls() and [], [])
        self.assertEqual(self.stack.media.sessions(), [])

    def test_without_an_offer(self) -> None:
        """An INVITE without SDP cannot reach an application: 488."""
        _, sent = self.alice.call("1003", body=b"")
        only(sent, ALICE, 488)
        self.assertEqual(self.app.calls, [])

    def test_unknown_application(self) -> None:
        """A redirect to an application no plugin runs is routed as a number (404)."""
        stack = CallStack(hooks=[ToApplication("nothing")], applications=(self.app,))
        alice = Phone(stack, "1001", ALICE)
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        _, sent = alice.call("1003")
        only(sent, ALICE, 404)

    def test_application_failure_hangs_up(self) -> None:
        """An application that fails is logged, and the call hung up."""

        @implementer(ILocalApplication)
        class Broken:
            applications = ("echo",)

            def run_application(self, name: str, argument: str, call: LocalCall) -> Deferred[None]:
                return defer.fail(ValueError("bug"))

        stack = CallStack(hooks=[ToApplication()], applications=(Broken(),))
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        alice = Phone(stack, "1001", ALICE)
        invite, sent = alice.call("1003")
        ok = only(sent, ALICE, 200)
        assert isinstance(ok, Response)
        self.assertEqual([m for m, _ in sent if getattr(m, "method", "") == "BYE"], [])
        stack.deliver(alice.ack_for(invite, ok), ALICE)
        before = stack.mark()
        stack.clock.advance(0.1)
        only(stack.sent_since(before), ALICE, "BYE")  # once the 200 is acknowledged
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_rtp_from_alice_reaches_the_endpoint(self) -> None:
        """The caller's audio passes the relay to the endpoint."""
        invite, sent = self.alice.call("1003")
        ok = self.answered(sent, invite)
        endpoint = self.app.calls[0].endpoint
        for i in range(5):
            packet = rtp(i, 160 * i)
            self.stack.network.deliver(
                self.relay_port(ok), packet, (ALICE[0], self.alice.rtp_port)
            )
        self.shuttle(endpoint)
        self.assertEqual(endpoint.packets_in, 5)

    def test_info_digits(self) -> None:
        """SIP INFO DTMF reaches the application; other INFO is answered 200 and ignored."""
        invite, sent = self.alice.call("1003")
        ok = self.answered(sent, invite)
        self.stack.clock.pump([0.02] * 10)  # the tone is played: the application waits
        for content_type, body in (
            ("application/pidf+xml", b"<x/>"),
            ("application/dtmf-relay", b"Signal= 7\r\nDuration=160\r\n"),
        ):
            info = self.alice.in_dialog("INFO", invite, ok, uac=True)
            info.set("Content-Type", content_type)
            info.set_body(body)
            only(self.stack.deliver(info, ALICE), ALICE, 200)
        self.assertEqual(self.app.digits, ["7"])

    def test_info_digit_parsing(self) -> None:
        """One DTMF digit per INFO, from either body type; anything else is none."""
        cases = [
            ("application/dtmf-relay", b"Signal=#\r\nDuration=100", "#"),
            ("application/dtmf-relay", b"signal=a", "A"),
            ("application/dtmf-relay", b"Duration=100", ""),
            ("application/dtmf", b"5", "5"),
            ("application/dtmf", b"55", ""),
            ("application/dtmf", b"\xff", ""),
            ("text/plain", b"5", ""),
        ]
        for content_type, body, digit in cases:
            request = Request("INFO", "sip:x@pbx.test", [("Content-Type", content_type)])
            request.set_body(body)
            self.assertEqual(info_digit(request), digit, (content_type, body))
