"""
Admin API benchmark: latency of ``GET /api/v1/registrations?limit=100`` and
``GET /metrics`` at a fixed request rate while Warden holds SIPp registrations,
and how much that API load takes from SIP registration throughput.

Run from the repository root (``bench/api.sh`` does the same)::

    python -m bench.api              # 1,000 registrations, 200 requests/s, about 2 minutes
    python -m bench.api --quick      # smoke test

Phases, all on 127.0.0.1:

1. Start ``twistd warden`` (admin API on HTTPS), import ``--users`` extensions,
   register every one with SIPp (they stay registered: 1,000 bindings held),
   create an admin account and a read-only API token with ``wardenctl admin``.
2. *Registrations alone*: SIPp re-registers the users at ``--reg-rate`` for
   ``--seconds``; throughput is successful registrations per second of wall time.
3. *API alone*: ``wrk`` (Debian) over ``--connections`` kept-alive HTTPS
   connections, alternating the two URLs, each connection pausing after every
   response so that together they offer ``--api-rate``, for ``--seconds``.
4. *Both at once*: phases 2 and 3 together.
5. *Registrations alone* again, to see the drift of the machine.

Targets: API p95 < 50 ms at 200 requests/s during the registration load, and
registration throughput during the API load at least 90% of the mean of the two
runs without it. The result is one JSON document on stdout; progress on stderr.

Phases 2 to 5 each record the load of the rest of the machine (L{bench.machine}:
everything but the bench, SIPp, wrk and Warden's processes, plus stolen time);
a phase in which it reached 10% of a core is invalid, and the throughput drop
and the targets come only from valid phases.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.machine import MachineMeter, invalid_note
from bench.register import (
    Runner,
    log,
    machine,
    provision_in_batches,
    source_state,
    warden_processes,
)
from tests.integration.harness import REGISTER_SCENARIO, WardenProcess, run_process, wardenctl

PATHS = ("/api/v1/registrations?limit=100", "/metrics")
TARGET = {"api_rate": 200, "p95_ms": 50.0, "max_registration_drop": 0.10}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--users", type=int, default=1000, help="registrations held")
    parser.add_argument("--api-rate", type=float, default=200.0, help="API requests/s")
    parser.add_argument("--reg-rate", type=float, default=400.0, help="REGISTERs/s offered")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=10, help="HTTPS connections")
    parser.add_argument("--quick", action="store_true", help="a short run for smoke-testing")
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.quick:
        args.users = min(args.users, 200)
        args.seconds = min(args.seconds, 4.0)
    return args


WRK_SCRIPT = """
local paths = {%(paths)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1], {["Authorization"] = "Bearer %(token)s"})
end
delay = function() return %(delay_ms)d end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p95_us": %%d,'
    .. ' "p99_us": %%d, "max_us": %%d, "errors": %%d, "status_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
"""


class ApiLoad:
    """
    ``wrk`` (Debian package wrk) over kept-alive HTTPS connections, alternating
    the URLs. wrk is closed-loop; each connection waits ``delay`` after every
    response, chosen so that ``connections`` together offer ``rate`` requests/s.
    """

    def __init__(self, base: str, token: str, workdir: Path, connections: int) -> None:
        self._base = base
        self._token = token
        self._workdir = workdir
        self._connections = connections
        self._runs = 0

    async def run(self, rate: float, seconds: float) -> dict[str, Any]:
        """About ``rate`` requests per second for ``seconds``; the measurements."""
        self._runs += 1
        script = self._workdir / f"wrk-{self._runs}.lua"
        # The pause leaves room for a response time of about 8 ms.
        delay_ms = max(0, int(self._connections * 1000 / rate) - 8)
        paths = ", ".join(f'"{p}"' for p in PATHS)
        script.write_text(WRK_SCRIPT % {"paths": paths, "token": self._token,
                                        "delay_ms": delay_ms})  # fmt: skip
        script.chmod(0o600)
        args = ["wrk", "-t1", f"-c{self._connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "10s", "-s", str(script), self._base]  # fmt: skip
        done = await run_process(args, self._workdir, timeout=seconds + 60)
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-RESULT ")), None)
        if done.code != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.code}): {done.stderr}{done.stdout}")
        raw = json.loads(line.split(" ", 1)[1])
        wall = raw["duration_us"] / 1e6
        return {
            "rate": rate,
            "connections": self._connections,
            "delay_ms": delay_ms,
            "requests": raw["requests"],
            "errors": raw["errors"] + raw["status_errors"],
            "achieved_rate": round(raw["requests"] / wall, 1),
            "p50_ms": raw["p50_us"] / 1000,
            "p95_ms": raw["p95_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
        }


def api_line(result: dict[str, Any]) -> str:
    """The progress line of an API run."""
    return (
        f"API ~{result['rate']:g}/s: {result['requests']} requests at"
        f" {result['achieved_rate']}/s, {result['errors']} errors, p50/p95/p99"
        f" {result['p50_ms']}/{result['p95_ms']}/{result['p99_ms']} ms"
    )


def load_line(step: dict[str, Any]) -> str:
    """The load of the rest of the machine during a phase, for its progress line."""
    return (
        f"the rest of the machine {step['other_cpu_pct']}%, steal {step['steal_pct']}%"
        + invalid_note(step)
    )


def registration_rate(step: dict[str, Any]) -> float:
    """Successful registrations per second of wall time."""
    return round(step["succeeded"] / step["wall_seconds"], 1)


def registration_drop(
    alone: Iterable[dict[str, Any]], during: dict[str, Any]
) -> tuple[float | None, int]:
    """
    1 - the rate during the API load / the mean rate of the valid runs without
    it, and how many runs that mean is of (None, 0 without a valid run of each
    kind; None, n when the rate without the API load was 0).
    """
    rates = [registration_rate(step) for step in alone if step["valid"]]
    if not rates or not during["valid"]:
        return None, len(rates)
    baseline = sum(rates) / len(rates)
    if not baseline:
        return None, len(rates)
    return round(1 - registration_rate(during) / baseline, 3), len(rates)


async def run(reactor: Any, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every phase; the results."""
    warden = WardenProcess(workdir / "warden", settings={"admin": {"drain_timeout": 0.0}})
    log(f"starting Warden on SIP port {warden.port}, admin port {warden.admin_port}")
    await warden.start()
    try:
        users_csv = await provision_in_batches(warden, args.users)
        runner = Runner(argparse.Namespace(transport="udp"), workdir, users_csv)
        fill = await runner.step("fill", warden.address, warden.pid, REGISTER_SCENARIO,
                                 200.0, args.users)  # fmt: skip
        held = warden.count_bindings()
        await wardenctl(warden.config_path, "admin", "add", "bench")
        made = await wardenctl(warden.config_path, "admin", "token", "bench", "bench")
        token = made.stdout.strip()
        load = ApiLoad(f"https://127.0.0.1:{warden.admin_port}", token, workdir,
                       args.connections)  # fmt: skip
        log(api_line(await load.run(args.api_rate, 1.0)) + " (warm-up)")
        calls = int(args.reg_rate * args.seconds)

        def own() -> Iterable[int]:
            # The phase's processes besides the bench and the SIPp and wrk it reaps.
            return warden_processes(warden.pid).values()

        async def registrations(label: str) -> dict[str, Any]:
            # The step records the load of the rest of the machine (Runner.step).
            return await runner.step(label, warden.address, warden.pid, REGISTER_SCENARIO,
                                     args.reg_rate, calls)  # fmt: skip

        before = await registrations("reg-alone-1")
        cpu = warden.cpu_seconds()
        meter = MachineMeter(own)
        api_alone = await load.run(args.api_rate, args.seconds)
        api_alone.update(meter.load())
        api_alone["warden_cpu_ms_per_request"] = round(
            1000 * (warden.cpu_seconds() - cpu) / max(1, api_alone["requests"]), 3
        )
        log(f"{api_line(api_alone)}; {load_line(api_alone)}")
        log(f"Warden CPU per API request: {api_alone['warden_cpu_ms_per_request']} ms")
        cpu = warden.cpu_seconds()
        meter = MachineMeter(own)
        api_during, during = await defer.gatherResults([
            defer.Deferred.fromCoroutine(load.run(args.api_rate, args.seconds)),
            defer.Deferred.fromCoroutine(registrations("reg-with-api")),
        ])  # fmt: skip
        both_cpu = warden.cpu_seconds() - cpu
        # One phase, both runs sharing its load: SIPp's step alone would count
        # wrk, still running when SIPp ends, as load of the rest of the machine.
        both_load = meter.load()
        api_during.update(both_load)
        during.update(both_load)
        log(f"{api_line(api_during)}; reg-with-api and API: {load_line(during)}")
        after = await registrations("reg-alone-2")
        rss_mib = round(warden.rss_kib() / 1024, 1)
    finally:
        await warden.stop()
    drop, baseline_runs = registration_drop([before, after], during)
    return {
        "bindings_held": held,
        "fill": fill,
        "registrations_alone": [before, after],
        "api_alone": api_alone,
        "api_during_registrations": api_during,
        "registrations_during_api": during,
        "registration_rate_alone": [registration_rate(before), registration_rate(after)],
        "registration_rate_during_api": registration_rate(during),
        "registration_drop": drop,
        "registration_drop_baseline_runs": baseline_runs,
        "warden_cpu_pct_during_both": round(100 * both_cpu / during["wall_seconds"], 1),
        "warden_rss_mib": rss_mib,
        "invalid_steps": sum(not step["valid"] for step in (before, api_alone, during, after)),
    }


def api_ok(api: dict[str, Any]) -> bool | None:
    """
    No errors, p95 under the target, and at least 95% of the target rate
    achieved (None: the run is invalid).
    """
    if not api["valid"]:
        return None
    return bool(
        api["errors"] == 0
        and api["p95_ms"] < TARGET["p95_ms"]
        and api["achieved_rate"] >= 0.95 * TARGET["api_rate"]
    )


def targets(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """
    Each target, and whether all were met (None for a target, and for all of
    them unless one failed, when its phases were invalid).
    """
    drop = result["registration_drop"]
    drop_ok: bool | None
    if drop is not None:
        drop_ok = drop < TARGET["max_registration_drop"]
    elif result["registration_drop_baseline_runs"] and result["registrations_during_api"]["valid"]:
        drop_ok = False  # no registration succeeded without the API load
    else:
        drop_ok = None
    checks = {
        "api_alone_ok": api_ok(result["api_alone"]),
        "api_during_registrations_ok": api_ok(result["api_during_registrations"]),
        "registration_drop_ok": drop_ok,
        "registrations_held_ok": result["bindings_held"] >= args.users,
    }
    met: bool | None = all(checks.values())
    if not met and False not in checks.values():
        met = None
    return {**TARGET, **checks, "met": met}


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run and print the JSON document."""
    args = parse_args(argv)
    for binary, package in (("sipp", "sip-tester"), ("wrk", "wrk")):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is not installed (apt-get install {package})")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="warden-bench-api-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_average = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    try:
        result = await run(reactor, args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "command": shlex.join(["python", "-m", "bench.api", *argv]),
        "machine": machine(),
        "source": source_state(),
        "loadavg_at_start": load_average,
        "users": args.users,
        "api_rate": args.api_rate,
        "reg_rate": args.reg_rate,
        "seconds": args.seconds,
        **result,
        "target": targets(result, args),
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
