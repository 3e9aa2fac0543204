"""
Tests for the server transactions (RFC 3261 §17.2, RFC 6026 §7.1).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.transaction_fakes import EPSILON, TCP, UDP, Harness, make_request
from warden.sip import transaction as transaction_module
from warden.sip.flow import Flow
from warden.sip.message import Request, make_response
from warden.sip.timers import TimerSettings
from warden.sip.transaction import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    TransactionLayer,
    TransactionState,
)

S = TransactionState


class ServerTestCase(SynchronousTestCase):
    """Shared set-up: a harness, and a way to receive a request."""

    def setUp(self) -> None:
        self.h = Harness()

    def arrive(self, request: Request, flow: Flow = UDP) -> ServerTransaction:
        """Receive ``request``; return the server transaction the TU was given."""
        self.h.receive(request, flow)
        return self.h.tu.transactions[-1]

    def statuses(self) -> list[int]:
        """Status codes of the responses sent, in order."""
        return self.h.send.statuses

    def assert_gone(self, txn: ServerTransaction) -> None:
        """The transaction is terminated, forgotten, and left no timer behind."""
        self.assertIs(txn.state, S.TERMINATED)
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])


class NonInviteServerTests(ServerTestCase):
    """The non-INVITE server transaction (§17.2.2)."""

    def test_new_request(self) -> None:
        """A new request makes a NonInviteServerTransaction in Trying, given to the TU."""
        request = make_request("OPTIONS")
        txn = self.arrive(request)
        self.assertIsInstance(txn, NonInviteServerTransaction)
        self.assertIs(txn.state, S.TRYING)
        self.assertEqual(self.h.tu.requests, [(txn, request, UDP)])
        self.assertIs(txn.request, request)
        self.assertIs(txn.flow, UDP)
        self.assertEqual(len(self.h.layer), 1)

    def test_retransmission_in_trying_absorbed(self) -> None:
        """Before the TU answers, a retransmission is absorbed and nothing is sent."""
        txn = self.arrive(make_request("OPTIONS"))
        self.h.receive(make_request("OPTIONS"))
        self.assertEqual(len(self.h.tu.requests), 1)
        self.assertEqual(self.h.send.sent, [])
        self.assertEqual(self.h.layer.absorbed, 1)
        self.assertIs(txn.state, S.TRYING)
        # Non-INVITE: no 100; only the bound on the wait for the TU runs.
        calls = self.h.clock.getDelayedCalls()
        self.assertEqual(
            [call.getTime() for call in calls], [self.h.settings.server_limit_non_invite]
        )

    def test_retransmissions_get_last_response(self) -> None:
        """
        A retransmission is answered with the last response sent: the provisional
        one in Proceeding, the final one in Completed.
        """
        txn = self.arrive(make_request("REGISTER"))
        txn.respond(make_response(txn.request, 100))
        self.assertIs(txn.state, S.PROCEEDING)
        self.h.receive(make_request("REGISTER"))
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        # Completed is kept by the layer (AnswerEchoes): the transaction ends.
        self.assertIs(txn.state, S.TERMINATED)
        self.h.receive(make_request("REGISTER"))
        self.h.receive(make_request("REGISTER"))
        self.assertEqual(self.statuses(), [100, 100, 200, 200, 200])
        assert txn.last_response is not None
        self.assertEqual(self.h.send.last.to_bytes(), txn.last_response.to_bytes())
        self.assertEqual(self.h.layer.absorbed, 3)
        self.assertEqual(len(self.h.tu.requests), 1)
        self.assertTrue(all(flow == UDP for _, _, flow in self.h.send.sent))

    def test_timer_j(self) -> None:
        """Completed lasts Timer J (64*T1 = 32 s over UDP): until then a retransmission
        is answered again and counted as a live transaction, then it is gone."""
        txn = self.arrive(make_request("OPTIONS"))
        self.h.advance_to(2)
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.h.advance_to(34 - EPSILON)
        self.assertEqual(len(self.h.layer), 1)
        self.assertEqual(self.statuses(), [200])  # a final response is never retransmitted
        self.h.receive(make_request("OPTIONS"))
        self.assertEqual((self.statuses(), len(self.h.tu.requests)), ([200, 200], 1))
        self.h.advance_to(34 + EPSILON)
        self.assert_gone(txn)
        self.h.receive(make_request("OPTIONS"))  # now a new transaction
        self.assertEqual(len(self.h.tu.requests), 2)

    def test_reliable_terminates_at_once(self) -> None:
        """Over TCP Timer J is zero: the final response ends the transaction."""
        txn = self.arrive(make_request("OPTIONS"), TCP)
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.assertEqual(self.h.send.sent, [(0.0, txn.last_response, TCP)])
        self.assert_gone(txn)

    def test_synchronous_answer(self) -> None:
        """A TU may answer from inside request_received; the transaction completes."""
        self.h.tu.on_request = lambda txn: txn.respond(make_response(txn.request, 200, "OK", "t"))
        txn = self.arrive(make_request("OPTIONS"), TCP)
        self.assertEqual(self.statuses(), [200])
        self.assert_gone(txn)

    def test_second_final_dropped(self) -> None:
        """A second final response from the TU is not sent."""
        txn = self.arrive(make_request("OPTIONS"))
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        txn.respond(make_response(txn.request, 500, to_tag="t"))
        self.assertEqual(self.statuses(), [200])
        self.h.receive(make_request("OPTIONS"))
        self.assertEqual(self.statuses(), [200, 200])

    def test_respond_after_termination_dropped(self) -> None:
        """A TU that answers after the transaction ended sends nothing."""
        txn = self.arrive(make_request("OPTIONS"), TCP)
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.assertEqual(self.statuses(), [200])

    def test_send_failure(self) -> None:
        """When the response cannot be sent the transaction ends."""
        txn = self.arrive(make_request("OPTIONS"))
        self.h.send.fail = True
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.assert_gone(txn)


class InviteServerTests(ServerTestCase):
    """The INVITE server transaction (§17.2.1 with RFC 6026 §7.1)."""

    def test_new_invite(self) -> None:
        """An INVITE makes an InviteServerTransaction in Proceeding, given to the TU."""
        txn = self.arrive(make_request("INVITE"))
        self.assertIsInstance(txn, InviteServerTransaction)
        self.assertIs(txn.state, S.PROCEEDING)

    def test_automatic_trying(self) -> None:
        """
        With no answer from the TU within 200 ms the transaction sends 100 Trying
        (no To tag, Timestamp echoed, §8.2.6.1); a retransmitted INVITE gets it again.
        """
        txn = self.arrive(make_request("INVITE", extra=(("Timestamp", "54"),)))
        self.h.advance_to(0.2 - EPSILON)
        self.assertEqual(self.h.send.sent, [])
        self.h.advance_to(0.2 + EPSILON)
        self.assertEqual(self.statuses(), [100])
        trying = self.h.send.last
        self.assertIsNone(trying.to.tag)
        self.assertEqual(trying.get("Timestamp"), "54")
        self.assertEqual(trying.get("Via"), txn.request.get("Via"))
        self.h.receive(make_request("INVITE"))
        self.assertEqual(self.statuses(), [100, 100])
        self.assertEqual(len(self.h.tu.requests), 1)
        self.assertEqual(self.h.layer.absorbed, 1)

    def test_trying_delay_setting(self) -> None:
        """The 200 ms is TimerSettings.trying_delay."""
        self.h = Harness(TimerSettings(trying_delay=1.0))
        self.arrive(make_request("INVITE"))
        self.h.advance_to(1 - EPSILON)
        self.assertEqual(self.h.send.sent, [])
        self.h.advance_to(1 + EPSILON)
        self.assertEqual(self.statuses(), [100])

    def test_no_trying_when_tu_answers(self) -> None:
        """A TU that answers within 200 ms suppresses the automatic 100."""
        txn = self.arrive(make_request("INVITE"))
        self.h.advance_to(0.1)
        txn.respond(make_response(txn.request, 180, to_tag="t"))
        self.h.advance_to(10)
        self.assertEqual(self.statuses(), [180])
        self.h.receive(make_request("INVITE"))
        self.assertEqual(self.statuses(), [180, 180])

    def test_retransmission_before_any_response(self) -> None:
        """An INVITE retransmitted before anything was sent is absorbed silently."""
        self.arrive(make_request("INVITE"))
        self.h.receive(make_request("INVITE"))
        self.assertEqual(self.h.send.sent, [])
        self.assertEqual(self.h.layer.absorbed, 1)

    def test_timer_g_until_timer_h(self) -> None:
        """
        Over UDP a 486 is retransmitted at 0.5, 1.5, 3.5, 7.5 s and then every
        T2 = 4 s (Timer G) until Timer H (64*T1 = 32 s) gives up waiting for the ACK.
        """
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.assertIs(txn.state, S.COMPLETED)
        deadlines = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        counts = self.h.sends_between(deadlines)
        self.assertEqual(counts, [(n, n + 1) for n in range(1, 11)])
        self.assertEqual(self.statuses(), [486] * 11)
        self.assertEqual(self.h.layer.retransmissions, 10)
        self.h.advance_to(32 - EPSILON)
        self.assertIs(txn.state, S.COMPLETED)
        self.h.advance_to(32 + EPSILON)
        self.assert_gone(txn)
        self.assertEqual(len(self.h.send.sent), 11)

    def test_ack_confirms(self) -> None:
        """
        The ACK moves Completed to Confirmed: Timer G stops, further ACKs and
        INVITEs are absorbed, the TU never sees them, and Timer I (T4) ends it.
        """
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 404, to_tag="t"))
        self.h.advance_to(0.6)
        self.h.receive(make_request("ACK", to_tag="t"))
        self.assertIs(txn.state, S.CONFIRMED)
        self.h.receive(make_request("ACK", to_tag="t"))
        self.h.receive(make_request("INVITE"))
        self.assertEqual(self.h.layer.absorbed, 2)
        self.assertEqual(self.h.tu.acks, [])
        self.h.advance_to(5.6 - EPSILON)
        self.assertIs(txn.state, S.CONFIRMED)
        self.assertEqual(len(self.h.send.sent), 2)  # the 404 and one retransmission
        self.h.advance_to(5.6 + EPSILON)
        self.assert_gone(txn)

    def test_retransmitted_invite_in_completed(self) -> None:
        """In Completed a retransmitted INVITE gets the final response again."""
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 480, to_tag="t"))
        self.h.receive(make_request("INVITE"))
        self.assertEqual(self.statuses(), [480, 480])
        self.assertEqual(self.h.layer.retransmissions, 0)
        self.assertEqual(self.h.layer.absorbed, 1)

    def test_reliable_non_2xx(self) -> None:
        """Over TCP: no Timer G, and the ACK ends the transaction at once (Timer I = 0)."""
        txn = self.arrive(make_request("INVITE"), TCP)
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.h.advance_to(20)
        self.assertEqual(self.statuses(), [486])
        self.h.receive(make_request("ACK", to_tag="t"), TCP)
        self.assert_gone(txn)

    def test_reliable_timer_h(self) -> None:
        """Over TCP a missing ACK still ends the transaction with Timer H."""
        txn = self.arrive(make_request("INVITE"), TCP)
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.h.advance_to(32 - EPSILON)
        self.assertIs(txn.state, S.COMPLETED)
        self.h.advance_to(32 + EPSILON)
        self.assert_gone(txn)

    def test_2xx_accepted(self) -> None:
        """
        A 200 moves to Accepted (RFC 6026): retransmitted INVITEs are absorbed
        without a resend (the TU retransmits its 2xx through respond), and Timer L
        (64*T1) ends the transaction.
        """
        txn = self.arrive(make_request("INVITE"))
        ok = make_response(txn.request, 200, to_tag="t")
        txn.respond(ok)
        self.assertIs(txn.state, S.ACCEPTED)
        self.h.advance_to(0.5)
        self.h.receive(make_request("INVITE"))
        self.assertEqual(self.statuses(), [200])
        self.assertEqual(self.h.layer.absorbed, 1)
        txn.respond(ok)  # the TU's own retransmission (§13.3.1.4)
        self.assertEqual(self.statuses(), [200, 200])
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.assertEqual(self.statuses(), [200, 200])
        self.assertEqual(len(self.h.tu.requests), 1)
        self.h.advance_to(32 - EPSILON)
        self.assertIs(txn.state, S.ACCEPTED)
        self.h.advance_to(32 + EPSILON)
        self.assert_gone(txn)

    def test_ack_for_2xx_goes_to_tu(self) -> None:
        """The ACK for a 2xx (a new branch) matches no transaction: the TU gets it."""
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        ack = make_request("ACK", branch="z9hG4bKack2xx", to_tag="t")
        self.h.receive(ack)
        self.assertEqual(self.h.tu.acks, [(ack, UDP)])
        self.assertIs(txn.state, S.ACCEPTED)

    def test_ack_matching_accepted_goes_to_tu(self) -> None:
        """An ACK that does match an Accepted transaction is passed to the TU too."""
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        ack = make_request("ACK", to_tag="t")
        self.h.receive(ack)
        self.assertEqual(self.h.tu.acks, [(ack, UDP)])
        self.assertEqual(self.h.layer.absorbed, 0)

    def test_invite_after_timer_l_is_new(self) -> None:
        """Once Timer L has fired, the same INVITE starts a new transaction."""
        txn = self.arrive(make_request("INVITE"), TCP)
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.h.advance_to(32 + EPSILON)
        self.arrive(make_request("INVITE"), TCP)
        self.assertEqual(len(self.h.tu.requests), 2)

    def test_stray_ack(self) -> None:
        """An ACK that matches nothing goes to the TU as the ACK for a 2xx."""
        ack = make_request("ACK", to_tag="t")
        self.h.receive(ack)
        self.assertEqual(self.h.tu.acks, [(ack, UDP)])
        self.assertEqual(len(self.h.layer), 0)

    def test_ack_in_proceeding_absorbed(self) -> None:
        """An ACK before any final response changes nothing."""
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 180, to_tag="t"))
        self.h.receive(make_request("ACK", to_tag="t"))
        self.assertIs(txn.state, S.PROCEEDING)
        self.assertEqual(self.h.tu.acks, [])

    def test_send_failure(self) -> None:
        """A response that cannot be sent ends the transaction."""
        txn = self.arrive(make_request("INVITE"))
        self.h.send.fail = True
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.assert_gone(txn)

    def test_trying_failure(self) -> None:
        """An automatic 100 that cannot be sent ends the transaction."""
        txn = self.arrive(make_request("INVITE"))
        self.h.send.fail = True
        self.h.advance_to(1)
        self.assert_gone(txn)

    def test_timer_g_failure(self) -> None:
        """A retransmission by Timer G that cannot be sent ends the transaction."""
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.h.send.fail = True
        self.h.advance_to(0.5 + EPSILON)
        self.assert_gone(txn)

    def test_response_flow(self) -> None:
        """Responses go to the flow the request arrived on, even for a retransmission."""
        other = Flow("udp", "203.0.113.9", 5070)
        txn = self.arrive(make_request("INVITE"))
        txn.respond(make_response(txn.request, 180, to_tag="t"))
        self.h.receive(make_request("INVITE"), other)
        self.assertEqual([flow for _, _, flow in self.h.send.sent], [UDP, UDP])


class TransactionUserSilentTests(ServerTestCase):
    """Every server transaction ends even when its TU never answers."""

    def test_non_invite_forgotten_after_limit(self) -> None:
        """
        A non-INVITE request the TU never answers is forgotten exactly at
        Timer F + T4 (after its client gave up), leaving no timer behind.
        """
        txn = self.arrive(make_request("OPTIONS"))
        limit = self.h.settings.server_limit_non_invite
        self.assertEqual(limit, self.h.settings.timer_f + self.h.settings.t4)
        self.h.advance_to(limit - EPSILON)
        self.assertIs(txn.state, S.TRYING)
        self.h.advance_to(limit)
        self.assert_gone(txn)
        self.assertEqual(self.statuses(), [])

    def test_non_invite_proceeding_forgotten(self) -> None:
        """A TU that sent only a provisional response does not keep the transaction alive."""
        txn = self.arrive(make_request("REGISTER"))
        self.h.advance_to(1.0)
        txn.respond(make_response(txn.request, 100))
        self.h.advance_to(self.h.settings.server_limit_non_invite - EPSILON)
        self.assertIs(txn.state, S.PROCEEDING)
        self.h.advance_to(self.h.settings.server_limit_non_invite)
        self.assert_gone(txn)

    def test_answered_non_invite_keeps_timer_j(self) -> None:
        """A final response replaces the bound with Timer J, counted from the answer."""
        txn = self.arrive(make_request("OPTIONS"))
        self.h.advance_to(10.0)
        txn.respond(make_response(txn.request, 200))
        self.h.advance_to(10.0 + self.h.settings.timer_j(False) - EPSILON)
        self.assertEqual(len(self.h.layer), 1)
        self.h.advance_to(10.0 + self.h.settings.timer_j(False))
        self.assert_gone(txn)

    def test_invite_answered_500_at_timer_c(self) -> None:
        """
        An INVITE the TU never answers gets 100, then 500 exactly at Timer C, and
        ends after Timer H like any other non-2xx final response.
        """
        txn = self.arrive(make_request("INVITE"))
        timer_c = self.h.settings.timer_c
        self.h.advance_to(timer_c - EPSILON)
        self.assertEqual(self.statuses(), [100])
        self.assertIs(txn.state, S.PROCEEDING)
        self.h.advance_to(timer_c)
        self.assertEqual(self.statuses(), [100, 500])
        self.assertIs(txn.state, S.COMPLETED)
        self.h.advance_to(timer_c + self.h.settings.timer_h)
        self.assert_gone(txn)

    def test_answered_invite_has_no_timer_c(self) -> None:
        """A final response from the TU stops Timer C."""
        txn = self.arrive(make_request("INVITE"), TCP)
        txn.respond(make_response(txn.request, 486, to_tag="t"))
        self.h.advance_to(self.h.settings.timer_h)
        self.assert_gone(txn)
        self.assertEqual(self.statuses(), [486])

    def test_tu_that_raises(self) -> None:
        """A TU that raises still leaves a transaction that ends at its bound."""

        def explode(transaction: ServerTransaction) -> None:
            raise RuntimeError("a bug in the TU")

        self.h.tu.on_request = explode
        self.assertRaises(RuntimeError, self.h.receive, make_request("MESSAGE"))
        self.assertEqual(len(self.h.layer), 1)
        self.h.advance_to(self.h.settings.server_limit_non_invite)
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])


class TimerCTests(SynchronousTestCase):
    """Timer C is derived from TimerSettings and outlasts the configured ring time."""

    def test_default(self) -> None:
        """RFC 3261 §16.6 step 11: more than three minutes by default."""
        self.assertGreaterEqual(TimerSettings().timer_c, 180.0)

    def test_lasting_ring(self) -> None:
        """A ring longer than Timer C lengthens it by Timer B; a short one leaves it."""
        settings = TimerSettings()
        self.assertEqual(settings.lasting_ring(30.0).timer_c, settings.timer_c)
        long_ring = settings.lasting_ring(600.0)
        self.assertEqual(long_ring.timer_c, 600.0 + settings.timer_b)


class CancelTests(ServerTestCase):
    """CANCEL (§9.2): its own transaction, and the lookup of the INVITE it cancels."""

    def test_cancel_finds_invite(self) -> None:
        """A CANCEL with the INVITE's branch is a new transaction that finds the INVITE."""
        invite_txn = self.arrive(make_request("INVITE"))
        cancel = make_request("CANCEL")
        cancel_txn = self.arrive(cancel)
        self.assertIsInstance(cancel_txn, NonInviteServerTransaction)
        self.assertIsNot(cancel_txn, invite_txn)
        self.assertEqual(len(self.h.layer), 2)
        self.assertIs(self.h.layer.find_invite_server_transaction(cancel), invite_txn)
        cancel_txn.respond(make_response(cancel, 200, to_tag="t"))
        self.assertIs(invite_txn.state, S.PROCEEDING)
        self.h.receive(make_request("CANCEL"))
        self.assertEqual(self.statuses(), [200, 200])

    def test_cancel_for_unknown_invite(self) -> None:
        """A CANCEL whose branch matches no INVITE finds nothing."""
        self.arrive(make_request("INVITE"))
        cancel = make_request("CANCEL", branch="z9hG4bKother")
        self.assertIsNone(self.h.layer.find_invite_server_transaction(cancel))

    def test_cancel_does_not_find_non_invite(self) -> None:
        """Only INVITE server transactions are found."""
        self.arrive(make_request("OPTIONS"))
        self.assertIsNone(self.h.layer.find_invite_server_transaction(make_request("CANCEL")))

    def test_cancel_rfc2543(self) -> None:
        """Without a cookie branch the CANCEL is matched by the RFC 2543 fields."""
        invite_txn = self.arrive(make_request("INVITE", branch=None))
        cancel = make_request("CANCEL", branch=None)
        self.assertIs(self.h.layer.find_invite_server_transaction(cancel), invite_txn)
        other = make_request("CANCEL", branch=None, cseq=2)
        self.assertIsNone(self.h.layer.find_invite_server_transaction(other))


class EchoBytesTests(SynchronousTestCase):
    """
    With ``send_data``, a retransmission answered from a transaction's echo
    goes out as the stored bytes, without parsing them again.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.data: list[tuple[bytes, Flow]] = []
        self.fail = False

        def send_data(data: bytes, flow: Flow) -> None:
            if self.fail:
                raise ConnectionError("network unreachable")
            self.data.append((data, flow))

        self.h.layer = TransactionLayer(
            self.h.clock, self.h.settings, self.h.send, self.h.tu, send_data=send_data
        )

    def answered(self) -> bytes:
        """A REGISTER answered 200 (the transaction now an echo); the bytes sent."""
        self.h.receive(make_request("REGISTER"))
        txn = self.h.tu.transactions[-1]
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        return self.h.send.last.to_bytes()

    def test_stored_bytes_sent(self) -> None:
        """Each retransmission gets the final response's bytes, never parsed again."""
        sent = self.answered()
        self.patch(transaction_module, "parse_datagram", self.fail_parse)
        self.h.receive(make_request("REGISTER"))
        self.h.receive(make_request("REGISTER"))
        self.assertEqual(self.data, [(sent, UDP), (sent, UDP)])
        self.assertEqual(len(self.h.send.sent), 1)  # the first answer only
        self.assertEqual(self.h.layer.absorbed, 2)

    def test_failure_forgets_echo(self) -> None:
        """A send that fails ends the echo, as with ``send``: the next copy is new."""
        self.answered()
        self.fail = True
        self.h.receive(make_request("REGISTER"))
        self.assertEqual(self.data, [])
        self.fail = False
        self.h.receive(make_request("REGISTER"))
        self.assertEqual(len(self.h.tu.requests), 2)

    def fail_parse(self, data: bytes, size: int) -> object:
        raise AssertionError("the echo was parsed again")
