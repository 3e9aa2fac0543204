"""
``wardenctl stir keygen`` and ``wardenctl stir csr`` (L{warden.ctl.stir}):
the key is EC P-256 in a 0600 file never silently replaced; the CSR is signed
by it, names the subject and, when asked, carries the TNAuthList extension
(RFC 8226) with the SPC and TN entries in DER.
"""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase

from warden.ctl import stir as stir_ctl
from warden.ctl.main import build_parser


class StirCommandTests(SynchronousTestCase):
    """The commands, run as wardenctl parses them."""

    def setUp(self) -> None:
        """A fresh directory."""
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        """Run ``wardenctl stir ARGV``: exit status, output, errors."""
        out, err = StringIO(), StringIO()
        code = stir_ctl.run(build_parser().parse_args(["stir", *argv]), out, err)
        return code, out.getvalue(), err.getvalue()

    def keygen(self) -> Path:
        """A key made by ``stir keygen``."""
        path = self.dir / "key.pem"
        code, out, _ = self.ctl("keygen", "--out", str(path))
        self.assertEqual(code, 0)
        self.assertIn("EC P-256", out)
        return path

    def test_keygen(self) -> None:
        """An EC P-256 key, mode 0600; an existing file is kept unless --force."""
        path = self.keygen()
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        from warden.features.stirshaken import load_private_key

        key = load_private_key(str(path))
        self.assertIsInstance(key.curve, ec.SECP256R1)
        before = path.read_bytes()
        code, _, err = self.ctl("keygen", "--out", str(path))
        self.assertEqual(code, 1)
        self.assertIn("exists", err)
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual(self.ctl("keygen", "--out", str(path), "--force")[0], 0)
        self.assertNotEqual(path.read_bytes(), before)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_csr(self) -> None:
        """The CSR is signed by the key, with the subject and the TNAuthList asked for."""
        key_path = self.keygen()
        out_path = self.dir / "req.pem"
        code, _, err = self.ctl(
            "csr", "--key", str(key_path), "--subject", "CN=SHAKEN 1234,O=Example Co,C=US",
            "--spc", "1234", "--tn", "+15551230000", "--out", str(out_path),
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        csr = x509.load_pem_x509_csr(out_path.read_bytes())
        self.assertTrue(csr.is_signature_valid)
        self.assertEqual(csr.subject.rfc4514_string(), "C=US,O=Example Co,CN=SHAKEN 1234")
        extension = csr.extensions.get_extension_for_oid(stir_ctl.TN_AUTH_LIST)
        self.assertFalse(extension.critical)
        # SEQUENCE { [0] IA5String "1234", [2] IA5String "15551230000" }
        expected = (b"\x30\x17\xa0\x06\x16\x041234"
                    b"\xa2\x0d\x16\x0b15551230000")  # fmt: skip
        self.assertEqual(extension.value.public_bytes(), expected)

    def test_csr_without_tn_auth_list(self) -> None:
        """Without --spc or --tn the CSR has no extension; it is printed."""
        key_path = self.keygen()
        code, out, _ = self.ctl("csr", "--key", str(key_path), "--subject", "CN=Warden")
        self.assertEqual(code, 0)
        csr = x509.load_pem_x509_csr(out.encode())
        self.assertEqual(len(csr.extensions), 0)

    def test_bad_arguments(self) -> None:
        """A bad subject, SPC or TN is a usage error (2); a bad key a failure (1)."""
        key_path = str(self.keygen())
        for argv, words in (
            (["--subject", "CN"], "bad part"),
            (["--subject", "XX=y"], "bad part"),
            (["--subject", "C=USA"], "two-letter"),
            (["--subject", "CN=a", "--spc", "12-4"], "--spc"),
            (["--subject", "CN=a", "--tn", "555 1234"], "--tn"),
        ):
            code, _, err = self.ctl("csr", "--key", key_path, *argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(words, err)
        junk = self.dir / "junk.pem"
        junk.write_text("not a key")
        code, _, err = self.ctl("csr", "--key", str(junk), "--subject", "CN=a")
        self.assertEqual(code, 1)
        self.assertIn("no unencrypted PEM private key", err)
