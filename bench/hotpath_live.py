"""
The registration hot path of ``bench/hotpath.py`` against Warden as
``twistd warden`` runs it, with its real stores: the default configuration
(SQLite in the data directory, bindings in memory written behind to it) or
a SIP worker's (``[sip] workers = 2``, worker 0, state in a throwaway
``redis-server``; ADR 0032).

Warden is built in this process by ``warden.tap`` (options, configuration
file, ``makeService``) on the real reactor, started, and logs to a file as
under twistd. Then the UDP listener's socket is swapped for one that only
counts what is written, and the same datagrams as ``bench/hotpath.py`` are
fed to the listener in windows of ``--window`` requests (the next window
once every request of the last one is answered: with Redis the answers wait
for its replies), or with ``--rate R`` open loop at R requests per second as
phones send them (each millisecond the requests due by then), so that the
bindings' write-behind sees the batches a real load gives it:

* phase 1: one unauthenticated REGISTER per user, each answered 401;
* untimed: the client side answers every challenge;
* phase 2: the authenticated REGISTERs, each answered 200.

The first round adds every binding; the cost of a refresh is the best of the
later rounds (both are reported).

The cost is this process's CPU time (every thread, the SQLite pool's
included) over each phase plus ``--settle`` seconds after it, for writes
behind; Redis runs in its own process and is not counted (its CPU is
reported beside it).

Each round records the rest of the machine's load (L{bench.machine}: CPU of
processes other than this one and its children, Redis and Warden's media
process, and stolen time): ``each_round``
gives ``other_cpu_pct``, ``steal_pct`` and ``valid`` per round, a round the
load made invalid is marked ``INVALID`` on stderr, and ``refresh`` is the best
of the valid later rounds only; ``valid`` says whether both figures come from
valid rounds.

Usage::

    python -m bench.hotpath_live --store sqlite [--users N] [--rounds R] [--profile FILE]
    python -m bench.hotpath_live --store sqlite --rate 2000 ...
    python -m bench.hotpath_live --store redis ...

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.logger import globalLogBeginner, jsonFileLogObserver, textFileLogObserver

from bench.hotpath import (
    REALM,
    SERVER,
    GcTimer,
    Seconds,
    _number,
    _password,
    answer,
    first_round,
)
from bench.machine import MachineMeter, descendants, invalid_note
from bench.register import redis_pid
from tests.integration.harness import free_port, process_cpu_seconds
from warden.config import WardenConfig
from warden.ops.drtest.scratch import free_port_run, render_toml
from warden.server import WardenService
from warden.sip.service import SipService
from warden.store.backend import open_stores
from warden.store.credentials import make_extension
from warden.tap import Options, makeService


class CountingDatagramTransport:
    """Stands in for the listener's socket: counts datagrams, keeps them when asked."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.keep = False
        self.written: list[bytes] = []
        self.count = 0
        self._waiting: tuple[int, Deferred[None]] | None = None

    def write(self, data: bytes, addr: Any = None) -> None:
        """Send a datagram (nowhere)."""
        self.count += 1
        if self.keep:
            self.written.append(data)
        waiting = self._waiting
        if waiting is not None and self.count >= waiting[0]:
            self._waiting = None
            waiting[1].callback(None)

    def until(self, count: int) -> Deferred[None]:
        """Fire once ``count`` datagrams in all have been written."""
        if self.count >= count:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting = (count, d)
        return d

    def getHost(self) -> Any:
        """Where the real socket is bound."""
        return self.host


def find_sip(service: Any) -> SipService:
    """The SIP service anywhere under ``service`` (a worker's is under its node)."""
    if isinstance(service, SipService):
        return service
    for child in getattr(service, "services", ()):
        try:
            return find_sip(child)
        except LookupError:
            continue
    raise LookupError("no SIP service was built")


async def provision(reactor: Any, config: WardenConfig, users: int) -> None:
    """The extensions, written to the database before Warden starts."""
    stores = open_stores(config.store_url, reactor, config.store.password_file, 1)
    try:
        await stores.migrate()
        extensions = [
            make_extension(_number(i), f"User {i}", REALM, _password(i)) for i in range(users)
        ]
        await stores.directory.upsert_extensions(extensions)
    finally:
        stores.close()


def settings(workdir: Path, store: str, redis_url: str) -> dict[str, Any]:
    """The configuration file's sections: Warden's defaults but for ports and names."""
    sections: dict[str, Any] = {
        "server": {
            "data_dir": str(workdir / "data"),
            "realm": REALM,
            "node_id": "bench",
            "domains": [SERVER[0]],
        },
        "sip": {"interface": "127.0.0.1", "port": free_port()},
        "admin": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
    }
    if store == "redis":
        sections["sip"].update(workers=2, worker_port_base=free_port_run(2))
        # The default 1 s would answer 503 when the machine is busy: this
        # measures CPU per registration, not Redis's answer times.
        sections["state"] = {"url": redis_url, "timeout": 30.0}
        sections["cluster"] = {"name": f"hotpath{time.time_ns()}", "node_id": "bench"}
    return sections


class LiveStack:
    """Warden built by ``warden.tap`` and started; its UDP listener driven directly."""

    def __init__(
        self, reactor: Any, root: WardenService, window: int, settle: float, rate: float = 0.0
    ) -> None:
        self.reactor = reactor
        self.root = root
        self.window = window
        self.settle = settle
        self.rate = rate
        self.udp: Any = None
        self.transport: CountingDatagramTransport | None = None
        self._socket: Any = None
        self._direct: Any = None

    async def start(self) -> None:
        """Start Warden; wait until the SIP service serves; swap its socket."""
        self.root.privilegedStartService()  # type: ignore[no-untyped-call]
        self.root.startService()
        sip: SipService | None = None
        for _ in range(600):
            try:
                sip = find_sip(self.root)
            except LookupError:
                sip = None
            if sip is not None and sip.running and sip.hub.accepting and sip.hub.udp:
                break
            await task.deferLater(self.reactor, 0.05, lambda: None)
        if sip is None or not sip.running:
            raise RuntimeError("Warden did not start serving within 30 s")
        self.udp = sip.hub.udp[0]
        self._socket = self.udp.transport
        self.transport = CountingDatagramTransport(self._socket.getHost())
        self.udp.transport = self.transport
        # The listener sends straight on its socket once a host is checked
        # (SipDatagramProtocol.write_to): without one, every write goes
        # through the counting transport.
        self._direct = self.udp._socket
        self.udp._socket = None

    async def stop(self) -> None:
        """Give the listener its socket back and stop Warden."""
        if self.udp is not None:
            self.udp.transport = self._socket
            self.udp._socket = self._direct
        await self.root.stopService()

    async def feed(
        self, datagrams: list[tuple[bytes, tuple[str, int]]], profiler: cProfile.Profile | None
    ) -> Seconds:
        """Deliver every datagram, a window at a time; CPU, wall and GC seconds."""
        transport = self.transport
        assert transport is not None
        receive = self.udp.datagramReceived
        collector = GcTimer()
        gc.callbacks.append(collector)
        if profiler is not None:
            profiler.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        expected = transport.count
        if self.rate:
            await self._feed_at_rate(datagrams, receive)
            await transport.until(expected + len(datagrams))
        else:
            for first in range(0, len(datagrams), self.window):
                batch = datagrams[first : first + self.window]
                for data, addr in batch:
                    receive(data, addr)
                expected += len(batch)
                await transport.until(expected)
        await task.deferLater(self.reactor, self.settle, lambda: None)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall - self.settle
        if profiler is not None:
            profiler.disable()
        gc.callbacks.remove(collector)
        return Seconds(cpu, wall, collector.seconds)

    async def _feed_at_rate(
        self, datagrams: list[tuple[bytes, tuple[str, int]]], receive: Any
    ) -> None:
        """
        Open loop, as phones send: every millisecond, the datagrams due by then at
        ``rate`` per second, whether or not the earlier ones were answered.
        """
        start = time.perf_counter()
        sent = 0
        while sent < len(datagrams):
            due = min(len(datagrams), int((time.perf_counter() - start) * self.rate) + 1)
            for data, addr in datagrams[sent:due]:
                receive(data, addr)
            sent = max(sent, due)
            await task.deferLater(self.reactor, 0.001, lambda: None)

    async def run_round(
        self, users: int, round_no: int, profiler: cProfile.Profile | None
    ) -> tuple[Seconds, Seconds]:
        """One 401 phase and one 200 phase (every answer checked); their costs."""
        transport = self.transport
        assert transport is not None
        phase1 = first_round(users, round_no, 2 * round_no + 1)
        transport.keep, transport.written = True, []
        t1 = await self.feed(phase1, profiler)
        challenges = transport.written
        assert len(challenges) == users, len(challenges)
        phase2 = answer(users, round_no, challenges, 2 * round_no + 2)
        transport.written = []
        t2 = await self.feed(phase2, profiler)
        oks = transport.written
        other = [p.split(b"\r\n", 1)[0] for p in oks if not p.startswith(b"SIP/2.0 200 ")]
        assert len(oks) == users and not other, (len(oks), len(other), other[:3])
        transport.keep, transport.written = False, []
        return t1, t2


async def measure(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Build, start and drive Warden; the best round's costs."""
    workdir = Path(tempfile.mkdtemp(prefix="warden-hotpath-"))
    redis = None
    redis_url = ""
    if args.store == "redis":
        from warden.testing import servers

        redis = servers.redis()
        redis_url = redis.url
    sections = settings(workdir, args.store, redis_url)
    config_path = workdir / "warden.toml"
    config_path.write_text(render_toml(sections))
    (workdir / "data").mkdir()
    log_file = open(workdir / "warden.log", "w", encoding="utf-8")
    observer = jsonFileLogObserver(log_file) if args.json_log else textFileLogObserver(log_file)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    options = Options()
    argv = ["--config", str(config_path)]
    if args.store == "redis":
        argv += ["--worker", "0"]
    options.parseOptions(argv)
    assert options.config is not None
    await provision(reactor, options.config, args.users)
    root = makeService(options, reactor)
    assert isinstance(root, WardenService)
    stack = LiveStack(reactor, root, args.window, args.settle, args.rate)
    await stack.start()
    # CPU time, not wall time: the waits for Redis are not our cost.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    pid = redis_pid(redis) if redis is not None else None
    redis_cpu = process_cpu_seconds(pid) if pid is not None else 0.0
    rounds: list[tuple[Seconds, Seconds, dict[str, Any]]] = []
    try:
        for round_no in range(args.rounds):
            meter = MachineMeter(lambda: descendants(os.getpid()))
            t1, t2 = await stack.run_round(args.users, round_no, profiler)
            load = meter.load()
            print(f"round {round_no}: 401 {t1}, 200 {t2}{invalid_note(load)}", file=sys.stderr)
            rounds.append((t1, t2, load))
    finally:
        await stack.stop()
        log_file.close()
    if pid is not None:
        redis_cpu = process_cpu_seconds(pid) - redis_cpu
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    first = {**costs(args.users, rounds[0][0], rounds[0][1]), **rounds[0][2]}
    later = [r for r in rounds[1:] if r[2]["valid"]]
    refresh = {
        **costs(
            args.users,
            min(t1 for t1, _, _ in later or rounds[1:]),
            min(t2 for _, t2, _ in later or rounds[1:]),
        ),
        "valid": bool(later),
    }
    return {
        "store": args.store,
        "users": args.users,
        "rounds": args.rounds,
        "window": args.window,
        "rate": args.rate,
        # The first round adds every binding; the later ones refresh them, as
        # phones (and bench/register.py's steps after its fill) do. The refresh
        # figures are the best of the later rounds the load left valid.
        "first": first,
        "refresh": refresh,
        "valid": first["valid"] and refresh["valid"],
        "each_round": [
            {"us_per_registration": costs(args.users, t1, t2)["us_per_registration"], **load}
            for t1, t2, load in rounds
        ],
        "redis_us_per_registration_all_rounds": round(
            redis_cpu / (args.users * args.rounds) * 1e6, 1
        ),
        "workdir": str(workdir),
    }


def costs(users: int, phase1: Seconds, phase2: Seconds) -> dict[str, Any]:
    """Per request and per registration, from the CPU (and wall) time of each phase."""
    both = phase1.cpu + phase2.cpu
    return {
        "phase1_us_per_request": round(phase1.cpu / users * 1e6, 1),
        "phase1_wall_us_per_request": round(phase1.wall / users * 1e6, 1),
        "phase2_us_per_request": round(phase2.cpu / users * 1e6, 1),
        "phase2_wall_us_per_request": round(phase2.wall / users * 1e6, 1),
        "us_per_registration": round(both / users * 1e6, 1),
        "registrations_per_s": round(users / both),
        "gc_share": round((phase1.gc + phase2.gc) / (phase1.wall + phase2.wall), 3),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=50, help="requests in flight")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests per second sent open loop instead of --window in flight",
    )
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after each phase")
    parser.add_argument("--json-log", action="store_true", help="log JSON, not text")
    parser.add_argument("--profile", help="write cProfile stats here (top 30 to stderr)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be 2 or more (the first adds, the others refresh)")
    out = sys.stdout
    sys.stdout = sys.stderr  # what Warden prints at start (the admin certificate)

    async def run(reactor: Any) -> None:
        try:
            print(json.dumps(await measure(reactor, args), indent=2), file=out)
        except BaseException:
            traceback.print_exc()
            raise

    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
