"""
The 407 challenge to an INVITE is stateless (warden.sip.authenticator,
transaction_server, core): one spoofed INVITE gets one response, never a
response retransmitted until Timer H (RFC 3261 §17.2.1) towards its victim.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.sip.message import Response
from warden.sip.timers import TimerSettings
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.sipstack import REALM

VICTIM = ("192.0.2.11", 5060)


class StatelessChallengeTests(SynchronousTestCase):
    """An unauthenticated INVITE against the call stack."""

    def setUp(self) -> None:
        self.stack = CallStack()
        self.phone = Phone(self.stack, "1001", VICTIM)
        self.stack.register("1002", ("192.0.2.12", 5062))
        self.timer_h = TimerSettings().timer_h

    def test_one_407_and_nothing_after(self) -> None:
        """
        An INVITE without credentials gets exactly one datagram, the 407 (no 100
        Trying before it), keeps no transaction, and nothing more is sent up to
        and past Timer H although no ACK comes.
        """
        sent = self.stack.deliver(self.phone.invite("1002"), VICTIM)
        self.assertEqual([getattr(m, "status", None) for m, _ in sent], [407])
        self.assertEqual(len(self.stack.transactions), 0)
        mark = self.stack.mark()
        for _ in range(int(self.timer_h) + 2):
            self.stack.clock.advance(1.0)
        self.assertEqual(self.stack.sent_since(mark), [])

    def test_ack_for_the_407_absorbed_quietly(self) -> None:
        """The ACK for the stateless 407 gets no answer and logs no error."""
        invite = self.phone.invite("1002")
        ((challenge, _),) = self.stack.deliver(invite, VICTIM)
        assert isinstance(challenge, Response)
        self.assertEqual(self.stack.deliver(self.phone.ack_for(invite, challenge), VICTIM), [])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(len(self.stack.transactions), 0)

    def test_retransmitted_invite_challenged_again(self) -> None:
        """A retransmitted INVITE (the 407 was lost) gets one new 407 of its own."""
        invite = self.phone.invite("1002")
        ((first, _),) = self.stack.deliver(invite, VICTIM)
        ((second, _),) = self.stack.deliver(invite, VICTIM)
        assert isinstance(first, Response) and isinstance(second, Response)
        self.assertEqual((first.status, second.status), (407, 407))
        self.assertNotEqual(first.get("Proxy-Authenticate"), second.get("Proxy-Authenticate"))

    def test_blocked_source_answered_once(self) -> None:
        """A blocked source's INVITE gets one 403, not one retransmitted until Timer H."""
        for _ in range(self.stack.throttle.limit):
            self.stack.throttle.record_failure(VICTIM[0])
        sent = self.stack.deliver(self.phone.invite("1002"), VICTIM)
        self.assertEqual([getattr(m, "status", None) for m, _ in sent], [403])
        mark = self.stack.mark()
        self.stack.clock.advance(self.timer_h + 1)
        self.assertEqual(self.stack.sent_since(mark), [])

    def test_invalid_invite_answered_once(self) -> None:
        """
        An INVITE refused by the checks before authentication (here 420 for an
        unknown Require) gets one response and no retransmission either.
        """
        invite = self.phone.invite("1002")
        invite.add("Require", "no-such-extension")
        sent = self.stack.deliver(invite, VICTIM)
        self.assertEqual([getattr(m, "status", None) for m, _ in sent], [420])
        mark = self.stack.mark()
        self.stack.clock.advance(self.timer_h + 1)
        self.assertEqual(self.stack.sent_since(mark), [])
        self.assertEqual(len(self.stack.transactions), 0)

    def test_authenticated_invite_still_trying(self) -> None:
        """With valid credentials the INVITE gets its 100 Trying and rings the callee."""
        alice = make_extension("1001", "Alice", REALM, "pw1001")
        self.stack.successResultOf_(self.stack.directory.update_extension(alice))
        _, sent = self.phone.call("1002")
        statuses = [getattr(m, "status", None) for m, _ in sent]
        self.assertIn(100, statuses)
        self.assertIn("INVITE", [getattr(m, "method", None) for m, _ in sent])
