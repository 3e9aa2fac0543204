"""
``twistd warden-loadtest`` as operators run it, against a real ``twistd warden``
on 127.0.0.1: passing registration and call (RTP) runs, wrong passwords failing
with exit status 1 and 403s in the report, an unreachable PBX (3), a usage error
(2), and Ctrl-C (SIGINT) hanging up, unregistering and still reporting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.clients import poll_async
from tests.integration.harness import (
    TWISTD,
    IntegrationTestCase,
    ProcessResult,
    WardenProcess,
    free_port,
    poll,
    provision,
    real_reactor,
    run_process,
    spawn,
    wardenctl,
)


def loadtest_command(workdir: Path, *args: str) -> list[str]:
    """The ``twistd warden-loadtest`` command line, logging into ``workdir``."""
    return [
        *TWISTD, "-n", "--pidfile=", f"--logfile={workdir / 'loadtest.log'}",
        "warden-loadtest", *args,
    ]  # fmt: skip


def users_file(workdir: Path, passwords: dict[str, str], wrong: bool = False) -> Path:
    """A ``user;password`` CSV of ``passwords`` (each password spoiled when ``wrong``)."""
    path = workdir / "users.csv"
    lines = [
        f"{user};{password + 'x' if wrong else password}" for user, password in passwords.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def scrape(port: int) -> str:
    """GET http://127.0.0.1:<port>/metrics."""
    from twisted.web.client import Agent, readBody

    agent = Agent(real_reactor())  # type: ignore[no-untyped-call]
    response = await agent.request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    return (await readBody(response)).decode()


class LoadTestRunTests(IntegrationTestCase):
    """The whole program against a real Warden."""

    async def run_loadtest(
        self, warden: WardenProcess | None, *args: str, timeout: float = 120.0
    ) -> tuple[ProcessResult, dict[str, Any] | None, Path]:
        """Run warden-loadtest; returns its result, the JSON report (if written) and the dir."""
        workdir = self.workdir()
        port = warden.port if warden is not None else free_port()
        report = workdir / "report.json"
        command = loadtest_command(
            workdir, "--pbx-host", "127.0.0.1", "--sip-port", str(port), "--local-ip",
            "127.0.0.1", "--save-report", str(report), *args,
        )  # fmt: skip
        result = await run_process(command, workdir, timeout)
        document = json.loads(report.read_text()) if report.exists() else None
        return result, document, workdir

    async def test_terminal_shows_only_progress_and_summary(self) -> None:
        """
        Run as an operator types it (no twistd --logfile): stdout and stderr hold
        the progress lines and the summary, not Twisted's per-socket log lines;
        ``--log-file`` keeps those in a file instead.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 4, first=4100)
        workdir = self.workdir()
        kept = workdir / "twisted.log"
        command = [
            *TWISTD, "-n", "--pidfile=", "warden-loadtest", "--pbx-host", "127.0.0.1",
            "--sip-port", str(warden.port), "--local-ip", "127.0.0.1",
            "--test-type", "registrations", "--users", "4", "--register-rate", "20",
            "--users-file", str(users_file(workdir, users.passwords)),
            "--save-report", str(workdir / "report.json"), "--log-file", str(kept),
        ]  # fmt: skip
        result = await run_process(command, workdir, 120)
        self.assertEqual(result.code, 0, result.stderr)
        terminal = result.stdout + result.stderr
        self.assertIn("PASS", result.stderr)
        self.assertIn("rate", result.stderr)
        for noise in ("Stopping protocol", "Starting protocol", "UDP Port", "Log opened"):
            self.assertNotIn(noise, terminal)
        self.assertIn("Stopping protocol", kept.read_text())

    async def test_registrations_pass(self) -> None:
        """20 users register (401, 200) at 40/s: exit 0, counts, timers, HTML report."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 20, first=4000)
        workdir = self.workdir()
        html = workdir / "report.html"
        result, report, _ = await self.run_loadtest(
            warden, "--test-type", "registrations", "--users", "20",
            "--users-file", str(users_file(workdir, users.passwords)),
            "--register-rate", "40", "--html-report", str(html),
        )  # fmt: skip
        self.assertEqual(result.code, 0, result.stderr)
        assert report is not None
        self.assertEqual(report["result"], "pass")
        self.assertEqual(report["phases"]["register"]["succeeded"], 20)
        self.assertEqual(report["phases"]["unregister"]["succeeded"], 20)
        self.assertEqual(report["responses"]["REGISTER"], {"200": 40, "401": 40})
        self.assertEqual(report["timers"]["register"]["count"], 20)
        self.assertIsNotNone(report["timers"]["register"]["p95_ms"])
        self.assertTrue(all(c["passed"] for c in report["criteria"]), report["criteria"])
        self.assertIn("rate", result.stderr)  # the progress line
        self.assertIn("PASS", result.stderr)  # the summary
        page = html.read_text()
        self.assertIn("<svg", page)
        self.assertNotIn("http://", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
        self.assertEqual(warden.count_bindings(), 0)

    async def test_calls_with_rtp_pass(self) -> None:
        """Six calls with RTP both ways through Warden's relay: exit 0, no loss, good MOS."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 4, first=4100)
        workdir = self.workdir()
        result, report, _ = await self.run_loadtest(
            warden, "--test-type", "calls", "--users", "4",
            "--users-file", str(users_file(workdir, users.passwords)),
            "--total-calls", "6", "--call-rate", "3", "--concurrent-calls", "4",
            "--call-duration", "2", "--rtp", "--max-rtp-loss", "0.5", "--min-mos", "4.0",
        )  # fmt: skip
        self.assertEqual(result.code, 0, result.stderr)
        assert report is not None
        calls = report["phases"]["calls"]
        self.assertEqual((calls["attempted"], calls["succeeded"]), (6, 6), calls)
        self.assertEqual(report["responses"]["INVITE"], {"200": 6, "407": 6})
        self.assertEqual(report["responses"]["BYE"], {"200": 6})
        for timer in ("call_setup", "post_dial_delay", "bye"):
            self.assertEqual(report["timers"][timer]["count"], 6, timer)
        rtp = report["rtp"]
        self.assertEqual(rtp["calls"], 6)
        self.assertGreater(rtp["packets_sent"], 6 * 2 * 80)
        self.assertLessEqual(rtp["loss_percent"], 0.5)
        self.assertGreater(rtp["mos"]["mean"], 4.0)
        self.assertIsNotNone(rtp["latency_ms"]["mean"])
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertEqual(len(json.loads(listed.stdout)), 6)

    async def test_mixed_run(self) -> None:
        """Registrations and calls at once for 3 s, ramped over 1 s: both phases measured."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 6, first=4400)
        workdir = self.workdir()
        result, report, _ = await self.run_loadtest(
            warden, "--test-type", "mixed", "--users", "6",
            "--users-file", str(users_file(workdir, users.passwords)), "--duration", "3",
            "--ramp-up", "1", "--register-rate", "10", "--call-rate", "4",
            "--concurrent-calls", "3", "--total-calls", "1000", "--call-duration", "0.5",
        )  # fmt: skip
        self.assertEqual(result.code, 0, result.stderr)
        assert report is not None
        self.assertGreater(report["phases"]["calls"]["succeeded"], 3)
        # Set-up registered all six; the measured phase re-registered during the calls.
        self.assertGreater(report["phases"]["register"]["succeeded"], 6)
        names = {c["name"] for c in report["criteria"]}
        self.assertTrue({"register_success_rate", "calls_success_rate"} <= names)
        offered = sum(row["offered"] for row in report["timeline"])
        self.assertGreater(offered, 20)

    async def test_registrations_refreshed_in_long_runs(self) -> None:
        """Expiry 30 s and a call held 17 s: every user re-registers at 15 s ("refresh")."""
        warden = await self.start_warden({"registrar": {"min_expires": 10}})
        users = await provision(warden.config_path, 2, first=4500)
        workdir = self.workdir()
        result, report, _ = await self.run_loadtest(
            warden, "--test-type", "calls", "--users", "2", "--expires", "30",
            "--users-file", str(users_file(workdir, users.passwords)), "--total-calls", "1",
            "--call-duration", "17",
        )  # fmt: skip
        self.assertEqual(result.code, 0, result.stderr)
        assert report is not None
        self.assertEqual(report["phases"]["refresh"]["succeeded"], 2)
        self.assertEqual(report["phases"]["calls"]["succeeded"], 1)

    async def test_wrong_passwords_fail_with_403(self) -> None:
        """Every password wrong: exit status 1 and a report naming Warden's 403s."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 5, first=4200)
        workdir = self.workdir()
        result, report, _ = await self.run_loadtest(
            warden, "--users", "5", "--users-file",
            str(users_file(workdir, users.passwords, wrong=True)), "--register-rate", "20",
        )  # fmt: skip
        self.assertEqual(result.code, 1, result.stderr)
        assert report is not None
        self.assertEqual(report["result"], "fail")
        self.assertEqual(report["phases"]["register"]["failures"], {"403": 5})
        self.assertEqual(report["responses"]["REGISTER"]["403"], 5)
        failed = {c["name"] for c in report["criteria"] if not c["passed"]}
        self.assertIn("register_success_rate", failed)
        self.assertIn("403", result.stderr)

    async def test_unreachable_pbx_exits_3(self) -> None:
        """Nobody answers OPTIONS on the port: exit status 3, and the report says why."""
        workdir = self.workdir()
        result, report, _ = await self.run_loadtest(
            None, "--users", "2", "--users-file",
            str(users_file(workdir, {"1": "password1", "2": "password2"})),
            "--probe-timeout", "1",
        )  # fmt: skip
        self.assertEqual(result.code, 3, result.stderr)
        assert report is not None
        self.assertIn("no answer to OPTIONS", report["unreachable"])

    async def test_usage_error_exits_2(self) -> None:
        """A bad option value: exit status 2 and a message naming the option."""
        result, report, _ = await self.run_loadtest(None, "--transport", "sctp")
        self.assertEqual(result.code, 2, result.stderr)
        self.assertIn("--transport", result.stderr)
        self.assertIsNone(report)

    async def test_sigint_hangs_up_unregisters_and_reports(self) -> None:
        """
        Ctrl-C during long calls: BYE sent, users unregistered, report written, exit
        1. While the calls are up, the Prometheus endpoint shows them in flight.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 4, first=4300)
        workdir = self.workdir()
        report_path = workdir / "report.json"
        metrics_port = free_port()
        command = loadtest_command(
            workdir, "--pbx-host", "127.0.0.1", "--sip-port", str(warden.port),
            "--local-ip", "127.0.0.1", "--test-type", "calls", "--users", "4",
            "--users-file", str(users_file(workdir, users.passwords)), "--total-calls", "4",
            "--call-rate", "10", "--concurrent-calls", "4", "--call-duration", "120",
            "--save-report", str(report_path), "--prometheus-port", str(metrics_port),
        )  # fmt: skip
        child, process = spawn(command, workdir)
        self.addCleanup(lambda: process.signalProcess("KILL") if child.running else None)

        async def live_calls(count: int) -> bool:
            listed = await wardenctl(warden.config_path, "calls", "--json")
            return listed.code == 0 and len(json.loads(listed.stdout or "[]")) == count

        self.assertTrue(await poll_async(lambda: live_calls(4), 30), warden.log_tail())
        scraped = await scrape(metrics_port)
        self.assertIn("warden_loadtest_in_flight 4.0", scraped)
        self.assertIn('warden_loadtest_operations_started_total{phase="calls"} 4.0', scraped)
        process.signalProcess("INT")
        self.assertTrue(await poll(lambda: not child.running, 60))
        self.assertEqual(child.code, 1, child.output())
        report = json.loads(report_path.read_text())
        self.assertEqual(report["interrupted"], "interrupted by a signal")
        self.assertEqual(report["responses"]["BYE"], {"200": 4})
        self.assertEqual(report["phases"]["unregister"]["succeeded"], 4)
        # The BYEs are answered when Warden ends the calls; their live-call
        # summaries leave the store at the next batch write (CoalescingLiveCalls,
        # every 0.5 s), so wardenctl sees them gone shortly after, not at once.
        self.assertTrue(await poll_async(lambda: live_calls(0), 30), warden.log_tail())
        # Unregistrations are answered only once the removal is durable.
        self.assertEqual(warden.count_bindings(), 0)
