"""
Merging the reports of the shares of one run (``--workers``, or
``--worker-index``/``--worker-count`` on several machines) into one report:
counts added, histograms merged and percentiles computed again from them (never
averaged), the timeline added second by second, and the criteria applied again
to the whole.

``twistd -n warden-loadtest merge a.json b.json > all.json``

Report files are untrusted input: each is read only up to L{MAX_REPORT_BYTES},
every field used is checked, and a problem ends the merge with exit status 2 and
one line naming the file and the field (``b.json: timers.register.histogram.count:
...``). Reports of different runs (another PBX, test type, rate...), a share
given twice or overlapping users are refused the same way; so is an incomplete
set of shares, since criteria applied to part of a run say nothing about it.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

import attrs
from twisted.application import service
from twisted.python import usage

from .histogram import Histogram
from .options import EXIT_UNREACHABLE, EXIT_USAGE, TEST_TYPES
from .recorder import MILLISECONDS, RATING, SECONDS, Bucket, PhaseCounts, Recorder
from .report import REPORT_FORMAT, environment, evaluate, report_document
from .runner import Outcome
from .shares import offset, part
from .tap import LogChoosing, write_reports

#: Largest report file read.
MAX_REPORT_BYTES = 64 * 1024 * 1024
#: Options that must be equal in every share of one run.
RUN_KEYS = (
    "pbx_host", "sip_port", "transport", "domain", "test_type", "users", "provision",
    "first_user", "register_rate", "expires", "concurrent_calls", "total_calls", "call_rate",
    "call_duration", "duration", "ramp_up", "rtp", "max_pending", "min_success_rate",
    "max_p95_ms", "max_rtp_loss", "min_mos",
)  # fmt: skip
_MAX_NAMES = 1000
_MAX_TIMELINE = 1_000_000


class MergeError(Exception):
    """A report that cannot be merged; the message names the file and the field."""


@attrs.frozen
class Judge:
    """The criteria's thresholds, read from a report's ``config``."""

    test_type: str
    rtp: bool
    min_success_rate: float
    max_p95_ms: float
    max_rtp_loss: float
    min_mos: float


# -- reading untrusted reports ----------------------------------------------------------


def load_report(path: str, limit: int = MAX_REPORT_BYTES) -> dict[str, Any]:
    """
    The JSON document in ``path``, at most ``limit`` bytes, with no NaN or Infinity.

    Raises:
        MergeError: unreadable, too large, not JSON, not an object.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise MergeError(f"{path}: cannot read: {e.strerror}") from None
    if len(data) > limit:
        raise MergeError(f"{path}: larger than {limit} bytes")
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MergeError(f"{path}: not a JSON report: {e}") from None
    if not isinstance(document, dict):
        raise MergeError(f"{path}: not a JSON report: expected an object")
    return document


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


class _Fields:
    """Typed access to one untrusted report; errors name the file and the field."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, where: str, what: str) -> MergeError:
        return MergeError(f"{self.name}: {where}: {what}")

    def obj(self, parent: Any, key: Any, where: str) -> dict[str, Any]:
        value = parent[key] if isinstance(parent, list) else parent.get(key)
        if not isinstance(value, dict):
            raise self.fail(where, "expected an object")
        return value

    def items(self, parent: Any, key: str, where: str) -> list[Any]:
        value = parent.get(key)
        if not isinstance(value, list) or len(value) > _MAX_TIMELINE:
            raise self.fail(where, f"expected a list of at most {_MAX_TIMELINE}")
        return value

    def count(self, parent: dict[str, Any], key: str, where: str) -> int:
        value = parent.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**53:
            raise self.fail(where, "expected a non-negative integer")
        return value

    def number(self, parent: dict[str, Any], key: str, where: str, null: bool = False) -> Any:
        value = parent.get(key)
        if value is None and null:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(where, "expected a number")
        return value

    def text(self, parent: dict[str, Any], key: str, where: str, null: bool = False) -> Any:
        value = parent.get(key)
        if value is None and null:
            return None
        if not isinstance(value, str) or len(value) > 4096:
            raise self.fail(where, "expected a string")
        return value

    def counter(self, parent: dict[str, Any], key: str, where: str) -> Counter[str]:
        value = self.obj(parent, key, where)
        if len(value) > _MAX_NAMES:
            raise self.fail(where, f"more than {_MAX_NAMES} entries")
        out: Counter[str] = Counter()
        for name in value:
            if len(name) > 200:
                raise self.fail(where, "a name longer than 200 characters")
            out[name] = self.count(value, name, f"{where}.{name}")
        return out

    def histogram(self, parent: dict[str, Any], key: str, where: str, scale: float) -> Histogram:
        try:
            made = Histogram.from_dict(parent.get(key), where)
        except ValueError as e:
            raise MergeError(f"{self.name}: {e}") from None
        if made.scale != scale:
            raise self.fail(f"{where}.scale", f"expected {scale:g}")
        return made

    def when(self, parent: dict[str, Any], key: str) -> float:
        text = self.text(parent, key, key)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.fail(key, "expected an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise self.fail(key, "expected a time with its UTC offset")
        return moment.timestamp()


def judge(f: _Fields, config: dict[str, Any]) -> Judge:
    """The thresholds of ``config``, checked."""
    test_type = f.text(config, "test_type", "config.test_type")
    if test_type not in TEST_TYPES:
        raise f.fail("config.test_type", f"expected one of {', '.join(TEST_TYPES)}")
    if not isinstance(config.get("rtp"), bool):
        raise f.fail("config.rtp", "expected true or false")
    limits = [
        float(f.number(config, k, f"config.{k}"))
        for k in ("min_success_rate", "max_p95_ms", "max_rtp_loss", "min_mos")
    ]
    return Judge(test_type, config["rtp"], *limits)


def check_shares(named: list[tuple[str, list[dict[str, Any]]]], config: dict[str, Any]) -> None:
    """
    The shares of every report together are exactly the shares of one run: the
    same count, each index once, each share's users where that run puts them.

    Raises:
        MergeError: naming the file and what is wrong.
    """
    users = config["users"]
    seen: dict[int, str] = {}
    count: int | None = None
    for name, shares in named:
        f = _Fields(name)
        for i, share in enumerate(shares):
            where = f"shares[{i}]"
            index = f.count(share, "index", f"{where}.index")
            n = f.count(share, "count", f"{where}.count")
            if count is None:
                count = n
            if n != count or not 0 <= index < n:
                raise f.fail(where, f"share {index} of {n} does not belong to a run of {count}")
            if index in seen:
                raise f.fail(where, f"share {index} of {n} is already in {seen[index]}")
            start, end = offset(users, n, index), offset(users, n, index) + part(users, n, index)
            got = (f.count(share, "user_start", where), f.count(share, "user_end", where))
            if got != (start, end):
                raise f.fail(
                    where, f"users {got[0]}..{got[1]} are not share {index}'s {start}..{end}"
                )
            seen[index] = name
    missing = sorted(set(range(count or 0)) - set(seen))
    if count is None or missing:
        raise MergeError(
            f"incomplete run: share(s) {', '.join(map(str, missing)) or 'all'} of "
            f"{count or '?'} missing (every share's report is needed)"
        )


# -- adding up --------------------------------------------------------------------------


def _absorb_rtp(f: _Fields, rtp: dict[str, Any], into: Recorder) -> None:
    totals = into.rtp
    totals.calls += f.count(rtp, "calls", "rtp.calls")
    totals.sent += f.count(rtp, "packets_sent", "rtp.packets_sent")
    totals.received += f.count(rtp, "packets_received", "rtp.packets_received")
    totals.lost += f.count(rtp, "packets_lost", "rtp.packets_lost")
    highest = f.number(rtp, "latency_ms_max", "rtp.latency_ms_max", null=True)
    if highest is not None:
        totals.latency_ms_max = max(totals.latency_ms_max, float(highest))
    for key, scale in (("jitter_ms", MILLISECONDS), ("latency_ms", MILLISECONDS),
                       ("mos", RATING), ("r_factor", RATING)):  # fmt: skip
        part_ = f.obj(rtp, key, f"rtp.{key}")
        getattr(totals, key).merge(f.histogram(part_, "histogram", f"rtp.{key}.histogram", scale))


def _absorb_timeline(f: _Fields, rows: list[Any], into: Recorder) -> None:
    for i, row in enumerate(rows):
        where = f"timeline[{i}]"
        row = f.obj(rows, i, where)
        second = f.count(row, "t", f"{where}.t")
        if second >= _MAX_TIMELINE:
            raise f.fail(f"{where}.t", f"beyond {_MAX_TIMELINE} s")
        bucket: Bucket = into.second(second)
        offered = f.number(row, "offered", f"{where}.offered")
        if not math.isfinite(offered) or offered < 0:
            raise f.fail(f"{where}.offered", "expected a non-negative number")
        bucket.offered += offered
        for key in ("started", "succeeded", "failed", "in_flight", "rtp_sent", "rtp_lost"):
            setattr(bucket, key, getattr(bucket, key) + f.count(row, key, f"{where}.{key}"))
        bucket.causes.update(f.counter(row, "failures", f"{where}.failures"))
        bucket.latencies.merge(
            f.histogram(row, "latency_histogram", f"{where}.latency_histogram", SECONDS)
        )


def absorb(name: str, report: dict[str, Any], into: Recorder) -> None:
    """Add what ``report`` (from file ``name``) measured to ``into``."""
    f = _Fields(name)
    phases = f.obj(report, "phases", "phases")
    if len(phases) > _MAX_NAMES:
        raise f.fail("phases", f"more than {_MAX_NAMES} phases")
    for phase in phases:
        where = f"phases.{phase}"
        counts = f.obj(phases, phase, where)
        mine: PhaseCounts = into.phase(phase[:200])
        mine.attempted += f.count(counts, "attempted", f"{where}.attempted")
        mine.succeeded += f.count(counts, "succeeded", f"{where}.succeeded")
        mine.failed += f.count(counts, "failed", f"{where}.failed")
        mine.causes.update(f.counter(counts, "failures", f"{where}.failures"))
    responses = f.obj(report, "responses", "responses")
    if len(responses) > _MAX_NAMES:
        raise f.fail("responses", f"more than {_MAX_NAMES} methods")
    for method in responses:
        counted = f.counter(responses, method, f"responses.{method}")
        into.responses.setdefault(method[:200], Counter()).update(counted)
    timers = f.obj(report, "timers", "timers")
    if len(timers) > _MAX_NAMES:
        raise f.fail("timers", f"more than {_MAX_NAMES} timers")
    for timer in timers:
        where = f"timers.{timer}"
        made = f.histogram(f.obj(timers, timer, where), "histogram", f"{where}.histogram", SECONDS)
        into.timers.setdefault(timer[:200], Histogram(SECONDS)).merge(made)
    if report.get("rtp") is not None:
        _absorb_rtp(f, f.obj(report, "rtp", "rtp"), into)
    _absorb_timeline(f, f.items(report, "timeline", "timeline"), into)


def merge_reports(
    named: list[tuple[str, dict[str, Any]]], config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    One report of the run from the reports of its shares (``(file name, report)``);
    ``config`` replaces the merged report's configuration (what ``--workers`` was
    given), otherwise it is the first report's, as the whole run.

    Raises:
        MergeError: a report is malformed, of another run, a share repeated or missing.
    """
    if not named:
        raise MergeError("no reports to merge")
    first_name, first = named[0]
    checked: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
    for name, report in named:
        f = _Fields(name)
        if report.get("tool") != "warden-loadtest":
            raise f.fail("tool", "not a warden-loadtest report")
        if report.get("format") != REPORT_FORMAT:
            raise f.fail("format", f"expected {REPORT_FORMAT} (reports of this version)")
        run = f.obj(report, "config", "config")
        for key in RUN_KEYS:
            if key not in run:
                raise f.fail(f"config.{key}", "missing")
            if run[key] != first["config"].get(key):
                raise f.fail(
                    f"config.{key}",
                    f"{run[key]!r} differs from {first_name}'s {first['config'].get(key)!r}: "
                    "not the same run",
                )
        shares = [f.obj(report["shares"], i, f"shares[{i}]")
                  for i in range(len(f.items(report, "shares", "shares")))]  # fmt: skip
        checked.append((name, report, shares))
    whole = dict(first["config"])
    thresholds = judge(_Fields(first_name), whole)
    users = _Fields(first_name).count(whole, "users", "config.users")
    if users < 1:
        raise MergeError(f"{first_name}: config.users: expected at least 1")
    check_shares([(name, shares) for name, _, shares in checked], whole)
    starts = [_Fields(name).when(report, "started_at") for name, report, _ in checked]
    ends = [_Fields(name).when(report, "ended_at") for name, report, _ in checked]
    recorder = Recorder(min(starts))
    unreachable, interrupted = [], []
    for name, report, shares in checked:
        f = _Fields(name)
        absorb(name, report, recorder)
        label = ", ".join(f"share {s['index']}" for s in shares)
        if f.text(report, "unreachable", "unreachable", null=True):
            unreachable.append(f"{label}: {report['unreachable']}")
        if f.text(report, "interrupted", "interrupted", null=True):
            interrupted.append(f"{label}: {report['interrupted']}")
    stopped = "; ".join(interrupted) or None
    criteria = tuple(evaluate(thresholds, recorder, stopped))
    if unreachable:
        code = EXIT_UNREACHABLE
    else:
        code = 0 if all(c.passed for c in criteria) else 1
    outcome = Outcome(code, criteria, "; ".join(unreachable) or None, stopped, min(starts),
                      max(ends))  # fmt: skip
    all_shares = sorted((s for _, _, shares in checked for s in shares), key=lambda s: s["index"])
    env = {**environment(), "merged_from": [name for name, _, _ in checked]}
    if config is None:
        config = {**whole, "worker_index": None}
    return report_document(config, all_shares, env, recorder, outcome)


# -- the subcommand ---------------------------------------------------------------------


class MergeOptions(usage.Options):
    """``twistd warden-loadtest merge REPORT.json...``."""

    synopsis = "REPORT.json [REPORT.json ...]"
    longdesc = (
        "Merge the JSON reports of every share of one run (--worker-index/--worker-count "
        "on several machines) into one report: counts added, histograms merged and "
        "percentiles recomputed, the criteria applied again. Exit status: 0 pass, 1 a "
        "criterion failed, 2 a report is invalid, of another run, or a share is missing "
        "or repeated, 3 the PBX was unreachable."
    )
    optParameters = [  # noqa: RUF012
        ["output", "o", "-", "Write the merged JSON report here ('-': stdout)."],
        ["html-report", None, None, "Also write a self-contained HTML report."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.reports: list[str] = []

    def parseArgs(self, *reports: str) -> None:
        """The report files."""
        if not reports:
            raise usage.UsageError("merge: give the reports to merge")
        self.reports = list(reports)


class MergeService(LogChoosing, service.Service):
    """Merges once the reactor runs, writes, and calls ``exit`` with the verdict."""

    def __init__(
        self,
        options: MergeOptions,
        reactor: Any,
        exit: Callable[[int], None],
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.options = options
        self.reactor = reactor
        self.exit = exit
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr

    def startService(self) -> None:
        """Merge as soon as the reactor runs."""
        super().startService()  # type: ignore[no-untyped-call]
        self.reactor.callWhenRunning(lambda: self.exit(self.run()))

    def run(self) -> int:
        """Merge and write; the exit status."""
        try:
            named = [(path, load_report(path)) for path in self.options.reports]
            merged = merge_reports(named)
        except MergeError as e:
            self.err.write(f"warden-loadtest merge: {e}\n")
            self.err.flush()
            return EXIT_USAGE
        write_reports(merged, self.options["output"], self.options["html-report"], self.out,
                      self.err)  # fmt: skip
        return int(merged["exit_code"])


__all__ = ["MergeError", "MergeOptions", "MergeService", "load_report", "merge_reports"]
