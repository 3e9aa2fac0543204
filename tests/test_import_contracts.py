"""
The import contracts of ``pyproject.toml`` (import-linter, ADR 0014) hold on the
tree, and each one breaks when a forbidden import is added to a copy of it.

import-linter runs on the tree laid out as installed (L{tests.lintimports}),
where ``warden.ops`` is the ops tools' own code. Without ``lint-imports`` the
tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from twisted.trial import unittest

from tests.lintimports import CONFIG, ROOT, installed_layout, lint_imports, lint_imports_command

CONTRACTS = {
    contract["id"]: contract
    for contract in tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["importlinter"][
        "contracts"
    ]
}


def _verdicts(report: str) -> dict[str, str]:
    """The contract names of the summary with their verdict (KEPT or BROKEN)."""
    verdicts = {}
    for line in report.splitlines():
        # "NAME KEPT", or "NAME KEPT (1 ignored import)" where a contract ignores one
        name, _, verdict = re.sub(r" \(\d+ ignored imports?\)$", "", line.strip()).rpartition(" ")
        if verdict in ("KEPT", "BROKEN") and name:
            verdicts[name] = verdict
    return verdicts


class ContractTests(unittest.TestCase):
    """import-linter on a copy of the tree, as it is and with one bad import."""

    def setUp(self) -> None:
        command = lint_imports_command()
        if command is None:
            if os.environ.get("CI") == "true":
                self.fail("lint-imports is not installed, and CI=true requires it")
            raise unittest.SkipTest("lint-imports is not installed (pip install import-linter)")
        self.command = command
        self.tree = installed_layout(ROOT, Path(self.mktemp()))

    def add_import(self, module: str, statement: str) -> None:
        """Append ``statement`` to ``module`` (a dotted name) in the copy."""
        path = self.tree.joinpath(*module.split(".")).with_suffix(".py")
        path.write_text(path.read_text(encoding="utf-8") + f"\n{statement}\n", encoding="utf-8")

    def assert_broken(self, contract: str, line: str) -> None:
        """import-linter fails, naming only ``contract`` broken, with ``line`` in its report."""
        result = lint_imports(self.command, self.tree)
        report = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, report)
        broken = {name for name, verdict in _verdicts(report).items() if verdict == "BROKEN"}
        self.assertEqual(broken, {CONTRACTS[contract]["name"]}, report)
        self.assertIn(line, report)

    def test_kept(self) -> None:
        """On the tree as it is, every contract is kept."""
        result = lint_imports(self.command, self.tree)
        report = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, report)
        self.assertEqual(
            _verdicts(report), {contract["name"]: "KEPT" for contract in CONTRACTS.values()}
        )

    def test_parser_importing_the_store(self) -> None:
        """The parser (pure SIP core) importing the store breaks the core's contract."""
        self.add_import("warden.sip.parser", "import warden.store.directory")
        self.assert_broken("sip-core", "warden.sip.parser -> warden.store.directory")

    def test_transaction_counting_metrics(self) -> None:
        """A transaction counting in Prometheus itself breaks the core's contract."""
        self.add_import("warden.sip.transaction_base", "from warden.sip import metrics")
        self.assert_broken("sip-core", "warden.sip.transaction_base -> warden.sip.metrics")

    def test_store_importing_sip(self) -> None:
        """The store importing SIP behaviour breaks the store's contract."""
        self.add_import("warden.store.location", "from warden.sip import registrar")
        self.assert_broken("store", "warden.store.location -> warden.sip.registrar")

    def test_feature_importing_admin(self) -> None:
        """A feature plugin importing the admin API breaks the features' contract."""
        self.add_import("warden.features.mfa", "from warden.admin import auth")
        self.assert_broken("features", "warden.features.mfa -> warden.admin.auth")

    def test_product_importing_ops(self) -> None:
        """
        The product importing a module of its ops tools breaks the ops contract
        (in a checkout, that module is not below ``warden/ops/`` at all).
        """
        self.add_import("warden.tap", "from warden.ops.drtest import probe")
        self.assert_broken("ops", "warden.tap -> warden.ops.drtest.probe")


class CoreListTests(unittest.SynchronousTestCase):
    """The SIP core's contract names every module of warden.sip."""

    def test_every_sip_module_on_one_side(self) -> None:
        """
        Each module of warden.sip is either in the pure core or forbidden to it,
        so a new module cannot join the core's imports unseen.
        """
        contract = CONTRACTS["sip-core"]
        core = set(contract["source_modules"])
        forbidden = {m for m in contract["forbidden_modules"] if m.startswith("warden.sip.")}
        modules = {
            f"warden.sip.{path.stem}"
            for path in (ROOT / "warden" / "sip").glob("*.py")
            if path.stem != "__init__"
        }
        self.assertEqual(core & forbidden, set())
        self.assertEqual(modules - core - forbidden, set())
        self.assertEqual((core | forbidden) - modules, set())
