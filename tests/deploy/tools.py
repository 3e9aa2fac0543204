"""
What the deployment tests share: where deploy/ is, and the validators they need.

The validators (kubernetes-validate, python-hcl2) are installed by tox's ``deploy``
environment, which sets ``WARDEN_DEPLOY_TOOLS=required``: there, under
``CI=true``, a missing validator fails the test. Elsewhere (a developer's
virtualenv, tox's ``py311``) such tests skip and say which environment runs them.
checkov lives in a virtualenv of its own (``.ci/run`` makes it and names it in
``$WARDEN_CHECKOV``), as its fork of the ``hcl2`` module clashes with python-hcl2's.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.trial import unittest

from tests.integration.harness import WARDENCTL, IntegrationTestCase, run_process, wardenctl

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _missing(testcase: unittest.TestCase, what: str, package: str) -> None:
    required = os.environ.get("WARDEN_DEPLOY_TOOLS") == "required"
    if required and os.environ.get("CI") == "true":
        testcase.fail(f"{what} is missing, and CI=true requires it (pip install {package})")
    raise unittest.SkipTest(f"{what} is missing (pip install {package}; tox -e deploy has it)")


def require_tool(testcase: unittest.TestCase, name: str, package: str) -> str:
    """The path of command ``name`` (on PATH or beside this Python), or skip/fail."""
    beside = Path(sys.executable).with_name(name)
    path = shutil.which(name) or (str(beside) if beside.exists() else None)
    if path is None:
        _missing(testcase, name, package)
    assert path is not None
    return path


def require_module(testcase: unittest.TestCase, name: str, package: str) -> ModuleType:
    """The imported module ``name``, or skip/fail."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(testcase, f"the Python module {name}", package)
        raise


def checkov(testcase: unittest.TestCase, directory: Path, framework: str) -> dict[str, Any]:
    """
    checkov's JSON report on ``directory`` for ``framework``, run offline
    (``--skip-download``: the built-in checks only, no platform severities).
    """
    program = os.environ.get("WARDEN_CHECKOV") or require_tool(testcase, "checkov", "checkov")
    result = subprocess.run(
        [program, "--skip-download", "--framework", framework, "-d", str(directory),
         "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except ValueError:
        testcase.fail(f"checkov said no JSON (exit {result.returncode}): {result.stderr[-2000:]}")
    if isinstance(report, list):  # one report per framework
        (report,) = (r for r in report if r.get("check_type") == framework)
    assert isinstance(report, dict)
    return report


def assert_checkov_clean(testcase: unittest.TestCase, report: dict[str, Any]) -> None:
    """
    No failed check, no parsing error, some checks passed, and every skipped one
    carries a written reason (checkov offline has no severities: every failure
    counts, high or not).
    """
    results = report["results"]
    failed = [
        f"{c['check_id']} {c['resource']} {c['file_path']}: {c['check_name']}"
        for c in results["failed_checks"]
    ]
    testcase.assertEqual(failed, [])
    testcase.assertEqual(results["parsing_errors"], [])
    testcase.assertGreater(len(results["passed_checks"]), 20)
    for skipped in results["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        testcase.assertGreaterEqual(len(reason.split()), 6, f"{skipped['check_id']}: {reason!r}")


async def drain_running_warden(testcase: IntegrationTestCase, argv: list[str]) -> None:
    """
    Run a deployment's ``wardenctl ... drain`` command line against a real Warden:
    the program becomes this checkout's wardenctl, the configuration, data
    directory and token file the test Warden's (the token a new one with the
    write scope). It must exit 0 once the server reports the drain finished.
    """
    warden = await testcase.start_warden()
    added = await wardenctl(warden.config_path, "admin", "add", "ops")
    testcase.assertEqual(added.code, 0, added.stderr)
    made = await wardenctl(warden.config_path, "admin", "token", "ops", "drain",
                           "--scopes", "write")  # fmt: skip
    testcase.assertEqual(made.code, 0, made.stderr)
    token = warden.workdir / "drain-token"
    token.write_text(made.stdout.strip() + "\n", encoding="utf-8")
    args = list(argv[1:])
    for option, value in (("--config", warden.config_path), ("--data-dir", warden.data_dir),
                          ("--token-file", token)):  # fmt: skip
        if option in args:
            args[args.index(option) + 1] = str(value)
    result = await run_process([*WARDENCTL, *args], warden.workdir, 60)
    testcase.assertEqual(result.code, 0, result.stderr + result.stdout)
    testcase.assertEqual(result.stdout.splitlines()[-1], "drained")
    testcase.assertIn("Drained", warden.log_text())
