"""Extension passwords in FIPS mode (``[security] fips``): no MD5 HA1 is computed."""

from __future__ import annotations

import os
from io import StringIO

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.ctl.main import build_parser, read_import_file, run_command
from warden.model import Extension
from warden.store.credentials import compute_ha1, make_extension
from warden.testing.memory import MemoryDirectory

REALM = "pbx.test"
FIPS = f'[server]\nrealm = "{REALM}"\n[security]\nfips = true\n'


class FipsExtensionTests(SynchronousTestCase):
    """``wardenctl extension`` with FIPS mode on stores the SHA-256 HA1 only."""

    def setUp(self) -> None:
        self.config = parse_config_text(FIPS)
        self.directory = MemoryDirectory()

    def ctl(self, *argv: str) -> int:
        args = build_parser().parse_args(argv)
        d = run_command(args, self.config, self.directory, Clock(), StringIO(), StringIO())
        code: int = self.successResultOf(d)
        return code

    def stored(self, number: str) -> Extension:
        extension = self.successResultOf(self.directory.get_extension(number))
        assert extension is not None
        return extension

    def assert_sha256_only(self, number: str, password: str) -> None:
        extension = self.stored(number)
        self.assertEqual(extension.ha1_md5, "")
        self.assertEqual(extension.ha1_sha256, compute_ha1("SHA-256", number, REALM, password))

    def test_add_and_set(self) -> None:
        """``extension add`` and ``set --password`` keep a SHA-256 HA1 and no MD5 one."""
        self.assertEqual(self.ctl("extension", "add", "1001", "--password", "a-long-secret1"), 0)
        self.assert_sha256_only("1001", "a-long-secret1")
        self.assertEqual(self.ctl("extension", "set", "1001", "--password", "another-secret2"), 0)
        self.assert_sha256_only("1001", "another-secret2")

    def test_import(self) -> None:
        """``extension import`` (and the file reader with md5=False) keeps no MD5 HA1."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("SEQUENTIAL\n1001;pw-one-long\n")
        [extension] = read_import_file(os.path.abspath(path), REALM, md5=False)
        self.assertEqual(extension.ha1_md5, "")
        self.assertEqual(self.ctl("extension", "import", path), 0)
        self.assert_sha256_only("1001", "pw-one-long")

    def test_make_extension_default_keeps_md5(self) -> None:
        """Outside FIPS mode make_extension still computes the MD5 HA1."""
        extension = make_extension("1001", "", REALM, "pw")
        self.assertEqual(extension.ha1_md5, compute_ha1("MD5", "1001", REALM, "pw"))

    def test_md5_algorithms_refused(self) -> None:
        """An extension cannot be given MD5 in FIPS mode: exit 2, nothing stored."""
        args = build_parser().parse_args(
            ["extension", "add", "1002", "--password", "pw-two-long", "--algorithms", "MD5"]
        )
        err = StringIO()
        d = run_command(args, self.config, self.directory, Clock(), StringIO(), err)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertIn("MD5 is not FIPS-approved", err.getvalue())
        self.assertIsNone(self.successResultOf(self.directory.get_extension("1002")))
        self.assertEqual(self.ctl("extension", "add", "1002", "--algorithms", "SHA-256"), 0)
        self.assertEqual(self.ctl("extension", "set", "1002", "--algorithms", "MD5,SHA-256"), 2)
        self.assertEqual(self.stored("1002").algorithms, ("SHA-256",))
