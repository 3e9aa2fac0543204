"""``wardenctl admin`` and ``wardenctl drain`` argument handling, on memory stores."""

from __future__ import annotations

import io
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden import secrets
from warden.config import parse_config_text
from warden.ctl.admin import admin_url, run_admin
from warden.ctl.main import build_parser
from warden.testing.admin import MemoryAdminStore


class _AdminCtlCase(SynchronousTestCase):
    """Runs ``wardenctl admin`` commands on a memory store with the configuration CONFIG."""

    CONFIG = ""

    def setUp(self) -> None:
        self.store = MemoryAdminStore()
        self.config = parse_config_text(self.CONFIG)

    def run_command(self, *argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        code = self.successResultOf(run_admin(args, self.config, Clock(), out, err, self.store))
        return code, out.getvalue(), err.getvalue()


class AdminCommandTests(_AdminCtlCase):
    """Accounts and tokens made from the command line."""

    def test_add_prints_password_once(self) -> None:
        """The printed password verifies against the stored scrypt hash; a repeat fails."""
        code, out, _ = self.run_command("admin", "add", "alice")
        self.assertEqual(code, 0)
        password = out.split("one-time password: ")[1].split()[0]
        stored = self.store.accounts["alice"].password_hash
        self.assertTrue(secrets.verify_password(password, stored))
        self.assertNotIn(password, stored)
        code, _, err = self.run_command("admin", "add", "alice")
        self.assertEqual(code, 1)
        self.assertIn("already exists", err)

    def test_token(self) -> None:
        """A token for an existing account, with its scopes, stored hashed."""
        self.run_command("admin", "add", "alice")
        code, out, _ = self.run_command("admin", "token", "alice", "ci", "--scopes", "read,calls")
        self.assertEqual(code, 0)
        token_id, secret = secrets.split_token(out.strip()) or ("", "")
        stored = self.store.tokens[token_id]
        self.assertEqual(stored.scopes, ("read", "calls"))
        self.assertEqual(stored.secret_hash, secrets.sha256_hex(secret))
        code, _, _err = self.run_command("admin", "token", "bob", "ci")
        self.assertEqual(code, 1)

    def test_bad_arguments(self) -> None:
        """Bad names and scopes are usage errors (exit 2)."""
        parser = build_parser()
        for argv in (["admin", "add", "a b"], ["admin", "token", "a", "t", "--scopes", "root"],
                     ["drain", "--timeout", "-1"]):  # fmt: skip
            with self.assertRaises(SystemExit) as raised:
                parser.parse_args(argv)
            self.assertEqual(raised.exception.code, 2)

    def test_drain_needs_a_token(self) -> None:
        """Without a token, drain explains how to make one (exit 2)."""
        import os

        saved: Any = os.environ.pop("WARDEN_ADMIN_TOKEN", None)
        self.addCleanup(
            lambda: saved is None or os.environ.__setitem__("WARDEN_ADMIN_TOKEN", saved)
        )
        code, _, err = self.run_command("drain")
        self.assertEqual(code, 2)
        self.assertIn("wardenctl admin token", err)

    def test_admin_url(self) -> None:
        """The URL wardenctl uses follows [admin] listen."""
        self.assertEqual(admin_url(self.config), "https://127.0.0.1:8443")
        other = parse_config_text('[admin]\nlisten = "tcp:9443:interface=0.0.0.0"\n')
        self.assertEqual(admin_url(other), "https://127.0.0.1:9443")
        six = parse_config_text('[admin]\nlisten = "tcp6:9443:interface=\\\\:\\\\:1"\n')
        self.assertEqual(admin_url(six), "https://[::1]:9443")


class AccountStateCommandTests(_AdminCtlCase):
    """wardenctl admin disable/enable/remove, and token expiry from [admin] token_days."""

    CONFIG = "[admin]\ntoken_days = 7\n"

    def test_disable_enable_remove(self) -> None:
        """disable and enable flip the account; remove deletes it; unknown names exit 1."""
        self.run_command("admin", "add", "alice")
        self.assertEqual(self.run_command("admin", "disable", "alice")[0], 0)
        self.assertTrue(self.store.accounts["alice"].disabled)
        self.assertIn("disabled", self.run_command("admin", "list")[1])
        self.run_command("admin", "enable", "alice")
        self.assertFalse(self.store.accounts["alice"].disabled)
        self.assertEqual(self.run_command("admin", "remove", "alice")[0], 0)
        self.assertNotIn("alice", self.store.accounts)
        self.assertEqual(self.run_command("admin", "remove", "alice")[0], 1)

    def test_token_expiry_and_generation(self) -> None:
        """A wardenctl token expires after token_days and carries the owner's generation."""
        self.run_command("admin", "add", "alice")
        alice = self.store.accounts["alice"]
        self.store.accounts["alice"] = attrs.evolve(alice, generation=3)
        _, out, _ = self.run_command("admin", "token", "alice", "ci")
        token_id, _secret = secrets.split_token(out.strip()) or ("", "")
        stored = self.store.tokens[token_id]
        self.assertEqual((stored.expires_at, stored.owner_generation), (7 * 86400.0, 3))
