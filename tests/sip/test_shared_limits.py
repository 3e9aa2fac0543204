"""
Per-extension call limits counted across the nodes of a cluster: the call
controller asks its shared ICallCounters (the memory fake here, Redis in
production) besides its own counts, and gives the counts back when a call ends.
"""

from __future__ import annotations

from collections import Counter

import attrs

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from warden.testing.callstack import Phone
from warden.testing.counters import MemoryCallCounters


class SharedLimitTests(CallTestCase):
    """max_calls_per_extension = 1, with another node's calls in the counters."""

    max_calls = 1

    def setUp(self) -> None:
        super().setUp()
        self.shared: dict[str, Counter[str]] = {}
        self.counters = MemoryCallCounters("test", self.shared)
        self.other_node = MemoryCallCounters("other", self.shared)
        self.stack.calls.counters = self.counters

    def active(self, number: str) -> int:
        return self.stack.successResultOf_(self.counters.active(number))  # type: ignore[no-any-return]

    def test_busy_on_another_node(self) -> None:
        """A callee in a call on another node gets the caller 486, though idle here."""
        self.assertTrue(self.stack.successResultOf_(self.other_node.acquire(["1002", "1004"], 1)))
        _, sent = self.alice.call("1002")
        only(sent, ALICE, 486)
        self.assertEqual(self.active("1001"), 0)
        self.assertEqual(self.stack.media.sessions(), [])

    def test_counted_while_ringing_and_released(self) -> None:
        """A ringing call counts caller and callee; its end gives the counts back."""
        _, bob_invite = self.ring()
        self.assertEqual((self.active("1001"), self.active("1002")), (1, 1))
        carol = Phone(self.stack, "1003", ("192.0.2.14", 5060))
        _, sent = carol.call("1002")
        only(sent, ("192.0.2.14", 5060), 486)
        only(self.stack.deliver(self.bob.answer(bob_invite, 486), BOB), ALICE, 486)
        self.assertEqual((self.active("1001"), self.active("1002")), (0, 0))

    def test_no_shared_counts_without_limit(self) -> None:
        """Without a limit (0) the shared counters are not touched."""
        self.stack.calls.settings = attrs.evolve(
            self.stack.calls.settings, max_calls_per_extension=0
        )
        self.ring()
        self.assertEqual(self.active("1001"), 0)
