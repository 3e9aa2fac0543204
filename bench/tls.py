"""
SIP-over-TLS registration benchmark: digest-authenticated REGISTERs per second
over one TLS connection (as phones keep theirs, RFC 5923) against the UDP rate
of the same Warden in the same run. Target: TLS at least 50% of UDP.

Run from the repository root::

    python -m bench.tls               # 20,000 registrations per transport
    python -m bench.tls --quick       # 2,000, a smoke test

One ``twistd warden`` with ``[sip] transports = ["udp", "tcp", "tls"]`` and a
generated certificate; ``--users`` extensions imported with ``wardenctl``.
SIPp (``bench/scenarios/register.xml``: 401, then the authenticated REGISTER)
registers every extension once per round, as fast as it can keep ``--limit``
registrations open, over UDP and then over TLS; rounds alternate
(UDP, TLS, UDP, TLS ...) so a change in the machine's load hits both.
Debian's SIPp has no TLS, so the TLS rounds go through ``socat``
(tests/integration/tls_relay.py), SIPp's one TCP connection becoming one TLS
connection to Warden: socat's CPU is on the same machine and counted against
the TLS rate. Per round: registrations per second (successful / wall time),
failures, Warden's CPU seconds, and the load of the rest of the machine
(L{bench.machine}: all but the bench, SIPp, Warden's processes and socat, plus
stolen time); a round in which that reached 10% of a core is invalid, and the
best rates and their ratio come only from valid rounds. Progress goes to
stderr; the result is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.machine import MachineMeter, descendants, invalid_note
from bench.register import log, machine, provision_in_batches, source_state
from tests.integration.clients import LOCALHOST
from tests.integration.harness import (
    WardenProcess,
    free_port,
    process_cpu_seconds,
    run_sipp,
    sipp_register_args,
)
from tests.integration.sipp_traces import read_sipp_stats
from tests.integration.tls_relay import TlsRelay
from warden.tls import generate_self_signed

TARGET_RATIO = 0.5


def bench_processes() -> list[int]:
    """
    What the bench started and still runs: Warden and socat (the listener and
    the relay it forked for SIPp's connection).
    """
    return descendants(os.getpid())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__)
    parser.add_argument("--users", type=int, default=20_000, help="registrations per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per transport")
    parser.add_argument("--limit", type=int, default=200, help="registrations open at once")
    parser.add_argument("--quick", action="store_true", help="2,000 users, one round each")
    parser.add_argument("--workdir", help="keep files here (default: a removed temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.rounds = 2_000, 1
    return args


async def one_round(
    warden: WardenProcess, target: tuple[str, int], transport: str, args: Any, run_dir: Path
) -> dict[str, Any]:
    """Register every user once over ``transport`` (SIPp's -t); the round's numbers."""
    run_dir.mkdir(parents=True)
    sipp = sipp_register_args(
        target, warden.workdir / "users.csv", args.users, 100_000, transport, timeout=120
    )
    sipp += ["-l", str(args.limit)]
    cpu = process_cpu_seconds(warden.pid)
    meter = MachineMeter(bench_processes)
    started = time.monotonic()
    result = await run_sipp(sipp, run_dir, timeout=600)
    wall = time.monotonic() - started
    load = meter.load()
    stats = read_sipp_stats(run_dir)
    return {
        "sipp_exit": result.code,
        "successful": stats.successful,
        "failed": stats.failed,
        "seconds": round(wall, 2),
        "rate": round(stats.successful / wall, 1),
        "warden_cpu_seconds": round(process_cpu_seconds(warden.pid) - cpu, 2),
        **load,
    }


def best_rates(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    """Each transport's highest rate over its valid rounds (None: no valid round)."""
    best: dict[str, float | None] = {}
    for name, runs in rounds.items():
        rates = [r["rate"] for r in runs if r["valid"]]
        best[name] = max(rates) if rates else None
    return best


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run the rounds and print the JSON document."""
    args = parse_args(argv)
    for tool, package in (("sipp", "sip-tester"), ("socat", "socat")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install {package})")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="warden-bench-tls-")).resolve()
    load_average = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    log(f"load average at start: {' '.join(load_average)}")
    tls_port = free_port()
    warden = WardenProcess(
        workdir / "warden",
        settings={"sip": {"transports": ["udp", "tcp", "tls"], "tls_port": tls_port}},
    )
    relay: TlsRelay | None = None
    try:
        await warden.start()
        await provision_in_batches(warden, args.users)
        cert, key = workdir / "client-cert.pem", workdir / "client-key.pem"
        generate_self_signed(str(cert), str(key), reactor, common_name="bench")
        socat = shutil.which("socat")
        assert socat is not None
        relay = TlsRelay(socat, (LOCALHOST, tls_port), cert, key, workdir)
        await relay.start()
        rounds: dict[str, list[dict[str, Any]]] = {"udp": [], "tls": []}
        for n in range(args.rounds):
            for name, target, transport in (
                ("udp", warden.address, "u1"),
                ("tls", relay.address, "t1"),
            ):
                log(f"round {n + 1}: {args.users} registrations over {name}")
                outcome = await one_round(warden, target, transport, args, workdir / f"{name}{n}")
                log(f"  {outcome}{invalid_note(outcome)}")
                rounds[name].append(outcome)
        best = best_rates(rounds)
        clean = all(r["failed"] == 0 and r["sipp_exit"] == 0 for rs in rounds.values() for r in rs)
        ratio: float | None = None
        met: bool | None = None
        if best["tls"] is not None and best["udp"] is not None:
            ratio = round(best["tls"] / best["udp"], 3) if best["udp"] else 0.0
            met = clean and ratio >= TARGET_RATIO
        elif not clean:
            met = False
        document = {
            "command": shlex.join(["python", "-m", "bench.tls", *argv]),
            "machine": machine(),
            "source": source_state(),
            "loadavg_at_start": load_average,
            "loadavg_at_end": Path("/proc/loadavg").read_text(encoding="ascii").split()[:3],
            "users": args.users,
            "limit": args.limit,
            "rounds": rounds,
            "best_rate": best,
            "tls_to_udp": ratio,
            "invalid_steps": sum(not r["valid"] for rs in rounds.values() for r in rs),
            "target": {"tls_to_udp": TARGET_RATIO, "met": met},
        }
    finally:
        if relay is not None:
            await relay.stop()
        await warden.cleanup()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
