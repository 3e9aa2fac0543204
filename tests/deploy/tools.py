"""
What the deployment tests share: where deploy/ is, and the validators they need.

The validators (kubernetes-validate, checkov, python-hcl2) are installed by tox's
``deploy`` environment, which sets ``WARDEN_DEPLOY_TOOLS=required``: there, under
``CI=true``, a missing validator fails the test. Elsewhere (a developer's
virtualenv, tox's ``py311``) such tests skip and say which environment runs them.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial import unittest

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
