"""
In-process micro-benchmark of a call's SIP path: what the SIP process spends per call.

Drives the real stack (``warden.testing.callstack.CallStack``: Warden built by
``warden.server.build_server`` with the SIP plugin, as ``twistd warden`` builds
it, over memory stores, the built-in relay on a fake network) with scripted
phones, no sockets. Each call is what ``bench/scenarios/call_uac_cps.xml`` and
``call_uas.xml`` do through Warden:

* caller: INVITE -> 407, ACK; INVITE with credentials -> 100, and Warden's
  INVITE to the callee;
* callee: 180, 200 with SDP (each relayed to the caller); caller: ACK (relayed);
* caller: BYE (answered 200 at once, and sent on to the callee); callee: 200.

Only Warden's work is timed: each delivered datagram's handling and the timers
Warden runs while time moves on between calls (``--rate`` calls per second of
simulated time, so the transactions linger as they do under that load) and
for L{SETTLE} seconds after the last, until every transaction has ended. The
phones' work (building requests, reading what Warden sent) is not. Time comes
from L{bench.hotpath.HeapReactor}. The garbage collector is set as Warden sets
it after start-up (``gc.freeze()``, thresholds 10,000/10/10).

The media side is, by default, Warden's: the built-in relay in its media
process (``--media inproc``: in the SIP process, ``relay_process = false``).
The media process runs in this process (L{TimedMediaProcess}); its work is
reported apart (``media_process_us_per_call``) and is not in the SIP figures,
except for its own timers (the per-interval checks), which run with Warden's.

Usage::

    python -m bench.hotpath_calls [--calls N] [--rate R] [--rounds K] [--profile FILE]
        [--media process|inproc] [--callgrind LIBRARY]

Instructions per call, which do not depend on what else the machine runs (the
library is the one ``bench/compare.py`` builds from ``valgrind/callgrind.h``)::

    valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=OUT \\
        python -m bench.hotpath_calls --calls 300 --rounds 1 --callgrind LIBRARY
    callgrind_annotate OUT | grep 'PROGRAM TOTALS'   # then divide by the calls

Prints one JSON object: µs of CPU per call (best of the rounds, a fresh stack each
round), the same per message kind, and the wall time. Each round records the rest
of the machine's load (``each_round``: ``other_cpu_pct``, ``steal_pct``, ``valid``;
L{bench.machine}); the figures come from the best valid round, and ``valid`` is
false (with ``INVALID`` on stderr) when no round was. Under ``--callgrind`` the
load is recorded and every round stays valid. To measure another revision of
``warden``, put its checkout first on the path.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import gc
import json
import pstats
import sys
import time
from collections import defaultdict
from typing import Any

from bench.hotpath import GcTimer, HeapReactor
from bench.machine import MachineMeter, invalid_note
from warden.plugins.media import media_policy, process_settings
from warden.rtp.control import frame
from warden.rtp.procrelay import ProcessRelay
from warden.sip.message import Request, Response, new_tag
from warden.store.credentials import make_extension
from warden.testing.callstack import WARDEN, CallStack, Phone
from warden.testing.mediaproc import LoopbackMediaProcess
from warden.testing.sipstack import REALM, stack_config

#: Callers and callees (each its own phone and address).
PHONES = 200

#: Seconds of simulated time after the last call, in which every transaction of
#: the calls ends (Timer J and K on UDP: 32 s) and the last records are written.
SETTLE = 40.0


class TimedMediaProcess(LoopbackMediaProcess):
    """
    The media process in this process (L{LoopbackMediaProcess}), its own work
    (reading Warden's frames, the relay's handling, writing its answers) added
    up apart, so that it can be taken out of the SIP process's time; its answers
    reach Warden once that work is done, as they would from another process.
    """

    def __init__(self, protocol: Any, clock: Any, listen_udp: Any, meter: TimedStack) -> None:
        self.meter = meter
        self.pending: list[bytes] = []
        self.inside = 0
        super().__init__(protocol, clock, listen_udp)

    def _send(self, message: dict[str, Any]) -> None:
        if message["op"] == "stats":  # as LoopbackMediaProcess: counted here already
            message = {k: v for k, v in message.items() if k != "metrics"}
        if self.ended:
            return
        data = frame(message)
        if self.inside:
            self.pending.append(data)
        else:
            self.protocol.outReceived(data)

    def write(self, data: bytes) -> None:
        if self.ended:
            return
        started = time.process_time()
        self.inside += 1
        collecting = self.meter.collecting
        if collecting:
            self.meter.collect(False)
        try:
            for message in self.reader.feed(data):
                self.worker.handle(message)
        finally:
            self.inside -= 1
            self.meter.media_cpu += time.process_time() - started
            if collecting:
                self.meter.collect(True)
        while self.pending and not self.inside:
            self.protocol.outReceived(self.pending.pop(0))


class TimedStack(CallStack):
    """A L{CallStack} that adds up the CPU time Warden spends, by message kind."""

    def __init__(self, profiler: cProfile.Profile | None, media: str, toggle: Any = None) -> None:
        self.profiler = profiler
        self.toggle = toggle
        self.collecting = False
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.wall = 0.0
        self.media_cpu = 0.0
        self.load: dict[str, Any] = {}
        reactor = HeapReactor()
        relay = self._process_relay(reactor) if media == "process" else None
        super().__init__(media=relay, reactor=reactor)
        for i in range(PHONES):
            for number in (caller_number(i), callee_number(i)):
                self.successResultOf_(
                    self.directory.add_extension(
                        make_extension(number, f"Ext {number}", REALM, f"pw{number}")
                    )
                )

    def _process_relay(self, reactor: Any) -> ProcessRelay:
        """Warden's default relay (media process), its process a L{TimedMediaProcess}."""
        config = stack_config(frozenset({REALM, WARDEN[0]}), WARDEN[0], WARDEN[1])
        policy = media_policy(config)

        def spawn(protocol: Any) -> TimedMediaProcess:
            return TimedMediaProcess(protocol, reactor, reactor.network.listen_udp, self)

        return ProcessRelay(reactor, spawn, process_settings(config, policy), policy)

    def collect(self, on: bool) -> None:
        """Turn callgrind's collection on or off (with ``--callgrind``)."""
        if self.toggle is not None and on != self.collecting:
            self.toggle()
        self.collecting = on

    def _timed(self, kind: str, work: Any, *args: Any) -> Any:
        profiler = self.profiler
        if profiler is not None:
            profiler.enable()
        wall, cpu, media = time.perf_counter(), time.process_time(), self.media_cpu
        self.collect(True)
        result = work(*args)
        self.collect(False)
        media = self.media_cpu - media
        self.cpu[kind] += time.process_time() - cpu - media
        self.wall += time.perf_counter() - wall - media
        if profiler is not None:
            profiler.disable()
        return result

    def deliver(self, message: Any, source: tuple[str, int]) -> list[tuple[Any, Any]]:
        """Deliver a datagram (timed); return what Warden sent (parsed, untimed)."""
        data = message if isinstance(message, bytes) else message.to_bytes()
        if isinstance(message, Request):
            kind = message.method
            if kind == "INVITE" and message.get("Proxy-Authorization"):
                kind = "INVITE (credentials)"
        else:
            kind = f"{message.status} {message.cseq.method}"
        before = len(self.udp_transport.written)
        self._timed(kind, self.udp.datagramReceived, data, source)
        return self.sent_since(before)

    def advance(self, seconds: float) -> None:
        """Move time on, running Warden's timers (timed)."""
        self._timed("timers", self.clock.advance, seconds)


def caller_number(i: int) -> str:
    return str(20000 + i)


def callee_number(i: int) -> str:
    return str(30000 + i)


def only(sent: list[tuple[Any, Any]], to: tuple[str, int], kind: str | int) -> Any:
    """The one message of ``kind`` (method or status) Warden sent to ``to``."""
    found = [
        m for m, a in sent
        if tuple(a) == to
        and ((isinstance(m, Request) and m.method == kind)
             or (isinstance(m, Response) and m.status == kind))
    ]  # fmt: skip
    assert len(found) == 1, (kind, to, [m.start_line() for m, _ in sent])
    return found[0]


def one_call(stack: TimedStack, caller: Phone, callee: Phone) -> None:
    """One call from INVITE to the callee's 200 for the BYE (see the module docstring)."""
    caller.tag, caller.call_id = new_tag(), f"{new_tag()}@{caller.address[0]}"
    callee.tag = new_tag()
    invite, sent = caller.call(callee.number)
    only(sent, caller.address, 100)
    callee_invite = only(sent, callee.address, "INVITE")
    only(stack.deliver(callee.answer(callee_invite, 180), callee.address), caller.address, 180)
    callee_ok = callee.answer(callee_invite, 200, body=callee.sdp())
    ok = only(stack.deliver(callee_ok, callee.address), caller.address, 200)
    only(stack.deliver(caller.ack_for(invite, ok), caller.address), callee.address, "ACK")
    bye = caller.in_dialog("BYE", invite, ok, uac=True)
    sent = stack.deliver(bye, caller.address)
    only(sent, caller.address, 200)
    callee_bye = only(sent, callee.address, "BYE")
    assert not stack.deliver(callee.answer(callee_bye, 200), callee.address)


def run_round(
    calls: int,
    rate: float,
    media: str,
    profiler: cProfile.Profile | None,
    toggle: Any = None,
    load_independent: bool = False,
) -> TimedStack:
    """
    A fresh stack, ``calls`` calls at ``rate`` per simulated second; the stack,
    with the rest of the machine's load over the calls in its ``load``.
    """
    stack = TimedStack(profiler, media, toggle)
    callers = [
        Phone(stack, caller_number(i), (f"192.0.2.{10 + i % 200}", 5060 + i))
        for i in range(PHONES)
    ]
    callees = [
        Phone(stack, callee_number(i), (f"198.51.100.{10 + i % 200}", 5060 + i))
        for i in range(PHONES)
    ]
    for phone in callees:
        stack.register(phone.number, phone.address)
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(10_000, 10, 10)
    collector = GcTimer()
    gc.callbacks.append(collector)
    try:
        meter = MachineMeter(load_independent=load_independent)
        for n in range(calls):
            one_call(stack, callers[n % PHONES], callees[(n * 7 + 3) % PHONES])
            stack.advance(1.0 / rate)
        stack.advance(SETTLE)
        stack.load = meter.load()
        stack.gc_seconds = collector.seconds  # type: ignore[attr-defined]
    finally:
        gc.callbacks.remove(collector)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    records = stack.successResultOf_(stack.records.list(limit=calls + 1))
    assert len(records) == calls, (len(records), calls)
    return stack


def rank(stack: TimedStack) -> tuple[bool, float]:
    """Valid rounds first, then the least CPU time."""
    return not stack.load["valid"], sum(stack.cpu.values())


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=150.0, help="calls per simulated second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--media", choices=("process", "inproc"), default="process",
        help="the built-in relay in its media process (Warden's default) or in the SIP process",
    )  # fmt: skip
    parser.add_argument("--profile", help="write cProfile stats here (top 30 to stderr)")
    parser.add_argument(
        "--callgrind", metavar="LIBRARY",
        help="under valgrind --tool=callgrind --collect-atstart=no: collect only while"
        " Warden works, toggled by LIBRARY's warden_callgrind_toggle (bench/compare.py)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    profiler = cProfile.Profile() if args.profile else None
    toggle = ctypes.CDLL(args.callgrind).warden_callgrind_toggle if args.callgrind else None
    best: TimedStack | None = None
    each_round: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        stack = run_round(args.calls, args.rate, args.media, profiler, toggle, bool(toggle))
        if not stack.load["valid"]:
            print(f"round {round_no}:{invalid_note(stack.load)}", file=sys.stderr)
        each_round.append(
            {"us_per_call": round(sum(stack.cpu.values()) / args.calls * 1e6, 1), **stack.load}
        )
        if best is None or rank(stack) < rank(best):  # the best valid round, if any
            best = stack
    assert best is not None
    if profiler is not None and args.profile:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    per_call = {k: round(v / args.calls * 1e6, 1) for k, v in sorted(best.cpu.items())}
    print(json.dumps({
        "calls": args.calls,
        "rate": args.rate,
        "rounds": args.rounds,
        "media": args.media,
        "us_per_call": round(sum(best.cpu.values()) / args.calls * 1e6, 1),
        "valid": best.load["valid"],
        "each_round": each_round,
        "wall_us_per_call": round(best.wall / args.calls * 1e6, 1),
        "gc_share": round(best.gc_seconds / best.wall, 3),  # type: ignore[attr-defined]
        "us_per_call_by_message": per_call,
        "media_process_us_per_call": round(best.media_cpu / args.calls * 1e6, 1),
        "calls_per_s_one_core": round(args.calls / sum(best.cpu.values())),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
