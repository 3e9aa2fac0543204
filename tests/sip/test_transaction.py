"""
Tests for the transaction layer (RFC 3261 §17): matching, RFC 2543 fallback,
bookkeeping. The transactions' own behaviour is tested in
``test_transaction_client`` and ``test_transaction_server``.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.corpus import torture_message
from tests.sip.transaction_fakes import (
    TCP,
    UDP,
    Harness,
    RecordingObserver,
    RecordingSend,
    RecordingTU,
    RecordingUser,
    make_request,
    reply,
)
from warden.errors import SipParseError
from warden.interfaces import IClientTransactionUser, ITransactionObserver, ITransactionUser
from warden.sip.message import Request, make_response
from warden.sip.metrics import TransactionMetrics
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.sip.transaction import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    TransactionLayer,
    TransactionState,
    is_rfc3261_branch,
)
from warden.sip.transaction_base import NO_OBSERVER

S = TransactionState


def torture(name: str) -> bytes:
    """The bytes of an RFC 4475 message from the conformance corpus."""
    return torture_message("rfc4475", name)


def parsed_request(data: bytes) -> Request:
    """``data`` parsed as a request."""
    message = parse_datagram(data)
    assert isinstance(message, Request)
    return message


class FakeConformanceTests(SynchronousTestCase):
    """The recording fakes provide the interfaces they stand in for."""

    def test_transaction_user(self) -> None:
        """RecordingTU provides ITransactionUser."""
        self.assertTrue(verifyObject(ITransactionUser, RecordingTU()))

    def test_client_transaction_user(self) -> None:
        """RecordingUser provides IClientTransactionUser."""
        self.assertTrue(verifyObject(IClientTransactionUser, RecordingUser()))

    def test_observers(self) -> None:
        """
        The recording observer, the layer's default (nobody) and the SIP
        metrics binding provide ITransactionObserver.
        """
        for observer in (RecordingObserver(), NO_OBSERVER, TransactionMetrics()):
            self.assertTrue(verifyObject(ITransactionObserver, observer))


class ObserverTests(SynchronousTestCase):
    """
    The layer reports responses sent and transaction latency to its observer
    (it counts nothing itself): once per response and per transaction.
    """

    def test_server_response_and_latency(self) -> None:
        """
        A response the TU sends is reported once, not again when a retransmitted
        request is answered with it; the latency is reported at the final response.
        """
        h = Harness()
        request = make_request("OPTIONS")
        h.receive(request, UDP)
        h.clock.advance(0.25)
        h.tu.transactions[-1].respond(make_response(request, 200))
        h.receive(request, UDP)  # retransmission, answered from the transaction
        h.clock.advance(60)
        self.assertEqual(h.send.statuses, [200, 200])
        self.assertEqual(h.recorded.responses, [(200, "udp", "OPTIONS")])
        self.assertEqual(h.recorded.exchanges, [("OPTIONS", "server", 0.25)])

    def test_invite_trying_and_timer_g(self) -> None:
        """
        The 100 Trying the transaction sends itself is reported; copies of a
        final response that Timer G sends are not.
        """
        h = Harness()
        invite = make_request("INVITE")
        h.receive(invite, UDP)
        h.clock.advance(h.settings.trying_delay)
        h.tu.transactions[-1].respond(make_response(invite, 486, to_tag="t"))
        for _ in range(4):  # Timer G fires after T1, then 2*T1 more
            h.clock.advance(h.settings.t1)
        self.assertEqual(h.send.statuses, [100, 486, 486, 486])
        self.assertEqual(h.recorded.responses, [(100, "udp", "INVITE"), (486, "udp", "INVITE")])
        self.assertEqual(h.recorded.exchanges, [("INVITE", "server", h.settings.trying_delay)])

    def test_client_timeout(self) -> None:
        """A client transaction that times out reports its latency up to Timer F."""
        h = Harness()
        h.layer.send_request(make_request("OPTIONS"), UDP, RecordingUser())
        h.clock.advance(h.settings.timer_f)
        self.assertEqual(h.recorded.responses, [])
        self.assertEqual(h.recorded.exchanges, [("OPTIONS", "client", h.settings.timer_f)])

    def test_nobody_by_default(self) -> None:
        """Without an observer the layer answers as usual and reports to nobody."""
        clock = Clock()
        send = RecordingSend(clock)
        tu = RecordingTU()
        layer = TransactionLayer(clock, TimerSettings(), send, tu)
        request = make_request("OPTIONS")
        layer.receive(request, UDP)
        tu.transactions[-1].respond(make_response(request, 200))
        self.assertEqual(send.statuses, [200])


class TimerSettingsTests(SynchronousTestCase):
    """The settings the transaction layer added to TimerSettings."""

    def test_defaults(self) -> None:
        """100 Trying after 200 ms; Timers L and M are 64*T1 = 32 s."""
        settings = TimerSettings()
        self.assertEqual(settings.trying_delay, 0.2)
        self.assertEqual((settings.timer_l, settings.timer_m), (32.0, 32.0))

    def test_follow_t1(self) -> None:
        """Timers L and M scale with T1."""
        settings = TimerSettings(t1=0.25)
        self.assertEqual((settings.timer_l, settings.timer_m), (16.0, 16.0))


class BranchTests(SynchronousTestCase):
    """Recognising RFC 3261 branches (§8.1.1.7)."""

    def test_cookie(self) -> None:
        """A branch is an RFC 3261 one when the cookie has something after it."""
        self.assertTrue(is_rfc3261_branch("z9hG4bK776asdhds"))
        self.assertTrue(is_rfc3261_branch("Z9HG4BKx"))
        self.assertFalse(is_rfc3261_branch("z9hG4bK"))
        self.assertFalse(is_rfc3261_branch("776asdhds"))
        self.assertFalse(is_rfc3261_branch(None))

    def test_new_branch(self) -> None:
        """new_branch starts with the cookie and is an RFC 3261 branch."""
        branch = Harness().layer.new_branch()
        self.assertTrue(branch.startswith("z9hG4bK"))
        self.assertTrue(is_rfc3261_branch(branch))


class MatchingTests(SynchronousTestCase):
    """Matching requests (§17.2.3) and responses (§17.1.3) with cookie branches."""

    def setUp(self) -> None:
        self.h = Harness()

    def test_same_branch_other_sent_by(self) -> None:
        """The same branch from another sent-by is another transaction."""
        self.h.receive(make_request("OPTIONS"))
        other = parsed_request(
            make_request("OPTIONS").to_bytes().replace(b"192.0.2.10:5060", b"192.0.2.11:5060")
        )
        self.h.receive(other)
        self.assertEqual(len(self.h.tu.requests), 2)
        self.assertEqual(len(self.h.layer), 2)

    def test_same_branch_other_method(self) -> None:
        """The same branch with another method (not ACK, not CANCEL) is another transaction."""
        self.h.receive(make_request("OPTIONS"))
        self.h.receive(make_request("INFO"))
        self.assertEqual(len(self.h.tu.requests), 2)

    def test_branch_case_insensitive(self) -> None:
        """Branches compare case-insensitively, as parameter values do (§7.3.1)."""
        self.h.receive(make_request("OPTIONS", branch="z9hG4bKAbC"))
        self.h.receive(make_request("OPTIONS", branch="z9hG4bKabc"))
        self.assertEqual(len(self.h.tu.requests), 1)
        self.assertEqual(self.h.layer.absorbed, 1)

    def test_stray_response(self) -> None:
        """A response matching no client transaction goes to the TU as stray."""
        response = reply(make_request("OPTIONS"), 200)
        self.h.receive(response, TCP)
        self.assertEqual(self.h.tu.strays, [(response, TCP)])

    def test_response_without_branch(self) -> None:
        """A response whose top Via has no branch is stray."""
        response = reply(make_request("OPTIONS", branch=None), 200)
        self.h.receive(response)
        self.assertEqual(self.h.tu.strays, [(response, UDP)])

    def test_request_without_via(self) -> None:
        """A request without Via raises SipParseError and leaves no state."""
        data = make_request("OPTIONS").to_bytes()
        request = parsed_request(
            b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Via"))
        )
        self.assertRaises(SipParseError, self.h.layer.receive, request, UDP)
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.tu.requests, [])

    def test_cookie_request_missing_headers(self) -> None:
        """
        With a cookie branch only the Via is needed: a request missing To still
        gets a transaction, so the TU can answer it with 400 reliably.
        """
        data = make_request("OPTIONS").to_bytes()
        request = parsed_request(
            b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"To:"))
        )
        self.h.receive(request)
        txn = self.h.tu.transactions[0]
        txn.respond(make_response(request, 400))
        self.assertEqual(self.h.send.statuses, [400])

    def test_len_counts_both_sides(self) -> None:
        """len() counts live server and client transactions."""
        self.h.receive(make_request("INVITE"))
        self.h.receive(make_request("OPTIONS"))
        self.h.layer.send_request(make_request("OPTIONS"), UDP, RecordingUser())
        self.assertEqual(len(self.h.layer), 3)


class RFC2543MatchingTests(SynchronousTestCase):
    """Requests without a cookie branch are matched by the RFC 2543 rules (§17.2.3)."""

    def setUp(self) -> None:
        self.h = Harness()

    def test_badbranch(self) -> None:
        """
        RFC 4475 ``badbranch`` (branch = the cookie alone) makes a transaction; its
        retransmission is matched and answered with the last response.
        """
        self.h.receive(parsed_request(torture("badbranch")))
        self.assertEqual(len(self.h.tu.requests), 1)
        txn = self.h.tu.transactions[0]
        self.assertIsInstance(txn, NonInviteServerTransaction)
        self.h.receive(parsed_request(torture("badbranch")))
        self.assertEqual(len(self.h.tu.requests), 1)
        self.assertEqual(self.h.layer.absorbed, 1)
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.h.receive(parsed_request(torture("badbranch")))
        self.assertEqual(self.h.send.statuses, [200, 200])

    def test_badbranch_not_matched_on_branch(self) -> None:
        """Another request with the same cookie-only branch is not a retransmission."""
        self.h.receive(parsed_request(torture("badbranch")))
        other = torture("badbranch").replace(b"Call-ID: badbranch.", b"Call-ID: other.")
        self.h.receive(parsed_request(other))
        self.assertEqual(len(self.h.tu.requests), 2)

    def test_inv2543_and_its_ack(self) -> None:
        """
        RFC 4475 ``inv2543`` (no branch, no From tag): retransmissions are absorbed;
        the ACK matches when its To tag is the tag of the response sent.
        """
        self.h.receive(parsed_request(torture("inv2543")))
        txn = self.h.tu.transactions[0]
        self.assertIsInstance(txn, InviteServerTransaction)
        self.h.receive(parsed_request(torture("inv2543")))
        self.assertEqual(len(self.h.tu.requests), 1)
        txn.respond(make_response(txn.request, 486, to_tag="busy"))
        wrong = self._ack("other")
        self.h.receive(wrong)
        self.assertEqual(self.h.tu.acks, [(wrong, UDP)])
        self.assertIs(txn.state, S.COMPLETED)
        self.h.receive(self._ack("busy"))
        self.assertIs(txn.state, S.CONFIRMED)
        self.assertEqual(len(self.h.tu.acks), 1)

    def _ack(self, to_tag: str) -> Request:
        head = torture("inv2543").split(b"\r\n\r\n")[0]
        lines = [
            line
            for line in head.split(b"\r\n")
            if not line.startswith((b"Content-Type", b"Record-Route"))
        ]
        text = b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"
        text = text.replace(b"INVITE sip:", b"ACK sip:").replace(b"56 INVITE", b"56 ACK")
        text = text.replace(
            b";user=phone\r\nCall-ID", b";user=phone;tag=" + to_tag.encode() + b"\r\nCall-ID"
        )
        return parsed_request(text)

    def test_reinvite_ack(self) -> None:
        """An ACK to a re-INVITE, whose To tag was in the INVITE already, matches."""
        invite = make_request("INVITE", branch=None, to_tag="dlg", cseq=7)
        self.h.receive(invite)
        txn = self.h.tu.transactions[0]
        txn.respond(make_response(invite, 488))
        self.h.receive(make_request("ACK", branch=None, to_tag="dlg", cseq=7))
        self.assertIs(txn.state, S.CONFIRMED)

    def test_fields_that_tell_apart(self) -> None:
        """A different CSeq, Call-ID, From tag or top Via makes a new transaction."""
        base = make_request("OPTIONS", branch=None).to_bytes()
        variants = [
            base,
            base.replace(b"CSeq: 1", b"CSeq: 2"),
            base.replace(b"Call-ID: call-1", b"Call-ID: call-2"),
            base.replace(b"tag=from1", b"tag=from2"),
            base.replace(b"192.0.2.10:5060", b"192.0.2.10:5062"),
            base.replace(b"OPTIONS sip:bob@", b"OPTIONS sip:carol@"),
        ]
        for data in variants + variants:
            self.h.receive(parsed_request(data))
        self.assertEqual(len(self.h.tu.requests), len(variants))
        self.assertEqual(self.h.layer.absorbed, len(variants))

    def test_missing_headers(self) -> None:
        """Without a cookie branch, a request missing From raises SipParseError."""
        data = make_request("OPTIONS", branch=None).to_bytes()
        request = parsed_request(
            b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"From"))
        )
        self.assertRaises(SipParseError, self.h.layer.receive, request, UDP)
        self.assertEqual(len(self.h.layer), 0)


class NoLeakTests(SynchronousTestCase):
    """Terminated transactions are forgotten and leave no timers."""

    def test_many_transactions(self) -> None:
        """
        After hundreds of transactions of every kind and outcome have run and the
        clock has passed every timer, the layer holds nothing.
        """
        h = Harness()
        user = RecordingUser()
        for i in range(50):
            b = f"z9hG4bK{i}"
            flow = UDP if i % 2 else TCP
            # server: INVITE rejected and ACKed, INVITE rejected never ACKed,
            # INVITE accepted, OPTIONS answered, CANCEL answered.
            for suffix, status, ack in (("r", 486, True), ("n", 486, False), ("a", 200, False)):
                invite = make_request("INVITE", branch=b + suffix)
                h.receive(invite, flow)
                h.tu.transactions[-1].respond(make_response(invite, status, to_tag="t"))
                if ack:
                    h.receive(make_request("ACK", branch=b + suffix, to_tag="t"), flow)
            for method in ("OPTIONS", "CANCEL"):
                h.receive(make_request(method, branch=b + "o"), flow)
                h.tu.transactions[-1].respond(make_response(h.tu.requests[-1][1], 200))
            # client: INVITE rejected, INVITE accepted, OPTIONS answered, BYE unanswered.
            for suffix, method, status in (
                ("x", "INVITE", 486),
                ("y", "INVITE", 200),
                ("z", "OPTIONS", 200),
            ):
                request = make_request(method, branch=b + suffix + "c")
                h.layer.send_request(request, flow, user)
                h.receive(reply(request, 180), flow)
                h.receive(reply(request, status), flow)
            h.layer.send_request(make_request("BYE", branch=b + "lost"), flow, user)
            h.clock.advance(0.3)
        self.assertGreater(len(h.layer), 0)
        h.clock.advance(64)
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(len(user.timeouts), 50)
        self.assertEqual(len(h.tu.requests), 250)
