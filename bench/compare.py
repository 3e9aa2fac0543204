"""
Before and after on the same machine in the same run: the hot-path and call-rate
benchmarks of two checkouts of Warden, interleaved.

Usage::

    python bench/compare.py --before DIR --after DIR [--rounds 3] [--workdir DIR]
        [--only callgrind,hotpath,cps,cps_callgrind] [--callgrind-users 300]
        [--hotpath-users 20000] [--hotpath-rounds 3] [--cps-rate 50] [--cps-seconds 25]
        [--cps-callgrind-rate 3] [--cps-callgrind-seconds 40] [--cps-callgrind-settle 35]
        [--max-other-pct 10] [--quiet-wait 30]

``DIR`` is a checkout of Warden (``git worktree add --detach DIR COMMIT``). Each
checkout's own benchmark runs against its own ``warden`` (``PYTHONPATH=DIR``, from
``DIR``, ``PYTHONHASHSEED=0``). Each round runs every kind of step for the before
checkout, then for the after one (A/B/A/B...):

* ``callgrind``: one round of ``bench/hotpath.py``'s stack under
  ``valgrind --tool=callgrind`` (``bench/hotpath_callgrind.py``), collecting only
  while the server handles the datagrams: instructions per request of each phase.
  Instruction counts do not depend on what else the machine runs.
* ``hotpath``: ``bench/hotpath.py --no-memory`` as it is: µs of CPU (and of wall
  time) per request, best of its rounds.
* ``cps``: ``python -m bench.calls --mode cps`` at one modest rate for one short step
  (a Warden of its own): Warden's CPU per call (its CPU over the step, from
  ``/proc/<pid>/stat``, over the calls that succeeded).
* ``cps_callgrind``: the same with Warden under callgrind (``bench/calls_callgrind.py``)
  at ``--cps-callgrind-rate`` for ``--cps-callgrind-seconds``: Warden's instructions
  (every thread) from the start of the step until ``--cps-callgrind-settle`` seconds
  after it, over the calls that succeeded.

For every step the CPU that everything else on the machine used meanwhile is
recorded in % of one core: ``/proc/stat`` busy time minus the step's own processes
(for ``cps``, the figure ``bench/calls.py`` measures over its step; otherwise the
child's time and that of the children it reaped). A ``hotpath`` or ``cps`` step is
*valid* when that stayed under ``--max-other-pct`` (and, for ``cps``, every call
succeeded); the summary of those metrics uses valid steps only. ``callgrind``
steps are always valid; ``cps_callgrind`` steps when every call succeeded without
a retransmission (a retransmitted request is work a faster run would not do).
Before a ``hotpath`` or ``cps`` step, the script waits up to ``--quiet-wait``
seconds for 2 s in which the machine was under that bound.

Prints one JSON document: the checkouts (commit, tracked changes), the machine,
every step, and per metric the median of the valid steps before and after, their
ratio (after / before; every metric is a cost, so above 1 is slower) and whether it
is within 5%. Every output file (callgrind dumps, for ``callgrind_annotate``; the
benchmarks' own JSON and logs) is kept in ``--workdir``. Needs ``valgrind``, a C
compiler (``cc``) and the valgrind headers for ``callgrind``, SIPp for the ``cps``
kinds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import (  # noqa: E402
    MAX_OTHER_PCT,
    children_cpu_seconds,
    quiet_enough,
    system_cpu_seconds,
)
from bench.register import log, machine  # noqa: E402

KINDS = ("callgrind", "hotpath", "cps", "cps_callgrind")
TOLERANCE = 1.05
TOGGLE_SOURCE = """\
#include <valgrind/callgrind.h>
void warden_callgrind_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
void warden_callgrind_dump(const char *reason) { CALLGRIND_DUMP_STATS_AT(reason); }
"""
# Per kind: the metrics the summary compares (all costs: lower is better).
METRICS = {
    "callgrind": (
        "instructions_per_request",
        "phase1_instructions_per_request",
        "phase2_instructions_per_request",
    ),
    "hotpath": (
        "us_per_request",
        "phase1_us_per_request",
        "phase2_us_per_request",
        "phase1_wall_us_per_request",
        "phase2_wall_us_per_request",
    ),
    "cps": ("warden_cpu_ms_per_call",),
    "cps_callgrind": ("instructions_per_call",),
}
LOAD_INDEPENDENT = ("callgrind", "cps_callgrind")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, type=Path, help="the checkout before")
    parser.add_argument("--after", required=True, type=Path, help="the checkout after")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument("--only", default=",".join(KINDS), help="kinds of step, comma-separated")
    parser.add_argument("--callgrind-users", type=int, default=300)
    parser.add_argument("--hotpath-users", type=int, default=20_000)
    parser.add_argument("--hotpath-rounds", type=int, default=3)
    parser.add_argument("--cps-rate", type=int, default=50, help="calls per second")
    parser.add_argument("--cps-seconds", type=float, default=25.0, help="length of a cps step")
    parser.add_argument("--cps-callgrind-rate", type=int, default=3, help="calls per second")
    parser.add_argument("--cps-callgrind-seconds", type=float, default=40.0)
    parser.add_argument("--cps-callgrind-settle", type=float, default=35.0)
    parser.add_argument(
        "--max-other-pct", type=float, default=MAX_OTHER_PCT, help="validity bound"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait at most, before a hotpath or cps step, for a quiet machine",
    )
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a new one)")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"--only: unknown kind(s) {', '.join(sorted(unknown))}")
    for name in ("before", "after"):
        path = getattr(args, name).resolve()
        if not (path / "warden" / "__init__.py").is_file():
            parser.error(f"--{name} {path}: not a checkout of Warden (no warden/__init__.py)")
        setattr(args, name, path)
    return args


@dataclass(frozen=True)
class Checkout:
    """One side of the comparison."""

    label: str
    path: Path

    def env(self) -> dict[str, str]:
        """The environment its benchmarks run in: its own ``warden`` first on the path."""
        return dict(os.environ, PYTHONPATH=str(self.path), PYTHONHASHSEED="0")

    def describe(self) -> dict[str, Any]:
        """Its commit and the tracked files that differ from it."""

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(self.path), *args], capture_output=True, text=True, check=False
            )
            return done.stdout.strip()

        changed = git("status", "--porcelain", "--untracked-files=no")
        return {
            "path": str(self.path),
            "commit": git("rev-parse", "HEAD"),
            "subject": git("log", "-1", "--format=%s"),
            "tracked_changes": [line[3:] for line in changed.splitlines()],
        }


class LoadMeter:
    """
    What the machine did while one child process ran: CPU of everything else in %
    of one core (``/proc/stat`` busy time minus the CPU of the children this
    process reaped meanwhile), steal, wall seconds.
    """

    def __init__(self) -> None:
        self._busy, self._steal = system_cpu_seconds()
        self._children = children_cpu_seconds()
        self._wall = time.perf_counter()

    def result(self) -> dict[str, float]:
        """The figures since construction (call once the child was reaped)."""
        busy, steal = system_cpu_seconds()
        wall = time.perf_counter() - self._wall
        child = children_cpu_seconds() - self._children
        others = busy - self._busy - child
        return {
            "other_cpu_pct": round(max(0.0, 100 * others / wall), 1),
            "steal_pct": round(100 * (steal - self._steal) / wall, 1),
            "child_cpu_seconds": round(child, 2),
            "seconds": round(wall, 2),
        }


def run_child(
    command: list[str], checkout: Checkout, log_path: Path, timeout: float
) -> tuple[str, dict[str, float]]:
    """Run ``command`` in ``checkout``; its stdout and the load meanwhile. Raises on failure."""
    meter = LoadMeter()
    with open(log_path, "w", encoding="utf-8") as stderr:
        done = subprocess.run(
            command, cwd=checkout.path, env=checkout.env(), stdout=subprocess.PIPE,
            stderr=stderr, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    load = meter.result()
    if done.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{shlex.join(command)} exited {done.returncode}:\n{tail}")
    return done.stdout, load


def build_toggle_library(workdir: Path) -> Path:
    """The shared library turning callgrind's collection on/off from Python (ctypes)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or shutil.which("valgrind") is None:
        raise SystemExit(
            "callgrind steps need valgrind and a C compiler (apt-get install valgrind gcc)"
        )
    source = workdir / "callgrind_toggle.c"
    source.write_text(TOGGLE_SOURCE, encoding="ascii")
    library = workdir / "callgrind_toggle.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True
    )
    return library


def callgrind_totals(path: Path) -> int:
    """The instruction count (``totals:`` line) of one callgrind dump file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def callgrind_step(checkout: Checkout, out: Path, library: Path, users: int) -> dict[str, Any]:
    """Instructions per request of each phase, for ``users`` users."""
    command = [
        "valgrind", "--tool=callgrind", "--collect-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, str(ROOT / "bench" / "hotpath_callgrind.py"),
        str(library), str(checkout.path), str(users),
    ]  # fmt: skip
    _, load = run_child(command, checkout, out.with_suffix(".log"), timeout=1800)
    phase1 = callgrind_totals(Path(f"{out}.1"))
    phase2 = callgrind_totals(Path(f"{out}.2"))
    return {
        "users": users,
        "phase1_instructions": phase1,
        "phase2_instructions": phase2,
        "instructions_per_request": round((phase1 + phase2) / (2 * users)),
        "phase1_instructions_per_request": round(phase1 / users),
        "phase2_instructions_per_request": round(phase2 / users),
        "dumps": [f"{out}.1", f"{out}.2"],
        **load,
    }


def hotpath_step(checkout: Checkout, out: Path, users: int, rounds: int) -> dict[str, Any]:
    """``bench/hotpath.py --no-memory`` of the checkout, as it reports itself."""
    command = [
        sys.executable, "bench/hotpath.py", "--users", str(users), "--rounds", str(rounds),
        "--no-memory",
    ]  # fmt: skip
    stdout, load = run_child(command, checkout, out.with_suffix(".log"), timeout=1800)
    out.write_text(stdout, encoding="utf-8")
    result: dict[str, Any] = json.loads(stdout)
    return {**{key: result[key] for key in METRICS["hotpath"]}, **load}


def cps_step(checkout: Checkout, out: Path, rate: int, seconds: float) -> dict[str, Any]:
    """One ``bench.calls --mode cps`` step of the checkout: Warden's CPU per call."""
    workdir = out.with_suffix("")
    command = [
        sys.executable, "-m", "bench.calls", "--mode", "cps", "--steps", str(rate),
        "--step-seconds", f"{seconds:g}", "--workdir", str(workdir),
    ]  # fmt: skip
    stdout, load = run_child(command, checkout, out.with_suffix(".log"), timeout=seconds * 4 + 300)
    out.write_text(stdout, encoding="utf-8")
    return cps_figures(json.loads(stdout), load)


def cps_figures(document: dict[str, Any], load: dict[str, float]) -> dict[str, Any]:
    """
    The figures of the one step in ``bench.calls``' JSON: Warden's CPU per call, and
    the other-CPU that ``bench.calls`` measured over the step itself (the whole
    run's, with start-up and provisioning, is ``run_other_cpu_pct``).
    """
    (step,) = document["cps"]["steps"]
    succeeded = step["succeeded"]
    cpu_seconds = step["warden_cpu_pct"] / 100 * step["wall_seconds"]
    return {
        "warden_cpu_ms_per_call": round(1000 * cpu_seconds / succeeded, 3) if succeeded else None,
        "rate": step["rate"],
        "planned": step["planned"],
        "succeeded": succeeded,
        "failed": step["failed"],
        "achieved_rate": step["achieved_rate"],
        "all_ok": step["all_ok"],
        "warden_cpu_pct": step["warden_cpu_pct"],
        "sipp_uac_cpu_pct": step["sipp_uac_cpu_pct"],
        "sipp_uas_cpu_pct": step["sipp_uas_cpu_pct"],
        "other_cpu_pct": step["other_cpu_pct"],
        "steal_pct": step["steal_pct"],
        "seconds": step["wall_seconds"],
        "run_other_cpu_pct": load["other_cpu_pct"],
        "run_seconds": load["seconds"],
    }


def cps_callgrind_step(
    checkout: Checkout, out: Path, rate: int, seconds: float, settle: float
) -> dict[str, Any]:
    """One ``bench.calls --mode cps`` step with Warden under callgrind: instructions per call."""
    workdir = out.with_suffix("")
    command = [
        sys.executable, str(ROOT / "bench" / "calls_callgrind.py"), str(out), f"{settle:g}",
        "--mode", "cps", "--steps", str(rate), "--step-seconds", f"{seconds:g}",
        "--workdir", str(workdir),
    ]  # fmt: skip
    timeout = seconds * 4 + settle + 600
    stdout, load = run_child(command, checkout, out.with_suffix(".log"), timeout)
    out.with_suffix(".json").write_text(stdout, encoding="utf-8")
    (step,) = json.loads(stdout)["cps"]["steps"]
    instructions = callgrind_totals(Path(f"{out}.1"))
    succeeded = step["succeeded"]
    return {
        "instructions_per_call": round(instructions / succeeded) if succeeded else None,
        "instructions": instructions,
        "rate": step["rate"],
        "planned": step["planned"],
        "succeeded": succeeded,
        "failed": step["failed"],
        "retransmissions": step["retransmissions"],
        "all_ok": step["all_ok"],
        "other_cpu_pct": step["other_cpu_pct"],
        "dumps": [f"{out}.1"],
        "run_seconds": load["seconds"],
    }


def is_valid(kind: str, step: dict[str, Any], max_other_pct: float) -> bool:
    """Whether a step's figures may be published (see the module docstring)."""
    if kind == "callgrind":
        return True
    if kind == "cps_callgrind":
        return bool(step["all_ok"] and step["retransmissions"] == 0)
    if kind == "cps" and not step["all_ok"]:
        return False
    return quiet_enough(step, max_other_pct)


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: median of the valid steps before and after, their ratio, the spread."""
    summary: dict[str, Any] = {}
    for kind, metrics in METRICS.items():
        ours = [s for s in steps if s["kind"] == kind]
        if not ours:
            continue
        for metric in metrics:
            entry: dict[str, Any] = {"kind": kind}
            for label in ("before", "after"):
                side = [s for s in ours if s["checkout"] == label]
                values = [s[metric] for s in side if s["valid"] and s.get(metric) is not None]
                entry[label] = statistics.median(values) if values else None
                entry[f"{label}_valid_steps"] = len(values)
                entry[f"{label}_invalid_steps"] = len(side) - len(values)
                entry[f"{label}_range"] = [min(values), max(values)] if values else None
            if entry["before"] and entry["after"] is not None:
                entry["ratio"] = round(entry["after"] / entry["before"], 4)
                entry["within_5pct"] = entry["ratio"] <= TOLERANCE
            else:
                entry["ratio"] = None
                entry["within_5pct"] = None
            summary[f"{kind}.{metric}"] = entry
    return summary


def wait_quiet(max_pct: float, limit: float) -> dict[str, float]:
    """
    Wait, up to ``limit`` seconds, for 2 s in which the machine used less than
    ``max_pct`` of a core (this process sleeps meanwhile, and no step runs);
    how long it waited and the last sample.
    """
    started = time.perf_counter()
    while True:
        busy, _ = system_cpu_seconds()
        before = time.perf_counter()
        time.sleep(2.0)
        pct = 100 * (system_cpu_seconds()[0] - busy) / (time.perf_counter() - before)
        waited = time.perf_counter() - started
        if pct < max_pct or waited >= limit:
            return {"quiet_wait_seconds": round(waited, 1), "load_before_pct": round(pct, 1)}


def run_step(
    kind: str, checkout: Checkout, round_no: int, args: argparse.Namespace, library: Path | None
) -> dict[str, Any]:
    """One step of ``kind`` for ``checkout``, with its validity."""
    out = args.workdir / kind / f"r{round_no}-{checkout.label}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    quiet = kind not in LOAD_INDEPENDENT
    waited = wait_quiet(args.max_other_pct, args.quiet_wait) if quiet else {}
    started = time.strftime("%H:%M:%S", time.gmtime())
    if kind == "callgrind":
        assert library is not None
        figures = callgrind_step(checkout, out, library, args.callgrind_users)
    elif kind == "hotpath":
        figures = hotpath_step(checkout, out, args.hotpath_users, args.hotpath_rounds)
    elif kind == "cps":
        figures = cps_step(checkout, out, args.cps_rate, args.cps_seconds)
    else:
        figures = cps_callgrind_step(
            checkout, out, args.cps_callgrind_rate, args.cps_callgrind_seconds,
            args.cps_callgrind_settle,
        )  # fmt: skip
    step = {
        "kind": kind,
        "round": round_no,
        "checkout": checkout.label,
        "started_utc": started,
        **waited,
        **figures,
    }
    step["valid"] = is_valid(kind, step, args.max_other_pct)
    shown = {m: step[m] for m in METRICS[kind][:1]}
    log(
        f"round {round_no} {kind} {checkout.label}: {shown},"
        f" others {step['other_cpu_pct']}% -> {'valid' if step['valid'] else 'INVALID'}"
    )
    return step


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print the JSON document."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="warden-compare-"))).resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log(f"files in {args.workdir}")
    checkouts = [Checkout("before", args.before), Checkout("after", args.after)]
    library = build_toggle_library(args.workdir) if "callgrind" in args.kinds else None
    document: dict[str, Any] = {
        "command": shlex.join(["python", "bench/compare.py", *(argv or sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "loadavg_at_start": Path("/proc/loadavg").read_text(encoding="ascii").split()[:3],
        "checkouts": {c.label: c.describe() for c in checkouts},
        "max_other_pct": args.max_other_pct,
        "settings": {
            "callgrind_users": args.callgrind_users,
            "hotpath_users": args.hotpath_users,
            "hotpath_rounds": args.hotpath_rounds,
            "cps_rate": args.cps_rate,
            "cps_seconds": args.cps_seconds,
            "cps_callgrind_rate": args.cps_callgrind_rate,
            "cps_callgrind_seconds": args.cps_callgrind_seconds,
            "cps_callgrind_settle": args.cps_callgrind_settle,
        },
        "workdir": str(args.workdir),
    }
    steps: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        for kind in args.kinds:
            for checkout in checkouts:
                steps.append(run_step(kind, checkout, round_no, args, library))
    document["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    document["summary"] = summarize(steps)
    document["steps"] = steps
    text = json.dumps(document, indent=2)
    (args.workdir / "compare.json").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
