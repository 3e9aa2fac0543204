"""
The source layout (ADR 0014): ``ops/`` is installed as ``warden.ops`` through
``setup.cfg``'s ``package_dir``, every package is listed for the wheel, nothing
imports a top-level ``ops`` package, and the product never imports ``warden.ops``.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Callable, Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from warden.ops import drtest, loadtest

ROOT = Path(__file__).resolve().parent.parent


def _setup_options() -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["options"]


def _listed(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _packages_in_tree() -> set[str]:
    """Every package of the wheel, named as it is installed."""
    found = {"twisted.plugins"}
    for init in (ROOT / "warden").rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(ROOT).parts)
        if name != "warden.ops":
            found.add(name)
    for sql in (ROOT / "warden").rglob("*.sql"):
        found.add(".".join(sql.parent.relative_to(ROOT).parts))
    for init in (ROOT / "ops").rglob("__init__.py"):
        found.add(".".join(("warden", *init.parent.relative_to(ROOT).parts)))
    return found


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """
    (line, module) of every absolute import in one file; ``from a import b``
    gives both ``a`` and ``a.b`` (``b`` may be a module).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _python_files(*dirs: str) -> Iterator[Path]:
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def _forbidden(dirs: tuple[str, ...], forbidden: Callable[[str], bool]) -> list[str]:
    """``path:line: module`` of every import below ``dirs`` that ``forbidden`` names."""
    return [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in _python_files(*dirs)
        for line, module in _imports(path)
        if forbidden(module)
    ]


class PackagingTests(SynchronousTestCase):
    """What setup.cfg puts in the wheel."""

    def test_every_package_listed(self) -> None:
        """
        setup.cfg lists exactly the packages in the tree (a package left out would
        be missing from the wheel while the in-tree tests still pass).
        """
        self.assertEqual(set(_listed(_setup_options()["packages"])), _packages_in_tree())

    def test_ops_installed_as_warden_ops(self) -> None:
        """setup.cfg maps warden.ops to the top-level ops/ directory."""
        self.assertEqual(_listed(_setup_options()["package_dir"]), ["warden.ops = ops"])

    def test_checkout_imports_the_top_level_ops(self) -> None:
        """
        Run from a checkout, warden.ops.* is the code in ops/ (one copy, found
        without a symbolic link).
        """
        self.assertFalse((ROOT / "warden" / "ops").is_symlink())
        for package in (loadtest, drtest):
            assert package.__file__ is not None
            self.assertEqual(Path(package.__file__).parent.parent, ROOT / "ops")


class ImportTests(SynchronousTestCase):
    """Which packages may import which."""

    def test_no_top_level_ops(self) -> None:
        """Nothing imports ``ops`` as a top-level package: it is ``warden.ops``."""
        self.assertEqual(
            _forbidden(
                ("warden", "ops", "tests", "bench", "fuzz", "twisted"),
                lambda module: module == "ops" or module.startswith("ops."),
            ),
            [],
        )

    def test_product_never_imports_ops(self) -> None:
        """The product (warden/) never imports its ops tools (warden.ops)."""
        self.assertEqual(
            _forbidden(
                ("warden",),
                lambda module: module == "warden.ops" or module.startswith("warden.ops."),
            ),
            [],
        )

    def test_model_imports_nothing_of_warden(self) -> None:
        """The domain model (warden.model) is the bottom layer: no other Warden import."""
        self.assertEqual(
            _forbidden(
                ("warden/model",),
                lambda module: (
                    module.startswith("warden") and not module.startswith("warden.model")
                ),
            ),
            [],
        )

    def test_interfaces_import_only_the_model(self) -> None:
        """
        warden.interfaces imports no Warden module but the model when it runs
        (the names it takes from the SIP stack are for type checking only).
        """
        tree = ast.parse((ROOT / "warden" / "interfaces.py").read_text(encoding="utf-8"))
        bad = []
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
                if module.startswith("warden") and not module.startswith("warden.model"):
                    bad.append(f"{node.lineno}: {module}")
        self.assertEqual(bad, [])

    def test_admin_api_does_not_import_the_command_line(self) -> None:
        """
        The admin API and wardenctl share L{warden.present}; the API (warden.admin)
        imports nothing of wardenctl (warden.ctl).
        """
        self.assertEqual(
            _forbidden(("warden/admin",), lambda module: module.startswith("warden.ctl")), []
        )
