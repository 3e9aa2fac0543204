"""
Registration throughput with shared state: the registration ramp of
``bench.register`` run against

1. one node on SQLite with in-process bindings (the single-node baseline),
2. one node on PostgreSQL + Redis (``[state] url``),
3. two nodes on PostgreSQL + Redis, on 127.0.0.2 and 127.0.0.3, with SIPp split
   across them: half the extensions register through each node, each SIPp at
   half the step's rate, both at once.

Targets (issue 4): the Redis-backed registrar keeps at least 80% of the
single-node rate; two nodes together reach at least 1.6x one node. On a small
machine the nodes and SIPp compete for the same cores, so each step reports the
CPU of every process (100% = one core).

Run from the repository root (needs sipp, redis-server and PostgreSQL; the
servers are throwaway ones on free ports)::

    python -m bench.cluster                       # about ten minutes
    python -m bench.cluster --users 2000 --rates 250,500 --step-seconds 5   # quick

Progress goes to stderr; the result is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.machine import invalid_note, server_pids
from bench.register import (
    REGISTER_SCENARIO,
    Runner,
    log,
    machine,
    max_rate,
    provision_in_batches,
    warden_processes,
)
from tests.integration.harness import WardenProcess
from tests.integration.test_failover import NODE_A, NODE_B, NodeProcess
from warden.testing import servers

RATES = (250, 500, 750, 1000, 1500, 2000, 3000, 4000)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--users", type=int, default=10_000, help="extensions (default 10000)")
    parser.add_argument("--rates", help="comma-separated step rates (default: 250..4000)")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="length of a step")
    parser.add_argument("--fill-rate", type=float, default=500.0, help="rate of the fill")
    parser.add_argument(
        "--state-timeout", type=float, default=1.0, help="[state] timeout, seconds (default 1)"
    )
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.rate_list = [int(r) for r in args.rates.split(",")] if args.rates else list(RATES)
    args.transport = "udp"
    return args


def shared_settings(cluster: str, timeout: float) -> dict[str, dict[str, object]]:
    """A fresh PostgreSQL database and a Redis namespace for one phase."""
    database = f"bench_{cluster[:12]}"
    url = servers.postgresql().create_database(database)
    return {
        "store": {"url": url},
        "state": {"url": servers.redis().url, "timeout": timeout},
        "cluster": {"name": cluster},
    }


async def single_phase(
    args: argparse.Namespace,
    workdir: Path,
    label: str,
    settings: dict[str, dict[str, object]],
    peers: Callable[[], Iterable[int]] = tuple,
) -> dict[str, Any]:
    """Provision, fill and ramp against one node (``peers``: its PostgreSQL and Redis)."""
    warden = WardenProcess(workdir / label, settings=settings)
    log(f"{label}: starting Warden on {warden.address} ({warden.workdir})")
    await warden.start()
    try:
        users_csv = await provision_in_batches(warden, args.users)
        runner = Runner(args, workdir / label, users_csv, peers=peers)
        fill = await runner.step(
            "fill", warden.address, warden.pid, REGISTER_SCENARIO, args.fill_rate, args.users
        )
        steps = await runner.ramp(label, warden.address, warden.pid, REGISTER_SCENARIO)
    finally:
        await warden.stop()
    return {"fill": fill, "steps": steps, "max_rate_100pct": max_rate(steps)}


def split_csv(users_csv: Path) -> tuple[Path, Path]:
    """The SIPp injection file in two halves (one per node)."""
    lines = users_csv.read_text(encoding="ascii").splitlines()
    header, rows = lines[0], lines[1:]
    halves = []
    for index, part in enumerate((rows[0::2], rows[1::2])):
        path = users_csv.with_name(f"users-{index}.csv")
        path.write_text("\n".join([header, *part]) + "\n", encoding="ascii")
        halves.append(path)
    return halves[0], halves[1]


def combine(rate: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Two nodes' simultaneous steps as one: summed counts and rates, each CPU."""
    return {
        "rate": rate,
        "planned": sum(s["planned"] for s in steps),
        "attempted": sum(s["attempted"] for s in steps),
        "succeeded": sum(s["succeeded"] for s in steps),
        "failed": sum(s["failed"] for s in steps),
        "achieved_rate": round(sum(s["achieved_rate"] for s in steps), 1),
        "p95_ms": max((s["p95_ms"] for s in steps if s["p95_ms"] is not None), default=None),
        "node_a_cpu_pct": steps[0]["warden_cpu_pct"],
        "node_b_cpu_pct": steps[1]["warden_cpu_pct"],
        "sipp_cpu_pct": round(steps[0]["sipp_cpu_pct"], 1),
        "other_cpu_pct": max(s["other_cpu_pct"] for s in steps),
        "steal_pct": max(s["steal_pct"] for s in steps),
        "valid": all(s["valid"] for s in steps),
        "per_node": steps,
    }


async def pair_phase(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Two nodes sharing PostgreSQL and Redis, SIPp split across them."""
    settings = shared_settings(uuid.uuid4().hex, args.state_timeout)
    nodes = []
    for host, node_id in ((NODE_A, "a"), (NODE_B, "b")):
        node_settings = {**settings, "cluster": {**settings["cluster"], "node_id": node_id}}
        node = NodeProcess(workdir / f"node-{node_id}", host, node_settings)
        log(f"two nodes: starting node {node_id} on {node.address}")
        await node.start()
        nodes.append(node)
    a, _b = nodes
    try:
        users_csv = await provision_in_batches(a, args.users)
        halves = split_csv(users_csv)

        # Each node's runner counts the other node, its SIPp and the shared
        # servers as the step's own: both steps run at once.
        def everything() -> list[int]:
            found = shared_servers()
            for node in nodes:
                found.extend(warden_processes(node.pid).values())
            return found

        runners = [
            Runner(args, workdir / f"node-{n}", h, peers=everything) for n, h in zip("ab", halves)
        ]
        fills = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(
                    r.step(
                        "fill",
                        n.address,
                        n.pid,
                        REGISTER_SCENARIO,
                        args.fill_rate / 2,
                        args.users // 2,
                    )
                )
                for r, n in zip(runners, nodes)
            ]
        )
        steps = []
        for rate in args.rate_list:
            calls = max(1, int(rate / 2 * args.step_seconds))
            both = await defer.gatherResults(
                [
                    defer.Deferred.fromCoroutine(
                        r.step(
                            f"node-{n.host}", n.address, n.pid, REGISTER_SCENARIO, rate / 2, calls
                        )
                    )
                    for r, n in zip(runners, nodes)
                ]
            )
            step = combine(rate, both)
            log(f"two nodes {rate}/s: {step['succeeded']}/{step['planned']} ok,"
                f" achieved {step['achieved_rate']}/s, CPU a {step['node_a_cpu_pct']}%"
                f" b {step['node_b_cpu_pct']}%{invalid_note(step)}")  # fmt: skip
            steps.append(step)
            if step["failed"] or step["achieved_rate"] < rate / 2:
                break
    finally:
        for node in nodes:
            await node.stop()
    return {"fill": fills, "steps": steps, "max_rate_100pct": max_rate(steps)}


#: A rate only counts as kept up with when its p95 also stays under T1 (500 ms,
#: RFC 3261 §17.1.1.1): beyond it more than 5% of REGISTERs are retransmitted
#: by SIPp, i.e. the registrar is queueing, not keeping up.
RESPONSIVE_P95_MS = 500.0


def shared_servers() -> list[int]:
    """The processes of the throwaway PostgreSQL and Redis the nodes share."""
    return [*server_pids(servers.postgresql()), *server_pids(servers.redis())]


def max_responsive_rate(steps: Sequence[dict[str, Any]]) -> float | None:
    """The highest rate sustained (every call, 95% of the rate) with p95 under T1."""
    kept = [
        s["rate"]
        for s in steps
        if max_rate([s]) is not None
        and s.get("p95_ms") is not None
        and s["p95_ms"] < RESPONSIVE_P95_MS
    ]
    return max(kept) if kept else None


def ratios(
    sqlite: dict[str, Any], redis: dict[str, Any], pair: dict[str, Any], rule: Any
) -> dict[str, float | None]:
    """Redis-backed and two-node rates over the SQLite node's, by ``rule``."""
    base = rule(sqlite["steps"]) or 0
    if not base:
        return {"redis_vs_single": None, "two_nodes_vs_single": None}
    return {
        "redis_vs_single": round((rule(redis["steps"]) or 0) / base, 2),
        "two_nodes_vs_single": round((rule(pair["steps"]) or 0) / base, 2),
    }


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run the three phases and print the JSON document."""
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="warden-bench-cluster-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        sqlite = await single_phase(args, workdir, "sqlite", {})
        redis_settings = shared_settings(uuid.uuid4().hex, args.state_timeout)
        redis = await single_phase(
            args, workdir, "postgresql-redis", redis_settings, shared_servers
        )
        pair = await pair_phase(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "command": shlex.join(["python", "-m", "bench.cluster", *argv]),
        "machine": machine(),
        "users": args.users,
        "step_seconds": args.step_seconds,
        "sqlite_single_node": sqlite,
        "postgresql_redis_single_node": redis,
        "postgresql_redis_two_nodes": pair,
        "ratios": ratios(sqlite, redis, pair, max_rate),
        "responsive_p95_limit_ms": RESPONSIVE_P95_MS,
        "ratios_responsive": ratios(sqlite, redis, pair, max_responsive_rate),
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
