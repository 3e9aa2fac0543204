"""Tests for the B2BUA call controller (warden.sip.b2bua, call, dialog) on fakes."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from warden.sip.dialplan import Rule
from warden.sip.message import Message, Request, Response
from warden.sip.sdp import parse_sdp
from warden.testing.callstack import MEDIA_ADDRESS, CallStack, Phone

ALICE = ("192.0.2.11", 5060)
BOB = ("192.0.2.12", 5062)
BOB2 = ("192.0.2.13", 5064)


def _method(message: Message) -> str | None:
    return getattr(message, "method", None)


def _status(message: Message) -> int | None:
    return getattr(message, "status", None)


def only(sent: list[tuple[Message, Any]], to: tuple[str, int], kind: str | int) -> Message:
    """The one message of ``kind`` (method or status) sent to ``to``."""
    found = [m for m, a in sent if tuple(a) == to and kind in (_method(m), _status(m))]
    assert len(found) == 1, (kind, to, [(repr(m), a) for m, a in sent])
    return found[0]


class CallTestCase(SynchronousTestCase):
    """Alice (1001) calls Bob (1002)."""

    ring_timeout = 30.0
    max_calls = 0
    media_timeout = 60.0
    dialplan: tuple[Rule, ...] = ()

    def setUp(self) -> None:
        self.stack = CallStack(
            ring_timeout=self.ring_timeout,
            max_calls=self.max_calls,
            media_timeout=self.media_timeout,
            dialplan=self.dialplan,
        )
        self.stack.directory  # noqa: B018
        self.alice = Phone(self.stack, "1001", ALICE)
        self.alice_pw()
        self.bob = Phone(self.stack, "1002", BOB)
        self.stack.register("1002", BOB)

    def alice_pw(self) -> None:
        """1001's password in the call stack is pw1001."""
        from warden.store.credentials import make_extension
        from warden.testing.sipstack import REALM

        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )

    def ring(self) -> tuple[Request, Request]:
        """Alice calls 1002; returns (Alice's INVITE, the INVITE Bob got)."""
        invite, sent = self.alice.call("1002")
        only(sent, ALICE, 100)
        return invite, only(sent, BOB, "INVITE")  # type: ignore[return-value]

    def answer(self) -> tuple[Request, Request, Response, Response]:
        """Ring, Bob answers 180 then 200, Alice ACKs. Returns the four messages."""
        invite, bob_invite = self.ring()
        only(self.stack.deliver(self.bob.answer(bob_invite, 180), BOB), ALICE, 180)
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        sent = self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE)  # type: ignore[arg-type]
        only(sent, BOB, "ACK")
        return invite, bob_invite, alice_ok, bob_ok  # type: ignore[return-value]

    def records(self) -> list[Any]:
        """Call records written."""
        return self.stack.successResultOf_(self.stack.records.list())  # type: ignore[no-any-return]


class BasicCallTests(CallTestCase):
    """A call from INVITE to BYE."""

    def test_invite_challenged(self) -> None:
        """An INVITE without credentials gets 407 with a Proxy-Authenticate challenge."""
        sent = self.stack.deliver(self.alice.invite("1002"), ALICE)
        challenge = only(sent, ALICE, 407)
        self.assertIn("Digest", challenge.get("Proxy-Authenticate") or "")

    def test_legs_are_independent(self) -> None:
        """Bob's INVITE has its own Call-ID, tags and CSeq; identity is asserted."""
        invite, bob_invite = self.ring()
        self.assertNotEqual(bob_invite.call_id, invite.call_id)
        self.assertNotEqual(bob_invite.from_.tag, invite.from_.tag)
        self.assertEqual(bob_invite.cseq.number, 1)
        self.assertIsNone(bob_invite.get("Proxy-Authorization"))
        self.assertEqual(bob_invite.from_.uri.user, "1001")
        self.assertEqual(bob_invite.from_.display, "Alice")
        self.assertIn("sip:1001@", bob_invite.get("P-Asserted-Identity") or "")
        self.assertEqual(bob_invite.uri_text, f"sip:1002@{BOB[0]}:{BOB[1]}")

    def test_sdp_anchored_on_relay(self) -> None:
        """Both phones see the relay's address and ports, never each other's."""
        _invite, bob_invite, alice_ok, _ = self.answer()
        offer = parse_sdp(bob_invite.body)
        answer = parse_sdp(alice_ok.body)
        for sdp in (offer, answer):
            self.assertEqual(sdp.connection_for(0).address, MEDIA_ADDRESS)  # type: ignore[union-attr]
            self.assertTrue(30000 <= sdp.media[0].port <= 30100)
        self.assertNotEqual(offer.media[0].port, answer.media[0].port)

    def test_bye_from_caller(self) -> None:
        """BYE from Alice: 200 to her, BYE to Bob, ports released, record ANSWERED."""
        invite, bob_invite, alice_ok, _bob_ok = self.answer()
        self.stack.clock.advance(42)
        bye = self.alice.in_dialog("BYE", invite, alice_ok, uac=True)  # type: ignore[arg-type]
        sent = self.stack.deliver(bye, ALICE)
        only(sent, ALICE, 200)
        bob_bye = only(sent, BOB, "BYE")
        self.assertEqual(bob_bye.call_id, bob_invite.call_id)
        self.assertEqual(self.stack.media.ports_in_use(), 0)
        (record,) = self.records()
        self.assertEqual((record.disposition, record.hangup_side), ("ANSWERED", "caller"))
        self.assertEqual(record.billsec, 42)
        self.assertEqual(record.codec, "PCMU")
        self.assertEqual(self.stack.successResultOf_(self.stack.live.list()), [])

    def test_record_waits_for_final_media_counters(self) -> None:
        """
        The record is written when the released session's final counters come
        (the media process answers the release a moment later), with them.
        """
        invite, _bob_invite, alice_ok, _bob_ok = self.answer()
        (session,) = self.stack.media.sessions()
        final: defer.Deferred[dict[str, dict[str, Any]]] = defer.Deferred()
        session.final_stats = lambda: final  # type: ignore[method-assign]
        bye = self.alice.in_dialog("BYE", invite, alice_ok, uac=True)  # type: ignore[arg-type]
        self.stack.deliver(bye, ALICE)
        self.assertEqual(self.records(), [])
        written = self.stack.calls.records_written()
        self.assertNoResult(written)
        final.callback({"a": {"packets_in": 150}, "b": {"packets_in": 149}})
        self.successResultOf(written)
        (record,) = self.records()
        self.assertEqual(record.disposition, "ANSWERED")
        self.assertEqual(
            (record.media["a"]["packets_in"], record.media["b"]["packets_in"]), (150, 149)
        )
        self.assertEqual(record.media["a"]["transport"], "udp")

    def test_bye_from_callee(self) -> None:
        """BYE from Bob reaches Alice in her own dialog."""
        invite, bob_invite, _alice_ok, bob_ok = self.answer()
        bye = self.bob.in_dialog("BYE", bob_invite, bob_ok, uac=False)
        sent = self.stack.deliver(bye, BOB)
        only(sent, BOB, 200)
        alice_bye = only(sent, ALICE, "BYE")
        self.assertEqual(alice_bye.call_id, invite.call_id)
        self.assertEqual(alice_bye.to.tag, invite.from_.tag)
        (record,) = self.records()
        self.assertEqual(record.hangup_side, "callee")

    def test_2xx_retransmitted_until_ack(self) -> None:
        """Warden retransmits its 200 to Alice until she ACKs (RFC 3261 §13.3.1.4)."""
        _invite, bob_invite = self.ring()
        mark = self.stack.mark()
        self.stack.deliver(self.bob.answer(bob_invite, 200, body=self.bob.sdp()), BOB)
        self.stack.clock.advance(0.5)
        self.stack.clock.advance(1.0)
        oks = [m for m, a in self.stack.sent_since(mark) if getattr(m, "status", 0) == 200]
        self.assertEqual(len(oks), 3)

    def test_no_ack_hangs_up(self) -> None:
        """Without an ACK within 64*T1 the call is torn down with BYE to both."""
        _invite, bob_invite = self.ring()
        self.stack.deliver(self.bob.answer(bob_invite, 200, body=self.bob.sdp()), BOB)
        mark = self.stack.mark()
        for _ in range(40):
            self.stack.clock.advance(1)
        sent = self.stack.sent_since(mark)
        self.assertTrue(any(getattr(m, "method", "") == "BYE" and a == BOB for m, a in sent))
        self.assertEqual(self.stack.media.ports_in_use(), 0)


class FailureTests(CallTestCase):
    """Calls that are not answered."""

    def test_unknown_number(self) -> None:
        """An unknown number gets 404 and a FAILED record... none: no call was set up."""
        _, sent = self.alice.call("9999")
        only(sent, ALICE, 404)

    def test_unregistered(self) -> None:
        """A known but unregistered extension gets 480."""
        _, sent = self.alice.call("1003")
        only(sent, ALICE, 480)

    def test_busy(self) -> None:
        """486 from the callee reaches the caller; record BUSY; ports released."""
        _invite, bob_invite = self.ring()
        sent = self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)
        only(sent, ALICE, 486)
        only(sent, BOB, "ACK")
        self.assertEqual(self.records()[0].disposition, "BUSY")
        self.assertEqual(self.stack.media.ports_in_use(), 0)

    def test_cancel(self) -> None:
        """CANCEL while ringing: 200 and 487 to Alice, CANCEL to Bob; CANCELLED."""
        invite, bob_invite = self.ring()
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        cancel = Request("CANCEL", invite.uri_text, [
            (k, v) for k, v in invite.headers if k in ("Via", "From", "To", "Call-ID")
        ] + [("CSeq", f"{invite.cseq.number} CANCEL"), ("Max-Forwards", "70")])  # fmt: skip
        sent = self.stack.deliver(cancel, ALICE)
        self.assertEqual(
            sorted(getattr(m, "status", 0) for m, a in sent if a == ALICE), [200, 487]
        )
        only(sent, BOB, "CANCEL")
        self.assertEqual(self.records()[0].disposition, "CANCELLED")

    def test_cancel_200_race(self) -> None:
        """Bob's 200 arriving after the CANCEL is acknowledged and hung up."""
        invite, bob_invite = self.ring()
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        cancel = Request("CANCEL", invite.uri_text, [
            (k, v) for k, v in invite.headers if k in ("Via", "From", "To", "Call-ID")
        ] + [("CSeq", f"{invite.cseq.number} CANCEL"), ("Max-Forwards", "70")])  # fmt: skip
        self.stack.deliver(cancel, ALICE)
        sent = self.stack.deliver(self.bob.answer(bob_invite, 200, body=self.bob.sdp()), BOB)
        only(sent, BOB, "ACK")
        only(sent, BOB, "BYE")
        self.assertFalse([m for m, a in sent if a == ALICE])

    def rings_for(self, seconds: float) -> None:
        """A call to Bob rings exactly ``seconds``: then CANCEL to Bob, 480 to Alice."""
        _invite, bob_invite = self.ring()
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        mark = self.stack.mark()
        self.stack.clock.advance(seconds - 0.1)
        self.assertEqual(self.stack.sent_since(mark), [])
        self.stack.clock.advance(0.2)
        sent = self.stack.sent_since(mark)
        only(sent, BOB, "CANCEL")
        only(sent, ALICE, 480)

    def test_ring_timeout(self) -> None:
        """Nobody answers within the ring timeout: CANCEL to Bob, 480 to Alice."""
        self.rings_for(30.0)
        self.assertEqual(self.records()[0].disposition, "NO ANSWER")

    def set_bob_ring_timeout(self, seconds: float) -> None:
        """Give 1002 its own ring timeout."""
        directory = self.stack.directory
        bob = self.stack.successResultOf_(directory.get_extension("1002"))
        self.stack.successResultOf_(
            directory.update_extension(attrs.evolve(bob, ring_timeout=seconds))
        )

    def test_extension_ring_timeout(self) -> None:
        """An extension's own ring timeout (5 s) ends the ringing instead of [calls]'."""
        self.set_bob_ring_timeout(5.0)
        self.rings_for(5.0)

    def test_extension_ring_timeout_capped(self) -> None:
        """An extension's ring timeout longer than [calls] ring_timeout rings only that long."""
        self.set_bob_ring_timeout(100.0)
        self.rings_for(30.0)

    def test_bad_sdp(self) -> None:
        """A malformed SDP offer gets 488 and allocates nothing."""
        _, sent = self.alice.call("1002", body=b"v=0\r\nthis is not sdp\r\n")
        only(sent, ALICE, 488)
        self.assertEqual(self.stack.media.ports_in_use(), 0)

    def test_no_media(self) -> None:
        """The media engine cannot take the call (no ports, rtpengine down): 503, retry later."""
        from twisted.internet import defer

        from warden.rtp.errors import MediaError

        def refuse(call_id: str) -> Any:
            return defer.fail(MediaError("rtpengine at 127.0.0.1:2223 did not answer offer"))

        self.stack.media.allocate = refuse  # type: ignore[method-assign]
        _, sent = self.alice.call("1002")
        refused = only(sent, ALICE, 503)
        self.assertEqual(refused.get("Retry-After"), "5")  # type: ignore[union-attr]
        self.assertEqual([m for m, a in sent if tuple(a) == BOB], [])


class ForkingTests(CallTestCase):
    """Several bindings ring in parallel."""

    def test_first_answer_wins(self) -> None:
        """Both bindings ring; the first 200 wins and the other branch is cancelled."""
        self.stack.register("1002", BOB2)
        bob2 = Phone(self.stack, "1002", BOB2)
        _invite, sent = self.alice.call("1002")
        inv1, inv2 = only(sent, BOB, "INVITE"), only(sent, BOB2, "INVITE")
        self.stack.deliver(self.bob.answer(inv1, 180), BOB)  # type: ignore[arg-type]
        self.stack.deliver(bob2.answer(inv2, 180), BOB2)  # type: ignore[arg-type]
        sent = self.stack.deliver(bob2.answer(inv2, 200, body=bob2.sdp()), BOB2)  # type: ignore[arg-type]
        only(sent, ALICE, 200)
        only(sent, BOB, "CANCEL")

    def test_all_busy(self) -> None:
        """486 from every branch gives 486 to the caller."""
        self.stack.register("1002", BOB2)
        bob2 = Phone(self.stack, "1002", BOB2)
        _, sent = self.alice.call("1002")
        inv1, inv2 = only(sent, BOB, "INVITE"), only(sent, BOB2, "INVITE")
        self.assertEqual(self.stack.deliver(self.bob.answer(inv1, 486), BOB)[0][1], BOB)  # type: ignore[arg-type]
        sent = self.stack.deliver(bob2.answer(inv2, 486), BOB2)  # type: ignore[arg-type]
        only(sent, ALICE, 486)


class MidCallTests(CallTestCase):
    """re-INVITE, UPDATE, INFO, glare, media timeout, limits."""

    def test_hold_reinvite_relayed(self) -> None:
        """Alice's sendonly re-INVITE reaches Bob rewritten; his answer comes back."""
        invite, _bob_invite, alice_ok, bob_ok = self.answer()
        reinvite = self.alice.in_dialog(
            "INVITE", invite, alice_ok, uac=True, body=self.alice.sdp("sendonly")
        )  # type: ignore[arg-type]
        sent = self.stack.deliver(reinvite, ALICE)
        bob_reinvite = only(sent, BOB, "INVITE")
        self.assertIn(b"a=sendonly", bob_reinvite.body)
        self.assertIn(MEDIA_ADDRESS.encode(), bob_reinvite.body)
        ok = self.bob.answer(bob_reinvite, 200, tag=bob_ok.to.tag, body=self.bob.sdp("recvonly"))  # type: ignore[arg-type]
        alice_ok2 = only(self.stack.deliver(ok, BOB), ALICE, 200)
        self.assertIn(b"a=recvonly", alice_ok2.body)
        sent = self.stack.deliver(self.alice.ack_for(reinvite, alice_ok2), ALICE)  # type: ignore[arg-type]
        only(sent, BOB, "ACK")
        self.assertTrue(self.stack.media.sessions()[0].hold_state.on_hold)

    def test_glare(self) -> None:
        """A re-INVITE while one is pending in the other direction gets 491."""
        invite, bob_invite, alice_ok, bob_ok = self.answer()
        reinvite = self.alice.in_dialog(
            "INVITE", invite, alice_ok, uac=True, body=self.alice.sdp()
        )  # type: ignore[arg-type]
        self.stack.deliver(reinvite, ALICE)
        theirs = self.bob.in_dialog("INVITE", bob_invite, bob_ok, uac=False, body=self.bob.sdp())
        only(self.stack.deliver(theirs, BOB), BOB, 491)

    def test_info_relayed(self) -> None:
        """SIP INFO (DTMF) is relayed with its body; the answer comes back."""
        invite, _bob_invite, alice_ok, bob_ok = self.answer()
        info = self.alice.in_dialog("INFO", invite, alice_ok, uac=True)  # type: ignore[arg-type]
        info.set("Content-Type", "application/dtmf-relay")
        info.set_body(b"Signal=5\r\nDuration=160\r\n")
        bob_info = only(self.stack.deliver(info, ALICE), BOB, "INFO")
        self.assertEqual(bob_info.body, b"Signal=5\r\nDuration=160\r\n")
        self.assertEqual(bob_info.get("Content-Type"), "application/dtmf-relay")
        only(
            self.stack.deliver(self.bob.answer(bob_info, 200, tag=bob_ok.to.tag), BOB), ALICE, 200
        )  # type: ignore[arg-type]

    def test_unknown_dialog(self) -> None:
        """A BYE for no known dialog gets 481."""
        invite, _bob_invite, alice_ok, _bob_ok = self.answer()
        bye = self.alice.in_dialog("BYE", invite, alice_ok, uac=True)  # type: ignore[arg-type]
        bye.set("Call-ID", "nobody@nowhere")
        only(self.stack.deliver(bye, ALICE), ALICE, 481)

    def test_media_timeout(self) -> None:
        """No RTP for the media timeout: BYE to both phones, record says why."""
        self.answer()
        mark = self.stack.mark()
        for _ in range(62):
            self.stack.clock.advance(1)
        sent = self.stack.sent_since(mark)
        for phone in (ALICE, BOB):
            # One BYE each (its UDP retransmissions share the branch).
            byes = {
                m.top_via.branch
                for m, a in sent
                if getattr(m, "method", "") == "BYE" and a == phone
            }
            self.assertEqual(len(byes), 1)
        self.assertEqual(self.records()[0].hangup_cause, "media timeout")

    def test_no_leak_after_many_calls(self) -> None:
        """100 answered and hung-up calls leave no ports, calls or dialogs behind."""
        for _ in range(100):
            invite, _bob_invite, alice_ok, _bob_ok = self.answer()
            self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, uac=True), ALICE)  # type: ignore[arg-type]
            self.alice = Phone(self.stack, "1001", ALICE)
        self.assertEqual(self.stack.media.ports_in_use(), 0)
        self.assertEqual(self.stack.calls.calls, {})
        self.assertEqual(self.stack.calls._dialogs, {})
        self.assertEqual(len(self.records()), 100)


class LimitTests(CallTestCase):
    """Per-extension call limits."""

    max_calls = 1

    def test_limit(self) -> None:
        """A second call involving a busy extension gets 486."""
        self.ring()
        carol = Phone(self.stack, "1003", ("192.0.2.14", 5060))
        _, sent = carol.call("1002")
        only(sent, ("192.0.2.14", 5060), 486)


class SessionTimerTests(CallTestCase):
    """RFC 4028 on both legs (no RTP flows here, so no media timeout)."""

    media_timeout = 3600.0

    def invite_with(self, session_expires: str, supported: bool = True) -> tuple[Request, Request]:
        """Alice's INVITE carries Session-Expires; returns (her INVITE, Bob's)."""
        original = self.alice.invite

        def invite(*args: Any, **kwargs: Any) -> Request:
            request = original(*args, **kwargs)
            request.set("Session-Expires", session_expires)
            if supported:
                request.set("Supported", "timer")
            return request

        self.alice.invite = invite  # type: ignore[method-assign]
        invite_, sent = self.alice.call("1002")
        return invite_, only(sent, BOB, "INVITE")  # type: ignore[return-value]

    def test_too_small(self) -> None:
        """An interval below 90 s gets 422 with Min-SE."""
        original = self.alice.invite
        self.alice.invite = lambda *a, **k: _with(original(*a, **k), "Session-Expires", "30")  # type: ignore[method-assign]
        _, sent = self.alice.call("1002")
        self.assertEqual(only(sent, ALICE, 422).get("Min-SE"), "90")

    def test_non_ascii_session_expires(self) -> None:
        """Session-Expires in non-ASCII digits gets 400, not a 500 and a traceback."""
        original = self.alice.invite
        self.alice.invite = lambda *a, **k: _with(
            original(*a, **k), "Session-Expires", "\u00b9800"
        )  # type: ignore[method-assign]
        _, sent = self.alice.call("1002")
        only(sent, ALICE, 400)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_caller_refreshes_and_expiry_hangs_up(self) -> None:
        """The caller refreshes (refresher=uac, Require: timer); silence ends the call."""
        invite, bob_invite = self.invite_with("120")
        self.assertEqual(bob_invite.get("Session-Expires"), "1800")
        self.assertIn("timer", bob_invite.get("Supported") or "")
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        self.assertEqual(alice_ok.get("Session-Expires"), "120;refresher=uac")
        self.assertEqual(alice_ok.get("Require"), "timer")
        self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE)  # type: ignore[arg-type]
        mark = self.stack.mark()
        self.stack.clock.advance(79.9)  # 120 - min(32, 40) = 88: not yet
        self.assertEqual(self.stack.sent_since(mark), [])
        self.stack.clock.advance(8.2)
        sent = self.stack.sent_since(mark)
        only(sent, ALICE, "BYE")
        only(sent, BOB, "BYE")
        self.assertEqual(self.records()[0].hangup_cause, "session timer expired")

    def test_refresh_keeps_call(self) -> None:
        """A re-INVITE from the caller within the interval restarts the timer."""
        invite, bob_invite = self.invite_with("120")
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE)  # type: ignore[arg-type]
        self.stack.clock.advance(80)
        update = self.alice.in_dialog("UPDATE", invite, alice_ok, uac=True)  # type: ignore[arg-type]
        bob_update = only(self.stack.deliver(update, ALICE), BOB, "UPDATE")
        self.stack.deliver(self.bob.answer(bob_update, 200, tag=bob_ok.to.tag), BOB)  # type: ignore[arg-type]
        mark = self.stack.mark()
        self.stack.clock.advance(80)
        self.assertFalse(
            [m for m, a in self.stack.sent_since(mark) if getattr(m, "method", "") == "BYE"]
        )
        self.assertEqual(len(self.stack.calls.calls), 1)

    def test_warden_refreshes_callee(self) -> None:
        """When the callee makes Warden the refresher, Warden re-INVITEs it at half time."""
        invite, bob_invite = self.invite_with("1800", supported=False)
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())
        bob_ok.set("Session-Expires", "100;refresher=uac")
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        self.assertEqual(alice_ok.get("Session-Expires"), "1800;refresher=uas")
        self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE)  # type: ignore[arg-type]
        mark = self.stack.mark()
        self.stack.clock.advance(50.1)
        refresh = only(self.stack.sent_since(mark), BOB, "INVITE")
        self.assertEqual(refresh.call_id, bob_invite.call_id)
        self.assertIn(MEDIA_ADDRESS.encode(), refresh.body)


def _with(request: Request, name: str, value: str) -> Request:
    """``request`` with one header set."""
    request.set(name, value)
    return request


class ReliableProvisionalTests(CallTestCase):
    """RFC 3262: a caller that requires 100rel."""

    def test_prack(self) -> None:
        """180 is sent reliably until PRACKed; the call then completes normally."""
        original = self.alice.invite
        self.alice.invite = lambda *a, **k: _with(original(*a, **k), "Require", "100rel")  # type: ignore[method-assign]
        invite, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        mark = self.stack.mark()
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)  # type: ignore[arg-type]
        self.stack.clock.advance(0.5)
        self.stack.clock.advance(1.0)
        ringing = [m for m, a in self.stack.sent_since(mark) if getattr(m, "status", 0) == 180]
        self.assertEqual(len(ringing), 3)
        self.assertEqual((ringing[0].get("Require"), ringing[0].get("RSeq")), ("100rel", "1"))
        prack = self.alice.in_dialog("PRACK", invite, ringing[0], uac=True)  # type: ignore[arg-type]
        prack.set("RAck", f"1 {invite.cseq.number} INVITE")
        only(self.stack.deliver(prack, ALICE), ALICE, 200)
        mark = self.stack.mark()
        self.stack.clock.advance(4)
        self.assertEqual(self.stack.sent_since(mark), [])
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())  # type: ignore[arg-type]
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        only(self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE), BOB, "ACK")  # type: ignore[arg-type]

    def test_wrong_rack(self) -> None:
        """A PRACK for an unknown RSeq gets 481."""
        original = self.alice.invite
        self.alice.invite = lambda *a, **k: _with(original(*a, **k), "Require", "100rel")  # type: ignore[method-assign]
        invite, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        ringing = only(self.stack.deliver(self.bob.answer(bob_invite, 180), BOB), ALICE, 180)  # type: ignore[arg-type]
        prack = self.alice.in_dialog("PRACK", invite, ringing, uac=True)  # type: ignore[arg-type]
        prack.set("RAck", f"7 {invite.cseq.number} INVITE")
        only(self.stack.deliver(prack, ALICE), ALICE, 481)


class LiveCallTests(CallTestCase):
    """What `wardenctl calls` shows while a call lasts."""

    def test_live_summary_refreshed(self) -> None:
        """An answered call is listed, refreshed every 5 s, and gone after BYE."""
        self.stack.calls.start()
        invite, _bob_invite, alice_ok, _bob_ok = self.answer()
        (live,) = self.stack.successResultOf_(self.stack.live.list())
        self.assertEqual((live.caller, live.callee, live.state), ("1001", "1002", "answered"))
        self.stack.clock.advance(5)
        (live,) = self.stack.successResultOf_(self.stack.live.list())
        self.assertEqual(live.updated_at, self.stack.clock.seconds())
        self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, uac=True), ALICE)  # type: ignore[arg-type]
        self.assertEqual(self.stack.successResultOf_(self.stack.live.list()), [])
        self.stack.calls.stop()


class ByeGlareTests(CallTestCase):
    """Both phones hang up at once."""

    def test_crossing_bye_gets_200(self) -> None:
        """Bob's BYE crossing the one Warden relayed from Alice gets 200, not 481."""
        invite, bob_invite, alice_ok, bob_ok = self.answer()
        self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, uac=True), ALICE)  # type: ignore[arg-type]
        bye = self.bob.in_dialog("BYE", bob_invite, bob_ok, uac=False)
        only(self.stack.deliver(bye, BOB), BOB, 200)
        self.stack.clock.advance(40)
        late = self.bob.in_dialog("BYE", bob_invite, bob_ok, uac=False)
        only(self.stack.deliver(late, BOB), BOB, 481)


class CalleeReliableProvisionalTests(CallTestCase):
    """A callee that sends its 180 reliably (RFC 3262)."""

    def test_callee_180_pracked(self) -> None:
        """Warden PRACKs the callee's reliable 180 once and relays it to the caller."""
        _invite, bob_invite = self.ring()
        self.assertIn("100rel", bob_invite.get("Supported") or "")
        ringing = self.bob.answer(bob_invite, 180)
        ringing.set("Require", "100rel")
        ringing.set("RSeq", "7")
        sent = self.stack.deliver(ringing, BOB)
        prack = only(sent, BOB, "PRACK")
        self.assertEqual(prack.get("RAck"), f"7 {bob_invite.cseq.number} INVITE")
        self.assertEqual(prack.to.tag, self.bob.tag)
        only(sent, ALICE, 180)
        again = self.stack.deliver(ringing, BOB)
        self.assertEqual([m for m, a in again if getattr(m, "method", "") == "PRACK"], [])


class SignallingRecordTests(CallTestCase):
    """Call records and metrics say per leg how signalling travelled."""

    def test_record_names_each_legs_transport(self) -> None:
        """
        An answered UDP call's record has, per leg, ``transport`` "udp" and
        ``signalling_encrypted`` false, and both legs are counted under udp in
        ``warden_call_legs_total``.
        """
        from warden.sip import metrics

        before = {
            leg: metrics.CALL_LEGS.labels(leg, "udp")._value.get() for leg in ("caller", "callee")
        }
        invite, _, alice_ok, _ = self.answer()
        bye = self.alice.in_dialog("BYE", invite, alice_ok, uac=True)  # type: ignore[arg-type]
        self.stack.deliver(bye, ALICE)
        (record,) = self.records()
        for side in ("a", "b"):
            leg = record.media[side]
            self.assertEqual((leg["transport"], leg["signalling_encrypted"]), ("udp", False))
        for leg, count in before.items():
            self.assertEqual(metrics.CALL_LEGS.labels(leg, "udp")._value.get(), count + 1)

    def test_live_call_names_each_legs_transport(self) -> None:
        """
        An answered call's live summary (``wardenctl calls``) names each leg's
        signalling transport: udp for both legs here.
        """
        self.answer()
        (live,) = self.stack.successResultOf_(self.stack.live.list())
        self.assertEqual((live.caller_signalling, live.callee_signalling), ("udp", "udp"))
