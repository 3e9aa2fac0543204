"""
What a load test measured, as it happens: per-phase counts and causes of
failure, response codes by method, every timer's samples, RTP quality, and a
timeline in one-second buckets for the progress line and the charts.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs

from .histogram import Histogram
from .media import DirectionQuality
from .results import CallResult, RegistrationResult
from .stats import call_quality, to_ms

#: Units per value of the histograms: timers in seconds to the microsecond,
#: RTP figures in milliseconds to the microsecond, MOS and R to a ten-thousandth.
SECONDS, MILLISECONDS, RATING = 1e6, 1e3, 1e4


@attrs.define
class PhaseCounts:
    """Attempts, successes and failures (by cause) of one kind of operation."""

    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    causes: Counter[str] = attrs.field(factory=Counter)

    @property
    def success_rate(self) -> float | None:
        """Percent of finished operations that succeeded (None before any finished)."""
        done = self.succeeded + self.failed
        return 100.0 * self.succeeded / done if done else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "attempted": self.attempted,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "success_rate": self.success_rate,
            "failures": dict(self.causes.most_common()),
        }


@attrs.define
class Bucket:
    """One second of the run."""

    offered: float = 0.0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    causes: Counter[str] = attrs.field(factory=Counter)
    in_flight: int = 0
    latencies: Histogram = attrs.field(factory=Histogram)
    rtp_sent: int = 0
    rtp_lost: int = 0


@attrs.define
class RtpTotals:
    """RTP quality over every call with media (both directions)."""

    calls: int = 0
    sent: int = 0
    received: int = 0
    lost: int = 0
    jitter_ms: Histogram = attrs.field(factory=lambda: Histogram(MILLISECONDS))
    latency_ms: Histogram = attrs.field(factory=lambda: Histogram(MILLISECONDS))
    latency_ms_max: float = 0.0
    mos: Histogram = attrs.field(factory=lambda: Histogram(RATING))
    r_factor: Histogram = attrs.field(factory=lambda: Histogram(RATING))

    def add(self, direction: DirectionQuality) -> None:
        """Account one direction of one call."""
        self.sent += direction.sent
        self.received += direction.received
        self.lost += direction.lost
        self.jitter_ms.record(direction.jitter_ms)
        if direction.latency_ms_mean is not None:
            self.latency_ms.record(direction.latency_ms_mean)
        if direction.latency_ms_max is not None:
            self.latency_ms_max = max(self.latency_ms_max, direction.latency_ms_max)

    @property
    def loss_percent(self) -> float:
        """Lost over sent, percent."""
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; each distribution's summary carries its ``histogram`` (for merging)."""
        return {
            "calls": self.calls,
            "packets_sent": self.sent,
            "packets_received": self.received,
            "packets_lost": self.lost,
            "loss_percent": self.loss_percent,
            "jitter_ms": _with_histogram(self.jitter_ms),
            "latency_ms": _with_histogram(self.latency_ms),
            "latency_ms_max": self.latency_ms_max if self.latency_ms.count else None,
            "mos": _with_histogram(self.mos),
            "r_factor": _with_histogram(self.r_factor),
        }


def _with_histogram(histogram: Histogram) -> dict[str, Any]:
    return {**histogram.summary().as_dict(), "histogram": histogram.as_dict()}


#: Status codes as the response counts' keys (the usual ones made once).
_STATUS_TEXT = {code: str(code) for code in range(100, 700)}
#: The timer of the authenticated request of each registration phase.
_AUTH_TIMER = {name: f"{name}_auth" for name in ("register", "refresh", "unregister")}


class Recorder:
    """
    Collects results. ``start`` is the clock time the measured load began;
    buckets are whole seconds after it.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.phases: dict[str, PhaseCounts] = {}
        self.responses: dict[str, Counter[str]] = {}
        self.timers: dict[str, Histogram] = {}
        self.rtp = RtpTotals()
        self.buckets: list[Bucket] = []
        self.in_flight = 0

    def bucket(self, at: float) -> Bucket:
        """The bucket of clock time ``at`` (created as needed)."""
        return self.second(max(0, int(at - self.start)))

    def second(self, index: int) -> Bucket:
        """The bucket of whole second ``index`` of the run (created as needed)."""
        while len(self.buckets) <= index:
            self.buckets.append(Bucket())
        return self.buckets[index]

    def phase(self, name: str) -> PhaseCounts:
        """The counts of phase ``name``."""
        counts = self.phases.get(name)
        if counts is None:
            counts = self.phases[name] = PhaseCounts()
        return counts

    def time(self, name: str, value: float | None) -> None:
        """One sample of timer ``name`` (None is ignored)."""
        if value is not None:
            timer = self.timers.get(name)
            if timer is None:
                timer = self.timers[name] = Histogram(SECONDS)
            timer.record(value)

    def response(self, method: str, status: int) -> None:
        """Count a final response to ``method``."""
        self.responses.setdefault(method, Counter())[str(status)] += 1

    def started(self, phase: str, at: float, measured: bool = True) -> None:
        """An operation of ``phase`` began at ``at``."""
        self.phase(phase).attempted += 1
        self.in_flight += 1
        if measured:
            self.bucket(at).started += 1

    def finished(
        self, phase: str, at: float, ok: bool, cause: str | None, latency: float | None,
        measured: bool = True,
    ) -> None:  # fmt: skip
        """An operation of ``phase`` ended at ``at``."""
        counts = self.phase(phase)
        self.in_flight -= 1
        if ok:
            counts.succeeded += 1
        else:
            counts.failed += 1
            counts.causes[cause or "unknown"] += 1
        if not measured:
            return
        bucket = self.bucket(at)
        if ok:
            bucket.succeeded += 1
            if latency is not None:
                bucket.latencies.record(latency)
        else:
            bucket.failed += 1
            bucket.causes[f"{phase}:{cause or 'unknown'}"] += 1

    def registration(
        self, phase: str, result: RegistrationResult, at: float, measured: bool = True
    ) -> None:
        """Account a registration (or unregistration) that ended."""
        codes = self.responses.get("REGISTER")
        if codes is None:
            codes = self.responses["REGISTER"] = Counter()
        for status in result.statuses:
            codes[_STATUS_TEXT.get(status) or str(status)] += 1
        if result.ok:
            self.time(phase, result.duration)
            self.time(_AUTH_TIMER.get(phase) or f"{phase}_auth", result.auth_duration)
        self.finished(phase, at, result.ok, result.cause, result.duration, measured)

    def call(self, result: CallResult, at: float) -> None:
        """Account a call that ended."""
        for status in result.statuses:
            self.response("INVITE", status)
        if result.bye_status is not None:
            self.response("BYE", result.bye_status)
        self.time("call_setup", result.setup_time)
        self.time("call_setup_auth", result.auth_setup_time)
        self.time("post_dial_delay", result.post_dial_delay)
        self.time("bye", result.bye_time)
        self.finished("calls", at, result.ok, result.cause, result.setup_time)
        media = result.media
        if media is not None:
            self.rtp.calls += 1
            self.rtp.add(media.to_caller)
            self.rtp.add(media.to_callee)
            sent = media.to_caller.sent + media.to_callee.sent
            lost = media.to_caller.lost + media.to_callee.lost
            latencies = [
                d.latency_ms_mean
                for d in (media.to_caller, media.to_callee)
                if d.latency_ms_mean is not None
            ]
            delay = sum(latencies) / len(latencies) if latencies else 0.0
            jitter = max(media.to_caller.jitter_ms, media.to_callee.jitter_ms)
            # A jitter buffer of twice the jitter adds to the mouth-to-ear delay.
            r, mos = call_quality(lost / sent if sent else 1.0, delay + 2 * jitter)
            self.rtp.r_factor.record(r)
            self.rtp.mos.record(mos)
            bucket = self.bucket(at)
            bucket.rtp_sent += sent
            bucket.rtp_lost += lost

    def sample_in_flight(self, at: float) -> None:
        """Remember how many operations are in flight now (once a second)."""
        self.bucket(at).in_flight = self.in_flight

    def recent_latencies(self, now: float, seconds: int = 5) -> Histogram:
        """The latencies of the last ``seconds`` whole seconds."""
        last = int(now - self.start)
        recent = Histogram(SECONDS)
        for index in range(max(0, last - seconds + 1), min(last + 1, len(self.buckets))):
            recent.merge(self.buckets[index].latencies)
        return recent

    def timeline(self) -> list[dict[str, Any]]:
        """The buckets, JSON-ready."""
        rows = []
        for second, bucket in enumerate(self.buckets):
            rows.append(
                {
                    "t": second,
                    "offered": round(bucket.offered, 3),
                    "started": bucket.started,
                    "succeeded": bucket.succeeded,
                    "failed": bucket.failed,
                    "failures": dict(bucket.causes),
                    "in_flight": bucket.in_flight,
                    "p50_ms": to_ms(bucket.latencies.percentile(50)),
                    "p95_ms": to_ms(bucket.latencies.percentile(95)),
                    "rtp_loss_percent": (
                        100.0 * bucket.rtp_lost / bucket.rtp_sent if bucket.rtp_sent else None
                    ),
                    "rtp_sent": bucket.rtp_sent,
                    "rtp_lost": bucket.rtp_lost,
                    "latency_histogram": bucket.latencies.as_dict(),
                }
            )
        return rows

    def timer_summaries(self) -> dict[str, dict[str, Any]]:
        """
        Every timer's summary, JSON-ready, in milliseconds (``p95_ms``...), with
        the ``histogram`` it comes from (values in seconds).
        """
        return {
            name: {**timer.summary().as_ms_dict(), "histogram": timer.as_dict()}
            for name, timer in sorted(self.timers.items())
        }


def finite(value: float | None) -> float | None:
    """``value`` unless it is NaN or infinite."""
    return value if value is not None and math.isfinite(value) else None
