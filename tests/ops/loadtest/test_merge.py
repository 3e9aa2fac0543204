"""Merging the reports of a run's shares: sums, merged percentiles, criteria, refusals."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.merge import (
    MergeError,
    MergeOptions,
    MergeService,
    load_report,
    merge_reports,
)
from warden.ops.loadtest.options import EXIT_USAGE
from warden.ops.loadtest.recorder import Recorder
from warden.ops.loadtest.report import build_report, evaluate
from warden.ops.loadtest.results import RegistrationResult
from warden.ops.loadtest.runner import Outcome
from warden.ops.loadtest.stats import percentile

from .test_histogram import within_bound
from .test_shares import parse


def share_report(
    testcase: SynchronousTestCase, index: int, count: int, samples: list[float], *args: str
) -> dict[str, Any]:
    """The report of share ``index`` of ``count`` that registered once per sample."""
    options = parse(testcase, "--worker-index", str(index), "--worker-count", str(count), *args)
    settings, share = options.settings, options.share
    assert settings is not None and share is not None
    recorder = Recorder(1000.0)
    for k, duration in enumerate(samples):
        at = 1000.0 + k * 0.01
        recorder.started("register", at)
        result = RegistrationResult("1", True, 200, None, at, duration, duration / 2, (401, 200))
        recorder.registration("register", result, at + duration)
    criteria = tuple(evaluate(settings, recorder, None))
    code = 0 if all(c.passed for c in criteria) else 1
    outcome = Outcome(code, criteria, None, None, 1000.0 + index, 1010.0 + index)
    users = [a.user for a in options.accounts]
    report = build_report(settings, recorder, outcome, share.as_dict(users[0], users[-1]))
    return json.loads(json.dumps(report))  # as read back from a file


class MergeTests(SynchronousTestCase):
    """Two or three shares into one report."""

    def test_counts_add_and_percentiles_merge(self) -> None:
        """
        Counts, responses and the timeline add up; p95 is the p95 of all samples
        (within the histogram's error), not an average of the shares' p95s: one
        fast share and one slow one fail --max-p95-ms 600 together, though each
        p95 averaged (about 500 ms) would pass.
        """
        fast, slow = [0.001] * 100, [1.0] * 20
        a = share_report(self, 0, 2, fast, "--max-p95-ms", "600")
        b = share_report(self, 1, 2, slow, "--max-p95-ms", "600")
        merged = merge_reports([("a.json", a), ("b.json", b)])
        self.assertEqual(merged["phases"]["register"]["succeeded"], 120)
        self.assertEqual(merged["responses"]["REGISTER"], {"200": 120, "401": 120})
        register = merged["timers"]["register"]
        self.assertEqual(register["count"], 120)
        within_bound(self, register["p95_ms"], 1000 * percentile(fast + slow, 95), 1e3)  # type: ignore[operator]
        within_bound(self, register["p50_ms"], 1000 * percentile(fast + slow, 50), 1e3)  # type: ignore[operator]
        self.assertEqual(sum(row["succeeded"] for row in merged["timeline"]), 120)
        verdict = {c["name"]: c["passed"] for c in merged["criteria"]}
        self.assertFalse(verdict["register_p95_ms"])
        self.assertEqual((merged["result"], merged["exit_code"]), ("fail", 1))
        self.assertEqual([s["index"] for s in merged["shares"]], [0, 1])
        self.assertEqual(merged["started_at"], "1970-01-01T00:16:40.000+00:00")
        self.assertEqual(merged["duration_s"], 11.0)
        self.assertEqual(merged["environment"]["merged_from"], ["a.json", "b.json"])

    def test_merge_of_one_share_is_the_same_verdict(self) -> None:
        """A single-process report merged alone keeps its counts, timers and verdict."""
        alone = share_report(self, 0, 1, [0.002, 0.004, 0.008])
        merged = merge_reports([("r.json", alone)])
        self.assertEqual(merged["timers"], alone["timers"])
        self.assertEqual(merged["criteria"], alone["criteria"])
        self.assertEqual(merged["result"], "pass")

    def test_merged_report_merges_again(self) -> None:
        """A merged report of three shares, merged alone, keeps its shares, timers, verdict."""
        parts = [share_report(self, i, 3, [0.001 * (i + 1)] * (5 + i)) for i in range(3)]
        merged = json.loads(json.dumps(merge_reports([(str(i), r) for i, r in enumerate(parts)])))
        self.assertEqual(merged["timers"]["register"]["count"], 18)
        again = merge_reports([("all.json", merged)])
        self.assertEqual(again["timers"], merged["timers"])
        self.assertEqual(again["shares"], merged["shares"])
        self.assertEqual(again["criteria"], merged["criteria"])


class RefusalTests(SynchronousTestCase):
    """What merge refuses, each with the file and the field named."""

    def assert_refused(self, named: list[tuple[str, dict[str, Any]]], *fragments: str) -> None:
        """merge_reports raises MergeError containing every fragment."""
        error = self.assertRaises(MergeError, merge_reports, named)
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_duplicate_share(self) -> None:
        """The same share twice."""
        a = share_report(self, 0, 2, [0.01])
        self.assert_refused([("a.json", a), ("again.json", a)], "again.json", "already in a.json")

    def test_missing_share(self) -> None:
        """Part of a run."""
        a = share_report(self, 0, 3, [0.01])
        b = share_report(self, 2, 3, [0.01])
        self.assert_refused([("a.json", a), ("b.json", b)], "incomplete run", "share(s) 1 of 3")

    def test_other_run(self) -> None:
        """Shares of runs with different options."""
        a = share_report(self, 0, 2, [0.01], "--register-rate", "10")
        b = share_report(self, 1, 2, [0.01], "--register-rate", "20")
        self.assert_refused([("a.json", a), ("b.json", b)], "b.json: config.register_rate",
                            "not the same run")  # fmt: skip

    def test_overlapping_users(self) -> None:
        """A share claiming users that are not its own."""
        a = share_report(self, 0, 2, [0.01])
        b = share_report(self, 1, 2, [0.01])
        b["shares"][0]["user_start"] = 3
        self.assert_refused([("a.json", a), ("b.json", b)], "b.json: shares[0]", "users 3..10")

    def test_other_count(self) -> None:
        """Shares of a 2-way and a 3-way split."""
        a = share_report(self, 0, 2, [0.01])
        b = share_report(self, 1, 3, [0.01])
        self.assert_refused([("a.json", a), ("b.json", b)], "b.json: shares[0]")

    def test_malformed_fields(self) -> None:
        """Wrong types and inconsistent histograms name the field."""
        cases: list[tuple[str, Any, str]] = [
            ("format", 2, "b.json: format"),
            ("tool", "sipp", "b.json: tool"),
            ("phases", {"register": {"attempted": -1}}, "b.json: phases.register.attempted"),
            ("responses", {"REGISTER": {"200": "many"}}, "b.json: responses.REGISTER.200"),
            ("timeline", [{"t": "zero"}], "b.json: timeline[0].t"),
            ("started_at", "yesterday", "b.json: started_at"),
        ]
        for key, value, fragment in cases:
            a = share_report(self, 0, 2, [0.01])
            b = share_report(self, 1, 2, [0.01])
            b[key] = value
            self.assert_refused([("a.json", a), ("b.json", b)], fragment)
        b = share_report(self, 1, 2, [0.01])
        b["timers"]["register"]["histogram"]["count"] = 7
        self.assert_refused(
            [("a.json", share_report(self, 0, 2, [0.01])), ("b.json", b)],
            "b.json: timers.register.histogram.count",
        )


class FileTests(SynchronousTestCase):
    """Reading report files, and the subcommand."""

    def write(self, document: Any, raw: bytes | None = None) -> str:
        """A file holding ``document`` as JSON (or ``raw`` bytes)."""
        path = Path(self.mktemp())
        path.write_bytes(raw if raw is not None else json.dumps(document).encode())
        return str(path)

    def test_hostile_files(self) -> None:
        """Too large, not JSON, NaN, not an object, missing: refused naming the file."""
        cases = [
            (b"{" * 10, "not a JSON report"),
            (b'{"x": NaN}', "NaN"),
            (b"[1]", "expected an object"),
            (b"\xff", "not a JSON report"),
            (b'{"a": "' + b"x" * 200 + b'"}', "larger than 100 bytes"),
        ]
        for raw, fragment in cases:
            path = self.write(None, raw)
            error = self.assertRaises(MergeError, load_report, path, 100)
            self.assertIn(path, str(error))
            self.assertIn(fragment, str(error))
        error = self.assertRaises(MergeError, load_report, "/nonexistent/r.json")
        self.assertIn("cannot read", str(error))

    def run_merge(self, *paths: str) -> tuple[int, str, str]:
        """The subcommand's exit status, stdout and stderr."""
        options = MergeOptions()
        options.parseOptions(list(paths))
        out, err = StringIO(), StringIO()
        codes: list[int] = []
        service = MergeService(options, None, codes.append, out=out, err=err)
        return service.run(), out.getvalue(), err.getvalue()

    def test_subcommand(self) -> None:
        """Merged JSON on stdout, the summary on stderr, the verdict as exit status."""
        a = self.write(share_report(self, 0, 2, [0.01] * 3))
        b = self.write(share_report(self, 1, 2, [0.02] * 4))
        code, out, err = self.run_merge(a, b)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["phases"]["register"]["succeeded"], 7)
        self.assertIn("PASS", err)
        code, out, err = self.run_merge(a, a)
        self.assertEqual((code, out), (EXIT_USAGE, ""))
        self.assertIn("warden-loadtest merge: ", err)
        self.assertIn("already in", err)
