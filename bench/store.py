"""
Registration throughput by store: the registration ramp of ``bench.register``
run against one Warden node keeping its data

1. in SQLite (the embedded default), then
2. in PostgreSQL (``[store] url``, the throwaway server of
   ``warden.testing.servers``; bindings in memory with write-behind to
   PostgreSQL, no Redis),

with the same extensions, fill and step rates. Per step, the CPU of Warden,
SIPp and everything else (PostgreSQL's processes count as the step's own, not
as "others", for its validity: ``bench.machine``); after the
ramp, the number of AORs whose bindings reached the database, so a fast but
lossy write-behind would show.

Run from the repository root (needs sipp and PostgreSQL)::

    python -m bench.store                          # a few minutes
    python -m bench.store --users 2000 --rates 250,500 --step-seconds 5   # quick

Progress goes to stderr; the result is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.machine import server_pids
from bench.register import (
    REGISTER_SCENARIO,
    Runner,
    log,
    machine,
    max_rate,
    provision_in_batches,
)
from tests.integration.clients import poll
from tests.integration.harness import WardenProcess
from warden.testing import servers

RATES = (250, 500, 750, 1000, 1500, 2000, 3000, 4000)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--users", type=int, default=10_000, help="extensions (default 10000)")
    parser.add_argument("--rates", help="comma-separated step rates (default: 250..4000)")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="length of a step")
    parser.add_argument("--fill-rate", type=float, default=500.0, help="rate of the fill")
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.rate_list = [int(r) for r in args.rates.split(",")] if args.rates else list(RATES)
    args.transport = "udp"
    return args


def sqlite_aors(warden: WardenProcess) -> int:
    """AORs with a binding in the SQLite database."""
    connection = sqlite3.connect(f"file:{warden.database_path}?mode=ro", uri=True)
    try:
        return int(connection.execute("SELECT count(DISTINCT aor) FROM bindings").fetchone()[0])
    finally:
        connection.close()


def postgresql_aors(database: str) -> int:
    """AORs with a binding in the PostgreSQL database."""
    out = servers.postgresql().psql("SELECT count(DISTINCT aor) FROM bindings", database)
    return int(out.strip())


async def phase(
    args: argparse.Namespace,
    workdir: Path,
    label: str,
    settings: dict[str, dict[str, object]],
    peers: Callable[[], Iterable[int]] = tuple,
) -> tuple[WardenProcess, dict[str, Any]]:
    """Provision, fill and ramp against one node; the (stopped) node and its results."""
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
    return warden, {"fill": fill, "steps": steps, "max_rate_100pct": max_rate(steps)}


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run both phases and print the JSON document."""
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="warden-bench-store-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        warden, sqlite = await phase(args, workdir, "sqlite", {})
        sqlite["aors_in_database"] = sqlite_aors(warden)
        database = f"bench_store_{uuid.uuid4().hex[:12]}"
        url = servers.postgresql().create_database(database)
        warden, postgresql = await phase(
            args,
            workdir,
            "postgresql",
            {"store": {"url": url}},
            lambda: server_pids(servers.postgresql()),
        )
        await poll(lambda: postgresql_aors(database) >= args.users, 10)
        postgresql["aors_in_database"] = postgresql_aors(database)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    base = sqlite["max_rate_100pct"] or 0
    document = {
        "command": shlex.join(["python", "-m", "bench.store", *argv]),
        "machine": machine(),
        "users": args.users,
        "step_seconds": args.step_seconds,
        "sqlite": sqlite,
        "postgresql": postgresql,
        "postgresql_vs_sqlite": (
            round((postgresql["max_rate_100pct"] or 0) / base, 2) if base else None
        ),
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
