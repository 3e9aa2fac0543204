"""
``twistd warden-loadtest --workers 2`` against a real ``twistd warden`` on
127.0.0.1: one merged report whose counts are the sum of the two shares, one
progress line for both, a worker killed making the run fail at once, and
SIGINT reaching the workers through the parent.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from tests.integration.clients import poll_async
from tests.integration.harness import IntegrationTestCase, poll, provision, spawn, wardenctl

from .test_run import loadtest_command, users_file

PROGRESS = re.compile(
    r"^\[\s*\d+\.\ds\] rate \d+/s \| in flight \d+ \| ok \d+ \| failed \S.* \| "
    r"p95 (\d+\.\d ms|-) \| workers [0-2]/2$"
)


def worker_pids(parent: int) -> list[int]:
    """The children of process ``parent``."""
    try:
        text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


class WorkersTests(IntegrationTestCase):
    """Two generator processes, one run."""

    async def test_two_workers_one_report(self) -> None:
        """
        20 users split 10/10 between two workers (2.5/s each, so about 4 s): the
        merged report counts 20 registrations (each share's 10), 40 challenges
        and 40 200s, its timers
        hold 20 samples, the shares are disjoint; stderr has one progress line a
        second for both workers and one summary; Warden ends with no bindings.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 20, first=4700)
        workdir = self.workdir()
        report_path = workdir / "all.json"
        command = loadtest_command(
            workdir, "--pbx-host", "127.0.0.1", "--sip-port", str(warden.port), "--local-ip",
            "127.0.0.1", "--test-type", "registrations", "--users", "20", "--users-file",
            str(users_file(workdir, users.passwords)), "--register-rate", "5", "--workers", "2",
            "--save-report", str(report_path),
        )  # fmt: skip
        child, _ = spawn(command, workdir)
        self.assertTrue(await poll(lambda: not child.running, 120))
        out, err = child.output()
        self.assertEqual(child.code, 0, err)
        report = json.loads(report_path.read_text())
        self.assertEqual(report["format"], 3)
        self.assertEqual(report["phases"]["register"]["succeeded"], 20)
        self.assertEqual(report["phases"]["unregister"]["succeeded"], 20)
        self.assertEqual(report["responses"]["REGISTER"], {"200": 40, "401": 40})
        self.assertEqual(report["timers"]["register"]["count"], 20)
        self.assertEqual(report["timers"]["register"]["histogram"]["count"], 20)
        self.assertEqual(sum(row["succeeded"] for row in report["timeline"]), 20)
        shares = [(s["index"], s["count"], s["user_start"], s["user_end"], s["first_user"])
                  for s in report["shares"]]  # fmt: skip
        self.assertEqual(shares, [(0, 2, 0, 10, "4700"), (1, 2, 10, 20, "4710")])
        self.assertEqual(len({s["pid"] for s in report["shares"]}), 2)
        self.assertEqual(report["config"]["workers"], 2)
        self.assertEqual(report["config"]["register_rate"], 5.0)
        lines = [line for line in err.splitlines() if line.startswith("[")]
        self.assertGreaterEqual(len(lines), 2, err)
        for line in lines:
            self.assertRegex(line, PROGRESS)
        self.assertEqual(err.count("warden-loadtest: PASS"), 1, err)
        self.assertEqual(out, "")
        self.assertEqual(warden.count_bindings(), 0)

    async def calls_under_way(self, first: int) -> tuple[Any, Any, Path]:
        """--workers 2 with two long calls up; (protocol, process, report path)."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 4, first=first)
        workdir = self.workdir()
        report_path = workdir / "all.json"
        command = loadtest_command(
            workdir, "--pbx-host", "127.0.0.1", "--sip-port", str(warden.port), "--local-ip",
            "127.0.0.1", "--test-type", "calls", "--users", "4", "--users-file",
            str(users_file(workdir, users.passwords)), "--total-calls", "2", "--call-rate",
            "10", "--concurrent-calls", "2", "--call-duration", "120", "--workers", "2",
            "--save-report", str(report_path),
        )  # fmt: skip
        child, process = spawn(command, workdir)
        self.addCleanup(lambda: process.signalProcess("KILL") if child.running else None)

        async def two_calls() -> bool:
            listed = await wardenctl(warden.config_path, "calls", "--json")
            return listed.code == 0 and len(json.loads(listed.stdout or "[]")) == 2

        self.assertTrue(await poll_async(two_calls, 30), warden.log_tail())
        self.assertEqual(len(worker_pids(process.pid)), 2)
        return child, process, report_path

    async def test_dead_worker_fails_the_run(self) -> None:
        """
        A worker killed mid-run: the parent stops the other (it hangs up and
        unregisters), names the dead one and exits 1 without a merged report,
        long before the calls would have ended.
        """
        child, process, report_path = await self.calls_under_way(4800)
        victim = worker_pids(process.pid)[1]
        os.kill(victim, signal.SIGKILL)
        self.assertTrue(await poll(lambda: not child.running, 60))
        _, err = child.output()
        self.assertEqual(child.code, 1, err)
        self.assertRegex(err, r"worker [01] was killed by signal 9 without a report")
        self.assertIn("no merged report", err)
        self.assertFalse(report_path.exists())

    async def test_sigint_stops_the_workers(self) -> None:
        """
        Ctrl-C to the parent: both workers hang up and unregister, the merged
        report says each share was interrupted, exit status 1.
        """
        child, process, report_path = await self.calls_under_way(4900)
        process.signalProcess("INT")
        self.assertTrue(await poll(lambda: not child.running, 60))
        _, err = child.output()
        self.assertEqual(child.code, 1, err)
        report = json.loads(report_path.read_text())
        self.assertEqual(
            report["interrupted"],
            "share 0: interrupted by a signal; share 1: interrupted by a signal",
        )
        self.assertEqual(report["responses"]["BYE"], {"200": 2})
        self.assertEqual(report["phases"]["unregister"]["succeeded"], 4)
