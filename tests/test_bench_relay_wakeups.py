"""Tests for L{bench.relay_wakeups}: both socket layers relay every packet sent."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.relay_wakeups import VARIANTS, best_of, packet, run


class RunTests(SynchronousTestCase):
    def test_every_packet_relayed(self) -> None:
        """
        Each variant counts every packet of every wake-up, with a CPU figure and
        the rest of the machine's load meanwhile.
        """
        for variant in VARIANTS:
            result = run(variant, ready=3, rounds=20, sessions=4, port_min=15400)
            self.assertEqual(result["counted"], 60, variant)
            self.assertGreater(result["cpu_us_per_packet"], 0)
            self.assertLessEqual({"other_cpu_pct", "steal_pct", "valid"}, set(result))

    def test_best_of_valid_runs(self) -> None:
        """The best figure comes from the valid runs; with none, from all, marked invalid."""
        runs = [
            {"cpu_us_per_packet": 1.0, "valid": False},
            {"cpu_us_per_packet": 2.0, "valid": True},
        ]
        self.assertEqual((best_of(runs)["best"], best_of(runs)["valid"]), (2.0, True))
        self.assertEqual((best_of(runs[:1])["best"], best_of(runs[:1])["valid"]), (1.0, False))

    def test_packet(self) -> None:
        """A 172-byte RTP version 2 packet with the sequence number given."""
        data = packet(70000)
        self.assertEqual((len(data), data[0], data[2:4]), (172, 0x80, b"\x11\x70"))
