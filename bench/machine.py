"""
What the rest of the machine did while a bench measured, and whether the
bench's figures may be published.

Every bench wraps each timed step (or its one timed part) in a L{MachineMeter}
that names the processes the step is made of: the bench itself, the children
it reaped (SIPp, wrk, ...) and the ones it started and still runs (Warden,
Redis, PostgreSQL, rtpengine, ...). Whatever else the machine did in that
time is the *other* load (``/proc/stat`` busy time minus those processes).
The hypervisor's *steal* (time this machine wanted a CPU that another guest
of the host had) slows the step as surely: a step is valid when the two
together stayed under L{MAX_OTHER_PCT} of one core.

A step's dictionary carries ``other_cpu_pct``, ``steal_pct`` (both in % of one
core over the step's wall time) and ``valid``; benches publish rates and
latencies only from valid steps and print ``INVALID`` beside the others.
Instruction counts (callgrind) do not depend on the load: their steps record
it and stay valid (``load_independent``).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "LOAD_KEYS",
    "MAX_OTHER_PCT",
    "MachineMeter",
    "MachineSources",
    "children_cpu_seconds",
    "descendants",
    "invalid_note",
    "probe",
    "process_cpu_seconds",
    "quiet_enough",
    "server_pids",
    "system_cpu_seconds",
]

#: A step's figures may be published when everything else on the machine,
#: stolen time included, used less than this (% of one core) meanwhile.
MAX_OTHER_PCT = 10.0
#: What a step records of the machine's load (L{MachineMeter.load}).
LOAD_KEYS = ("other_cpu_pct", "steal_pct", "valid")


def system_cpu_seconds(stat: str | None = None) -> tuple[float, float]:
    """
    CPU time of the whole machine so far: (busy, stolen), summed over all cores
    (``/proc/stat``, or ``stat`` given as its text; busy is user + nice + system
    + irq + softirq).
    """
    if stat is None:
        with open("/proc/stat", encoding="ascii") as f:
            stat = f.readline()
    fields = [int(v) for v in stat.split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def process_cpu_seconds(pid: int | None, reaped: bool = False) -> float:
    """
    User and system CPU time of ``pid`` so far (0 for None or a gone process);
    with ``reaped``, that of the children it has reaped too (a PostgreSQL's
    short-lived backends, a relay's per-connection processes).
    """
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _with_reaped(pid: int) -> float:
    return process_cpu_seconds(pid, reaped=True)


def children_cpu_seconds() -> float:
    """CPU time of every child process this one has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_seconds() -> float:
    """CPU time of this process (every thread) so far."""
    return time.process_time()


def quiet_enough(step: dict[str, Any], max_other_pct: float = MAX_OTHER_PCT) -> bool:
    """
    Everything else on the machine (``other_cpu_pct``: ``/proc/stat`` busy time
    minus the step's own processes) and the time the hypervisor stole
    (``steal_pct``, when recorded) used less than ``max_other_pct`` of a core.
    """
    return bool(step["other_cpu_pct"] + step.get("steal_pct", 0.0) < max_other_pct)


def invalid_note(step: dict[str, Any]) -> str:
    """What a progress line adds for a step: nothing, or why it is invalid."""
    if step.get("valid", True):
        return ""
    return (
        f" (INVALID: the rest of the machine used {step['other_cpu_pct']}% of a core"
        f" and the host stole {step.get('steal_pct', 0.0)}%)"
    )


@attrs.frozen
class MachineSources:
    """Where a L{MachineMeter} reads the machine: ``/proc`` and this process."""

    system: Callable[[], tuple[float, float]] = system_cpu_seconds
    process: Callable[[int], float] = _with_reaped
    own: Callable[[], float] = own_cpu_seconds
    children: Callable[[], float] = children_cpu_seconds
    clock: Callable[[], float] = time.monotonic


class MachineMeter:
    """
    The machine's load over one step, without the step's own processes.

    Args:
        pids: the processes the step is made of besides this one and the
            children it reaps (Warden, Redis, ...): their ids, or a function
            giving them (asked at the start and at the end, so processes that
            come and go count while they live), each with the children it
            reaps during the step (short-lived ones are never among those
            asked for). A process that ends during the step counts up to its
            last reading; one that this process reaps during the step counts
            its whole life through ``RUSAGE_CHILDREN``, which overstates the
            step's own share (name children that outlive the step, such as
            Warden, and let those that end within it, such as SIPp, count as
            reaped).
        load_independent: the step's figures do not depend on the load
            (instruction counts); the load is recorded and the step stays valid.
        max_other_pct: the validity bound, in % of one core.
        sources: where the figures come from (L{MachineSources}; tests give fakes).
    """

    def __init__(
        self,
        pids: Iterable[int] | Callable[[], Iterable[int]] = (),
        load_independent: bool = False,
        max_other_pct: float = MAX_OTHER_PCT,
        sources: MachineSources | None = None,
    ) -> None:
        fixed = () if callable(pids) else tuple(pids)
        self._pids: Callable[[], Iterable[int]] = pids if callable(pids) else (lambda: fixed)
        self.load_independent = load_independent
        self.max_other_pct = max_other_pct
        self._sources = sources or MachineSources()
        self._start: dict[str, float] = {}
        self._seen: dict[int, float] = {}
        self.start()

    def _read_pids(self) -> dict[int, float]:
        found = {}
        for pid in self._pids():
            if pid is not None and pid != os.getpid():
                found[pid] = self._sources.process(pid)
        return found

    def start(self) -> None:
        """(Re)start the step now."""
        sources = self._sources
        busy, steal = sources.system()
        self._seen = self._read_pids()
        self._start = {
            "wall": sources.clock(),
            "busy": busy,
            "steal": steal,
            "own": sources.own(),
            "children": sources.children(),
        }

    def result(self) -> dict[str, Any]:
        """
        The step so far: ``seconds`` of wall time, ``step_cpu_pct`` (its own
        processes), ``other_cpu_pct``, ``steal_pct`` and ``valid``.
        """
        start, sources = self._start, self._sources
        ended = self._read_pids()
        busy, steal = sources.system()
        wall = max(sources.clock() - start["wall"], 1e-9)
        step = (sources.own() - start["own"]) + (sources.children() - start["children"])
        for pid, before in self._seen.items():
            step += ended.get(pid, before) - before
        # Processes that appeared during the step count from 0: they were
        # started by the step (a Warden worker restarted, say).
        step += sum(now for pid, now in ended.items() if pid not in self._seen)
        others = busy - start["busy"] - step
        figures: dict[str, Any] = {
            "seconds": round(wall, 2),
            "step_cpu_pct": round(100 * step / wall, 1),
            "other_cpu_pct": round(max(0.0, 100 * others / wall), 1),
            "steal_pct": round(max(0.0, 100 * (steal - start["steal"]) / wall), 1),
        }
        figures["valid"] = self.load_independent or quiet_enough(figures, self.max_other_pct)
        return figures

    def load(self) -> dict[str, Any]:
        """What a step records of L{result}: ``other_cpu_pct``, ``steal_pct``, ``valid``."""
        figures = self.result()
        return {key: figures[key] for key in LOAD_KEYS}


def descendants(pid: int) -> list[int]:
    """
    Every process below ``pid`` (children, theirs, ...), read from ``/proc``:
    the children of each of a process's threads, not only its main thread's.
    """
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        for tasks in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(p) for p in tasks.read_text(encoding="ascii").split()]
            except OSError:
                continue  # a thread that ended
            found.extend(kids)
            queue.extend(kids)
    return found


def server_pids(server: Any) -> list[int]:
    """
    The processes of a throwaway server of L{warden.testing.servers}: a
    redis-server's one process, or a PostgreSQL postmaster and every process
    below it (its backends among them); none when it is not running.
    """
    process = getattr(server, "_process", None)
    if process is not None:
        return [int(process.pid), *descendants(int(process.pid))]
    directory = getattr(server, "directory", None)
    if directory is None:
        return []
    try:
        with open(f"{directory}/data/postmaster.pid", encoding="ascii") as f:
            postmaster = int(f.readline().strip())
    except (OSError, ValueError):
        return []
    return [postmaster, *descendants(postmaster)]


def _pipe_round_trip_us(cpus: tuple[int, int], rounds: int) -> float:
    """Mean wall time of one byte there and back between two processes pinned to ``cpus``."""
    there_r, there_w = os.pipe()
    back_r, back_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo
        try:
            os.sched_setaffinity(0, {cpus[1]})
            for _ in range(rounds + 1):
                os.read(there_r, 1)
                os.write(back_w, b"y")
        finally:
            os._exit(0)
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        os.write(there_w, b"x")  # the first round trip only wakes both up
        os.read(back_r, 1)
        started = time.perf_counter()
        for _ in range(rounds):
            os.write(there_w, b"x")
            os.read(back_r, 1)
        return 1e6 * (time.perf_counter() - started) / rounds
    finally:
        os.sched_setaffinity(0, mask)
        os.waitpid(pid, 0)
        for fd in (there_r, there_w, back_r, back_w):
            os.close(fd)


def _python_speed_ms() -> float:
    """CPU milliseconds of a fixed pure-Python workload (dict, str and call heavy)."""

    def work(i: int) -> str:
        return f"{i}:{i % 7}".partition(":")[0]

    started = time.process_time()
    table: dict[str, int] = {}
    for i in range(200_000):
        table[work(i)] = i
    return round(1000 * (time.process_time() - started), 1)


def probe() -> dict[str, Any]:
    """
    What makes this machine's figures differ from another's, measured in
    about half a second: the wall time of a wake-up round trip between two
    processes on the same CPU and on two CPUs (a virtual machine's
    inter-processor interrupts can make the second several times the first,
    and every datagram or Redis reply between Warden, SIPp and Redis is such
    a wake-up), and the CPU time of a fixed piece of Python.
    """
    cpus = sorted(os.sched_getaffinity(0))
    figures: dict[str, Any] = {
        "pipe_round_trip_us_same_cpu": round(_pipe_round_trip_us((cpus[0], cpus[0]), 3000), 1),
        "python_workload_ms": _python_speed_ms(),
    }
    if len(cpus) > 1:
        across = _pipe_round_trip_us((cpus[0], cpus[1]), 3000)
        figures["pipe_round_trip_us_across_cpus"] = round(across, 1)
    return figures
