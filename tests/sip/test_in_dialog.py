"""
Tests for how the B2BUA matches requests to its dialogs (warden.sip.b2bua,
warden.sip.dialog): both tags (RFC 3261 §12.2.2), the dialog's peer flow, and
dialogs that never reached the early or confirmed state (§15.1.2).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from warden.sip.dialog import Dialog
from warden.sip.flow import Flow
from warden.sip.message import Request, Response, new_tag

IN_DIALOG_METHODS = ("BYE", "INVITE", "UPDATE", "INFO", "REFER", "NOTIFY")
STRANGER = ("192.0.2.66", 5060)


def request_in(
    method: str,
    invite: Request,
    response: Response,
    source: tuple[str, int],
    cseq: int,
    from_tag: str | None = None,
) -> Request:
    """A request from the caller of ``invite`` in the dialog ``response`` set up."""
    host, port = source
    from_ = invite.get("From") or ""
    if from_tag is not None:
        from_ = from_.replace(f"tag={invite.from_.tag}", f"tag={from_tag}")
    headers = [
        ("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{new_tag()};rport"),
        ("Max-Forwards", "70"), ("From", from_), ("To", response.get("To") or ""),
        ("Call-ID", invite.call_id), ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:1001@{host}:{port}>"),
    ]  # fmt: skip
    if method == "REFER":
        headers.append(("Refer-To", "<sip:1003@pbx.test>"))
    if method == "NOTIFY":
        headers += [("Event", "refer"), ("Subscription-State", "active")]
    return Request(method, f"sip:warden@{ALICE[0]}", headers)


class NeverEstablishedTests(CallTestCase):
    """Requests in a dialog that ended with the INVITE's error response: 481."""

    def failed_call(self, ringing: bool) -> tuple[Request, Response]:
        """Alice calls Bob, who never answers (optionally rings): the ring timeout ends it."""
        invite, bob_invite = self.ring()
        if ringing:
            self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        mark = self.stack.mark()
        self.stack.clock.advance(self.ring_timeout + 1)
        failure = only(self.stack.sent_since(mark), ALICE, 480)
        self.stack.deliver(self.alice.ack_for(invite, failure), ALICE)  # type: ignore[arg-type]
        return invite, failure  # type: ignore[return-value]

    def check_all_481(self, invite: Request, failure: Response) -> None:
        """Every in-dialog method gets 481 and starts nothing."""
        for number, method in enumerate(IN_DIALOG_METHODS, start=invite.cseq.number + 1):
            sent = self.stack.deliver(request_in(method, invite, failure, ALICE, number), ALICE)
            only(sent, ALICE, 481)
            self.assertEqual([a for _, a in sent if a != ALICE], [], method)
        self.assertEqual(self.stack.calls.calls, {})

    def test_after_ring_timeout_without_ringing(self) -> None:
        """A callee that never answered at all: BYE, re-INVITE, UPDATE, INFO,
        REFER and NOTIFY in the would-be dialog all get 481 (RFC 3261 §12.2.2)."""
        self.check_all_481(*self.failed_call(ringing=False))

    def test_after_ring_timeout_after_ringing(self) -> None:
        """The early dialog of a 180 ends with the 480: later requests get 481."""
        self.check_all_481(*self.failed_call(ringing=True))

    def test_after_busy(self) -> None:
        """A call refused 486: a BYE in its dialog gets 481, not 200."""
        invite, bob_invite = self.ring()
        busy = only(self.stack.deliver(self.bob.answer(bob_invite, 486), BOB), ALICE, 486)
        bye = request_in("BYE", invite, busy, ALICE, invite.cseq.number + 1)  # type: ignore[arg-type]
        only(self.stack.deliver(bye, ALICE), ALICE, 481)

    def test_before_any_tagged_response(self) -> None:
        """While only 100 Trying was sent the caller has no dialog: a request
        carrying Warden's future tag gets 481 and the call keeps ringing."""
        invite, _bob_invite = self.ring()
        (call,) = self.stack.calls.calls.values()
        fake = Response(200, "OK", [("To", f"<sip:1002@pbx.test>;tag={call.a_tag}")])
        sent = self.stack.deliver(request_in("BYE", invite, fake, ALICE, 9), ALICE)
        only(sent, ALICE, 481)
        self.assertEqual([a for _, a in sent if a != ALICE], [])
        self.assertEqual(len(self.stack.calls.calls), 1)

    def test_bye_in_early_dialog(self) -> None:
        """A BYE in the early dialog (after 180) is a hang-up before the answer:
        200 to it, 487 to the INVITE, CANCEL to the callee (RFC 3261 §15.1.2)."""
        invite, bob_invite = self.ring()
        ringing = only(self.stack.deliver(self.bob.answer(bob_invite, 180), BOB), ALICE, 180)
        bye = request_in("BYE", invite, ringing, ALICE, invite.cseq.number + 1)  # type: ignore[arg-type]
        sent = self.stack.deliver(bye, ALICE)
        statuses = sorted(getattr(m, "status", 0) for m, a in sent if a == ALICE)
        self.assertEqual(statuses, [200, 487])
        only(sent, BOB, "CANCEL")
        self.assertEqual(self.stack.calls.calls, {})
        (record,) = self.records()
        self.assertEqual((record.disposition, record.hangup_cause), ("CANCELLED", "BYE"))


class PeerCheckTests(CallTestCase):
    """Requests in an answered call must carry both tags and come from the peer."""

    def assert_call_goes_on(self) -> None:
        """The call is still up and Bob was sent nothing by the refused request."""
        (call,) = self.stack.calls.calls.values()
        self.assertEqual(call.state.value, "answered")

    def test_wrong_from_tag(self) -> None:
        """Call-ID and Warden's tag with another From tag: 481, the call goes on."""
        invite, _, alice_ok, _ = self.answer()
        for method in IN_DIALOG_METHODS:
            request = request_in(method, invite, alice_ok, ALICE, 50, from_tag="forged")
            sent = self.stack.deliver(request, ALICE)
            only(sent, ALICE, 481)
            self.assertEqual([a for _, a in sent if a != ALICE], [], method)
        self.assert_call_goes_on()

    def test_other_source(self) -> None:
        """The right dialog ID sent from another address: 403, nothing relayed,
        the call goes on for its real parties."""
        invite, _, alice_ok, _ = self.answer()
        for number, method in enumerate(IN_DIALOG_METHODS, start=50):
            request = request_in(method, invite, alice_ok, STRANGER, number)
            sent = self.stack.deliver(request, STRANGER)
            only(sent, STRANGER, 403)
            self.assertEqual([a for _, a in sent if a != STRANGER], [], method)
        self.assert_call_goes_on()
        bye = request_in("BYE", invite, alice_ok, ALICE, 60)
        sent = self.stack.deliver(bye, ALICE)
        only(sent, ALICE, 200)
        only(sent, BOB, "BYE")

    def test_same_host_other_udp_port(self) -> None:
        """Over UDP the port counts too (phones sharing one NAT share its address)."""
        invite, _, alice_ok, _ = self.answer()
        other_port = (ALICE[0], ALICE[1] + 1)
        request = request_in("BYE", invite, alice_ok, other_port, 50)
        only(self.stack.deliver(request, other_port), other_port, 403)
        self.assert_call_goes_on()

    def test_callee_checked_too(self) -> None:
        """Bob's dialog is checked the same way: his BYE from elsewhere gets 403."""
        _invite, bob_invite, _alice_ok, bob_ok = self.answer()
        bye = self.bob.in_dialog("BYE", bob_invite, bob_ok, uac=False)
        only(self.stack.deliver(bye, STRANGER), STRANGER, 403)
        self.assert_call_goes_on()
        bye = self.bob.in_dialog("BYE", bob_invite, bob_ok, uac=False)
        sent = self.stack.deliver(bye, BOB)
        only(sent, BOB, 200)
        only(sent, ALICE, "BYE")

    def test_phone_behind_nat(self) -> None:
        """A caller whose Via and Contact name a private address, seen from its
        NAT's public mapping: requests from that mapping are its own."""
        nat = ("198.51.100.7", 40123)
        self.alice.address = ("10.0.0.5", 5060)
        invite, sent = self.alice.call("1002", source=nat)
        bob_invite = only(sent, BOB, "INVITE")
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())  # type: ignore[arg-type]
        alice_ok = only(self.stack.deliver(bob_ok, BOB), nat, 200)
        bye = request_in("BYE", invite, alice_ok, self.alice.address, 9)  # type: ignore[arg-type]
        sent = self.stack.deliver(bye, nat)
        only(sent, nat, 200)
        only(sent, BOB, "BYE")

    def test_caller_without_from_tag(self) -> None:
        """An RFC 2543 caller that sent no From tag hangs up with none again (§12.2.2)."""
        untagged = '"Phone 1001" <sip:1001@pbx.test>'
        invite, sent = self.alice.call("1002", edit=lambda r: r.set("From", untagged))
        bob_invite = only(sent, BOB, "INVITE")
        bob_ok = self.bob.answer(bob_invite, 200, body=self.bob.sdp())  # type: ignore[arg-type]
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        bye = request_in("BYE", invite, alice_ok, ALICE, 9)  # type: ignore[arg-type]
        self.assertIsNone(bye.from_.tag)
        sent = self.stack.deliver(bye, ALICE)
        only(sent, ALICE, 200)
        only(sent, BOB, "BYE")


class RefusalLogTests(CallTestCase):
    """Refusals are counted, and logged without flooding the log."""

    media_timeout = 3600.0

    def test_refusals_logged_sparingly(self) -> None:
        """A flood of refused requests is one warning a minute, each one counted."""
        from twisted.logger import globalLogPublisher

        from warden.sip import metrics

        logged: list[dict[str, object]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        invite, _, alice_ok, _ = self.answer()
        counter = metrics.IN_DIALOG_REFUSED.labels("INFO")
        before = counter._value.get()
        for number in range(50, 60):
            info = request_in("INFO", invite, alice_ok, STRANGER, number)
            self.stack.deliver(info, STRANGER)
        self.stack.clock.advance(60)
        self.stack.deliver(request_in("INFO", invite, alice_ok, STRANGER, 61), STRANGER)
        lines = [e for e in logged if "Refused in-dialog" in str(e.get("log_format"))]
        self.assertEqual([e["more"] for e in lines], [0, 9])
        self.assertEqual(counter._value.get() - before, 11)


class FromPeerTests(SynchronousTestCase):
    """L{Dialog.from_peer}: the flow rule per transport."""

    def dialog(self, flow: Flow) -> Dialog:
        """A confirmed dialog whose peer is ``flow``."""
        return Dialog(
            call_id="c", local_tag="l", remote_tag="r", local_party="<sip:a@h>",
            remote_party="<sip:b@h>", local_cseq=0, remote_cseq=1,
            remote_target="sip:b@h", route_set=[], flow=flow,
            local_contact="sip:w@h", via_host="h:5060",
        )  # fmt: skip

    def test_udp_needs_address_and_port(self) -> None:
        """UDP: same address and port only."""
        dialog = self.dialog(Flow("udp", "192.0.2.5", 5060))
        self.assertTrue(dialog.from_peer(Flow("udp", "192.0.2.5", 5060)))
        self.assertFalse(dialog.from_peer(Flow("udp", "192.0.2.5", 5061)))
        self.assertFalse(dialog.from_peer(Flow("udp", "192.0.2.6", 5060)))

    def test_stream_needs_address(self) -> None:
        """TCP/TLS: a new connection from the same address is the peer (a phone
        reconnecting or switching to TCP for a large request); another address is not."""
        dialog = self.dialog(Flow("tcp", "192.0.2.5", 40000))
        self.assertTrue(dialog.from_peer(Flow("tcp", "192.0.2.5", 40001)))
        self.assertTrue(dialog.from_peer(Flow("tls", "192.0.2.5", 40002)))
        self.assertFalse(dialog.from_peer(Flow("tcp", "192.0.2.6", 40000)))
        udp_dialog = self.dialog(Flow("udp", "192.0.2.5", 5060))
        self.assertTrue(udp_dialog.from_peer(Flow("tcp", "192.0.2.5", 45000)))

    def test_ipv6_forms(self) -> None:
        """IPv6 addresses compare by value, not by spelling."""
        dialog = self.dialog(Flow("udp", "2001:db8::1", 5060))
        self.assertTrue(dialog.from_peer(Flow("udp", "2001:0db8:0:0::1", 5060)))
