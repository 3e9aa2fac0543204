"""
What the monitoring artifacts read: the PromQL of every alert rule
(deploy/prometheus) and of every Grafana dashboard panel and template variable
(deploy/grafana/dashboards), and the metric names in them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.promql import metric_names, selectors
from tests.deploy.tools import DEPLOY

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "warden-alerts.yml"
RULE_TESTS = PROMETHEUS / "tests" / "warden-alerts.test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"

#: Series Prometheus records itself for every scrape target (not in any /metrics).
PROMETHEUS_SERIES = frozenset(["up"])

#: Labels Prometheus adds to every series of a target.
TARGET_LABELS = frozenset(["job", "instance"])

#: Metric names a warden-loadtest's /metrics serves (the rest are Warden's).
LOADTEST_PREFIX = "warden_loadtest_"

#: Grafana's built-in variables, and what stands in for them where PromQL is checked.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}

_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?P<expr>.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S
)
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def load_yaml(path: Path) -> Any:
    """A YAML document."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> dict[str, str]:
    """Alert name -> expression, for every alerting rule."""
    found: dict[str, str] = {}
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                found[rule["alert"]] = rule["expr"]
    return found


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard document."""
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(DASHBOARDS.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def panel_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, PromQL) of every query variable (``label_values(expr, label)``)."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        found.append((variable["name"], match.group("expr") if match else text))
    return found


def dashboard_expressions() -> dict[str, list[tuple[str, str]]]:
    """File name -> (where, PromQL) of every panel query and query variable."""
    return {
        name: panel_expressions(d) + variable_expressions(d) for name, d in dashboards().items()
    }


def variables_used(expr: str) -> set[str]:
    """The names of the Grafana variables ``expr`` uses."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


def as_promql(expr: str) -> str:
    """``expr`` with Grafana's variables replaced: durations for built-ins, ``.*`` for others."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return GRAFANA_BUILTINS.get(name, ".*")

    return _VARIABLE.sub(value, expr)


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used ("rule X", "dashboard.json: panel")."""
    uses: dict[str, set[str]] = {}
    for where, expr in all_expressions():
        for name in metric_names(expr):
            uses.setdefault(name, set()).add(where)
    return uses


def all_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and every dashboard query and variable."""
    found = [(f"rule {alert}", expr) for alert, expr in alert_rules().items()]
    for file, expressions in dashboard_expressions().items():
        found.extend((f"{file}: {where}", expr) for where, expr in expressions)
    return found


def matched_labels() -> dict[str, dict[str, set[str]]]:
    """Metric name -> label a selector matches it on (job and instance aside) -> where."""
    found: dict[str, dict[str, set[str]]] = {}
    for where, expr in all_expressions():
        for name, labels in selectors(expr):
            for label in labels - TARGET_LABELS:
                found.setdefault(name, {}).setdefault(label, set()).add(where)
    return found
