"""
Tests for L{bench.relay_jitter}: the figures made of the transits, the
generator's packets on real sockets of 127.0.0.1 (callers sending straight to
the callees, no relay), and the rtpengine step without rtpengine.
"""

from __future__ import annotations

import socket
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from bench import relay_jitter
from bench.relay_jitter import PACKET, PACKET_SIZE, figures, generate, step, summarise


def free_ports(count: int) -> list[int]:
    """``count`` different UDP ports of 127.0.0.1, free right now."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


class FiguresTests(SynchronousTestCase):
    def test_added_jitter_per_call(self) -> None:
        """Each transit counts from its own call's smallest; loss from what was sent."""
        ms = 1_000_000
        transits = [[5 * ms, 5 * ms, 7 * ms], [20 * ms, 21 * ms], []]
        result = figures(transits, sent=6)
        self.assertEqual(result["packets_received"], 5)
        self.assertEqual(result["loss_pct"], round(100 / 6, 4))
        self.assertEqual(result["added_jitter_ms_p50"], 0.0)
        self.assertEqual(result["added_jitter_ms_max"], 2.0)

    def test_nothing_received(self) -> None:
        """No packet at all: full loss, no jitter figures."""
        result = figures([[], []], sent=4)
        self.assertEqual(result["loss_pct"], 100.0)
        self.assertIsNone(result["added_jitter_ms_p99"])


class GeneratorTests(SynchronousTestCase):
    def test_packets_sent_and_received(self) -> None:
        """
        Every call's packets reach its callee (here straight from the caller):
        none lost, the stamps read back, and the CPU per packet recorded.
        """
        ports = free_ports(6)
        phones = [(ports[2 * i], ports[2 * i + 1]) for i in range(3)]
        result = generate([callee for _, callee in phones], phones, 0.1)
        self.assertEqual(result["packets_sent"], 3 * 5)
        self.assertEqual(result["packets_received"], 3 * 5)
        self.assertEqual(result["loss_pct"], 0.0)
        self.assertGreaterEqual(result["added_jitter_ms_max"], 0.0)
        self.assertGreater(result["generator_cpu_us_per_packet"], 0.0)

    def test_packet_layout(self) -> None:
        """An RTP version-2 PCMU header, then the stamp and call index, in 172 bytes."""
        buffer = bytearray(b"\xff" * PACKET_SIZE)
        PACKET.pack_into(buffer, 0, 0x80, 0, 7, 1120, 0x1001, 123456789, 1)
        self.assertEqual(len(buffer), 172)
        self.assertEqual(buffer[:2], b"\x80\x00")
        self.assertEqual(relay_jitter.STAMP.unpack_from(buffer, 12), (123456789, 1))
        self.assertEqual(buffer[-1:], b"\xff")


class RtpengineStepTests(SynchronousTestCase):
    def test_skipped_without_rtpengine(self) -> None:
        """Without the rtpengine binary its step says why it has no figures."""
        with mock.patch.object(relay_jitter.shutil, "which", return_value=None):
            result = step(10, 1.0, "rtpengine", 20.0, 0.1, phone_base=40000, port_min=20000)
        self.assertIn("rtpengine is not installed", result["skipped"])
        self.assertFalse(result["valid"])

    def test_unknown_relay(self) -> None:
        """A relay name the bench does not know is an error, not a silent built-in step."""
        self.assertRaises(ValueError, step, 10, 1.0, "kamailio", 20.0, 0.1, 40000, 20000)

    def test_relay_kinds(self) -> None:
        """builtin-process:N names N media processes; a bad count is an error."""
        self.assertEqual(relay_jitter.relay_kind("builtin-process:2"), ("builtin-process", 2))
        self.assertEqual(relay_jitter.relay_kind("builtin"), ("builtin", 1))
        for bad in ("builtin-process:0", "builtin-process:x", "builtin:2", "builtin-process:17"):
            self.assertRaises(ValueError, relay_jitter.relay_kind, bad)


def run(calls: int, relay: str, p99: float | None, loss: float = 0.0, valid: bool = True,
        media: float | None = None) -> dict[str, object]:  # fmt: skip
    """One step's result, as far as the summary reads it."""
    result: dict[str, object] = {
        "calls": calls, "relay": relay, "added_jitter_ms_p99": p99, "loss_pct": loss,
        "valid": valid,
    }  # fmt: skip
    if media is not None:
        result["media_cpu_us_per_packet"] = media
    return result


class SummaryTests(SynchronousTestCase):
    def test_runs_judged_together(self) -> None:
        """Per call count and relay: valid runs only, the p99's spread, the target's count."""
        steps = [
            run(500, "builtin-process", 4.4, media=26.0),
            run(500, "rtpengine", 1.1),
            run(500, "builtin-process", 7.7, media=27.0),
            run(500, "builtin-process", 5.2, media=25.0),
            run(500, "builtin-process", 1.0, valid=False, media=10.0),  # a busy machine
            run(500, "builtin-process", 4.9, loss=0.2, media=24.0),  # too much loss
        ]
        by_relay = {each["relay"]: each for each in summarise(steps)}
        builtin = by_relay["builtin-process"]
        self.assertEqual((builtin["runs"], builtin["valid_runs"]), (5, 4))
        self.assertEqual(
            (builtin["p99_ms_median"], builtin["p99_ms_min"], builtin["p99_ms_max"]),
            (5.05, 4.4, 7.7),
        )
        self.assertEqual(builtin["loss_pct_max"], 0.2)
        self.assertEqual(builtin["media_cpu_us_per_packet_median"], 25.5)
        self.assertEqual(builtin["target_met_runs"], 1)
        engine = by_relay["rtpengine"]
        self.assertEqual((engine["p99_ms_median"], engine["target_met_runs"]), (1.1, 1))
        self.assertIsNone(engine["media_cpu_us_per_packet_median"])

    def test_no_valid_run(self) -> None:
        """Only invalid or failed runs: counted, and no figure is made up."""
        (only,) = summarise(
            [run(250, "builtin-inproc", None), run(250, "builtin-inproc", 3.0, valid=False)]
        )
        self.assertEqual((only["runs"], only["valid_runs"], only["target_met_runs"]), (2, 0, 0))
        self.assertIsNone(only["p99_ms_median"])
        self.assertIsNone(only["p99_ms_max"])
