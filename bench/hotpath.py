"""
In-process micro-benchmark of the authenticated-REGISTER hot path.

Drives the real stack (built by ``warden.server.build_server`` with the SIP
plugin, as ``twistd warden`` builds it: TransportHub, TransactionLayer,
RequestDispatcher, Registrar, Authenticator, call controller, over the memory
stores) with pre-built datagrams and no sockets:

* phase 1 (timed): one unauthenticated REGISTER per user, each answered 401;
* untimed: the client side answers every challenge (``answer_challenge``);
* phase 2 (timed): the authenticated REGISTERs, each answered 200.

Time comes from L{HeapReactor}, whose ``callLater`` is O(log n), so hundreds of
thousands of lingering transactions (Timer J) cost what they cost on a real
reactor; ``twisted.internet.task.Clock`` would sort its whole list on every call.

A second pass under ``tracemalloc`` measures the bytes each lingering (Completed)
transaction holds: memory with every transaction alive minus memory once Timer J
has ended them all.

Rates come from the process's CPU time (other processes on a shared machine
disturb it less than wall time, which is reported too); ``gc_share`` is the part
of the timed wall time spent in the cyclic garbage collector. Each round records
the rest of the machine's load (``each_round``: ``other_cpu_pct``, ``steal_pct``,
``valid``; L{bench.machine}); the figures are the best of the valid rounds, and
``valid`` is false (with ``INVALID`` on stderr) when no round was.

Usage::

    python bench/hotpath.py [--users N] [--rounds R] [--profile FILE] [--no-memory]

Prints one JSON object. To measure another revision of ``warden``, put its
checkout first on the path: ``PYTHONPATH=/path/to/old python bench/hotpath.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import json
import pstats
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from warden.plugins.sip import plugin as sip_plugin
from warden.rtp.relay import MediaRelay
from warden.server import StoreParts, build_server
from warden.sip.auth import answer_challenge
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.store.credentials import make_extension
from warden.testing.memory import (
    MemoryCallRecordStore,
    MemoryDirectory,
    MemoryLiveCalls,
    MemoryLocationService,
)
from warden.testing.reactor import MemoryWardenReactor
from warden.testing.sipstack import MEDIA_ADDRESS, MEDIA_PORTS, sip_service, stack_config

# Run as ``python bench/hotpath.py``, the path starts at bench/: bench.machine is
# found through this checkout, after whatever PYTHONPATH puts first.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench.machine import MachineMeter, invalid_note  # noqa: E402

REALM = "pbx.test"
SERVER = ("198.51.100.1", 5060)


@implementer(IReactorTime)
class HeapClock:
    """
    A manual IReactorTime with a heap of delayed calls, as a reactor keeps them:
    cancelled and reset calls are skipped lazily when they reach the top.
    """

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._seq = itertools.count()

    def seconds(self) -> float:
        """The current time."""
        return self.now

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        """Schedule ``callable`` ``delay`` seconds from now."""
        call = DelayedCall(self.now + delay, callable, args, kw, _ignore, self._push, self.seconds)
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.time, next(self._seq), call))

    def getDelayedCalls(self) -> list[IDelayedCall]:
        """Every pending call."""
        return [c for _, _, c in self._heap if not (c.cancelled or c.called)]

    def advance(self, amount: float) -> int:
        """Move time on and run every call now due; returns how many ran."""
        self.now += amount
        heap, ran = self._heap, 0
        while heap and heap[0][0] <= self.now:
            when, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or when != call.time:
                continue
            call.called = 1
            call.func(*call.args, **call.kw)
            ran += 1
        return ran

    def pending(self) -> int:
        """Heap entries, including cancelled ones not yet skipped."""
        return len(self._heap)


def _ignore(call: DelayedCall) -> None:
    """Cancellation is lazy: the heap skips cancelled calls."""


class HeapReactor(HeapClock, MemoryWardenReactor):
    """A memory reactor (no sockets, no threads) whose time is a L{HeapClock}."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        MemoryWardenReactor.__init__(self)
        HeapClock.__init__(self, now)


class Seconds(NamedTuple):
    """A duration as CPU time of this process and as wall-clock time; GC's part."""

    cpu: float
    wall: float
    gc: float = 0.0


class NullDatagramTransport:
    """Counts what is written; keeps it only while ``keep`` is set."""

    def __init__(self) -> None:
        self.keep = False
        self.written: list[bytes] = []
        self.count = 0

    def write(self, data: bytes, addr: Any = None) -> None:
        """Send a datagram (nowhere)."""
        self.count += 1
        if self.keep:
            self.written.append(data)

    def getHost(self) -> Any:
        """Where the socket is bound."""
        return SERVER


class Stack:
    """
    The server side: Warden built by ``warden.server.build_server`` with the SIP
    plugin, on memory stores and a L{HeapReactor}; the SIP service is picked
    from the built root.
    """

    def __init__(self, users: int, profiler: cProfile.Profile | None = None) -> None:
        self.profiler = profiler
        self.clock = HeapReactor()
        directory = MemoryDirectory(
            make_extension(_number(i), f"User {i}", REALM, _password(i)) for i in range(users)
        )
        self.location = MemoryLocationService()
        store = StoreParts(directory, self.location, MemoryCallRecordStore(), MemoryLiveCalls())
        relay = MediaRelay(self.clock, self.clock.network.listen_udp, MEDIA_ADDRESS, MEDIA_PORTS)
        config = stack_config(frozenset({REALM, SERVER[0]}), SERVER[0], SERVER[1])
        root = build_server(self.clock, config, [sip_plugin], store=store, media=relay)
        sip = sip_service(root)
        self.hub = sip.hub
        self.dispatcher = sip.dispatcher
        self.transactions = sip.transactions
        self.udp = sip.hub.udp[0]  # the service's own listener, on a null socket
        self.transport = NullDatagramTransport()
        self.udp.makeConnection(self.transport)  # type: ignore[arg-type]

    def feed(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> Seconds:
        """Deliver every datagram; return the CPU, wall and GC seconds it took."""
        receive = self.udp.datagramReceived
        collector = GcTimer()
        if self.profiler is not None:
            self.profiler.enable()
        gc.callbacks.append(collector)
        wall, cpu = time.perf_counter(), time.process_time()
        for data, addr in datagrams:
            receive(data, addr)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        gc.callbacks.remove(collector)
        if self.profiler is not None:
            self.profiler.disable()
        return Seconds(cpu, wall, collector.seconds)


class GcTimer:
    """A ``gc.callbacks`` entry adding up the time spent collecting."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def _number(i: int) -> str:
    return str(100000 + i)


def _password(i: int) -> str:
    return f"pw{i:06d}secret"


def _source(i: int) -> tuple[str, int]:
    return f"192.0.2.{1 + i % 250}", 5060 + i % 1000


def register(i: int, cseq: int, branch: str, authorization: str | None = None) -> bytes:
    """The REGISTER user ``i`` sends (the lines of bench/scenarios/register.xml)."""
    host, port = _source(i)
    number = _number(i)
    lines = [
        f"REGISTER sip:{SERVER[0]}:{SERVER[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{number}@{SERVER[0]}>;tag={i}SIPpTag00{i}",
        f"To: <sip:{number}@{SERVER[0]}>",
        f"Call-ID: {i}-{port}@{host}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{number}@{host}:{port};transport=UDP>",
        "Expires: 3600",
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines += ["User-Agent: SIPp Warden register scenario", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def first_round(users: int, round_no: int, cseq: int = 1) -> list[tuple[bytes, tuple[str, int]]]:
    """Every user's unauthenticated REGISTER (CSeq ``cseq``)."""
    return [(register(i, cseq, f"z9hG4bK-{round_no}-{i}-1"), _source(i)) for i in range(users)]


def answer(
    users: int, round_no: int, challenges: list[bytes], cseq: int = 2
) -> list[tuple[bytes, tuple[str, int]]]:
    """The authenticated REGISTERs (CSeq ``cseq``) answering the 401s (client work, untimed)."""
    out = []
    uri = f"sip:{SERVER[0]}:{SERVER[1]}"
    for i, packet in enumerate(challenges):
        response = parse_datagram(packet)
        assert response.start_line().startswith("SIP/2.0 401"), response.start_line()
        value = response.get_all("WWW-Authenticate")[0]
        auth = answer_challenge(value, _number(i), _password(i), "REGISTER", uri)
        out.append((register(i, cseq, f"z9hG4bK-{round_no}-{i}-2", auth), _source(i)))
    return out


def run_round(stack: Stack, users: int, round_no: int) -> tuple[Seconds, Seconds]:
    """One 401 phase and one 200 phase; returns their durations."""
    phase1 = first_round(users, round_no)
    stack.transport.keep = True
    stack.transport.written = []
    t1 = stack.feed(phase1)
    challenges = stack.transport.written
    assert len(challenges) == users, len(challenges)
    phase2 = answer(users, round_no, challenges)
    stack.transport.written = []
    t2 = stack.feed(phase2)
    oks = stack.transport.written
    assert len(oks) == users and all(p.startswith(b"SIP/2.0 200 ") for p in oks), oks[:1]
    stack.transport.written = []
    stack.transport.keep = False
    return t1, t2


def timing(users: int, rounds: int, profile: str | None) -> dict[str, Any]:
    """
    Best-of-``rounds`` costs of both phases (a fresh stack per round), from the
    rounds in which the rest of the machine stayed quiet (all of them when none
    did: ``valid`` is then false). Rates are from CPU time, which other
    processes on the machine disturb less than wall time; wall time is reported
    beside it.
    """
    profiler = cProfile.Profile() if profile else None
    measured: list[tuple[Seconds, Seconds, dict[str, Any]]] = []
    for round_no in range(rounds):
        stack = Stack(users, profiler)
        gc.collect()
        rss = _rss_bytes()
        meter = MachineMeter()
        t1, t2 = run_round(stack, users, round_no)
        rss = _rss_bytes() - rss
        load = meter.load()
        if not load["valid"]:
            print(f"round {round_no}:{invalid_note(load)}", file=sys.stderr)
        measured.append((t1, t2, load))
        live = len(stack.transactions)
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    valid = [m for m in measured if m[2]["valid"]]
    best1 = min(t1 for t1, _, _ in valid or measured)
    best2 = min(t2 for _, t2, _ in valid or measured)
    both = best1.cpu + best2.cpu
    return {
        "users": users,
        "rounds": rounds,
        "phase1_requests_per_s": round(users / best1.cpu),
        "phase1_us_per_request": round(best1.cpu / users * 1e6, 1),
        "phase1_wall_us_per_request": round(best1.wall / users * 1e6, 1),
        "phase2_requests_per_s": round(users / best2.cpu),
        "phase2_us_per_request": round(best2.cpu / users * 1e6, 1),
        "phase2_wall_us_per_request": round(best2.wall / users * 1e6, 1),
        "registrations_per_s": round(users / both),
        "us_per_request": round(both / (2 * users) * 1e6, 1),
        "gc_share": round((best1.gc + best2.gc) / (best1.wall + best2.wall), 3),
        "live_transactions": live,
        "rss_growth_per_registration_bytes": round(rss / users),
        "valid": bool(valid),
        "each_round": [
            {"us_per_request": round((t1.cpu + t2.cpu) / (2 * users) * 1e6, 1), **load}
            for t1, t2, load in measured
        ],
    }


def _rss_bytes() -> int:
    """Resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory(users: int) -> dict[str, Any]:
    """Bytes held per lingering transaction (tracemalloc)."""
    stack = Stack(users)
    gc.collect()
    tracemalloc.start()
    run_round(stack, users, 0)
    gc.collect()
    live_bytes, _ = tracemalloc.get_traced_memory()
    live = len(stack.transactions)
    stack.clock.advance(TimerSettings().timer_j(False) + 1)
    gc.collect()
    idle_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(stack.transactions) == 0
    return {
        "lingering_transactions": live,
        "bytes_per_lingering_transaction": round((live_bytes - idle_bytes) / live),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write cProfile stats here (top 25 to stderr)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    args = parser.parse_args(argv)
    result = timing(args.users, args.rounds, args.profile)
    if not args.no_memory:
        result.update(memory(args.users))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
