"""
Failover, measured: the high-availability scenarios of
``tests.integration.ha_cluster`` run ``--repeat`` times each on a fresh private
network (network namespaces; root only), with the machine's load recorded
before each run. Each run also records the load of the rest of the machine
while the scenario ran (L{bench.machine}: all but the bench and the processes
it started, plus stolen time); a run in which that reached 10% of a core is
invalid, and each scenario's min, median and max come only from valid runs.

1. ``active-passive``: two nodes behind a keepalived virtual IP
   (``deploy/keepalived``); the active node's Warden is SIGKILLed; the failover
   time runs from the kill to the first successful REGISTER (digest, two round
   trips) through the virtual IP, a phone trying every 0.1 s.
   ``active-passive-node-lost``: the same, with the active node's network link
   taken down at the kill, as when the machine dies (its keepalived falls
   silent instead of handing the address over).
2. ``active-active``: two nodes behind Kamailio's dispatcher
   (``deploy/kamailio``) under ``warden-loadtest`` calls; one node is
   SIGKILLed; reported are the failed calls (by cause) and the recovery time,
   from the kill to the start of the last REGISTER (one every 0.1 s) that
   failed or waited for the dead node.
3. ``database``: one node on a Patroni cluster (``deploy/patroni``, etcd) through
   HAProxy (``deploy/haproxy``), ``warden-loadtest`` calls straight to it, and
   ``patronictl switchover`` from db1 to db2 during the calls; reported are the
   switchover time (command start to db2 answering ``/primary``), the failed
   calls, and the call records stored against the calls answered.
   ``database-unplanned``: the same, but at that moment db1's machine dies
   (every process in its namespace SIGKILLed, its link cut) and Patroni
   promotes db2 once db1's leader key expires (``ttl``); 120 calls, so calls
   go on through the outage; also reported: the time until every answered
   call's record was in db2 (the node's CDR spool replays them).
4. ``redis-sentinel``: one node whose ``[state] url`` names three Sentinels
   watching a Redis primary and its replica, all on the loopback
   (L{tests.integration.ha_sentinel}; no namespaces, no root); a phone
   registers every 0.1 s; the primary is SIGKILLed; reported are the time
   until Sentinel names the replica, the time to the first successful
   REGISTER, the recovery time (kill to the start of the first REGISTER after
   the last failed one) and the failed REGISTERs by status.
5. ``dns-srv``: two nodes on the loopback sharing Redis, published by a local
   DNS server as ``_sip._udp.pbx.test`` SRV targets at priorities 10 and 20
   (L{tests.integration.ha_srv}; no root); a phone that follows RFC 3263
   (a target that does not answer within 2 s: the next one) registers every
   0.1 s; the priority-10 node is SIGKILLed; reported are the time to the first
   REGISTER answered by the other node, the slowest REGISTER, and those that
   failed on every target.

Run from the repository root, as root (needs keepalived, curl, kamailio, redis-server,
PostgreSQL, patroni, etcd, haproxy; ``redis-sentinel`` and ``dns-srv`` run without root)::

    python -m bench.ha                                # both, 3 runs each
    python -m bench.ha --scenario active-passive --repeat 5
    python -m bench.ha --scenario redis-sentinel --repeat 5

Progress goes to stderr; the result is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.machine import MachineMeter, descendants, invalid_note, server_pids
from tests.integration.ha_cluster import HaSite, active_active, active_passive, machine_load
from tests.integration.ha_patroni import database_switchover
from tests.integration.ha_sentinel import sentinel_failover
from tests.integration.ha_srv import srv_failover

SCENARIOS = (
    "active-passive",
    "active-passive-node-lost",
    "active-active",
    "database",
    "database-unplanned",
    "redis-sentinel",
    "dns-srv",
)
# Scenarios on the loopback, without network namespaces.
LOOPBACK = {"redis-sentinel": sentinel_failover, "dns-srv": srv_failover}
LABELS = {"database": ["a", "db1", "db2"], "database-unplanned": ["a", "db1", "db2"]}
MEASURE = {
    "active-active": "recovery_s",
    "database": "switchover_s",
    "database-unplanned": "switchover_s",
    "redis-sentinel": "recovery_s",
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ha", description=__doc__)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--calls", type=int, default=120, help="active-active: calls placed")
    parser.add_argument("--rate", type=float, default=8.0, help="active-active: calls/s")
    parser.add_argument("--hold", type=float, default=3.0, help="active-active: seconds held")
    return parser.parse_args(argv)


def with_load(outcome: dict[str, Any], meter: MachineMeter) -> dict[str, Any]:
    """``outcome`` with the load of the rest of the machine that ``meter`` saw."""
    return {**outcome, **meter.load()}


async def one_run(
    scenario: Callable[[HaSite], Awaitable[dict[str, Any]]], workdir: Path, name: str
) -> dict[str, Any]:
    """
    One scenario on a fresh site, removed afterwards; the load of the rest of
    the machine is measured while the scenario runs on the site.
    """
    site = HaSite(workdir)

    def own() -> list[int]:
        # The shared PostgreSQL runs detached from the bench (pg_ctl).
        database = [] if site.postgres is None else server_pids(site.postgres)
        return [*descendants(os.getpid()), *database]

    try:
        labels = LABELS.get(name, ["a", "b"])
        site.create(labels, shared_servers=name not in LABELS)
        meter = MachineMeter(own)
        return with_load(await scenario(site), meter)
    finally:
        await site.close()


async def loopback_run(
    scenario: Callable[[Path], Awaitable[dict[str, Any]]], workdir: Path
) -> dict[str, Any]:
    """One loopback scenario (it starts and stops its own servers) and the machine's load."""
    workdir.mkdir(parents=True)
    meter = MachineMeter(lambda: descendants(os.getpid()))
    return with_load(await scenario(workdir), meter)


def summary(values: Sequence[float | None]) -> dict[str, float | None]:
    """min, median and max of the measured values (None: not measured)."""
    measured = [v for v in values if v is not None]
    if not measured:
        return {"min": None, "median": None, "max": None}
    return {
        "min": min(measured),
        "median": statistics.median(measured),
        "max": max(measured),
    }


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run the scenarios and print the JSON document."""
    args = parse_args(argv)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    if os.geteuid() != 0 and any(name not in LOOPBACK for name in chosen):
        raise SystemExit("bench.ha needs root (network namespaces)")
    runners: dict[str, Callable[[HaSite], Awaitable[dict[str, Any]]]] = {
        "active-passive": active_passive,
        "active-passive-node-lost": lambda site: active_passive(site, lose_node=True),
        "active-active": lambda site: active_active(
            site, calls=args.calls, rate=args.rate, hold=args.hold
        ),
        "database": database_switchover,
        "database-unplanned": lambda site: database_switchover(
            site, calls=120, rate=4.0, hold=1.0, unplanned=True
        ),
    }
    document: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.ha", *argv]),
        "load_at_start": machine_load(),
    }
    root = Path(tempfile.mkdtemp(prefix="warden-bench-ha-"))
    try:
        for name in chosen:
            runs = []
            for index in range(args.repeat):
                sys.stderr.write(f"{name} run {index + 1}/{args.repeat}\n")
                workdir = root / f"{name}-{index}"
                if name in LOOPBACK:
                    outcome = await loopback_run(LOOPBACK[name], workdir)
                else:
                    outcome = await one_run(runners[name], workdir, name)
                outcome.pop("loadtest_stderr", None)
                sys.stderr.write(json.dumps(outcome) + invalid_note(outcome) + "\n")
                runs.append(outcome)
            key = MEASURE.get(name, "failover_s")
            document[name] = {
                key: summary([r[key] for r in runs if r["valid"]]),
                "invalid_steps": sum(not r["valid"] for r in runs),
                "runs": runs,
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    document["invalid_steps"] = sum(document[name]["invalid_steps"] for name in chosen)
    document["load_at_end"] = machine_load()
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
