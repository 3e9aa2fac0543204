"""
Tests for L{bench.machine}: what counts as the rest of the machine during a
benchmark step, and when the step's figures may be published.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench.machine import (
    MAX_OTHER_PCT,
    MachineMeter,
    MachineSources,
    invalid_note,
    probe,
    process_cpu_seconds,
    quiet_enough,
    server_pids,
    system_cpu_seconds,
)

BENCH = Path(__file__).resolve().parents[1] / "bench"


class FakeMachine:
    """A machine whose CPU counters the test moves by hand (seconds of CPU)."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.busy = 1000.0
        self.steal = 5.0
        self.own = 1.0
        self.children = 2.0
        self.processes: dict[int, float] = {}

    def sources(self) -> MachineSources:
        return MachineSources(
            system=lambda: (self.busy, self.steal),
            process=lambda pid: self.processes.get(pid, 0.0),
            own=lambda: self.own,
            children=lambda: self.children,
            clock=lambda: self.wall,
        )

    def run(self, seconds: float, others: float = 0.0, steal: float = 0.0, **cpu: float) -> None:
        """``seconds`` pass; the step's parts use ``cpu`` (own, children, pid<N>)."""
        self.wall += seconds
        self.steal += steal
        spent = others
        for name, used in cpu.items():
            if name == "own":
                self.own += used
            elif name == "children":
                self.children += used
            else:
                pid = int(name.removeprefix("pid"))
                self.processes[pid] = self.processes.get(pid, 0.0) + used
            spent += used
        self.busy += spent


class MachineMeterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.machine = FakeMachine()
        self.machine.processes = {4001: 50.0, 4002: 7.0}

    def meter(self, **kwargs: Any) -> MachineMeter:
        return MachineMeter(sources=self.machine.sources(), **kwargs)

    def test_quiet_step(self) -> None:
        """The step's own CPU is not the rest of the machine's: a busy step is valid."""
        meter = self.meter(pids=[4001, 4002])
        self.machine.run(10.0, others=0.5, own=1.0, children=4.0, pid4001=9.0, pid4002=2.0)
        result = meter.result()
        self.assertEqual(result["seconds"], 10.0)
        self.assertEqual(result["step_cpu_pct"], 160.0)
        self.assertEqual(result["other_cpu_pct"], 5.0)
        self.assertEqual(result["steal_pct"], 0.0)
        self.assertTrue(result["valid"])

    def test_unnamed_process_is_other(self) -> None:
        """A process the step does not name is the rest of the machine."""
        meter = self.meter(pids=[4001])
        self.machine.run(10.0, pid4001=9.0, pid4002=2.0)
        result = meter.result()
        self.assertEqual(result["other_cpu_pct"], 20.0)
        self.assertFalse(result["valid"])

    def test_bound(self) -> None:
        """Valid below MAX_OTHER_PCT of a core, invalid at it."""
        below, at = self.meter(), None
        self.machine.run(10.0, others=0.99)
        self.assertTrue(below.result()["valid"])
        at = self.meter()
        self.machine.run(10.0, others=MAX_OTHER_PCT / 10)
        self.assertFalse(at.result()["valid"])

    def test_steal_counts(self) -> None:
        """Time the hypervisor stole counts with the other load."""
        meter = self.meter()
        self.machine.run(10.0, others=0.5, steal=0.4)
        self.assertTrue(meter.result()["valid"])
        meter = self.meter()
        self.machine.run(10.0, others=0.5, steal=0.6)
        result = meter.result()
        self.assertEqual((result["other_cpu_pct"], result["steal_pct"]), (5.0, 6.0))
        self.assertFalse(result["valid"])

    def test_pids_asked_again_at_the_end(self) -> None:
        """A process that starts during the step (a restarted worker) counts from zero."""
        pids = [4001]
        meter = self.meter(pids=lambda: pids)
        self.machine.run(10.0, pid4001=5.0)
        pids.append(4003)
        self.machine.run(0.0, pid4003=3.0)
        result = meter.result()
        self.assertEqual(result["step_cpu_pct"], 80.0)
        self.assertEqual(result["other_cpu_pct"], 0.0)

    def test_load_independent(self) -> None:
        """Instruction counts do not depend on the load: recorded, and valid."""
        meter = self.meter(load_independent=True)
        self.machine.run(10.0, others=9.0, steal=1.0)
        result = meter.result()
        self.assertEqual(result["other_cpu_pct"], 90.0)
        self.assertTrue(result["valid"])

    def test_restart(self) -> None:
        """start() begins the step again."""
        meter = self.meter()
        self.machine.run(10.0, others=5.0)
        meter.start()
        self.machine.run(10.0, others=0.1)
        self.assertEqual(meter.result()["other_cpu_pct"], 1.0)

    def test_real_machine(self) -> None:
        """On this machine: this process's work is its own, and the figures are sane."""
        meter = MachineMeter()
        sum(i * i for i in range(200_000))
        result = meter.result()
        self.assertGreater(result["seconds"], 0)
        self.assertGreaterEqual(result["other_cpu_pct"], 0.0)
        self.assertGreaterEqual(result["steal_pct"], 0.0)
        self.assertIsInstance(result["valid"], bool)


class QuietEnoughTests(SynchronousTestCase):
    def test_without_steal(self) -> None:
        """Steps recorded before steal was: their others alone decide."""
        self.assertTrue(quiet_enough({"other_cpu_pct": 9.9}))
        self.assertFalse(quiet_enough({"other_cpu_pct": 10.0}))

    def test_with_steal(self) -> None:
        self.assertFalse(quiet_enough({"other_cpu_pct": 6.0, "steal_pct": 4.0}))
        self.assertTrue(quiet_enough({"other_cpu_pct": 6.0, "steal_pct": 3.9}))
        self.assertTrue(quiet_enough({"other_cpu_pct": 16.0, "steal_pct": 0.0}, 20.0))

    def test_invalid_note(self) -> None:
        """A valid step adds nothing to its progress line; an invalid one says why."""
        self.assertEqual(invalid_note({"valid": True, "other_cpu_pct": 1.0}), "")
        note = invalid_note({"valid": False, "other_cpu_pct": 12.5, "steal_pct": 0.3})
        self.assertIn("INVALID", note)
        self.assertIn("12.5%", note)
        self.assertIn("0.3%", note)


class ProcTests(SynchronousTestCase):
    def test_system_cpu_seconds(self) -> None:
        """Busy is user + nice + system + irq + softirq; steal apart; idle and iowait not."""
        tick = os.sysconf("SC_CLK_TCK")
        text = (
            f"cpu  {tick * 10} {tick} {tick * 2} 999999 888 {tick * 3} {tick * 4} {tick * 5} 0 0\n"
        )
        self.assertEqual(system_cpu_seconds(text), (20.0, 5.0))

    def test_server_pids_redis(self) -> None:
        """A child server: its process and what runs below it."""
        process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                   stdin=subprocess.PIPE)  # fmt: skip
        self.addCleanup(process.wait)
        self.addCleanup(process.stdin.close)  # type: ignore[union-attr]

        class Server:
            _process = process

        self.assertEqual(server_pids(Server()), [process.pid])

    def test_server_pids_postgresql(self) -> None:
        """A PostgreSQL directory: its postmaster (from postmaster.pid) and below."""
        directory = Path(self.mktemp())
        (directory / "data").mkdir(parents=True)
        (directory / "data" / "postmaster.pid").write_text(f"{os.getpid()}\n/data\n")

        class Server:
            pass

        server = Server()
        server.directory = directory  # type: ignore[attr-defined]
        self.assertEqual(server_pids(server)[0], os.getpid())
        (directory / "data" / "postmaster.pid").write_text("garbage\n")
        self.assertEqual(server_pids(server), [])

    def test_server_pids_not_running(self) -> None:
        class Server:
            _process = None

        self.assertEqual(server_pids(Server()), [])


#: Modules of bench/ that measure nothing themselves: this meter, the CPU caps,
#: and the tool that repeats a test to find flakes.
NOT_BENCHMARKS = {"machine.py", "cpucap.py", "repeat_test.py"}


class EveryBenchTests(SynchronousTestCase):
    def test_every_bench_meters_the_machine(self) -> None:
        """
        Every benchmark in bench/ records the rest of the machine's load through
        bench.machine and says whether its figures are valid.
        """
        missing = []
        for path in sorted(BENCH.glob("*.py")):
            if path.name in NOT_BENCHMARKS:
                continue
            source = path.read_text(encoding="utf-8")
            if not ("bench.machine" in source and "valid" in source):
                missing.append(path.name)
        self.assertEqual(missing, [])


class ReapedTests(SynchronousTestCase):
    def test_reaped_children_count(self) -> None:
        """With reaped, a process's figure includes the CPU of the children it reaped."""
        before = process_cpu_seconds(os.getpid(), reaped=True) - process_cpu_seconds(os.getpid())
        subprocess.run(
            [sys.executable, "-c", "import time\nt = time.process_time()\n"
             "while time.process_time() - t < 0.3: pass"],
            check=True,
        )  # fmt: skip
        after = process_cpu_seconds(os.getpid(), reaped=True) - process_cpu_seconds(os.getpid())
        self.assertGreaterEqual(after - before, 0.25)


class ProbeTests(SynchronousTestCase):
    def test_probe(self) -> None:
        """The machine's wake-up round trips and Python speed, as positive figures."""
        before = os.sched_getaffinity(0)
        figures = probe()
        self.assertGreater(figures["pipe_round_trip_us_same_cpu"], 0)
        self.assertGreater(figures["python_workload_ms"], 0)
        if len(os.sched_getaffinity(0)) > 1:
            self.assertGreater(figures["pipe_round_trip_us_across_cpus"], 0)
        # The probe leaves this process's CPUs as they were.
        self.assertEqual(os.sched_getaffinity(0), before)
