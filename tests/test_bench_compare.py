"""
Tests for L{bench.compare}: the figures it takes from the benchmarks' output, which
steps count, and the before/after summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench.compare import callgrind_totals, cps_figures, is_valid, summarize


def _calls_document(**step: Any) -> dict[str, Any]:
    """A C{bench.calls --mode cps} document with one step."""
    base = {
        "rate": 50, "planned": 1000, "succeeded": 1000, "failed": 0, "achieved_rate": 49.97,
        "all_ok": True, "warden_cpu_pct": 20.0, "sipp_uac_cpu_pct": 3.0,
        "sipp_uas_cpu_pct": 2.0, "other_cpu_pct": 4.5, "steal_pct": 0.0, "wall_seconds": 20.0,
    }  # fmt: skip
    return {"cps": {"steps": [{**base, **step}]}}


def _step(kind: str, checkout: str, valid: bool = True, **figures: float) -> dict[str, Any]:
    return {"kind": kind, "checkout": checkout, "valid": valid, **figures}


class CallgrindTotalsTests(SynchronousTestCase):
    def test_totals_line(self) -> None:
        """The count is the C{totals:} line of a dump, not its C{summary:}."""
        path = Path(self.mktemp())
        path.write_text("version: 1\ncmd: python\nsummary: 7\nfn=(1) f\n3 5\ntotals: 1234\n")
        self.assertEqual(callgrind_totals(path), 1234)

    def test_no_totals(self) -> None:
        """A dump without totals (cut short) is an error, not zero instructions."""
        path = Path(self.mktemp())
        path.write_text("version: 1\n")
        self.assertRaises(RuntimeError, callgrind_totals, path)


LOAD = {"other_cpu_pct": 50.0, "seconds": 30.0}


class CpsFiguresTests(SynchronousTestCase):
    def test_cpu_per_call(self) -> None:
        """Warden's CPU over the step divided by the calls that succeeded."""
        figures = cps_figures(_calls_document(succeeded=800), LOAD)
        # 20% of 20 s = 4 s over 800 calls.
        self.assertEqual(figures["warden_cpu_ms_per_call"], 5.0)

    def test_other_load_of_the_step(self) -> None:
        """The other-CPU is bench.calls' own over the step; the whole run's is apart."""
        figures = cps_figures(_calls_document(), LOAD)
        self.assertEqual((figures["other_cpu_pct"], figures["run_other_cpu_pct"]), (4.5, 50.0))

    def test_no_call(self) -> None:
        """No call succeeded: no figure rather than a division by zero."""
        figures = cps_figures(_calls_document(succeeded=0, all_ok=False), LOAD)
        self.assertIsNone(figures["warden_cpu_ms_per_call"])


class ValidityTests(SynchronousTestCase):
    def test_callgrind_always(self) -> None:
        """Instruction counts do not depend on the machine's load."""
        self.assertTrue(is_valid("callgrind", {"other_cpu_pct": 150.0}, 10.0))

    def test_busy_machine(self) -> None:
        """A wall-clock step during which others used the bound or more is invalid."""
        self.assertFalse(is_valid("hotpath", {"other_cpu_pct": 10.0}, 10.0))
        self.assertTrue(is_valid("hotpath", {"other_cpu_pct": 9.9}, 10.0))

    def test_callgrind_calls_without_retransmission(self) -> None:
        """Warden under callgrind: any load, but every call done once and succeeded."""
        step = {"other_cpu_pct": 150.0, "all_ok": True, "retransmissions": 0}
        self.assertTrue(is_valid("cps_callgrind", step, 10.0))
        self.assertFalse(is_valid("cps_callgrind", {**step, "retransmissions": 2}, 10.0))
        self.assertFalse(is_valid("cps_callgrind", {**step, "all_ok": False}, 10.0))

    def test_failed_calls(self) -> None:
        """A cps step with a failed call is invalid however quiet the machine."""
        self.assertFalse(is_valid("cps", {"other_cpu_pct": 0.0, "all_ok": False}, 10.0))


class SummaryTests(SynchronousTestCase):
    def test_median_of_valid_steps(self) -> None:
        """Invalid steps are counted but left out of the figures."""
        steps = [
            _step("cps", "before", warden_cpu_ms_per_call=4.0),
            _step("cps", "before", warden_cpu_ms_per_call=4.4),
            _step("cps", "before", False, warden_cpu_ms_per_call=9.0),
            _step("cps", "after", warden_cpu_ms_per_call=4.3),
        ]
        entry = summarize(steps)["cps.warden_cpu_ms_per_call"]
        self.assertEqual(
            (entry["before"], entry["before_invalid_steps"], entry["after"], entry["ratio"]),
            (4.2, 1, 4.3, 1.0238),
        )
        self.assertTrue(entry["within_5pct"])

    def test_regression(self) -> None:
        """More than 5% more per request is outside the bound."""
        steps = [
            _step("callgrind", "before", instructions_per_request=100_000),
            _step("callgrind", "after", instructions_per_request=105_100),
        ]
        entry = summarize(steps)["callgrind.instructions_per_request"]
        self.assertFalse(entry["within_5pct"])

    def test_nothing_valid(self) -> None:
        """No valid step on a side: no figure and no ratio."""
        steps = [
            _step("hotpath", "before", False, us_per_request=100.0),
            _step("hotpath", "after", us_per_request=100.0),
        ]
        entry = summarize(steps)["hotpath.us_per_request"]
        self.assertEqual(
            (entry["before"], entry["ratio"], entry["within_5pct"]), (None, None, None)
        )
