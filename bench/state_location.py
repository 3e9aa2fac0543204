"""
In-process micro-benchmark of the registrar's store traffic with bindings in
Redis (L{warden.store.redis.RedisLocationService}).

Each simulated REGISTER does what L{warden.sip.registrar.Registrar} asks of its
location service: read the AOR's bindings, apply the refreshed binding, read
them again. ``--users`` AORs are filled once (untimed), then refreshed
``--rounds`` times with ``--window`` registrations in flight, on the real
reactor against a throwaway ``redis-server`` (``warden.testing.servers``).

The figure that matters is ``cpu_us_per_register``: this process's CPU time
(user + system) per REGISTER, which is Warden's share of the cost; Redis's own
CPU is not counted. ``--store memory`` runs the same loop over the in-process
store for comparison. The timed rounds record the rest of the machine's load
(processes other than this one and Redis, and stolen time: ``other_cpu_pct``,
``steal_pct``; L{bench.machine}); ``valid`` is false, with ``INVALID`` on
stderr, when it reached 10% of a core.

Usage::

    python -m bench.state_location [--users N] [--rounds R] [--window W]
        [--store redis|memory] [--profile FILE]

Prints one JSON object. To measure another revision of ``warden``, run it from
that revision's checkout (``python -m`` puts the current directory first on the
path); ``sys.modules['hiredis'] = None`` in a ``sitecustomize`` measures without
hiredis.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task

from bench.machine import MachineMeter, invalid_note
from bench.register import redis_pid
from warden.interfaces import ILocationService
from warden.model import Binding
from warden.testing import servers


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.state_location", description=__doc__)
    parser.add_argument("--users", type=int, default=2000, help="AORs (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed refreshes per AOR")
    parser.add_argument("--window", type=int, default=16, help="registrations in flight")
    parser.add_argument("--store", choices=("redis", "memory"), default="redis")
    parser.add_argument("--profile", help="write a cProfile of the timed rounds here")
    return parser.parse_args(argv)


def binding(aor: str, now: float, cseq: int) -> Binding:
    """The binding a SIPp phone's REGISTER makes (realistic field sizes)."""
    port = 5070 + int(aor) % 1000
    return Binding(
        aor=aor,
        contact=f"sip:{aor}@127.0.0.1:{port};transport=UDP",
        key=f"sip:{aor}@127.0.0.1:{port}",
        expires_at=now + 3600.0,
        q=1.0,
        call_id=f"{aor}-{uuid.uuid4().hex}@127.0.0.1",
        cseq=cseq,
        received=f"udp:127.0.0.1:{port}",
        user_agent="SIPp/v3.7.3",
        node_id="a",
    )


def cpu_seconds() -> float:
    """This process's user + system CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def register(location: Any, clock: Any, aor: str, cseq: int) -> None:
    """One REGISTER's store traffic: read, apply, read again."""
    now = clock.seconds()
    await location.bindings_for(aor, now)
    await location.apply(aor, [binding(aor, now, cseq)], [])
    await location.bindings_for(aor, now)


async def run_all(location: Any, clock: Any, aors: list[str], cseq: int, window: int) -> None:
    """Every AOR once, ``window`` at a time."""
    work = iter(aors)

    async def worker() -> None:
        for aor in work:
            await register(location, clock, aor, cseq)

    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(worker()) for _ in range(window)], consumeErrors=True
    )


def open_store(kind: str, clock: Any) -> tuple[ILocationService, Any]:
    """The store to measure, and what to close after."""
    if kind == "memory":
        from warden.testing.memory import MemoryLocationService

        return MemoryLocationService(), None
    from warden.store.redis import RedisLocationService, connect_state

    state = connect_state(servers.redis().url, clock, uuid.uuid4().hex, 5.0)
    return RedisLocationService(state), state


async def measure(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Fill, then time ``rounds`` refreshes of every AOR."""
    location, state = open_store(args.store, reactor)
    aors = [str(10000 + i) for i in range(args.users)]
    try:
        if state is not None:
            await location.load()  # connected
        await run_all(location, reactor, aors, 1, args.window)
        profiler = cProfile.Profile() if args.profile else None
        meter = MachineMeter([redis_pid(servers.redis())] if state is not None else [])
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        if profiler:
            profiler.enable()
        for round_no in range(args.rounds):
            await run_all(location, reactor, aors, 2 + round_no, args.window)
        if profiler:
            profiler.disable()
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        load = meter.load()
        if not load["valid"]:
            print(f"timed rounds:{invalid_note(load)}", file=sys.stderr)
        if profiler:
            profiler.dump_stats(args.profile)
            pstats.Stats(args.profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    finally:
        if state is not None:
            await state.close()
    registers = args.users * args.rounds
    return {
        "store": args.store,
        "users": args.users,
        "rounds": args.rounds,
        "window": args.window,
        "registers": registers,
        "cpu_us_per_register": round(cpu / registers * 1e6, 1),
        "wall_us_per_register": round(wall / registers * 1e6, 1),
        **load,
    }


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run the benchmark; print its JSON."""
    result = await measure(reactor, parse_args(argv))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
