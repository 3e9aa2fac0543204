"""
Checks the import contracts of ``pyproject.toml`` (import-linter, ADR 0014) on
Warden laid out as it is installed.

A checkout's ``warden/ops/__init__.py`` only points ``warden.ops`` at the
top-level ``ops/`` directory; import-linter reads files, not ``__path__``, so in a
checkout it would see that pointer and not the ops tools, and an import of a
module below ``warden.ops`` would name nothing it knows. The check therefore runs
on a copy of the tree where ``ops/`` is ``warden/ops/``, as ``setup.cfg``
installs it (``package_dir``).

Usage::

    python -m tests.lintimports

Exits with import-linter's status; ``tox -e lint`` runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"

_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")


def installed_layout(root: Path, dest: Path) -> Path:
    """
    Copy ``root``'s Python sources to ``dest`` as they are installed: ``warden/``
    without the checkout's ``warden/ops`` pointer, and ``ops/`` as ``warden/ops/``.
    Returns ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "warden", dest / "warden", ignore=_COPIED)
    shutil.rmtree(dest / "warden" / "ops")
    shutil.copytree(root / "ops", dest / "warden" / "ops", ignore=_COPIED)
    return dest


def lint_imports_command() -> list[str] | None:
    """How to run ``lint-imports`` with this Python, or None when it is not installed."""
    beside = Path(sys.executable).with_name("lint-imports")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("lint-imports")
    return [found] if found is not None else None


def lint_imports(
    command: list[str], tree: Path, config: Path = CONFIG
) -> subprocess.CompletedProcess[str]:
    """
    Run import-linter on the ``warden`` package in ``tree`` with the contracts of
    ``config`` (no cache: the copy is thrown away); the output is captured.
    """
    # A wide console: each contract's name and verdict stay on one line.
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run(
        [*command, str(config), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def main() -> int:
    """Lay the tree out as installed, run import-linter on it, print its report."""
    command = lint_imports_command()
    if command is None:
        print("lint-imports is not installed (pip install import-linter)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="warden-imports-") as scratch:
        result = lint_imports(command, installed_layout(ROOT, Path(scratch)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
