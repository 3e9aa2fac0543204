"""
Tests for the client transactions (RFC 3261 §17.1, RFC 6026 §7.2).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.transaction_fakes import (
    EPSILON,
    TCP,
    UDP,
    Harness,
    RecordingUser,
    make_request,
    reply,
)
from warden.sip.flow import Flow
from warden.sip.message import Request
from warden.sip.timers import TimerSettings
from warden.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    TransactionState,
)

S = TransactionState


class ClientTestCase(SynchronousTestCase):
    """Shared set-up: a harness and a recording client user."""

    def setUp(self) -> None:
        self.h = Harness()
        self.user = RecordingUser()

    def send(self, request: Request, flow: Flow = UDP) -> ClientTransaction:
        return self.h.layer.send_request(request, flow, self.user)

    def assert_gone(self, txn: ClientTransaction) -> None:
        """The transaction is terminated, forgotten, and left no timer behind."""
        self.assertIs(txn.state, S.TERMINATED)
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])


class InviteClientTests(ClientTestCase):
    """The INVITE client transaction (§17.1.1)."""

    def test_kind(self) -> None:
        """An INVITE gets an InviteClientTransaction in Calling, sent at once."""
        request = make_request("INVITE")
        txn = self.send(request)
        self.assertIsInstance(txn, InviteClientTransaction)
        self.assertIs(txn.state, S.CALLING)
        self.assertEqual(self.h.send.sent, [(0.0, request, UDP)])
        self.assertIs(txn.request, request)
        self.assertIs(txn.flow, UDP)

    def test_timer_a_doubles_until_timer_b(self) -> None:
        """
        Over UDP the INVITE goes out at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s
        (Timer A doubles without a cap), then Timer B at 64*T1 = 32 s times out.
        """
        request = make_request("INVITE")
        txn = self.send(request)
        counts = self.h.sends_between([0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertEqual(counts, [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)])
        self.assertTrue(all(message is request for message in self.h.send.messages))
        self.assertEqual(self.h.layer.retransmissions, 6)
        self.h.advance_to(32 - EPSILON)
        self.assertEqual(self.user.timeouts, [])
        self.h.advance_to(32 + EPSILON)
        self.assertEqual(self.user.timeouts, [txn])
        self.assertEqual(len(self.h.send.sent), 7)
        self.assert_gone(txn)

    def test_schedule_follows_t1(self) -> None:
        """Timers A and B derive from T1: with T1 = 1 s, sends at 0, 1, 3 and B at 64."""
        self.h = Harness(TimerSettings(t1=1.0))
        self.send(make_request("INVITE"))
        self.assertEqual(self.h.sends_between([1, 3]), [(1, 2), (2, 3)])
        self.h.advance_to(64 - EPSILON)
        self.assertEqual(self.user.timeouts, [])
        self.h.advance_to(64 + EPSILON)
        self.assertEqual(len(self.user.timeouts), 1)

    def test_reliable_no_retransmission(self) -> None:
        """Over TCP the INVITE is sent once; Timer B still times out at 32 s."""
        txn = self.send(make_request("INVITE"), TCP)
        self.h.advance_to(32 - EPSILON)
        self.assertEqual(len(self.h.send.sent), 1)
        self.assertEqual(self.user.timeouts, [])
        self.h.advance_to(32 + EPSILON)
        self.assertEqual(self.user.timeouts, [txn])
        self.assert_gone(txn)

    def test_provisional_stops_timers(self) -> None:
        """A 180 moves to Proceeding: no more retransmissions, no Timer B."""
        request = make_request("INVITE")
        txn = self.send(request)
        self.h.advance_to(0.6)
        self.h.receive(reply(request, 180))
        self.assertIs(txn.state, S.PROCEEDING)
        self.assertEqual(self.user.statuses, [180])
        self.h.advance_to(300)
        self.assertEqual(len(self.h.send.sent), 2)
        self.assertEqual(self.user.timeouts, [])
        self.h.receive(reply(request, 183))
        self.assertEqual(self.user.statuses, [180, 183])

    def test_non_2xx_acknowledged(self) -> None:
        """
        A 486 moves to Completed; the transaction sends the ACK of §17.1.1.3
        (Request-URI, top Via, From, Call-ID and CSeq number of the INVITE, To of
        the response, the INVITE's Route headers) and passes the 486 up once.
        """
        request = make_request(
            "INVITE",
            extra=(("Route", "<sip:p1.example.com;lr>"), ("Route", "<sip:p2.example.com;lr>")),
        )
        txn = self.send(request)
        response = reply(request, 486, to_tag="busy")
        self.h.receive(response)
        self.assertIs(txn.state, S.COMPLETED)
        self.assertEqual(self.user.statuses, [486])
        ack = self.h.send.last
        assert isinstance(ack, Request)
        assert isinstance(txn, InviteClientTransaction)
        self.assertIs(txn.ack, ack)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.uri_text, request.uri_text)
        self.assertEqual(ack.get_all("Via"), [request.get_all("Via")[0]])
        self.assertEqual(ack.top_via.branch, "z9hG4bKtest1")
        self.assertEqual(ack.get("From"), request.get("From"))
        self.assertEqual(ack.get("To"), response.get("To"))
        self.assertEqual(ack.to.tag, "busy")
        self.assertEqual(ack.call_id, request.call_id)
        self.assertEqual(str(ack.cseq), "1 ACK")
        self.assertEqual(ack.get_all("Route"), request.get_all("Route"))
        self.assertEqual(ack.body, b"")

    def test_retransmitted_final_acknowledged_again(self) -> None:
        """Each retransmitted 486 gets the ACK again, and is absorbed."""
        request = make_request("INVITE")
        txn = self.send(request)
        self.h.receive(reply(request, 486))
        assert isinstance(txn, InviteClientTransaction)
        self.h.receive(reply(request, 486))
        self.h.receive(reply(request, 486))
        self.assertEqual(self.h.send.messages[1:], [txn.ack, txn.ack, txn.ack])
        self.assertEqual(self.user.statuses, [486])
        self.assertEqual(self.h.layer.absorbed, 2)

    def test_timer_d(self) -> None:
        """Completed lasts Timer D (32 s over UDP), then the transaction is gone."""
        request = make_request("INVITE")
        txn = self.send(request)
        self.h.advance_to(1)
        self.h.receive(reply(request, 404))
        self.h.advance_to(33 - EPSILON)
        self.assertIs(txn.state, S.COMPLETED)
        self.h.advance_to(33 + EPSILON)
        self.assert_gone(txn)
        self.assertEqual(self.user.timeouts, [])

    def test_reliable_non_2xx_terminates_at_once(self) -> None:
        """Over TCP Timer D is zero: the ACK is sent and the transaction ends."""
        request = make_request("INVITE")
        txn = self.send(request, TCP)
        self.h.receive(reply(request, 603), TCP)
        self.assertEqual(self.h.send.last.start_line(), "ACK sip:bob@example.com SIP/2.0")
        self.assertEqual(self.user.statuses, [603])
        self.assert_gone(txn)

    def test_2xx_accepted(self) -> None:
        """
        A 200 moves to Accepted (RFC 6026): every 2xx is passed up (the TU ACKs
        each), nothing is retransmitted, and the transaction waits Timer M.
        """
        request = make_request("INVITE")
        txn = self.send(request)
        self.h.advance_to(1)
        self.h.receive(reply(request, 200, to_tag="fork1"))
        self.assertIs(txn.state, S.ACCEPTED)
        self.h.receive(reply(request, 200, to_tag="fork1"))
        self.h.receive(reply(request, 200, to_tag="fork2"))
        self.assertEqual([r.to.tag for r in self.user.responses], ["fork1", "fork1", "fork2"])
        self.h.receive(reply(request, 486))
        self.assertEqual(len(self.user.responses), 3)
        self.assertEqual(len(self.h.send.sent), 2)  # the INVITE and its one retransmission
        self.h.advance_to(33 - EPSILON)
        self.assertIs(txn.state, S.ACCEPTED)
        self.h.advance_to(33 + EPSILON)
        self.assert_gone(txn)
        self.assertEqual(self.user.timeouts, [])

    def test_2xx_after_timer_m_is_stray(self) -> None:
        """Once Timer M has fired, a 2xx matches nothing and goes to the TU as stray."""
        request = make_request("INVITE")
        self.send(request, TCP)
        self.h.receive(reply(request, 200))
        self.h.advance_to(32 + EPSILON)
        late = reply(request, 200)
        self.h.receive(late)
        self.assertEqual(self.h.tu.strays, [(late, UDP)])
        self.assertEqual(len(self.user.responses), 1)

    def test_cancel_response_does_not_match_invite(self) -> None:
        """A response with the INVITE's branch but CSeq method CANCEL is not the INVITE's."""
        request = make_request("INVITE")
        txn = self.send(request)
        response = reply(make_request("CANCEL"), 200)
        self.h.receive(response)
        self.assertIs(txn.state, S.CALLING)
        self.assertEqual(self.user.responses, [])
        self.assertEqual(self.h.tu.strays, [(response, UDP)])

    def test_send_failure(self) -> None:
        """When the first send fails the user hears transport_failed; nothing is left."""
        self.h.send.fail = True
        txn = self.send(make_request("INVITE"))
        self.assertEqual(self.user.failures, [txn])
        self.assert_gone(txn)

    def test_retransmission_failure(self) -> None:
        """A failed retransmission ends the transaction, reported once."""
        txn = self.send(make_request("INVITE"))
        self.h.send.fail = True
        self.h.advance_to(0.5 + EPSILON)
        self.assertEqual(self.user.failures, [txn])
        self.assert_gone(txn)
        self.assertEqual(self.user.timeouts, [])

    def test_ack_failure(self) -> None:
        """When the ACK cannot be sent, the user hears transport_failed only."""
        request = make_request("INVITE")
        txn = self.send(request)
        self.h.send.fail = True
        self.h.receive(reply(request, 486))
        self.assertEqual(self.user.failures, [txn])
        self.assertEqual(self.user.responses, [])
        self.assert_gone(txn)


class NonInviteClientTests(ClientTestCase):
    """The non-INVITE client transaction (§17.1.2)."""

    def test_kind(self) -> None:
        """A non-INVITE request gets a NonInviteClientTransaction in Trying."""
        txn = self.send(make_request("OPTIONS"))
        self.assertIsInstance(txn, NonInviteClientTransaction)
        self.assertIs(txn.state, S.TRYING)
        self.assertEqual(len(self.h.send.sent), 1)

    def test_timer_e_caps_at_t2_until_timer_f(self) -> None:
        """
        Over UDP the request goes out at 0, 0.5, 1.5, 3.5, 7.5 and then every
        T2 = 4 s (11.5 ... 31.5); Timer F at 32 s times out.
        """
        request = make_request("REGISTER")
        txn = self.send(request)
        deadlines = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        counts = self.h.sends_between(deadlines)
        self.assertEqual(counts, [(n, n + 1) for n in range(1, 11)])
        self.assertEqual(self.h.layer.retransmissions, 10)
        self.h.advance_to(32 - EPSILON)
        self.assertEqual(self.user.timeouts, [])
        self.h.advance_to(32 + EPSILON)
        self.assertEqual(self.user.timeouts, [txn])
        self.assertEqual(len(self.h.send.sent), 11)
        self.assert_gone(txn)

    def test_proceeding_uses_t2(self) -> None:
        """
        After a provisional response Timer E is reset to T2 each time it fires:
        the pending retransmission at 0.5 s, then 4.5, 8.5 ... 28.5; F at 32.
        """
        request = make_request("OPTIONS")
        txn = self.send(request)
        self.h.advance_to(0.1)
        self.h.receive(reply(request, 100))
        self.assertIs(txn.state, S.PROCEEDING)
        self.assertEqual(self.user.statuses, [100])
        deadlines = [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
        counts = self.h.sends_between(deadlines)
        self.assertEqual(counts, [(n, n + 1) for n in range(1, 9)])
        self.h.advance_to(32 - EPSILON)
        self.assertEqual(len(self.h.send.sent), 9)
        self.assertEqual(self.user.timeouts, [])
        self.h.advance_to(32 + EPSILON)
        self.assertEqual(self.user.timeouts, [txn])

    def test_final_then_timer_k(self) -> None:
        """
        A final response moves to Completed: retransmissions stop, repeated finals
        are absorbed, and Timer K (T4 = 5 s) ends the transaction.
        """
        request = make_request("BYE")
        txn = self.send(request)
        self.h.advance_to(1)
        self.h.receive(reply(request, 200))
        self.assertIs(txn.state, S.COMPLETED)
        self.h.receive(reply(request, 200))
        self.assertEqual(self.user.statuses, [200])
        self.assertEqual(self.h.layer.absorbed, 1)
        self.h.advance_to(6 - EPSILON)
        self.assertIs(txn.state, S.COMPLETED)
        self.assertEqual(len(self.h.send.sent), 2)
        self.h.advance_to(6 + EPSILON)
        self.assert_gone(txn)
        self.assertEqual(self.user.timeouts, [])

    def test_reliable(self) -> None:
        """Over TCP: no retransmission, and a final response ends the transaction at once."""
        request = make_request("OPTIONS")
        txn = self.send(request, TCP)
        self.h.advance_to(31)
        self.assertEqual(len(self.h.send.sent), 1)
        self.h.receive(reply(request, 200), TCP)
        self.assertEqual(self.user.statuses, [200])
        self.assert_gone(txn)

    def test_reliable_timer_f(self) -> None:
        """Over TCP Timer F still times the request out at 32 s."""
        txn = self.send(make_request("OPTIONS"), TCP)
        self.h.advance_to(32 + EPSILON)
        self.assertEqual(self.user.timeouts, [txn])
        self.assertEqual(len(self.h.send.sent), 1)

    def test_send_failure(self) -> None:
        """A send failure reports transport_failed and leaves nothing behind."""
        self.h.send.fail = True
        txn = self.send(make_request("OPTIONS"))
        self.assertEqual(self.user.failures, [txn])
        self.assert_gone(txn)

    def test_cancel_is_its_own_transaction(self) -> None:
        """A CANCEL with the INVITE's branch is a separate client transaction (§9.1)."""
        invite = make_request("INVITE")
        invite_txn = self.send(invite)
        cancel_txn = self.send(make_request("CANCEL"))
        self.assertIsInstance(cancel_txn, NonInviteClientTransaction)
        self.assertEqual(len(self.h.layer), 2)
        self.h.receive(reply(make_request("CANCEL"), 200))
        self.h.receive(reply(invite, 487))
        self.assertIs(cancel_txn.state, S.COMPLETED)
        self.assertIs(invite_txn.state, S.COMPLETED)
        self.assertEqual(self.user.statuses, [200, 487])


class SendRequestTests(ClientTestCase):
    """What send_request refuses."""

    def test_ack_refused(self) -> None:
        """An ACK is never sent in a client transaction (§17.1)."""
        self.assertRaises(ValueError, self.send, make_request("ACK"))
        self.assertEqual(self.h.send.sent, [])

    def test_branch_without_cookie_refused(self) -> None:
        """A request needs a magic-cookie branch; the cookie alone is not enough."""
        for branch in (None, "abc123", "z9hG4bK"):
            self.assertRaises(ValueError, self.send, make_request("OPTIONS", branch=branch))
        self.assertEqual(len(self.h.layer), 0)

    def test_duplicate_branch_refused(self) -> None:
        """Two live transactions cannot share a branch and method."""
        self.send(make_request("OPTIONS"))
        self.assertRaises(ValueError, self.send, make_request("OPTIONS"))
        self.assertEqual(len(self.h.layer), 1)

    def test_new_branch_usable(self) -> None:
        """new_branch gives cookie branches that differ each time and are accepted."""
        branches = {self.h.layer.new_branch() for _ in range(100)}
        self.assertEqual(len(branches), 100)
        for branch in list(branches)[:3]:
            self.assertTrue(branch.startswith("z9hG4bK"))
            self.send(make_request("OPTIONS", branch=branch))
        self.assertEqual(len(self.h.layer), 3)


class FlowFailedTests(ClientTestCase):
    """A stream connection that fails fails its unanswered requests at once (§17.1.4)."""

    def test_unanswered_requests_fail(self) -> None:
        """
        Requests on the failed TCP flow with no response yet fail (no timer
        runs); one already answered provisionally, one over UDP and one to
        another address are left to their timers.
        """
        tls = Flow("tls", "192.0.2.10", 5061, connection=object())
        invite = self.send(make_request("INVITE", branch="z9hG4bKa"), TCP)
        register = self.send(make_request("REGISTER", branch="z9hG4bKb"), TCP)
        ringing = self.send(make_request("INVITE", branch="z9hG4bKc"), TCP)
        self.h.receive(reply(ringing.request, 180), TCP)
        udp = self.send(make_request("INVITE", branch="z9hG4bKd"), UDP)
        other = self.send(make_request("INVITE", branch="z9hG4bKe"), tls)
        self.assertEqual(self.h.layer.flow_failed("192.0.2.10", 5060), 2)
        self.assertEqual(self.user.failures, [invite, register])
        self.assertEqual(self.user.timeouts, [])
        for txn in (invite, register):
            self.assertIs(txn.state, S.TERMINATED)
        self.assertIs(ringing.state, S.PROCEEDING)
        self.assertIs(udp.state, S.CALLING)
        self.assertIs(other.state, S.CALLING)
        self.assertEqual(len(self.h.layer), 3)
