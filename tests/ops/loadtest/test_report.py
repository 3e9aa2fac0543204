"""The recorder, the criteria, the progress line, the JSON and HTML reports."""

from __future__ import annotations

import json
import re
from io import StringIO

from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.html import line_chart, render
from warden.ops.loadtest.media import DirectionQuality, MediaResult
from warden.ops.loadtest.options import Options
from warden.ops.loadtest.recorder import Recorder
from warden.ops.loadtest.report import build_report, evaluate, progress_line, summary_text
from warden.ops.loadtest.results import CallResult, RegistrationResult
from warden.ops.loadtest.runner import Outcome


def settings(*args: str):  # type: ignore[no-untyped-def]
    """Settings parsed from ``args`` (users from a throwaway file)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("1;password1\n2;password2\n")
    options = Options()
    options.parse_strict(["--users-file", f.name, "--users", "2", *args])
    return options.settings


def registration(ok: bool, duration: float, statuses: tuple[int, ...]) -> RegistrationResult:
    """A registration result."""
    cause = None if ok else str(statuses[-1])
    return RegistrationResult("1", ok, statuses[-1], cause, 0.0, duration, duration / 2, statuses)


def call(ok: bool, setup: float, loss: int = 0) -> CallResult:
    """A call result with 100 packets each way, ``loss`` of them lost each way."""
    direction = DirectionQuality(100, 100 - loss, loss, 1.0, 5.0, 9.0)
    return CallResult(
        "1", "2", ok, ok, 200 if ok else 486, None if ok else "486", 0.0, setup, setup / 2,
        setup / 3, 2.0, 0.01, (407, 200) if ok else (407, 486),
        MediaResult(direction, direction) if ok else None, 200 if ok else None,
    )  # fmt: skip


class RecorderTests(SynchronousTestCase):
    """Counting and timing."""

    def test_registrations(self) -> None:
        """Counts, causes, response codes, timers and buckets of registrations."""
        recorder = Recorder(100.0)
        for at, result in ((100.2, registration(True, 0.01, (401, 200))),
                           (100.5, registration(True, 0.03, (401, 200))),
                           (101.1, registration(False, 0.02, (401, 403)))):  # fmt: skip
            recorder.started("register", at - 0.01)
            recorder.registration("register", result, at)
        phase = recorder.phase("register")
        self.assertEqual((phase.attempted, phase.succeeded, phase.failed), (3, 2, 1))
        self.assertEqual(dict(phase.causes), {"403": 1})
        self.assertAlmostEqual(phase.success_rate, 200 / 3)  # type: ignore[arg-type]
        self.assertEqual(dict(recorder.responses["REGISTER"]), {"401": 3, "200": 2, "403": 1})
        timer = recorder.timers["register"]
        self.assertEqual((timer.count, timer.min, timer.max), (2, 0.01, 0.03))
        timeline = recorder.timeline()
        self.assertEqual([row["succeeded"] for row in timeline], [2, 0])
        self.assertEqual(timeline[1]["failures"], {"register:403": 1})
        self.assertEqual(recorder.in_flight, 0)

    def test_calls_with_media(self) -> None:
        """RTP totals and a MOS per call."""
        recorder = Recorder(0.0)
        recorder.started("calls", 0.0)
        recorder.call(call(True, 0.1, loss=2), 3.0)
        self.assertEqual((recorder.rtp.sent, recorder.rtp.lost), (200, 4))
        self.assertEqual(recorder.rtp.loss_percent, 2.0)
        self.assertEqual(recorder.rtp.mos.count, 1)
        self.assertLess(recorder.rtp.mos.max, 4.41)
        self.assertEqual(dict(recorder.responses["BYE"]), {"200": 1})
        self.assertEqual(recorder.timeline()[3]["rtp_loss_percent"], 2.0)


class CriteriaTests(SynchronousTestCase):
    """Pass and fail."""

    def test_registrations_pass_and_fail(self) -> None:
        """Success rate and p95 judged against the thresholds; interruption fails."""
        s = settings("--min-success-rate", "60", "--max-p95-ms", "50")
        recorder = Recorder(0.0)
        for result in (registration(True, 0.01, (401, 200)), registration(False, 0.01, (403,))):
            recorder.started("register", 0.0)
            recorder.registration("register", result, 0.5)
        verdict = {c.name: c.passed for c in evaluate(s, recorder, None)}
        self.assertEqual(
            verdict, {"register_success_rate": False, "register_p95_ms": True, "completed": True}
        )
        verdict = {c.name: c.passed for c in evaluate(s, recorder, "interrupted")}
        self.assertFalse(verdict["completed"])

    def test_nothing_measured_fails(self) -> None:
        """No operation finished: the criteria cannot pass."""
        verdict = evaluate(settings(), Recorder(0.0), None)
        self.assertFalse(all(c.passed for c in verdict))

    def test_rtp_criteria(self) -> None:
        """Calls with --rtp are judged on loss and MOS too."""
        s = settings("--test-type", "calls", "--rtp", "--max-rtp-loss", "1", "--min-mos", "4")
        recorder = Recorder(0.0)
        recorder.started("calls", 0.0)
        recorder.call(call(True, 0.1, loss=5), 1.0)
        verdict = {c.name: c.passed for c in evaluate(s, recorder, None)}
        self.assertEqual(verdict["rtp_loss_percent"], False)
        self.assertEqual(verdict["calls_success_rate"], True)
        self.assertIn("mos_mean", verdict)


class ReportTests(SynchronousTestCase):
    """The progress line, JSON, summary and HTML."""

    def recorded(self) -> tuple[Recorder, Outcome, object]:
        """A small finished calls run."""
        s = settings("--test-type", "calls", "--rtp")
        recorder = Recorder(0.0)
        for i in range(4):
            recorder.started("calls", float(i))
            recorder.call(call(i != 3, 0.1 + i / 100), i + 0.5)
        criteria = tuple(evaluate(s, recorder, None))  # type: ignore[arg-type]
        return recorder, Outcome(1, criteria, None, None, 1_700_000_000.0, 1_700_000_004.0), s

    def test_progress_line(self) -> None:
        """Elapsed, rate, in flight, ok, failures by cause, p95."""
        recorder, _, _ = self.recorded()
        line = progress_line(recorder, 4.0)
        self.assertRegex(
            line, r"\[\s+4\.0s\] rate \d+/s \| in flight 0 \| ok 3 \| failed calls:486 1"
        )
        self.assertIn("p95", line)

    def test_json_report(self) -> None:
        """Every section; serialisable; the verdict and the response codes."""
        recorder, outcome, s = self.recorded()
        report = build_report(s, recorder, outcome)  # type: ignore[arg-type]
        json.dumps(report)
        self.assertEqual(report["result"], "fail")
        self.assertEqual(report["started_at"], "2023-11-14T22:13:20.000+00:00")
        self.assertEqual(report["responses"]["INVITE"], {"200": 3, "407": 4, "486": 1})
        for timer in ("call_setup", "call_setup_auth", "post_dial_delay", "bye"):
            self.assertEqual(
                set(report["timers"][timer]),
                {"count", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms"}
                | {"histogram"},
            )
        self.assertEqual(report["rtp"]["calls"], 3)
        self.assertEqual(len(report["timeline"]), 4)
        self.assertIn("python", report["environment"])
        self.assertEqual(report["config"]["test_type"], "calls")
        text = summary_text(report)
        self.assertIn("FAIL", text)
        self.assertIn("486: 1", text)

    def test_one_time_unit_everywhere(self) -> None:
        """
        Timers, timeline and criteria all give milliseconds, with ``_ms`` in the
        name: the p95 criterion's value is the timer table's p95, and the summary
        prints it against a threshold in the same unit.
        """
        s = settings("--max-p95-ms", "50")
        recorder = Recorder(0.0)
        recorder.started("register", 0.0)
        recorder.registration("register", registration(True, 0.0072, (401, 200)), 0.5)
        outcome = Outcome(0, tuple(evaluate(s, recorder, None)), None, None, 0.0, 1.0)
        report = build_report(s, recorder, outcome)  # type: ignore[arg-type]
        p95 = report["timers"]["register"]["p95_ms"]
        self.assertAlmostEqual(p95, 7.2, places=3)
        (criterion,) = [c for c in report["criteria"] if c["name"] == "register_p95_ms"]
        self.assertEqual((criterion["value"], criterion["threshold"]), (p95, 50.0))
        self.assertIn("p95_ms", report["timeline"][0])
        self.assertIn("register_p95_ms: 7.2000 (threshold 50)", summary_text(report))

    def test_html_is_self_contained(self) -> None:
        """Inline SVG charts, no scripts, no links to anything outside the page."""
        recorder, outcome, s = self.recorded()
        page = render(build_report(s, recorder, outcome))  # type: ignore[arg-type]
        self.assertEqual(page.count("<svg"), 5)
        self.assertNotIn("<script", page)
        urls = re.findall(r"(?:href|src)=|https?://[^\"' ]+", page)
        self.assertEqual(set(urls), {"http://www.w3.org/2000/svg"})
        for title in ("Offered vs achieved rate", "In flight", "Latency", "Failures", "RTP loss"):
            self.assertIn(title, page)

    def test_empty_chart(self) -> None:
        """A chart without data says so."""
        self.assertIn("no data", line_chart("t", "u", {"x": []}))


class StringIOTests(SynchronousTestCase):
    """The progress line goes where it is told."""

    def test_progress_to_stream(self) -> None:
        """LoadTest writes progress lines to its ``err`` stream."""
        from twisted.internet.testing import MemoryReactorClock

        from warden.ops.loadtest.runner import LoadTest

        reactor = MemoryReactorClock()
        err = StringIO()
        test = LoadTest(settings(), [], reactor, err=err)
        test._tick()
        self.assertIn("in flight", err.getvalue())
