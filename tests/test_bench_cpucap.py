"""
Tests for bench/cpucap.py: CPU caps in cgroups, on a fake cgroup tree of each
interface (v1 and v2) and, where this machine lets the test create one, a real
cgroup holding a real child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from bench.cpucap import (
    CapUnavailable,
    CpuCap,
    CpuCaps,
    bandwidth_slice_us,
    period_for,
    sweep_stale,
    throttled_between,
)


def fake_v1(root: Path) -> Path:
    """A cgroup v1 tree with the CPU controller mounted at ``root/cpu``."""
    cpu = root / "cpu"
    cpu.mkdir(parents=True)
    for name in ("cgroup.procs", "cpu.cfs_quota_us", "cpu.cfs_period_us"):
        (cpu / name).write_text("")
    return cpu


def fake_v2(root: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    """A cgroup v2 tree at ``root``."""
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.procs").write_text("")
    return root


class FakeTreeTests(unittest.TestCase):
    """The files a cap writes and reads, on fake trees (a directory is not a cgroup)."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())

    def test_v1_quota_and_period(self) -> None:
        """v1: the period and the quota, the cores' share of it, in two files."""
        fake_v1(self.root)
        cap = CpuCap("worker0", 0.4, period_us=10_000, root=self.root)
        self.assertEqual(cap.version, "v1")
        self.assertEqual(cap.path.parent, self.root / "cpu")
        self.assertEqual((cap.path / "cpu.cfs_period_us").read_text(), "10000\n")
        self.assertEqual((cap.path / "cpu.cfs_quota_us").read_text(), "4000\n")

    def test_v2_cpu_max(self) -> None:
        """v2: one file, ``quota period``."""
        fake_v2(self.root)
        cap = CpuCap("gen", 1.5, period_us=10_000, root=self.root)
        self.assertEqual(cap.version, "v2")
        self.assertEqual((cap.path / "cpu.max").read_text(), "15000 10000\n")

    def test_default_period_holds_two_slices(self) -> None:
        """Without a period, the quota is at least two of the kernel's bandwidth slices."""
        fake_v2(self.root)
        cap = CpuCap("w", 0.4, root=self.root)
        quota, period = map(int, (cap.path / "cpu.max").read_text().split())
        self.assertGreaterEqual(quota, 2 * bandwidth_slice_us())
        self.assertAlmostEqual(quota / period, 0.4, places=2)

    def test_period_for(self) -> None:
        """10 ms at least; longer when the quota would hold fewer than two slices."""
        self.assertEqual(period_for(0.4, 5_000), 25_000)
        self.assertEqual(period_for(0.45, 5_000), 23_000)
        self.assertEqual(period_for(1.0, 5_000), 10_000)
        self.assertEqual(period_for(2.0, 1_000), 10_000)
        self.assertEqual(period_for(0.4, 1_000), 10_000)

    def test_bandwidth_slice_setting(self) -> None:
        """The kernel's slice, or 5 ms when the setting is missing or not a number."""
        setting = Path(self.mktemp())
        self.assertEqual(bandwidth_slice_us(setting), 5_000)
        setting.write_text("3000\n")
        self.assertEqual(bandwidth_slice_us(setting), 3_000)
        setting.write_text("\u0663000\n")  # Arabic-Indic digits are not ASCII
        self.assertEqual(bandwidth_slice_us(setting), 5_000)

    def test_add_writes_the_pid(self) -> None:
        fake_v1(self.root)
        caps = CpuCaps(0.5, root=self.root)
        cap = caps.cap("worker1", 4242)
        self.assertEqual((cap.path / "cgroup.procs").read_text(), "4242\n")
        self.assertEqual(caps.describe()[0]["pids"], [4242])
        self.assertEqual(caps.describe()[0]["cores"], 0.5)

    def test_group_is_created_once(self) -> None:
        fake_v2(self.root)
        caps = CpuCaps(0.4, root=self.root)
        first = caps.group("loadtest-2", 0.8)
        self.assertIs(caps.group("loadtest-2", 0.8), first)
        self.assertEqual(first.cores, 0.8)

    def test_no_cpu_controller(self) -> None:
        """A v2 tree without the cpu controller, or no tree at all: the reason is said."""
        fake_v2(self.root, controllers="memory pids")
        with self.assertRaises(CapUnavailable) as caught:
            CpuCap("x", 0.5, root=self.root)
        self.assertIn("no cpu controller", str(caught.exception))
        with self.assertRaises(CapUnavailable):
            CpuCap("x", 0.5, root=Path(self.mktemp()))

    def test_out_of_range(self) -> None:
        fake_v1(self.root)
        for cores in (0.0, -1.0, (os.cpu_count() or 1) + 1.0):
            self.assertRaises(ValueError, CpuCap, "x", cores, root=self.root)

    def test_stats_v1_and_v2(self) -> None:
        """v1 counts throttled nanoseconds, v2 microseconds: both come out in microseconds."""
        fake_v1(self.root)
        cap = CpuCap("a", 0.4, root=self.root)
        (cap.path / "cpu.stat").write_text(
            "nr_periods 200\nnr_throttled 50\nthrottled_time 3000000000\n"
        )
        self.assertEqual(
            cap.stats(), {"periods": 200, "throttled_periods": 50, "throttled_us": 3_000_000}
        )
        other = Path(self.mktemp())
        fake_v2(other)
        cap2 = CpuCap("b", 0.4, root=other)
        (cap2.path / "cpu.stat").write_text(
            "usage_usec 9\nnr_periods 10\nnr_throttled 1\nthrottled_usec 2500\n"
        )
        self.assertEqual(
            cap2.stats(), {"periods": 10, "throttled_periods": 1, "throttled_us": 2500}
        )

    def test_throttled_between(self) -> None:
        before = {"periods": 100, "throttled_periods": 10, "throttled_us": 1_000_000}
        after = {"periods": 300, "throttled_periods": 110, "throttled_us": 2_500_000}
        self.assertEqual(
            throttled_between(before, after), {"throttled_pct": 50.0, "throttled_s": 1.5}
        )
        self.assertEqual(
            throttled_between(before, before), {"throttled_pct": 0.0, "throttled_s": 0.0}
        )

    def test_since_mark(self) -> None:
        fake_v1(self.root)
        caps = CpuCaps(0.4, root=self.root)
        cap = caps.cap("worker0", 1)
        stat = cap.path / "cpu.stat"
        stat.write_text("nr_periods 10\nnr_throttled 0\nthrottled_time 0\n")
        caps.mark()
        stat.write_text("nr_periods 110\nnr_throttled 25\nthrottled_time 100000000\n")
        self.assertEqual(
            caps.since_mark(), {"worker0": {"throttled_pct": 25.0, "throttled_s": 0.1}}
        )


class SweepTests(unittest.TestCase):
    """Groups left behind by runs that were killed."""

    def test_sweeps_empty_groups_of_dead_runs(self) -> None:
        root = Path(self.mktemp())
        cpu = fake_v1(root)
        dead = cpu / "warden-bench-99999999-worker0"  # no such process
        dead.mkdir()
        busy = cpu / "warden-bench-99999998-worker1"  # a process still in it
        busy.mkdir()
        (busy / "cgroup.procs").write_text("4242\n")
        ours = cpu / f"warden-bench-{os.getpid()}-worker0"
        ours.mkdir()
        other = cpu / "somebody-else"
        other.mkdir()
        self.assertEqual(sweep_stale(root), ["warden-bench-99999999-worker0"])
        self.assertFalse(dead.exists())
        self.assertTrue(busy.exists())
        self.assertTrue(ours.exists())
        self.assertTrue(other.exists())

    def test_no_hierarchy(self) -> None:
        self.assertEqual(sweep_stale(Path(self.mktemp())), [])

    def test_caps_sweep_when_made(self) -> None:
        root = Path(self.mktemp())
        cpu = fake_v1(root)
        (cpu / "warden-bench-99999999-gen").mkdir()
        CpuCaps(0.4, root=root)
        self.assertFalse((cpu / "warden-bench-99999999-gen").exists())


def real_cgroups_or_skip() -> None:
    """Skip unless this process may create a CPU cgroup here (root, a CPU controller)."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("creating a cgroup needs root")
    try:
        CpuCap("probe", 0.5).remove()
    except CapUnavailable as e:
        raise unittest.SkipTest(str(e)) from None


class RealCgroupTests(unittest.TestCase):
    """A real cgroup and a real child process in it."""

    def setUp(self) -> None:
        real_cgroups_or_skip()
        self.child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        self.addCleanup(self.child.wait)
        self.addCleanup(self.child.stdin.close)  # type: ignore[union-attr]

    def test_process_moves_in_and_back(self) -> None:
        caps = CpuCaps(0.5)
        cap = caps.cap("worker0", self.child.pid)
        self.addCleanup(caps.remove)
        self.assertIn(cap.path.name, Path(f"/proc/{self.child.pid}/cgroup").read_text())
        self.assertEqual((cap.path / "cgroup.procs").read_text().split(), [str(self.child.pid)])
        stats = cap.stats()
        self.assertEqual(set(stats), {"periods", "throttled_periods", "throttled_us"})
        caps.remove()
        self.assertFalse(cap.path.exists())
        self.assertNotIn(cap.path.name, Path(f"/proc/{self.child.pid}/cgroup").read_text())

    def test_join_starts_a_child_capped(self) -> None:
        """``join`` as a ``preexec_fn``: the child is in the group from its first instruction."""
        cap = CpuCap("joined", 0.25)
        self.addCleanup(cap.remove)
        out = subprocess.run(
            [sys.executable, "-c", "print(open('/proc/self/cgroup').read())"],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=cap.join,
        ).stdout
        self.assertIn(cap.path.name, out)
