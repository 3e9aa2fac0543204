"""
deploy/prometheus: the alert rules pass ``promtool check rules``, their unit tests
pass ``promtool test rules``, every alert has a unit test in which it fires, and
the example scrape configuration parses (``promtool check config``).

promtool comes from Debian's ``prometheus`` package (.ci/run installs it).
"""

from __future__ import annotations

import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.deploy.monitoring import (
    DEPLOY,
    RULE_TESTS,
    RULES,
    SCRAPE_CONFIG,
    alert_rules,
    load_yaml,
)
from tests.integration.harness import require_binary


def promtool(testcase: SynchronousTestCase, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args`` (skipped locally, failed under CI, without promtool)."""
    path = require_binary(testcase, "promtool", "prometheus")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120, check=False)


class PromtoolTests(SynchronousTestCase):
    """promtool accepts the rules, their tests and the scrape configuration."""

    def test_check_rules(self) -> None:
        """The rule file is valid, and promtool's linter finds nothing."""
        result = promtool(self, "check", "rules", str(RULES))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"SUCCESS: {len(alert_rules())} rules found", result.stdout)

    def test_rule_unit_tests(self) -> None:
        """Every unit test of the alerts passes."""
        result = promtool(self, "test", "rules", str(RULE_TESTS))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout)

    def test_scrape_config(self) -> None:
        """
        The example configuration parses (its token and certificate files are the
        operator's, so only the syntax is checked) and loads the alert rules.
        """
        result = promtool(self, "check", "config", "--syntax-only", str(SCRAPE_CONFIG))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        config = load_yaml(SCRAPE_CONFIG)
        self.assertEqual(config["rule_files"], [RULES.name])
        jobs = {job["job_name"] for job in config["scrape_configs"]}
        self.assertTrue({"warden", "warden-loadtest"} <= jobs, jobs)


class JobLabelTests(SynchronousTestCase):
    """The scrape configurations shipped label Warden's series job="warden"."""

    def test_kubernetes_service_monitor(self) -> None:
        """
        The ServiceMonitor relabels its targets' job to "warden" (by default it
        would be the Service's name), as the alerts and dashboards select.
        """
        monitor = load_yaml(DEPLOY / "kubernetes" / "servicemonitor.yaml")
        for endpoint in monitor["spec"]["endpoints"]:
            relabel = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
            self.assertEqual([r["replacement"] for r in relabel], ["warden"])
            self.assertEqual(relabel[0].get("action", "replace"), "replace")

    def test_rules_select_job_warden(self) -> None:
        """Every job matcher in the rules names job="warden"."""
        for alert, expr in alert_rules().items():
            for job in re.findall(r'job\s*=~?\s*"([^"]*)"', expr):
                self.assertEqual(job, "warden", alert)


class AlertCoverageTests(SynchronousTestCase):
    """Each alert is tested firing and quiet."""

    def test_every_alert_tested(self) -> None:
        """For every alert, a test case expects it to fire and one expects silence."""
        fired: set[str] = set()
        quiet: set[str] = set()
        for case in load_yaml(RULE_TESTS)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
        alerts = set(alert_rules())
        self.assertEqual(sorted(alerts - fired), [])
        self.assertEqual(sorted(alerts - quiet), [])
        self.assertEqual(sorted((fired | quiet) - alerts), [])

    def test_every_alert_has_severity_and_text(self) -> None:
        """Every alert carries a severity label, a summary and a description."""
        for group in load_yaml(RULES)["groups"]:
            for rule in group["rules"]:
                self.assertIn(rule["labels"]["severity"], ("warning", "critical"), rule["alert"])
                self.assertTrue(rule["annotations"]["summary"], rule["alert"])
                self.assertTrue(rule["annotations"]["description"], rule["alert"])
