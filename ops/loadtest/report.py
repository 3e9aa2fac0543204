"""
Judging and reporting a load test: the pass/fail criteria, the progress line, the
JSON report and the human summary.
"""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .histogram import Histogram
from .recorder import SECONDS, Recorder

if TYPE_CHECKING:
    from .options import Settings
    from .runner import Outcome

# 2: every duration in milliseconds with ``_ms`` in its name (timers, timeline,
# criteria); ``duration_s`` stays in seconds.
# 3: every timer, RTP distribution and timeline second carries the mergeable
# histogram its percentiles come from; ``shares`` says which part of the run the
# report covers (ADR 0030).
REPORT_FORMAT = 3


class Thresholds(Protocol):
    """What the criteria read: the kind of run and the limits (L{Settings} has them)."""

    @property
    def test_type(self) -> str: ...
    @property
    def rtp(self) -> bool: ...
    @property
    def min_success_rate(self) -> float: ...
    @property
    def max_p95_ms(self) -> float: ...
    @property
    def max_rtp_loss(self) -> float: ...
    @property
    def min_mos(self) -> float: ...


@attrs.frozen
class Criterion:
    """One pass/fail check: its name, what it compares, the threshold and the measured value."""

    name: str
    description: str
    threshold: float
    value: float | None
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return attrs.asdict(self)


def measured_phases(test_type: str) -> list[tuple[str, str]]:
    """(phase, main timer) pairs a test type is judged on."""
    phases = []
    if test_type in ("registrations", "mixed"):
        phases.append(("register", "register"))
    if test_type in ("calls", "mixed"):
        phases.append(("calls", "call_setup"))
    return phases


def evaluate(settings: Thresholds, recorder: Recorder, interrupted: str | None) -> list[Criterion]:
    """Every criterion of ``settings`` applied to what ``recorder`` holds."""
    criteria: list[Criterion] = []
    for phase, timer in measured_phases(settings.test_type):
        rate = recorder.phase(phase).success_rate
        criteria.append(
            Criterion(
                f"{phase}_success_rate",
                f"percent of {phase} that succeeded >= threshold",
                settings.min_success_rate,
                rate,
                rate is not None and rate >= settings.min_success_rate,
            )
        )
        p95 = recorder.timer_summaries().get(timer, {}).get("p95_ms")
        criteria.append(
            Criterion(
                f"{timer}_p95_ms",
                f"95th percentile of {timer} time, milliseconds <= threshold",
                settings.max_p95_ms,
                p95,
                p95 is not None and p95 <= settings.max_p95_ms,
            )
        )
    if settings.rtp and settings.test_type != "registrations":
        rtp = recorder.rtp
        loss = rtp.loss_percent if rtp.sent else None
        criteria.append(
            Criterion(
                "rtp_loss_percent",
                "RTP packets lost, percent of sent, both directions <= threshold",
                settings.max_rtp_loss,
                loss,
                loss is not None and loss <= settings.max_rtp_loss,
            )
        )
        mos = rtp.mos.summary().mean
        criteria.append(
            Criterion(
                "mos_mean",
                "mean estimated MOS (ITU-T G.107 E-model) >= threshold",
                settings.min_mos,
                mos,
                mos is not None and mos >= settings.min_mos,
            )
        )
    criteria.append(
        Criterion(
            "completed",
            "the run finished without interruption or time-out (1 = yes)",
            1.0,
            0.0 if interrupted else 1.0,
            interrupted is None,
        )
    )
    return criteria


@attrs.frozen
class Progress:
    """
    What the progress line shows: elapsed seconds, completions in the last second,
    in flight, successes, failures by ``phase:cause``, and the latencies of the
    last five seconds (a histogram, so the progress of several processes merges).
    """

    elapsed: float
    rate: int
    in_flight: int
    ok: int
    failures: dict[str, int]
    recent: Histogram

    @classmethod
    def of(cls, recorder: Recorder, now: float) -> Progress:
        """The progress of ``recorder`` at ``now``."""
        elapsed = now - recorder.start
        previous = recorder.bucket(now - 1.0) if elapsed >= 1.0 else None
        failures: dict[str, int] = {}
        for name, counts in recorder.phases.items():
            for cause, n in counts.causes.items():
                failures[f"{name}:{cause}"] = failures.get(f"{name}:{cause}", 0) + n
        return cls(
            elapsed,
            previous.succeeded + previous.failed if previous is not None else 0,
            recorder.in_flight,
            sum(c.succeeded for c in recorder.phases.values()),
            failures,
            recorder.recent_latencies(now),
        )

    @classmethod
    def combined(cls, parts: list[Progress]) -> Progress:
        """The progress of several processes together (the latest elapsed; sums; merged)."""
        failures: dict[str, int] = {}
        recent = Histogram(SECONDS)
        for p in parts:
            recent.merge(p.recent)
            for cause, n in p.failures.items():
                failures[cause] = failures.get(cause, 0) + n
        return cls(
            max((p.elapsed for p in parts), default=0.0),
            sum(p.rate for p in parts),
            sum(p.in_flight for p in parts),
            sum(p.ok for p in parts),
            failures,
            recent,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (one line of the ``--progress-fd`` channel)."""
        return {**attrs.asdict(self, recurse=False), "recent": self.recent.as_dict()}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Progress:
        """A progress record from L{as_dict}'s form, checked (ValueError naming the field)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object")
        numbers = []
        for name in ("elapsed", "rate", "in_flight", "ok"):
            value = data.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}.{name}: expected a non-negative number")
            numbers.append(value)
        failures = data.get("failures")
        if (
            not isinstance(failures, dict)
            or len(failures) > 1000
            or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in failures.items()
            )
        ):
            raise ValueError(f"{where}.failures: expected an object of counts")
        recent = Histogram.from_dict(data.get("recent"), f"{where}.recent")
        return cls(
            float(numbers[0]), int(numbers[1]), int(numbers[2]), int(numbers[3]),
            dict(failures), recent,
        )  # fmt: skip

    def line(self) -> str:
        """``elapsed | rate | in flight | ok | failures by cause | p95``."""
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "0"
        p95 = self.recent.percentile(95)
        p95_text = f"{p95 * 1000:.1f} ms" if p95 is not None else "-"
        return (
            f"[{self.elapsed:6.1f}s] rate {self.rate}/s | in flight {self.in_flight} | "
            f"ok {self.ok} | failed {failed} | p95 {p95_text}"
        )


def progress_line(recorder: Recorder, now: float) -> str:
    """``elapsed | rate | in flight | ok | failures by cause | p95`` for the last second."""
    return Progress.of(recorder, now).line()


def environment() -> dict[str, Any]:
    """Where the generator ran."""
    import twisted
    from warden import __version__

    return {
        "warden_version": __version__,
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "pid": os.getpid(),
    }


def build_report(
    settings: Settings, recorder: Recorder, outcome: Outcome, share: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON report; ``share`` says which part of the whole run this process ran."""
    return report_document(
        settings.public(), [share] if share is not None else [], environment(), recorder, outcome
    )


def report_document(
    config: dict[str, Any],
    shares: list[dict[str, Any]],
    env: dict[str, Any],
    recorder: Recorder,
    outcome: Outcome,
) -> dict[str, Any]:
    """The JSON report of the run ``config`` (the whole run's options), as far as ``shares``."""
    rtp_used = config["rtp"] and config["test_type"] != "registrations"
    return {
        "format": REPORT_FORMAT,
        "tool": "warden-loadtest",
        "started_at": _iso(outcome.started),
        "ended_at": _iso(outcome.ended),
        "duration_s": outcome.ended - outcome.started,
        "result": "pass" if outcome.exit_code == 0 else "fail",
        "exit_code": outcome.exit_code,
        "unreachable": outcome.unreachable,
        "interrupted": outcome.interrupted,
        "config": config,
        "shares": shares,
        "environment": env,
        "phases": {name: counts.as_dict() for name, counts in sorted(recorder.phases.items())},
        "responses": {
            method: dict(sorted(counter.items())) for method, counter in recorder.responses.items()
        },
        "timers": recorder.timer_summaries(),
        "rtp": recorder.rtp.as_dict() if rtp_used else None,
        "criteria": [c.as_dict() for c in outcome.criteria],
        "timeline": recorder.timeline(),
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")


def _ms(value: float | int | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def summary_text(report: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    lines = [f"warden-loadtest: {report['result'].upper()} (exit status {report['exit_code']})"]
    if report["unreachable"]:
        lines.append(f"  PBX unreachable: {report['unreachable']}")
    if report["interrupted"]:
        lines.append(f"  run stopped early: {report['interrupted']}")
    lines.append(f"  duration {report['duration_s']:.1f} s")
    for name, phase in report["phases"].items():
        rate = phase["success_rate"]
        rate_text = f"{rate:.2f}%" if rate is not None else "-"
        failures = ", ".join(f"{k}: {v}" for k, v in phase["failures"].items())
        lines.append(
            f"  {name:<11} attempted {phase['attempted']:>7}  ok {phase['succeeded']:>7}  "
            f"failed {phase['failed']:>6}  ({rate_text}){'  ' + failures if failures else ''}"
        )
    for method, codes in report["responses"].items():
        lines.append(f"  {method:<11} " + "  ".join(f"{c}: {n}" for c, n in codes.items()))
    lines.append("  timer (ms)          count     p50     p90     p95     p99     max")
    for name, s in report["timers"].items():
        lines.append(
            f"  {name:<18} {s['count']:>6} {_ms(s['p50_ms']):>7} {_ms(s['p90_ms']):>7} "
            f"{_ms(s['p95_ms']):>7} {_ms(s['p99_ms']):>7} {_ms(s['max_ms']):>7}"
        )
    rtp = report["rtp"]
    if rtp is not None:
        mos = rtp["mos"]["mean"]
        latency = rtp["latency_ms"]["mean"]
        lines.append(
            f"  RTP: {rtp['calls']} calls, sent {rtp['packets_sent']}, lost "
            f"{rtp['packets_lost']} ({rtp['loss_percent']:.3f}%), jitter p95 "
            f"{_fmt(rtp['jitter_ms']['p95'])} ms, latency mean {_fmt(latency)} ms, "
            f"MOS mean {_fmt(mos, 2)}"
        )
    for c in report["criteria"]:
        mark = "pass" if c["passed"] else "FAIL"
        lines.append(
            f"  [{mark}] {c['name']}: {_fmt(c['value'], 4)} (threshold {c['threshold']:g})"
        )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"
