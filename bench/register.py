"""
Registration benchmark: digest-authenticated REGISTERs per second that one
Warden process sustains while holding 50,000 bindings, with the load
generator's own ceiling measured alongside.

Run from the repository root::

    python -m bench.register            # full run, about eight minutes
    python -m bench.register --quick    # smoke test, well under a minute

Phases, all on 127.0.0.1:

1. Start ``twistd warden`` on a fresh data directory and import ``--users``
   extensions with ``wardenctl extension import`` in batches.
2. Fill: SIPp registers every extension once (``--fill-rate``), so that each
   holds one binding; later steps re-register the same extensions from the same
   SIPp address, refreshing those bindings.
3. Steps: SIPp's ``bench/scenarios/register.xml`` (401 challenge, then the
   authenticated REGISTER) at increasing rates, ``--step-seconds`` each,
   stopping after the first step with a failed call (or in which SIPp could
   not start calls at even half the rate). Per step: calls attempted,
   succeeded and failed (``-trace_stat``), p50/p95/p99 of the authenticated
   REGISTER's response time (``-trace_rtt``), and the CPU used by Warden
   (``/proc/<pid>/stat``), by SIPp (``RUSAGE_CHILDREN``) and by everything
   else on the machine (``/proc/stat``) over the step's wall time (100% = one
   core). A rate counts as sustained when every call succeeded and SIPp kept
   95% of it, in a valid step: one in which everything else on the machine
   and the hypervisor's stolen time stayed under 10% of a core together
   (``bench.machine``); other steps are reported, marked ``valid: false``.
4. Reference: the same rates against SIPp itself as the registrar, twice: a UAS
   answering each REGISTER with 200 directly (``register_uas.xml`` with
   ``register_noauth.xml``), and one that mirrors Warden's exchange with a 401
   then a 200 without checking anything (``register_uas_challenge.xml`` with
   ``register.xml``).

Progress goes to stderr; the result is one JSON document on stdout.

SIPp's response times come in steps of the kernel's coarse clock tick (4 ms at
``CONFIG_HZ=250``), so latencies are multiples of that tick.

``--workers N`` runs Warden with ``[sip] workers = N`` and its state in a
throwaway redis-server (ADR 0032; docs/PERFORMANCE.md "SIP worker
processes"); ``--sipp-procs K`` splits users and rate over K SIPp processes,
each from its own port, so the kernel spreads them over the workers.

``--cpu-cap CORES`` gives each SIP worker (or, without workers, the one SIP
process) a cgroup of its own capped at CORES cores (``bench/cpucap.py``), so
that 1 vs 2 workers measures how the design scales and not how many cores the
machine has left beside SIPp and Redis; each step reports how often each
capped process was throttled (``cpu_cap``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.cpucap import CpuCaps, throttle_note
from bench.machine import MachineMeter, children_cpu_seconds, invalid_note, probe
from tests.integration.clients import LOCALHOST, poll
from tests.integration.harness import (
    REGISTER_SCENARIO,
    WardenProcess,
    free_port,
    process_cpu_seconds,
    run_sipp,
    sipp_command,
    sipp_register_args,
    spawn,
    wardenctl,
    write_user_files,
)
from tests.integration.sipp_traces import (
    SippStats,
    percentile,
    read_sipp_errors,
    read_sipp_rtts,
    read_sipp_stats,
)
from warden.ops.drtest.scratch import free_port_run, port_in_use

SCENARIOS = REGISTER_SCENARIO.parent
RATES = (100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000)
QUICK_RATES = (200, 500, 1000)
TARGET = {"rate": 5000, "p95_ms": 20.0, "bindings": 50_000}
SIPP_BUFFER_BYTES = 4 * 1024 * 1024
IMPORT_BATCH = 10_000
TRANSPORTS = {"udp": "u1", "tcp": "t1"}


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.register", description=__doc__)
    parser.add_argument("--users", type=int, default=50_000, help="extensions (default 50000)")
    parser.add_argument("--max-rate", type=int, default=max(RATES), help="highest step rate")
    parser.add_argument("--rates", help="comma-separated step rates (default: 100..6000)")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="length of a step")
    parser.add_argument("--fill-rate", type=float, default=300.0, help="rate of the fill")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="udp")
    parser.add_argument("--quick", action="store_true", help="a small run for smoke-testing")
    parser.add_argument("--no-reference", action="store_true", help="skip the SIPp reference")
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="[sip] workers (ADR 0032), with [state] in a throwaway redis-server whose CPU"
        " counts as Warden's (default 0: one process, bindings in SQLite, as before)",
    )
    parser.add_argument(
        "--sipp-procs",
        type=int,
        default=1,
        help="SIPp processes, each from its own port with its share of users and rate"
        " (the kernel spreads the workers' shared port by source address)",
    )
    parser.add_argument(
        "--cpu-cap",
        type=float,
        help="cap each SIP worker (or the one SIP process) at this many cores, each in a"
        " cgroup of its own (bench/cpucap.py; needs root)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.users = min(args.users, 2000)
        args.step_seconds = min(args.step_seconds, 3.0)
        args.fill_rate = min(args.fill_rate, 300.0)
        default_rates: Sequence[int] = QUICK_RATES
    else:
        default_rates = RATES
    rates = [int(r) for r in args.rates.split(",")] if args.rates else list(default_rates)
    args.rate_list = [r for r in rates if r <= args.max_rate]
    if not args.rate_list:
        parser.error("no step rate at or below --max-rate")
    return args


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **probe(),
    }


def source_state() -> dict[str, Any]:
    """The commit measured, and the files of ``warden/`` that differ from it."""
    root = str(REGISTER_SCENARIO.parents[2])

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", root, *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "warden", "twisted")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": [line.split(maxsplit=1)[1] for line in changed.splitlines()],
    }


def start_run(
    command: Sequence[str], workdir: str | None, prefix: str
) -> tuple[Path, dict[str, Any]]:
    """
    Start a SIPp benchmark: SIPp must be installed; the work directory
    (``workdir``, or a new temporary one named ``prefix...``) exists; the load
    average is logged. Returns the directory and the head of the JSON document:
    the command, the machine, the source and the load average.
    """
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    path = Path(workdir or tempfile.mkdtemp(prefix=prefix)).resolve()
    path.mkdir(parents=True, exist_ok=True)
    load_average = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    log(f"load average at start: {' '.join(load_average)}")
    return path, {
        "command": shlex.join(command),
        "machine": machine(),
        "source": source_state(),
        "loadavg_at_start": load_average,
    }


class Runner:
    """Runs SIPp steps from one fixed local port against one registrar."""

    def __init__(
        self,
        args: argparse.Namespace,
        workdir: Path,
        users_csv: Path,
        extra_pids: Sequence[int] = (),
        caps: CpuCaps | None = None,
        peers: Callable[[], Iterable[int]] = tuple,
    ) -> None:
        self.args = args
        self.workdir = workdir
        self.users_csv = users_csv
        self.sipp_port = free_port()
        #: Processes whose CPU counts as the server's (a Redis of its own).
        self.extra_pids = tuple(extra_pids)
        procs = max(1, getattr(args, "sipp_procs", 1))
        self.shares = split_users(users_csv, procs) if procs > 1 else [users_csv]
        self.ports = [self.sipp_port, *(free_port() for _ in self.shares[1:])]
        #: The run's CPU caps (``--cpu-cap``), whose throttling each step reports.
        self.caps = caps
        #: Processes of the step that are neither Warden's nor SIPp's (a
        #: PostgreSQL, another node): not "others" for the step's validity.
        self.peers = peers

    def server_cpu(self, pid: int) -> float:
        """CPU seconds of ``pid``, its children (the SIP workers) and extra_pids."""
        return sum(self.cpu_by_process(pid).values())

    def cpu_by_process(self, pid: int) -> dict[str, float]:
        """CPU seconds of each of Warden's processes (L{warden_processes}) and Redis."""
        found = {name: process_cpu_seconds(p) for name, p in warden_processes(pid).items()}
        for extra in self.extra_pids:
            found["redis"] = process_cpu_seconds(extra)
        return found

    async def run_share(
        self,
        k: int,
        run_dir: Path,
        server: tuple[str, int],
        scenario: Path,
        rate: float,
        calls: int,
        seconds: float,
    ) -> Any:
        """SIPp process ``k`` of the step: its users, its port, its share of rate and calls."""
        n = len(self.shares)
        share_dir = share_dirs(run_dir, n)[k]
        share_calls = share(calls, n, k)
        sipp_args = sipp_register_args(
            server,
            self.shares[k],
            share_calls,
            rate / n,
            TRANSPORTS[self.args.transport],
            self.ports[k],
            timeout=seconds * 2 + 30,
            scenario=scenario,
        )
        sipp_args += ["-buff_size", str(SIPP_BUFFER_BYTES)]
        return await run_sipp(sipp_args, share_dir, timeout=seconds * 3 + 60)

    async def step(
        self,
        label: str,
        server: tuple[str, int],
        server_pid: int,
        scenario: Path,
        rate: float,
        calls: int,
        cpu_key: str = "warden_cpu_pct",
    ) -> dict[str, Any]:
        """One SIPp run of ``calls`` calls at ``rate``; its measurements."""
        run_dir = self.workdir / f"{label}-{rate:g}"
        run_dir.mkdir()
        seconds = calls / rate
        by_process = self.cpu_by_process(server_pid)
        server_cpu, sipp_cpu = sum(by_process.values()), children_cpu_seconds()
        if self.caps is not None:
            self.caps.mark()
        meter = MachineMeter(
            lambda: [*warden_processes(server_pid).values(), *self.extra_pids, *self.peers()]
        )
        started = time.monotonic()
        results = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(
                    self.run_share(k, run_dir, server, scenario, rate, calls, seconds)
                )
                for k in range(len(self.shares))
            ]
        )
        result = next((r for r in results if r.code != 0), results[0])
        wall = time.monotonic() - started
        after = self.cpu_by_process(server_pid)
        server_cpu = sum(after.values()) - server_cpu
        split = {k: round(100 * (v - by_process.get(k, 0.0)) / wall, 1) for k, v in after.items()}
        sipp_cpu = children_cpu_seconds() - sipp_cpu
        load = meter.load()
        dirs = [run_dir] if len(self.shares) == 1 else sorted(run_dir.glob("sipp*"))
        stats = combined_stats(dirs)
        rtts = [ms for d in dirs for ms in read_sipp_rtts(d)]
        step: dict[str, Any] = {
            "rate": rate,
            "planned": calls,
            "attempted": stats.created,
            "succeeded": stats.successful,
            "failed": stats.failed,
            "achieved_rate": float(stats.row.get("CallRate(C)", "0") or 0),
            "retransmissions": stats.retransmissions,
            "p50_ms": percentile(rtts, 0.50) if rtts else None,
            "p95_ms": percentile(rtts, 0.95) if rtts else None,
            "p99_ms": percentile(rtts, 0.99) if rtts else None,
            cpu_key: round(100 * server_cpu / wall, 1),
            "sipp_cpu_pct": round(100 * sipp_cpu / wall, 1),
            "cpu_pct_by_process": split,
            **load,
            "wall_seconds": round(wall, 2),
            "sipp_exit": result.code,
        }
        if self.caps is not None:
            step["cpu_cap"] = self.caps.since_mark()
        log(
            f"{label} {rate:g}/s: {stats.successful}/{calls} ok, {stats.failed} failed,"
            f" p50/p95/p99 {step['p50_ms']}/{step['p95_ms']}/{step['p99_ms']} ms,"
            f" {cpu_key} {step[cpu_key]}%, sipp {step['sipp_cpu_pct']}%,"
            f" others {step['other_cpu_pct']}%, steal {step['steal_pct']}%"
            + (f", by process {split}" if len(split) > 1 else "")
            + throttle_note(step)
            + invalid_note(step)
        )
        if stats.failed or result.code != 0:
            log(f"sipp exit {result.code}: {result.stderr.strip()[-300:]}")
            for d in dirs:
                for line in failure_events(read_sipp_errors(d, 5_000_000)):
                    log(f"  sipp: {line}")
        return step

    async def ramp(
        self,
        label: str,
        server: tuple[str, int],
        server_pid: int,
        scenario: Path,
        cpu_key: str = "warden_cpu_pct",
    ) -> list[dict[str, Any]]:
        """
        Steps at each rate, stopping after the first one with a failed call, or
        in which SIPp could not even start calls at half the rate (the registrar
        is then so far behind that higher rates only take longer).
        """
        steps = []
        for rate in self.args.rate_list:
            calls = max(1, int(rate * self.args.step_seconds))
            step = await self.step(label, server, server_pid, scenario, rate, calls, cpu_key)
            steps.append(step)
            if not all_succeeded(step) or step["achieved_rate"] < rate / 2:
                break
        return steps


def combined_stats(dirs: Sequence[Path]) -> SippStats:
    """The statistics of SIPp processes run side by side (one per directory), added up."""
    parts = [read_sipp_stats(d) for d in dirs]
    return SippStats(
        created=sum(p.created for p in parts),
        successful=sum(p.successful for p in parts),
        failed=sum(p.failed for p in parts),
        retransmissions=sum(p.retransmissions for p in parts),
        row={"CallRate(C)": str(sum(float(p.row.get("CallRate(C)", "0") or 0) for p in parts))},
    )


def share_dirs(run_dir: Path, count: int) -> list[Path]:
    """Where each of ``count`` SIPp processes of a step keeps its files (made here)."""
    if count == 1:
        return [run_dir]
    dirs = [run_dir / f"sipp{k}" for k in range(count)]
    for d in dirs:
        d.mkdir(exist_ok=True)
    return dirs


def share(total: int, count: int, k: int) -> int:
    """Process ``k``'s part of ``total`` split over ``count`` processes."""
    return total // count + (1 if k < total % count else 0)


def failure_events(errors: str, limit: int = 5) -> list[str]:
    """The first lines of SIPp's error trace that are about failed calls."""
    events = [
        line.split(": ", 1)[-1][:160]
        for line in errors.splitlines()
        if line[:4].isdigit() and "(successful)" not in line
    ]
    return events[:limit]


def all_succeeded(step: dict[str, Any]) -> bool:
    """Every planned call of the step succeeded."""
    return bool(step["failed"] == 0 and step["succeeded"] == step["planned"])


def sustained(step: dict[str, Any]) -> bool:
    """Every call succeeded, and SIPp kept (95% of) the rate: the registrar kept up."""
    return all_succeeded(step) and step["achieved_rate"] >= 0.95 * step["rate"]


def max_rate(steps: Sequence[dict[str, Any]]) -> float | None:
    """The highest rate sustained with every call successful, in a valid step."""
    rates = [s["rate"] for s in steps if sustained(s) and s.get("valid", True)]
    return max(rates) if rates else None


async def provision_in_batches(warden: WardenProcess, count: int) -> Path:
    """Import ``count`` extensions in batches, logging progress; the SIPp CSV."""
    users, extensions_csv = write_user_files(warden.workdir, count)
    lines = extensions_csv.read_text(encoding="ascii").splitlines()[1:]
    started = time.monotonic()
    for first in range(0, len(lines), IMPORT_BATCH):
        batch = warden.workdir / f"extensions-{first}.csv"
        batch.write_text("\n".join(lines[first : first + IMPORT_BATCH]) + "\n", encoding="ascii")
        result = await wardenctl(warden.config_path, "extension", "import", str(batch))
        if result.code != 0:
            raise RuntimeError(f"wardenctl import failed: {result.stderr}{result.stdout}")
        done = min(first + IMPORT_BATCH, len(lines))
        log(f"provisioned {done}/{count} extensions ({time.monotonic() - started:.1f}s)")
    return users.sipp_csv


def split_users(users_csv: Path, count: int) -> list[Path]:
    """``users_csv`` (SIPp SEQUENTIAL) split into ``count`` files of contiguous users."""
    header, *lines = users_csv.read_text(encoding="ascii").splitlines()
    size = -(-len(lines) // count)
    paths = []
    for k in range(count):
        path = users_csv.with_name(f"{users_csv.stem}.share{k}.csv")
        path.write_text("\n".join([header, *lines[k * size : (k + 1) * size]]) + "\n")
        paths.append(path)
    return paths


async def redis_bindings(settings: dict[str, Any]) -> int:
    """The bindings held in Redis (with workers)."""
    from twisted.internet import reactor

    from warden.store.redis import RedisLocationService, connect_state

    state = connect_state(settings["state"]["url"], reactor, settings["cluster"]["name"], 5.0)
    try:
        return int(await RedisLocationService(state).count(time.time()))
    finally:
        await state.close()


def redis_pid(server: Any) -> int:
    """The throwaway redis-server's process id."""
    process = getattr(server, "_process", None)
    if process is None:
        raise RuntimeError("redis-server is not running")
    return int(process.pid)


def worker_settings(workers: int) -> tuple[dict[str, Any], list[int]]:
    """
    Warden's settings for ``[sip] workers = workers`` with its state in a
    throwaway redis-server (none for 0: one process, as by default), and the
    processes besides Warden's own whose CPU counts as Warden's (Redis).
    """
    if not workers:
        return {}, []
    from warden.testing import servers

    redis = servers.redis()
    settings = {
        "sip": {"workers": workers, "worker_port_base": free_port_run(workers)},
        "state": {"url": redis.url},
        "cluster": {"name": f"bench{os.getpid()}", "node_id": "bench"},
        "server": {"node_id": ""},
    }
    return settings, [redis_pid(redis)]


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a supervisor's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(p) for p in text.split()]


def is_media_process(pid: int) -> bool:
    """Whether ``pid`` is a media process (``python -m warden.rtp.mediaproc``, ADR 0033)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"warden.rtp.mediaproc" in command


def warden_processes(pid: int) -> dict[str, int]:
    """
    Warden's processes by name: ``warden`` (the supervisor, or the only SIP
    process), ``worker<I>`` (SIP workers), ``media`` or ``worker<I>.media``
    (the media process of the only process or of worker I).
    """
    found = {"warden": pid}

    def media_of(parent: int, prefix: str) -> list[int]:
        media = [c for c in children(parent) if is_media_process(c)]
        for j, child in enumerate(media):
            found[prefix + ("media" if j == 0 else f"media{j}")] = child
        return media

    media = media_of(pid, "")
    workers = [c for c in children(pid) if c not in media]
    for i, worker in enumerate(workers):
        found[f"worker{i}"] = worker
        media_of(worker, f"worker{i}.")
    return found


def sip_processes(pid: int) -> dict[str, int]:
    """
    The processes that run Warden's SIP stack: its workers, or the one
    process when it has none (L{warden_processes} without the media processes).
    """
    found = warden_processes(pid)
    workers = {k: v for k, v in found.items() if k.startswith("worker") and "." not in k}
    return workers or {"warden": pid}


def cap_sip_processes(pid: int, cores: float) -> CpuCaps:
    """A cgroup capped at ``cores`` for each of Warden's SIP processes."""
    caps = CpuCaps(cores)
    try:
        for name, process in sip_processes(pid).items():
            caps.cap(name, process)
    except BaseException:
        caps.remove()
        raise
    log(f"CPU caps: {caps.describe()}")
    return caps


def distinct_aors(database: Path) -> int:
    """AORs with at least one binding."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (count,) = connection.execute("SELECT count(DISTINCT aor) FROM bindings").fetchone()
    finally:
        connection.close()
    return int(count)


async def warden_phase(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Provision, fill, ramp against Warden; its results."""
    settings, extra_pids = worker_settings(args.workers)
    bindings = 0
    caps: CpuCaps | None = None
    described = None
    warden = WardenProcess(workdir / "warden", settings=settings)
    log(f"starting Warden on {LOCALHOST}:{warden.port} ({warden.workdir}), workers {args.workers}")
    await warden.start()
    try:
        if args.cpu_cap:
            caps = cap_sip_processes(warden.pid, args.cpu_cap)
        users_csv = await provision_in_batches(warden, args.users)
        runner = Runner(args, workdir, users_csv, extra_pids, caps)
        log(f"fill: registering {args.users} extensions at {args.fill_rate:g}/s")
        fill = await runner.step(
            "fill", warden.address, warden.pid, REGISTER_SCENARIO, args.fill_rate, args.users
        )
        steps = await runner.ramp("warden", warden.address, warden.pid, REGISTER_SCENARIO)
        rss_mib = round(warden.rss_kib() / 1024, 1)
        if args.workers:
            bindings = await redis_bindings(settings)
    finally:
        code = await warden.stop()
        if caps is not None:
            described = caps.describe()
            caps.remove()
    log(f"Warden stopped (exit {code})")
    return {
        "cpu_cap": described,
        "fill": fill,
        "steps": steps,
        "invalid_steps": sum(1 for s in steps if not s["valid"]),
        "max_rate_100pct": max_rate(steps),
        # With workers the bindings are in Redis, not in the database.
        "bindings_held": bindings if args.workers else warden.count_bindings(),
        "distinct_aors": None if args.workers else distinct_aors(warden.database_path),
        "warden_rss_mib": rss_mib,
        "sipp_port": runner.sipp_port,
    }


async def reference_phase(
    args: argparse.Namespace, workdir: Path, users_csv: Path, uas: str, uac: str
) -> dict[str, Any]:
    """The same ramp against a SIPp UAS running ``uas``, driven by ``uac``."""
    run_dir = workdir / f"uas-{Path(uas).stem}"
    run_dir.mkdir()
    port = free_port()
    transport = TRANSPORTS[args.transport]
    command = sipp_command(
        [
            *("-sf", str(SCENARIOS / uas), "-i", LOCALHOST, "-p", str(port), "-t", transport),
            *("-buff_size", str(SIPP_BUFFER_BYTES)),
        ]
    )
    child, process = spawn(command, run_dir)
    try:
        if not await poll(lambda: port_in_use(port, args.transport), 10.0):
            raise RuntimeError(f"SIPp UAS did not bind port {port}: {child.output()}")
        log(f"reference: SIPp UAS {uas} on {LOCALHOST}:{port}, client {uac}")
        runner = Runner(args, workdir, users_csv)
        steps = await runner.ramp(
            f"reference-{Path(uas).stem}",
            (LOCALHOST, port),
            int(process.pid),
            SCENARIOS / uac,
            cpu_key="uas_cpu_pct",
        )
    finally:
        if child.running:
            process.signalProcess("KILL")
        await child.ended
    return {
        "scenario": f"{uac} against a SIPp UAS running {uas}",
        "steps": steps,
        "invalid_steps": sum(1 for s in steps if not s["valid"]),
        "max_rate_100pct": max_rate(steps),
    }


def target_met(result: dict[str, Any]) -> bool:
    """5,000/s all successful with p95 < 20 ms, while holding 50,000 bindings."""
    if result["bindings_held"] < TARGET["bindings"]:
        return False
    return any(
        s["rate"] >= TARGET["rate"]
        and sustained(s)
        and s.get("valid", True)
        and s["p95_ms"] is not None
        and s["p95_ms"] < TARGET["p95_ms"]
        for s in result["steps"]
    )


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run every phase and print the JSON document."""
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="warden-bench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = source_state()
    load_average = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    log(f"load average at start: {' '.join(load_average)}")
    try:
        result = await warden_phase(args, workdir)
        document: dict[str, Any] = {
            "command": shlex.join(["python", "-m", "bench.register", *argv]),
            "machine": machine(),
            "source": source,
            "loadavg_at_start": load_average,
            "users": args.users,
            "transport": args.transport,
            "workers": args.workers,
            "sipp_procs": args.sipp_procs,
            "step_seconds": args.step_seconds,
            **result,
        }
        document["target"] = {**TARGET, "met": target_met(result)}
        if not args.no_reference:
            users_csv = workdir / "warden" / "users.csv"
            document["reference"] = await reference_phase(
                args, workdir, users_csv, "register_uas.xml", "register_noauth.xml"
            )
            document["reference_challenge"] = await reference_phase(
                args, workdir, users_csv, "register_uas_challenge.xml", "register.xml"
            )
        document["duration_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
