"""Tests for L{bench.hotpath_calls}: every call goes through, and only Warden is timed."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.hotpath_calls import run_round


class RunRoundTests(SynchronousTestCase):
    def test_media_process(self) -> None:
        """
        With Warden's default relay (media process) every call is answered,
        hung up and recorded; the media process's own work is counted apart.
        """
        stack = run_round(30, 150.0, "process", None)
        self.assertGreater(stack.media_cpu, 0)
        self.assertEqual(
            set(stack.cpu),
            {"INVITE", "ACK", "INVITE (credentials)", "180 INVITE", "200 INVITE", "BYE",
             "200 BYE", "timers"},
        )  # fmt: skip
        self.assertEqual(len(stack.transactions), 0)
        self.assertEqual(set(stack.load), {"other_cpu_pct", "steal_pct", "valid"})

    def test_relay_in_process(self) -> None:
        """With the relay in the SIP process there is no media process to count."""
        stack = run_round(10, 150.0, "inproc", None)
        self.assertEqual(stack.media_cpu, 0)

    def test_load_independent(self) -> None:
        """Under callgrind the machine's load is recorded and the round stays valid."""
        stack = run_round(5, 150.0, "inproc", None, load_independent=True)
        self.assertIs(stack.load["valid"], True)
        self.assertGreaterEqual(stack.load["other_cpu_pct"], 0.0)
