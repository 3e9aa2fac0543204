"""
The monitoring artifacts against real processes: a real ``twistd warden`` places
a real SIPp call (RTP through its relay), then its ``/metrics`` is scraped over
the authenticated admin HTTPS API, checked by ``promtool check metrics``, and
every metric an alert rule (deploy/prometheus) or a dashboard panel
(deploy/grafana) reads must be in it, with the labels its selectors match on
(for the series that have samples). The load-test dashboard's metrics are
checked the same way against a real ``twistd warden-loadtest
--prometheus-port`` run on the same Warden.
"""

from __future__ import annotations

import subprocess

from twisted.internet.error import ConnectError

from tests.deploy.monitoring import (
    LOADTEST_PREFIX,
    PROMETHEUS_SERIES,
    matched_labels,
    referenced_metrics,
)
from tests.deploy.promql import missing, sample_labels, series_names
from tests.integration.clients import pause
from tests.integration.harness import free_port, poll, require_binary, spawn
from tests.integration.test_admin import _CallMixin
from tests.ops.loadtest.test_run import loadtest_command, scrape, users_file


class MonitoringAgainstRealWardenTests(_CallMixin):
    """The alerts and dashboards read only metrics Warden and warden-loadtest export."""

    def check_exposition(self, text: str) -> None:
        """promtool accepts the exposition (format and metric-naming lint)."""
        promtool = require_binary(self, "promtool", "prometheus")
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def assertExported(self, wanted: dict[str, set[str]], text: str) -> None:
        """Every name in ``wanted`` is a series of the exposition ``text``."""
        absent = missing(wanted, series_names(text))
        self.assertEqual(absent, [], {name: sorted(wanted[name]) for name in absent})

    def assertLabelsExist(self, text: str) -> None:
        """
        Each label a selector matches a metric on is a label of that metric's
        samples in ``text`` (metrics without samples there cannot tell).
        """
        carried = sample_labels(text)
        for name, labels in matched_labels().items():
            if name not in carried:
                continue
            for label, where in labels.items():
                self.assertIn(label, carried[name], (name, sorted(where)))

    async def loadtest_exposition(self, port: int, passwords: dict[str, str]) -> str:
        """The /metrics of a short registration run of warden-loadtest against ``port``."""
        workdir = self.workdir()
        metrics_port = free_port()
        command = loadtest_command(
            workdir, "--pbx-host", "127.0.0.1", "--sip-port", str(port), "--local-ip",
            "127.0.0.1", "--users", str(len(passwords)), "--users-file",
            str(users_file(workdir, passwords)), "--register-rate", "2", "--duration", "6",
            "--save-report", str(workdir / "report.json"), "--prometheus-port",
            str(metrics_port), "--no-progress",
        )  # fmt: skip
        child, process = spawn(command, workdir)
        self.addCleanup(lambda: process.signalProcess("KILL") if child.running else None)
        text = ""
        for _ in range(100):
            try:
                text = await scrape(metrics_port)
            except ConnectError:
                text = ""
            if "warden_loadtest_operations_started_total{" in text:
                break
            await pause(0.1)
        self.assertTrue(await poll(lambda: not child.running, 60), child.output())
        self.assertEqual(child.code, 0, child.output())
        return text

    async def test_every_referenced_metric_is_exported(self) -> None:
        """
        After a relayed call, Warden's /metrics passes promtool and has every
        metric the rules and dashboards use (Prometheus' own ``up`` aside); the
        load generator's has every metric of the load-test dashboard.
        """
        warden, users, uas, uac_args = await self.call_setup(1)
        await self.run_uac([*uac_args, "-d", "2000"], 1, uas)
        client = await self.admin(warden)
        result = await client.request("GET", "/metrics")
        self.assertEqual(result.status, 200, result.body)
        text = result.body.decode()
        self.check_exposition(text)
        uses = referenced_metrics()
        loadtest = {n: w for n, w in uses.items() if n.startswith(LOADTEST_PREFIX)}
        product = {
            n: w for n, w in uses.items() if n not in loadtest and n not in PROMETHEUS_SERIES
        }
        self.assertIn("warden_tls_certificate_expiry_timestamp_seconds", product)
        self.assertExported(product, text)
        self.assertLabelsExist(text)

        generator = await self.loadtest_exposition(warden.port, users.passwords)
        self.check_exposition(generator)
        self.assertTrue(loadtest)
        self.assertExported(loadtest, generator)
        self.assertLabelsExist(generator)
