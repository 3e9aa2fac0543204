"""
CPU caps for benchmark processes: a scaling factor on a machine with too few cores.

Issue 18 asks for 1 vs 2 SIP workers and one vs two load-generator processes.
On a 2-core machine that also runs SIPp (and Redis), two uncapped processes
fill both cores, and the ratio measures the machine, not the design. A cap
gives each measured process the same CPU budget, ``--cpu-cap`` cores (for
example 0.4), in a cgroup of its own, and leaves the rest of the machine to the
peers: one worker at 0.4 core against two workers at 0.4 core each then says
how the design scales while cores are not what limits it. The report names the
cap and, per step, how often each capped group was throttled
(``throttled_pct``: the share of scheduler periods in which it ran out of
budget). A step where the capped group was seldom throttled did not reach the
cap, so the rate there is not the capped process's limit.

The cap is CFS bandwidth control: cgroup v2 (``cpu.max``) or v1
(``cpu/cpu.cfs_quota_us``). The period is short, so that a throttled process
does not wait long before it runs again (a 100 ms period, the default, would
add up to 60 ms at 0.4 core to the latency of whatever it was doing), but
long enough that the quota is at least two of the kernel's bandwidth slices
(``kernel.sched_cfs_bandwidth_slice_us``, 5 ms by default): a CPU's run
queue takes quota a slice at a time, so with a quota under one slice the
first CPU takes it all and the process, moved to the other CPU, is throttled
while it is still under its cap on average (seen: a SIP process at 0.30 core
under a 0.40 cap with a 10 ms period was throttled in 82% of the periods).
At 0.4 core that makes the period 25 ms: a throttled process waits at most
15 ms.
Creating a group needs root; L{CpuCap} raises L{CapUnavailable} with the
reason when the machine offers no writable CPU controller.
"""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path
from typing import Any

#: The shortest scheduler period of a capped group, in microseconds.
PERIOD_US = 10_000
#: Where the kernel says how much quota a CPU's run queue takes at a time.
SLICE_SETTING = Path("/proc/sys/kernel/sched_cfs_bandwidth_slice_us")
#: Where the cgroup hierarchies are mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")


class CapUnavailable(RuntimeError):
    """This machine offers no writable cgroup with a CPU controller."""


def _hierarchy(root: Path) -> tuple[str, Path]:
    """
    Which cgroup interface ``root`` offers: ``("v2", root)`` when its
    controllers include ``cpu``, ``("v1", root / "cpu")`` when the v1 CPU
    controller is mounted there; L{CapUnavailable} otherwise.
    """
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        if "cpu" not in controllers.read_text(encoding="ascii").split():
            raise CapUnavailable(f"{controllers} has no cpu controller")
        return "v2", root
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return "v1", v1
    raise CapUnavailable(f"no CPU controller under {root} (neither cgroup v2 nor v1)")


def bandwidth_slice_us(setting: Path = SLICE_SETTING) -> int:
    """The kernel's CFS bandwidth slice in microseconds (5,000 when it cannot be read)."""
    try:
        text = setting.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return 5_000
    return int(text) if text.isascii() and text.isdigit() else 5_000


def period_for(cores: float, slice_us: int) -> int:
    """
    The period for a cap of ``cores``: at least L{PERIOD_US}, and long enough
    for the quota to hold two bandwidth slices, rounded up to a millisecond.
    """
    needed = 2 * slice_us / cores
    return max(PERIOD_US, -(-int(needed) // 1000) * 1000)


def _move(pid: int, group: Path) -> None:
    """Move process ``pid`` (every thread of it) into the cgroup at ``group``."""
    (group / "cgroup.procs").write_text(f"{pid}\n", encoding="ascii")


class CpuCap:
    """
    One cgroup whose processes share ``cores`` cores: ``add`` moves a process
    (and its threads) in, ``stats`` reads how often the group was throttled,
    ``remove`` moves what is left back to the root and deletes the group.
    """

    def __init__(
        self,
        name: str,
        cores: float,
        period_us: int | None = None,
        root: Path = CGROUP_ROOT,
    ) -> None:
        if not 0.01 <= cores <= (os.cpu_count() or 1):
            raise ValueError(f"a CPU cap of {cores} cores is out of range")
        self.name = name
        self.cores = cores
        if period_us is None:
            period_us = period_for(cores, bandwidth_slice_us())
        self.period_us = period_us
        self.version, self.base = _hierarchy(root)
        self.path = self.base / f"warden-bench-{os.getpid()}-{name}"
        quota = max(1000, round(cores * period_us))
        try:
            self.path.mkdir()
            if self.version == "v2":
                (self.path / "cpu.max").write_text(f"{quota} {period_us}\n", encoding="ascii")
            else:
                (self.path / "cpu.cfs_period_us").write_text(f"{period_us}\n", encoding="ascii")
                (self.path / "cpu.cfs_quota_us").write_text(f"{quota}\n", encoding="ascii")
        except OSError as e:
            self._rmdir()
            raise CapUnavailable(f"cannot create {self.path}: {e.strerror}") from None
        self.pids: list[int] = []

    def add(self, pid: int) -> None:
        """Move process ``pid`` (every thread of it) into the group."""
        _move(pid, self.path)
        self.pids.append(pid)

    def join(self) -> None:
        """
        Move the calling process into the group: a ``preexec_fn`` for
        ``subprocess``, so that the child and everything it forks start capped.
        """
        _move(os.getpid(), self.path)

    def stats(self) -> dict[str, int]:
        """The group's counters so far: periods, throttled periods, throttled microseconds."""
        values: dict[str, int] = {}
        for line in (self.path / "cpu.stat").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
        throttled_us = values.get("throttled_usec")
        if throttled_us is None:  # v1 counts nanoseconds
            throttled_us = values.get("throttled_time", 0) // 1000
        return {
            "periods": values.get("nr_periods", 0),
            "throttled_periods": values.get("nr_throttled", 0),
            "throttled_us": throttled_us,
        }

    def describe(self) -> dict[str, Any]:
        """The cap for the report."""
        return {
            "name": self.name,
            "cores": self.cores,
            "period_us": self.period_us,
            "cgroup": self.version,
            "pids": list(self.pids),
        }

    def remove(self) -> None:
        """Move every process still in the group back to the root, then delete it."""
        procs = self.path / "cgroup.procs"
        try:
            left = procs.read_text(encoding="ascii").split()
        except OSError:
            left = []
        for pid in left:
            try:
                _move(int(pid), self.base)
            except OSError:
                continue  # it has exited meanwhile
        self._rmdir()

    def _rmdir(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def throttled_between(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """
    What happened in the group between two L{CpuCap.stats}: the share of
    scheduler periods in which it was throttled, in percent, and for how long.
    """
    periods = after["periods"] - before["periods"]
    throttled = after["throttled_periods"] - before["throttled_periods"]
    return {
        "throttled_pct": round(100 * throttled / periods, 1) if periods else 0.0,
        "throttled_s": round((after["throttled_us"] - before["throttled_us"]) / 1e6, 2),
    }


def throttle_note(step: dict[str, Any]) -> str:
    """The part of a step's progress line that says how much its caps throttled."""
    return f", throttled {step['cpu_cap']}" if "cpu_cap" in step else ""


#: The name of a group a run made: ``warden-bench-<the run's pid>-<name>``.
_GROUP_NAME = re.compile(r"warden-bench-([0-9]+)-")


def sweep_stale(root: Path = CGROUP_ROOT) -> list[str]:
    """
    Delete the groups of runs that are no longer running (killed before they
    could remove them): empty groups whose run's process has gone. Returns
    their names. A group that still holds a process is left alone.
    """
    try:
        _, base = _hierarchy(root)
        entries = list(base.iterdir())
    except (CapUnavailable, OSError):
        return []
    swept = []
    for entry in entries:
        found = _GROUP_NAME.match(entry.name)
        if found is None or not entry.is_dir() or Path(f"/proc/{found.group(1)}").exists():
            continue
        try:
            entry.rmdir()  # fails while a process is in it
        except OSError:
            continue
        swept.append(entry.name)
    return swept


class CpuCaps:
    """
    The caps of one benchmark run, by name; all removed together, by
    L{remove} or at the interpreter's exit. Groups that killed runs left
    behind are swept first.
    """

    def __init__(self, cores: float, root: Path = CGROUP_ROOT) -> None:
        self.cores = cores
        self.root = root
        self.caps: dict[str, CpuCap] = {}
        self._marks: dict[str, dict[str, int]] = {}
        sweep_stale(root)
        atexit.register(self.remove)

    def group(self, name: str, cores: float | None = None) -> CpuCap:
        """The group named ``name``, created at ``cores`` (or the run's cap) the first time."""
        if name not in self.caps:
            self.caps[name] = CpuCap(name, self.cores if cores is None else cores, root=self.root)
        return self.caps[name]

    def cap(self, name: str, pid: int, cores: float | None = None) -> CpuCap:
        """Put ``pid`` in the group named ``name`` (L{group})."""
        group = self.group(name, cores)
        group.add(pid)
        return group

    def mark(self) -> None:
        """Remember every group's counters: the start of a step."""
        self._marks = {name: cap.stats() for name, cap in self.caps.items()}

    def since_mark(self) -> dict[str, dict[str, float]]:
        """Per group, how much it was throttled since L{mark}."""
        since = {}
        for name, cap in self.caps.items():
            now = cap.stats()
            since[name] = throttled_between(self._marks.get(name, now), now)
        return since

    def describe(self) -> list[dict[str, Any]]:
        """Every cap, for the report."""
        return [cap.describe() for cap in self.caps.values()]

    def remove(self) -> None:
        """Remove every group."""
        for cap in self.caps.values():
            cap.remove()
        self.caps.clear()
