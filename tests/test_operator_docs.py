"""
The operator documents (docs/RUNBOOK.md, docs/TROUBLESHOOTING.md, and for
commands and keys docs/DEPLOYMENT.md) name only what Warden has: every
``warden_*`` metric is exported, every ``wardenctl`` command and option exists
in wardenctl's parser, every ``[section] key`` is a configuration key, and
every line of a ``log`` block is a message Warden logs (its format string,
``{fields}`` and all).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import re
from pathlib import Path

import attrs
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from twisted.trial.unittest import SynchronousTestCase

import warden
from tests.deploy.promql import series_names
from warden.admin.metrics import WardenCollector
from warden.admin.workers import merge_expositions
from warden.config import parse_config_text
from warden.ctl.main import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "docs" / "RUNBOOK.md", REPO / "docs" / "TROUBLESHOOTING.md")
#: Also held to real wardenctl commands and configuration keys.
COMMAND_DOCS = (*DOCS, REPO / "docs" / "DEPLOYMENT.md")

_METRIC = re.compile(r"\bwarden_[a-z0-9_]+\b")
_CONFIG_KEY = re.compile(r"\[([a-z_]+)\] ([a-z_0-9]+)")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
#: Where a ``wardenctl`` command line ends in running text or a shell line.
_COMMAND_END = re.compile(r"[`#>|;]")


def exported_series() -> set[str]:
    """Every series name Warden's /metrics can serve: every module's families loaded."""
    for module in pkgutil.walk_packages(warden.__path__, "warden."):
        if not module.name.startswith("warden.ops"):
            importlib.import_module(module.name)
    own = CollectorRegistry(auto_describe=False)
    own.register(WardenCollector())
    # With [sip] workers, worker 0 adds the workers' counts to the merged families.
    workers = merge_expositions({"count": 2, "up": 2, "workers": []})
    return series_names((generate_latest(REGISTRY) + generate_latest(own) + workers).decode())


def logged_templates() -> list[str]:
    """The string literals of warden/ (f-strings with ``{}`` for each field), normalised."""
    found = []
    package = Path(warden.__file__).parent
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "ops":  # warden.ops: the ops tools
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                found.append(
                    "".join(
                        part.value if isinstance(part, ast.Constant) else "{}"
                        for part in node.values
                    )
                )
    return [_PLACEHOLDER.sub("{}", text) for text in found]


def log_lines(text: str) -> list[str]:
    """The lines of the ```log fenced blocks of ``text``."""
    lines, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = stripped == "```log"
            continue
        if inside and stripped:
            lines.append(stripped)
    return lines


def wardenctl_commands(text: str) -> list[list[str]]:
    """The words after each ``wardenctl`` (up to a backtick, comment, pipe or redirect)."""
    commands = []
    for line in text.splitlines():
        for part in line.split("wardenctl")[1:]:
            words = _COMMAND_END.split(part, 1)[0].split()
            commands.append([w.rstrip(").,") for w in words])
    return commands


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-commands of ``parser`` ({} if it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser``."""
    return {o for action in parser._actions for o in action.option_strings}


class OperatorDocsTests(SynchronousTestCase):
    """Each document names only real metrics, commands, keys and log lines."""

    def test_metrics_exist(self) -> None:
        """Every ``warden_*`` name is a series Warden exports."""
        known = exported_series()
        for doc in DOCS:
            named = set(_METRIC.findall(doc.read_text(encoding="utf-8")))
            self.assertTrue(named, doc.name)
            self.assertEqual(sorted(named - known), [], doc.name)

    def test_wardenctl_commands_exist(self) -> None:
        """Every ``wardenctl`` sub-command, and every option given it, exists."""
        root = build_parser()
        for doc in COMMAND_DOCS:
            for words in wardenctl_commands(doc.read_text(encoding="utf-8")):
                parser, where = root, ["wardenctl"]
                # Global options and their values come before the sub-command.
                while words and words[0] in ("--config", "--data-dir"):
                    words = words[2:]
                for word in words:
                    commands = subparsers(parser)
                    if commands and not word.startswith("-"):
                        self.assertIn(word, commands, (doc.name, " ".join(where + words)))
                        parser, where = commands[word], [*where, word]
                    elif word.startswith("--"):
                        self.assertIn(word.split("=")[0], options(parser), (doc.name, where))

    def test_config_keys_exist(self) -> None:
        """Every ``[section] key`` is a key of that configuration section."""
        config = parse_config_text("")
        for doc in COMMAND_DOCS:
            for section, key in _CONFIG_KEY.findall(doc.read_text(encoding="utf-8")):
                self.assertTrue(hasattr(config, section), (doc.name, section))
                fields = {f.name for f in attrs.fields(type(getattr(config, section)))}
                self.assertIn(key, fields, (doc.name, f"[{section}] {key}"))

    def test_log_lines_exist(self) -> None:
        """Every line of a ``log`` block is (part of) a message in Warden's code."""
        templates = logged_templates()
        for doc in DOCS:
            lines = log_lines(doc.read_text(encoding="utf-8"))
            self.assertTrue(lines, doc.name)
            for line in lines:
                wanted = _PLACEHOLDER.sub("{}", line)
                self.assertTrue(any(wanted in t for t in templates), (doc.name, line))


class CheckerTests(SynchronousTestCase):
    """The extraction the tests above rely on."""

    def test_wardenctl_commands(self) -> None:
        """Command words end at a backtick, a comment or a redirect."""
        text = (
            "run `wardenctl cdr list --json` now\n"
            "wardenctl admin token ops drain --scopes write > token  # once\n"
        )
        self.assertEqual(
            wardenctl_commands(text),
            [["cdr", "list", "--json"], ["admin", "token", "ops", "drain", "--scopes", "write"]],
        )

    def test_log_lines(self) -> None:
        """Only lines of ``log`` blocks count."""
        text = "```sh\nnot a log\n```\n```log\nStore ready; {count} bindings restored\n```\n"
        self.assertEqual(log_lines(text), ["Store ready; {count} bindings restored"])
