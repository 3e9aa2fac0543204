"""
deploy/grafana: the dashboards are well-formed Grafana documents (unique uids,
a data source variable every panel uses, defined template variables), every
query is valid PromQL (``promtool check rules`` on them as recording rules), and
the load-test dashboard reads only warden-loadtest's metrics. That every metric
exists in a real Warden's /metrics is tests/integration/test_monitoring.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from twisted.trial.unittest import SynchronousTestCase

from tests.deploy.monitoring import (
    DEPLOY,
    GRAFANA_BUILTINS,
    LOADTEST_PREFIX,
    PROMETHEUS_SERIES,
    as_promql,
    dashboard_expressions,
    dashboards,
    load_yaml,
    panels,
    variables_used,
)
from tests.deploy.promql import metric_names
from tests.deploy.test_prometheus import promtool

#: One dashboard per area the operators watch.
EXPECTED = {
    "warden-sip.json": "SIP traffic",
    "warden-registrations.json": "registrations",
    "warden-calls.json": "calls",
    "warden-media.json": "media quality",
    "warden-store.json": "store latency",
    "warden-node.json": "node health",
    "warden-loadtest.json": "load tests",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


class DashboardDocumentTests(SynchronousTestCase):
    """The JSON documents Grafana imports."""

    def test_one_per_area(self) -> None:
        """The seven dashboards exist, with distinct uids (their file names) and titles."""
        found = dashboards()
        self.assertEqual(sorted(found), sorted(EXPECTED))
        for name, dashboard in found.items():
            self.assertEqual(dashboard["uid"], name.removesuffix(".json"))
            self.assertTrue(dashboard["title"].startswith("Warden "), name)
        self.assertEqual(len({d["title"] for d in found.values()}), len(found))

    def test_panels(self) -> None:
        """
        Every panel but a row queries the chosen Prometheus data source, fits the
        24-column grid, and has queries with distinct refIds.
        """
        for name, dashboard in dashboards().items():
            variables = {v["name"]: v for v in dashboard["templating"]["list"]}
            self.assertEqual(variables["datasource"]["type"], "datasource", name)
            self.assertEqual(variables["datasource"]["query"], "prometheus", name)
            ids = [p["id"] for p in panels(dashboard)]
            self.assertEqual(len(ids), len(set(ids)), name)
            for panel in panels(dashboard):
                grid = panel["gridPos"]
                self.assertLessEqual(grid["x"] + grid["w"], 24, (name, panel["title"]))
                if panel["type"] == "row":
                    continue
                where = (name, panel["title"])
                self.assertEqual(panel["datasource"], DATASOURCE, where)
                self.assertTrue(panel["targets"], where)
                refs = [t["refId"] for t in panel["targets"]]
                self.assertEqual(len(refs), len(set(refs)), where)
                for target in panel["targets"]:
                    self.assertEqual(target["datasource"], DATASOURCE, where)
                    self.assertTrue(target["expr"].strip(), where)

    def test_variables_defined(self) -> None:
        """Every variable a query uses is the dashboard's own or a Grafana built-in."""
        for name, expressions in dashboard_expressions().items():
            defined = {v["name"] for v in dashboards()[name]["templating"]["list"]}
            for where, expr in expressions:
                unknown = variables_used(expr) - defined - set(GRAFANA_BUILTINS)
                self.assertEqual(unknown, set(), (name, where))

    def test_loadtest_dashboard_reads_the_load_generator(self) -> None:
        """The load-test dashboard reads warden-loadtest's metrics, the others Warden's."""
        for name, expressions in dashboard_expressions().items():
            names = set().union(*(metric_names(expr) for _, expr in expressions))
            loadtest = {n for n in names if n.startswith(LOADTEST_PREFIX)}
            if name == "warden-loadtest.json":
                self.assertEqual(names - loadtest - PROMETHEUS_SERIES, set())
                self.assertTrue(loadtest)
            else:
                self.assertEqual(loadtest, set(), name)


class DashboardPromQLTests(SynchronousTestCase):
    """promtool parses every dashboard query."""

    def test_queries_parse(self) -> None:
        """Each query, its variables filled in, is a valid recording rule expression."""
        rules = []
        for name, expressions in dashboard_expressions().items():
            stem = name.removesuffix(".json").replace("-", "_")
            for number, (_, expr) in enumerate(expressions):
                rules.append({"record": f"dashboard:{stem}:{number}", "expr": as_promql(expr)})
        path = Path(self.mktemp())
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
        result = promtool(self, "check", "rules", "--lint=none", str(path))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"SUCCESS: {len(rules)} rules found", result.stdout)


class ProvisioningTests(SynchronousTestCase):
    """The Grafana provisioning examples."""

    def test_provisioning(self) -> None:
        """The dashboard provider and the Prometheus data source are well-formed."""
        base = DEPLOY / "grafana" / "provisioning"
        provider = load_yaml(base / "dashboards" / "warden.yml")
        self.assertEqual(provider["apiVersion"], 1)
        self.assertEqual(provider["providers"][0]["type"], "file")
        source = load_yaml(base / "datasources" / "prometheus.yml")
        self.assertEqual(source["datasources"][0]["type"], "prometheus")
