"""Ended calls leave no reference cycles: their objects are freed by reference
counting as soon as the call is over, not by the cyclic collector later."""

from __future__ import annotations

import gc
import weakref
from collections import Counter
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from tests.sip.test_registrar import register
from tests.sip.transaction_fakes import make_request
from warden.sip.b2bua import _BranchUser
from warden.sip.message import make_response
from warden.testing.callstack import Phone


class NoCyclesTests(CallTestCase):
    """Each scenario runs twice to warm up, then five times with the collector off;
    the collector must then find no Warden object unreachable."""

    def assertNoCycles(self, scenario: Callable[[], None]) -> None:
        scenario()
        scenario()
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        gc.set_debug(gc.DEBUG_SAVEALL)
        self.addCleanup(gc.set_debug, 0)
        try:
            for _ in range(5):
                scenario()
            gc.collect()
            garbage = Counter(
                type(o).__qualname__
                for o in gc.garbage
                if type(o).__module__.startswith("warden.")
            )
        finally:
            gc.garbage.clear()
        self.assertEqual(garbage, Counter())

    def phones(self) -> None:
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)

    def test_answered_call(self) -> None:
        """INVITE (challenged), answer, ACK, BYE."""

        def call() -> None:
            self.phones()
            invite, _, alice_ok, _ = self.answer()
            sent = self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, True), ALICE)
            bob_bye = only(sent, BOB, "BYE")
            self.stack.deliver(self.bob.answer(bob_bye, 200), BOB)  # type: ignore[arg-type]
            self.stack.clock.advance(40)

        self.assertNoCycles(call)

    def test_busy(self) -> None:
        """The callee answers 486."""

        def call() -> None:
            self.phones()
            _, bob_invite = self.ring()
            self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)
            self.stack.clock.advance(40)

        self.assertNoCycles(call)

    def test_challenged_registration(self) -> None:
        """A REGISTER without credentials, answered 401 at once (the registrar
        raises the challenge): the error's traceback is dropped once answered."""
        cseq = iter(range(1, 100))

        def challenged() -> None:
            sent = self.stack.deliver(register(cseq=next(cseq)), ALICE)
            only(sent, (ALICE[0], 5062), 401)  # to the Via's port (no rport)
            self.stack.clock.advance(40)

        self.assertNoCycles(challenged)

    def test_refused(self) -> None:
        """An unknown number: the error's traceback is dropped once answered."""

        def call() -> None:
            self.phones()
            self.alice.call("9999")
            self.stack.clock.advance(40)

        self.assertNoCycles(call)

    def test_ring_timeout(self) -> None:
        """Nobody answers until the ring timer fires."""

        def call() -> None:
            self.phones()
            self.ring()
            for _ in range(70):
                self.stack.clock.advance(1)

        self.assertNoCycles(call)


class EndedCallReleasedTests(CallTestCase):
    """
    An ended call is freed at once, although its INVITE transactions wait out
    Accepted (RFC 6026: Timers L and M, 32 s) for a late 2xx: what waits no
    longer holds the call (a busy PBX otherwise kept every call of the last
    32 s, for the cyclic collector to walk).
    """

    def test_call_freed_while_transactions_linger(self) -> None:
        invite, _, alice_ok, _ = self.answer()
        (call,) = self.stack.calls.calls.values()
        gone = weakref.ref(call)
        del call
        sent = self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, True), ALICE)
        bob_bye = only(sent, BOB, "BYE")
        self.stack.deliver(self.bob.answer(bob_bye, 200), BOB)  # type: ignore[arg-type]
        self.assertGreater(len(self.stack.transactions), 0)  # Accepted, Completed
        self.assertIsNone(gone())
        self.stack.clock.advance(40)
        self.assertEqual(len(self.stack.transactions), 0)


class EndedBranchUserTests(SynchronousTestCase):
    """What a fork's transaction still does for a call that ended."""

    def setUp(self) -> None:
        self.acked: list[tuple[object, object]] = []
        self.branch = object()
        acked = self.acked

        class Controller:
            def ack_and_bye(self, branch: object, response: object) -> None:
                acked.append((branch, response))

        self.controller = Controller()

    def user(self, winner: bool) -> _BranchUser:
        user = _BranchUser(None, self.branch)  # type: ignore[arg-type]
        user.call_ended(self.controller, winner)  # type: ignore[arg-type]
        return user

    def test_losing_fork_late_2xx_acked_and_hung_up(self) -> None:
        """A late 2xx of a fork that lost is acknowledged and hung up."""
        ok = make_response(make_request("INVITE"), 200, to_tag="t")
        self.user(winner=False).response_received(None, ok)  # type: ignore[arg-type]
        self.assertEqual(self.acked, [(self.branch, ok)])

    def test_winner_and_failures_ignored(self) -> None:
        """The winner's 2xx, other responses, time-outs and transport failures do nothing."""
        ok = make_response(make_request("INVITE"), 200, to_tag="t")
        busy = make_response(make_request("INVITE"), 486, to_tag="t")
        self.user(winner=True).response_received(None, ok)  # type: ignore[arg-type]
        loser = self.user(winner=False)
        loser.response_received(None, busy)  # type: ignore[arg-type]
        loser.timed_out(None)  # type: ignore[arg-type]
        loser.transport_failed(None)  # type: ignore[arg-type]
        self.assertEqual(self.acked, [])
