"""Ended calls leave no reference cycles: their objects are freed by reference
counting as soon as the call is over, not by the cyclic collector later."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from tests.sip.test_registrar import register
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
