"""Tests for qualify (warden.sip.qualify): OPTIONS keep-alives and reachability."""

from __future__ import annotations

import attrs
from twisted.internet.defer import fail

from tests.sip.test_b2bua import BOB, BOB2, CallTestCase, only
from warden.errors import StoreError
from warden.sip import qualify
from warden.testing.callstack import Phone


class QualifyTests(CallTestCase):
    """1002 has qualify on; its phones are pinged every 30 s."""

    def setUp(self) -> None:
        super().setUp()
        ext = self.stack.successResultOf_(self.stack.directory.get_extension("1002"))
        self.stack.successResultOf_(
            self.stack.directory.update_extension(attrs.evolve(ext, qualify=True))
        )

    def ping(self) -> list:
        """Run one qualify round; return what was sent."""
        mark = self.stack.mark()
        self.stack.qualifier.run_once()
        return self.stack.sent_since(mark)

    def test_options_sent_and_answered(self) -> None:
        """An OPTIONS goes to the binding's address; an answer keeps it reachable."""
        options = only(self.ping(), BOB, "OPTIONS")
        self.assertEqual(options.uri_text, f"sip:1002@{BOB[0]}:{BOB[1]}")
        self.stack.deliver(self.bob.answer(options, 200), BOB)  # type: ignore[arg-type]
        (health,) = self.stack.qualifier.health.values()
        self.assertTrue(health.reachable)
        self.assertEqual(health.rtt, 0.0)

    def test_not_qualified_not_pinged(self) -> None:
        """Extensions without qualify get no OPTIONS."""
        self.stack.register("1003", ("192.0.2.30", 5060))
        sent = self.ping()
        self.assertEqual([a for _, a in sent if a != BOB], [])

    def test_one_ping_in_flight(self) -> None:
        """A second round while an OPTIONS is unanswered sends nothing new."""
        self.ping()
        self.assertEqual(self.ping(), [])

    def test_silent_binding_skipped_when_ringing(self) -> None:
        """A binding that times out is unreachable: calls ring only the other one."""
        self.stack.register("1002", BOB2)
        sent = self.ping()
        bob2 = Phone(self.stack, "1002", BOB2)
        self.stack.deliver(bob2.answer(only(sent, BOB2, "OPTIONS"), 200), BOB2)  # type: ignore[arg-type]
        self.stack.clock.advance(32.1)  # Timer F for BOB's OPTIONS
        self.assertFalse(self.stack.qualifier.is_reachable(self.binding(BOB)))
        _, sent = self.alice.call("1002")
        only(sent, BOB2, "INVITE")
        self.assertEqual([m for m, a in sent if a == BOB], [])

    def test_back_when_it_answers(self) -> None:
        """An unreachable binding that answers again is reachable again."""
        self.ping()
        self.stack.clock.advance(32.1)
        self.assertFalse(self.stack.qualifier.is_reachable(self.binding(BOB)))
        options = only(self.ping(), BOB, "OPTIONS")
        self.stack.deliver(self.bob.answer(options, 404), BOB)  # type: ignore[arg-type]
        self.assertTrue(self.stack.qualifier.is_reachable(self.binding(BOB)))

    def test_only_binding_unreachable_gives_480(self) -> None:
        """With its only phone unreachable, 1002 is unavailable (480)."""
        self.ping()
        self.stack.clock.advance(32.1)
        _, sent = self.alice.call("1002")
        only(sent, self.alice.address, 480)

    def count_reads(self) -> dict[str, int]:
        """Count the location's bulk and per-extension reads from now on."""
        counts = {"all_bindings": 0, "bindings_for": 0}
        location = self.stack.location
        for name in counts:
            real = getattr(location, name)

            def counted(*args, _real=real, _name=name):  # type: ignore[no-untyped-def]
                counts[_name] += 1
                return _real(*args)

            self.patch(location, name, counted)
        return counts

    def test_reads_only_qualified_extensions(self) -> None:
        """A round reads the bindings of the qualified extensions, not every binding."""
        self.stack.register("1003", ("192.0.2.30", 5060))
        counts = self.count_reads()
        only(self.ping(), BOB, "OPTIONS")
        self.assertEqual(counts, {"all_bindings": 0, "bindings_for": 1})

    def test_no_qualified_extension_reads_nothing(self) -> None:
        """With qualify off everywhere a round reads no binding at all."""
        ext = self.stack.successResultOf_(self.stack.directory.get_extension("1002"))
        self.stack.successResultOf_(
            self.stack.directory.update_extension(attrs.evolve(ext, qualify=False))
        )
        counts = self.count_reads()
        self.assertEqual(self.ping(), [])
        self.assertEqual(counts, {"all_bindings": 0, "bindings_for": 0})

    def test_many_qualified_extensions_read_in_bulk(self) -> None:
        """Past BULK_READ qualified extensions, one read of every binding; only
        the qualified extensions' bindings are pinged."""
        self.patch(qualify, "BULK_READ", 0)
        self.stack.register("1003", ("192.0.2.30", 5060))
        counts = self.count_reads()
        only(self.ping(), BOB, "OPTIONS")
        self.assertEqual(counts, {"all_bindings": 1, "bindings_for": 0})

    def test_failed_read_keeps_the_rounds_going(self) -> None:
        """A round whose read fails is logged; the next round pings as usual."""
        location = self.stack.location
        real = location.bindings_for
        down = [True]

        def bindings_for(aor, now):  # type: ignore[no-untyped-def]
            return fail(StoreError("down")) if down[0] else real(aor, now)

        self.patch(location, "bindings_for", bindings_for)
        self.stack.qualifier.start()
        self.addCleanup(self.stack.qualifier.stop)
        mark = self.stack.mark()
        self.stack.clock.advance(30)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        self.assertEqual(self.stack.sent_since(mark), [])
        down[0] = False
        self.stack.clock.advance(30)
        only(self.stack.sent_since(mark), BOB, "OPTIONS")

    def binding(self, address: tuple[str, int]):  # type: ignore[no-untyped-def]
        """The binding of 1002 at ``address``."""
        found = self.stack.successResultOf_(
            self.stack.location.bindings_for("1002", self.stack.clock.seconds())
        )
        return next(b for b in found if b.received == f"udp:{address[0]}:{address[1]}")
