"""Tests for call transfer through the B2BUA (warden.sip.transfer): REFER, Replaces."""

from __future__ import annotations

from urllib.parse import quote

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from warden.sip.message import Request, Response
from warden.sip.transfer import parse_replaces, sendrecv
from warden.testing.callstack import MEDIA_ADDRESS, Phone

CAROL = ("192.0.2.14", 5066)


class HelperTests(CallTestCase):
    """The small pure helpers."""

    def test_sendrecv(self) -> None:
        """Direction attributes become sendrecv, line endings kept."""
        self.assertEqual(
            sendrecv(b"v=0\r\na=sendonly\r\nm=x\r\n"), b"v=0\r\na=sendrecv\r\nm=x\r\n"
        )
        self.assertEqual(sendrecv(b"a=inactive\n"), b"a=sendrecv\n")

    def test_parse_replaces(self) -> None:
        """Replaces names the call-id and both tags (RFC 3891 §6.1)."""
        self.assertEqual(parse_replaces("abc%40h;to-tag=1;from-tag=2"), ("abc@h", "1", "2"))


class BlindTransferTests(CallTestCase):
    """Bob transfers Alice to Carol with REFER."""

    def setUp(self) -> None:
        super().setUp()
        self.carol = Phone(self.stack, "1003", CAROL)
        self.stack.register("1003", CAROL)

    def refer(self, refer_to: str) -> tuple[list, Request, Request, Response, Response]:
        """Answer a call, Bob sends REFER; return what Warden sent and the call's messages."""
        invite, bob_invite, alice_ok, bob_ok = self.answer()
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)
        refer.set("Refer-To", refer_to)
        return self.stack.deliver(refer, BOB), invite, bob_invite, alice_ok, bob_ok

    def test_blind_transfer(self) -> None:
        """202, NOTIFY progress, INVITE to Carol; on her answer Bob is hung up and
        Alice re-INVITEd; the call then ends normally."""
        sent, invite, _bob_invite, _alice_ok, _bob_ok = self.refer("<sip:1003@pbx.test>")
        only(sent, BOB, 202)
        notify = only(sent, BOB, "NOTIFY")
        self.assertEqual(notify.body, b"SIP/2.0 100 Trying\r\n")
        self.assertEqual(notify.get("Event"), "refer")
        carol_invite = only(sent, CAROL, "INVITE")
        self.assertIn(MEDIA_ADDRESS.encode(), carol_invite.body)
        self.assertIn(b"a=sendrecv", carol_invite.body)
        self.assertEqual(carol_invite.from_.uri.user, "1001")  # Alice is who Carol talks to
        sent = self.stack.deliver(self.carol.answer(carol_invite, 180), CAROL)  # type: ignore[arg-type]
        self.assertEqual(only(sent, BOB, "NOTIFY").body, b"SIP/2.0 180 Ringing\r\n")
        carol_ok = self.carol.answer(carol_invite, 200, body=self.carol.sdp())  # type: ignore[arg-type]
        sent = self.stack.deliver(carol_ok, CAROL)
        only(sent, CAROL, "ACK")
        final = only(sent, BOB, "NOTIFY")
        self.assertEqual(final.body, b"SIP/2.0 200 OK\r\n")
        self.assertIn("terminated", final.get("Subscription-State") or "")
        only(sent, BOB, "BYE")
        reinvite = only(sent, ALICE, "INVITE")
        self.assertIn(b"a=sendrecv", reinvite.body)
        ok = self.alice.answer(reinvite, 200, tag=invite.from_.tag, body=self.alice.sdp())  # type: ignore[arg-type]
        only(self.stack.deliver(ok, ALICE), ALICE, "ACK")
        bye = self.carol.in_dialog("BYE", carol_invite, carol_ok, uac=False)  # type: ignore[arg-type]
        sent = self.stack.deliver(bye, CAROL)
        only(sent, CAROL, 200)
        only(sent, ALICE, "BYE")
        self.assertEqual(self.stack.media.ports_in_use(), 0)
        self.assertEqual(self.records()[0].disposition, "ANSWERED")

    def test_target_busy(self) -> None:
        """A busy target: final NOTIFY 486, the original call goes on."""
        sent, *_ = self.refer("<sip:1003@pbx.test>")
        carol_invite = only(sent, CAROL, "INVITE")
        sent = self.stack.deliver(self.carol.answer(carol_invite, 486), CAROL)  # type: ignore[arg-type]
        self.assertEqual(only(sent, BOB, "NOTIFY").body, b"SIP/2.0 486 Busy Here\r\n")
        self.assertEqual(len(self.stack.calls.calls), 1)

    def test_unknown_target(self) -> None:
        """A target that does not exist: final NOTIFY 404."""
        sent, *_ = self.refer("<sip:9999@pbx.test>")
        only(sent, BOB, 202)
        notifies = [m for m, a in sent if getattr(m, "method", "") == "NOTIFY"]
        self.assertEqual(notifies[-1].body, b"SIP/2.0 404 Not Found\r\n")

    def test_bad_refer_to(self) -> None:
        """A Refer-To that is not a SIP URI with a user is a 400."""
        sent, *_ = self.refer("<tel:+15551234>")
        only(sent, BOB, 400)


class AttendedTransferTests(CallTestCase):
    """Bob, talking to Alice and to Carol, joins them (REFER with Replaces)."""

    def test_attended_transfer(self) -> None:
        """Alice ends up talking to Carol in Bob's second call; Bob is hung up twice."""
        carol = Phone(self.stack, "1003", CAROL)
        self.stack.register("1003", CAROL)
        invite, bob_invite, alice_ok, bob_ok = self.answer()
        # Bob calls Carol (call 2): Bob is the caller there.
        bob_uac = Phone(self.stack, "1002", BOB)
        bob_uac.tag = "bobtag2"
        invite2, _carol_invite, carol_ok, bob_ok2 = bob_uac.call_answered("1003", carol)
        replaces = quote(f"{invite2.call_id};to-tag={bob_ok2.to.tag};from-tag=bobtag2", safe="")
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)
        refer.set("Refer-To", f"<sip:1003@pbx.test?Replaces={replaces}>")
        sent = self.stack.deliver(refer, BOB)
        only(sent, BOB, 202)
        byes = [m for m, a in sent if getattr(m, "method", "") == "BYE" and a == BOB]
        self.assertEqual(len(byes), 2)
        self.assertEqual(
            [m.body for m, a in sent if getattr(m, "method", "") == "NOTIFY"][-1],
            b"SIP/2.0 200 OK\r\n",
        )
        reinvite = only(sent, ALICE, "INVITE")
        ok = self.alice.answer(reinvite, 200, tag=invite.from_.tag, body=self.alice.sdp())  # type: ignore[arg-type]
        sent = self.stack.deliver(ok, ALICE)
        only(sent, ALICE, "ACK")
        carol_reinvite = only(sent, CAROL, "INVITE")
        ok = carol.answer(carol_reinvite, 200, tag=carol_ok.to.tag, body=carol.sdp())  # type: ignore[arg-type]
        only(self.stack.deliver(ok, CAROL), CAROL, "ACK")
        # Alice hangs up: Carol gets the BYE.
        sent = self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, uac=True), ALICE)  # type: ignore[arg-type]
        only(sent, ALICE, 200)
        only(sent, CAROL, "BYE")
        self.assertEqual(self.stack.calls.calls, {})
        self.assertEqual(self.stack.media.ports_in_use(), 0)
        causes = sorted(r.hangup_cause for r in self.records())
        self.assertEqual(causes, ["BYE", "transferred"])

    def test_replaces_unknown_dialog(self) -> None:
        """Replaces naming no known dialog: 481, nothing changes."""
        _invite, bob_invite, _alice_ok, bob_ok = self.answer()
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)
        refer.set("Refer-To", "<sip:1003@pbx.test?Replaces=nope%3Bto-tag%3D1%3Bfrom-tag%3D2>")
        only(self.stack.deliver(refer, BOB), BOB, 481)
        self.assertEqual(len(self.stack.calls.calls), 1)


DAVE = ("192.0.2.15", 5068)


class ReplacesHijackTests(CallTestCase):
    """Replaces must name the transferor's own confirmed dialog (RFC 3891 §3)."""

    def setUp(self) -> None:
        super().setUp()
        self.carol = Phone(self.stack, "1003", CAROL)
        self.dave = Phone(self.stack, "1004", DAVE)
        self.stack.register("1004", DAVE)

    def other_call(self) -> tuple[Request, Response]:
        """Carol calls Dave and he answers: Carol's INVITE and Warden's 200 to her."""
        invite, sent = self.carol.call("1004")
        dave_invite = only(sent, DAVE, "INVITE")
        dave_ok = self.dave.answer(dave_invite, 200, body=self.dave.sdp())  # type: ignore[arg-type]
        carol_ok = only(self.stack.deliver(dave_ok, DAVE), CAROL, 200)
        self.stack.deliver(self.carol.ack_for(invite, carol_ok), CAROL)  # type: ignore[arg-type]
        return invite, carol_ok  # type: ignore[return-value]

    def parties(self) -> list[tuple[str, str]]:
        """(caller, callee) of every call in progress."""
        calls = self.stack.calls.calls.values()
        return sorted((c.caller.number, c.callee.number) for c in calls)

    def refer_replacing(self, replaces: str) -> list:
        """Bob, in his call with Alice, REFERs with ``replaces``; what Warden sent."""
        _, bob_invite, _, bob_ok = self.answer()
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)
        refer.set("Refer-To", f"<sip:1003@pbx.test?Replaces={quote(replaces, safe='')}>")
        return self.stack.deliver(refer, BOB)

    def assert_nothing_changed(self, sent: list) -> None:
        """Both calls go on with their own parties; nobody was hung up or re-INVITEd."""
        self.assertEqual([m for m, _ in sent if getattr(m, "method", "") in ("BYE", "INVITE")], [])
        parties = sorted(
            (c.caller.number, c.callee.number) for c in self.stack.calls.calls.values()
        )
        self.assertEqual(parties, [("1001", "1002"), ("1003", "1004")])
        self.assertEqual(self.records(), [])

    def test_someone_elses_call(self) -> None:
        """Bob names Carol's call with Dave (the right Call-ID and both tags): 403;
        Alice does not take Carol's place."""
        carol_invite, carol_ok = self.other_call()
        replaces = f"{carol_invite.call_id};to-tag={carol_ok.to.tag};from-tag={self.carol.tag}"
        sent = self.refer_replacing(replaces)
        only(sent, BOB, 403)
        self.assert_nothing_changed(sent)

    def test_only_warden_tag_known(self) -> None:
        """Call-ID and Warden's tag with a made-up from-tag: 481, nothing changes."""
        carol_invite, carol_ok = self.other_call()
        sent = self.refer_replacing(f"{carol_invite.call_id};to-tag={carol_ok.to.tag};from-tag=x")
        only(sent, BOB, 481)
        self.assert_nothing_changed(sent)

    def test_invite_with_replaces_from_outside(self) -> None:
        """An INVITE carrying Replaces (Warden does not offer RFC 3891 on its
        UAS side) is a call of its own to the number it dials: the call it
        names goes on untouched."""
        carol_invite, carol_ok = self.other_call()
        replaces = f"{carol_invite.call_id};to-tag={carol_ok.to.tag};from-tag={self.carol.tag}"
        _, sent = self.alice.call("1002", edit=lambda r: r.set("Replaces", replaces))
        bob_invite = only(sent, BOB, "INVITE")
        self.assertIsNone(bob_invite.get("Replaces"))
        self.assertEqual([a for m, a in sent if a in (CAROL, DAVE)], [])
        parties = sorted(
            (c.caller.number, c.callee.number) for c in self.stack.calls.calls.values()
        )
        self.assertEqual(parties, [("1001", "1002"), ("1003", "1004")])


class PartiesAfterTransferTests(CallTestCase):
    """Live calls and call records name who is connected after a transfer."""

    def setUp(self) -> None:
        super().setUp()
        self.carol = Phone(self.stack, "1003", CAROL)
        self.stack.register("1003", CAROL)

    def live(self) -> list[tuple[str, str]]:
        """(caller, callee) of every live call."""
        summaries = self.stack.successResultOf_(self.stack.live.list())
        return sorted((s.caller, s.callee) for s in summaries)

    def test_blind(self) -> None:
        """Bob transfers Alice to Carol: /calls shows Alice-Carol, the record too."""
        _invite, bob_invite, _alice_ok, bob_ok = self.answer()
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)
        refer.set("Refer-To", "<sip:1003@pbx.test>")
        carol_invite = only(self.stack.deliver(refer, BOB), CAROL, "INVITE")
        carol_ok = self.carol.answer(carol_invite, 200, body=self.carol.sdp())  # type: ignore[arg-type]
        self.stack.deliver(carol_ok, CAROL)
        self.assertEqual(self.live(), [("1001", "1003")])
        bye = self.carol.in_dialog("BYE", carol_invite, carol_ok, uac=False)  # type: ignore[arg-type]
        self.stack.deliver(bye, CAROL)
        (record,) = self.records()
        self.assertEqual((record.caller, record.callee), ("1001", "1003"))

    def test_attended(self) -> None:
        """Bob joins Alice to Carol: the surviving call is Alice-Carol in /calls
        and in its record; Bob's first call is recorded as Alice-Bob, transferred."""
        _invite, bob_invite, _alice_ok, bob_ok = self.answer()
        bob_uac = Phone(self.stack, "1002", BOB)
        invite2, carol_invite, carol_ok, bob_ok2 = bob_uac.call_answered("1003", self.carol)
        self.assertEqual(self.live(), [("1001", "1002"), ("1002", "1003")])
        replaces = f"{invite2.call_id};to-tag={bob_ok2.to.tag};from-tag={bob_uac.tag}"
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)
        refer.set("Refer-To", f"<sip:1003@pbx.test?Replaces={quote(replaces, safe='')}>")
        only(self.stack.deliver(refer, BOB), BOB, 202)
        self.assertEqual(self.live(), [("1001", "1003")])
        bye = self.carol.in_dialog("BYE", carol_invite, carol_ok, uac=False)  # type: ignore[arg-type]
        self.stack.deliver(bye, CAROL)
        records = sorted((r.caller, r.callee, r.hangup_cause) for r in self.records())
        self.assertEqual(records, [("1001", "1002", "transferred"), ("1001", "1003", "BYE")])
