"""
wardenctl writes audit entries: extension changes and CDR exports (through
``run_command``), admin accounts and tokens (through ``run_admin``), on memory
stores; the actor is the local user as ``cli:<name>``, and no secret is recorded.
"""

from __future__ import annotations

import json
import os
import pwd
from io import StringIO

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.ctl.admin import run_admin
from warden.ctl.audit import cli_actor
from warden.ctl.main import build_parser, run_command
from warden.testing import MemoryCallRecordStore, MemoryDirectory
from warden.testing.admin import MemoryAdminStore, MemoryAuditLog


class CliActorTests(SynchronousTestCase):
    """The actor names the operating-system user."""

    def test_actor(self) -> None:
        """cli:<the effective user's name>."""
        self.assertEqual(cli_actor(), "cli:" + pwd.getpwuid(os.geteuid()).pw_name)


class ExtensionAuditTests(SynchronousTestCase):
    """Extension changes and CDR exports are audited; reading is not."""

    def setUp(self) -> None:
        self.config = parse_config_text('[server]\nrealm = "t.example"')
        self.directory = MemoryDirectory()
        self.records = MemoryCallRecordStore()
        self.audit = MemoryAuditLog()
        self.clock = Clock()
        self.clock.advance(1000.0)

    def ctl(self, *argv: str) -> tuple[int, str]:
        args = build_parser().parse_args(argv)
        out, err = StringIO(), StringIO()
        d = run_command(args, self.config, self.directory, self.clock, out, err,
                        call_records=self.records, audit_log=self.audit)  # fmt: skip
        return self.successResultOf(d), out.getvalue()

    def test_extension_changes(self) -> None:
        """add, set, remove (and a failed remove) each leave one entry; list and show none."""
        _, out = self.ctl("extension", "add", "100", "--name", "Desk")
        password = out.split("password: ")[1].strip()
        self.ctl("extension", "set", "100", "--password", "s3cret-pass", "--disable")
        self.ctl("extension", "list")
        self.ctl("extension", "show", "100")
        self.ctl("extension", "remove", "100")
        self.ctl("extension", "remove", "100")
        entries = self.audit.entries
        self.assertEqual(
            [(e.action, e.target, e.status) for e in entries],
            [("wardenctl extension add", "100", 0), ("wardenctl extension set", "100", 0),
             ("wardenctl extension remove", "100", 0), ("wardenctl extension remove", "100", 1)],
        )  # fmt: skip
        self.assertEqual({(e.actor, e.source, e.at) for e in entries},
                         {(cli_actor(), "local", 1000.0)})  # fmt: skip
        self.assertEqual(entries[1].detail, {"fields": ["enabled", "password"]})
        text = json.dumps([e.to_json() for e in entries])
        for secret in (password, "s3cret-pass"):
            self.assertNotIn(secret, text)

    def test_import_and_export(self) -> None:
        """An import records its counts; a CDR export records its file, filters and count."""
        source = self.mktemp()
        with open(source, "w") as f:
            f.write("100;pw-one\n101;pw-two;Two\n")
        self.ctl("extension", "import", source)
        target = self.mktemp()
        self.ctl("cdr", "export", target, "--extension", "100")
        self.ctl("cdr", "list")
        imported, exported = self.audit.entries
        self.assertEqual(imported.action, "wardenctl extension import")
        self.assertEqual(imported.target, os.path.abspath(source))
        self.assertEqual(imported.detail, {"count": 2, "added": 2, "updated": 0})
        self.assertEqual((exported.action, exported.target, exported.status),
                         ("wardenctl cdr export", os.path.abspath(target), 0))  # fmt: skip
        self.assertEqual(exported.detail, {"filters": {"extension": "100"}, "count": 0})
        self.assertNotIn("pw-one", json.dumps(imported.to_json()))


class AdminAuditTests(SynchronousTestCase):
    """wardenctl admin changes are audited; the token itself never is."""

    def test_admin_commands(self) -> None:
        """add, token, disable, enable, remove leave entries; list does not."""
        store, audit = MemoryAdminStore(), MemoryAuditLog()
        config = parse_config_text("")
        outputs = []
        for argv in (("add", "alice"), ("token", "alice", "ci", "--scopes", "read,write"),
                     ("list",), ("disable", "alice"), ("enable", "alice"),
                     ("remove", "alice"), ("token", "alice", "ci")):  # fmt: skip
            args = build_parser().parse_args(["admin", *argv])
            out = StringIO()
            code = self.successResultOf(
                run_admin(args, config, Clock(), out, StringIO(), store, audit)
            )
            outputs.append((code, out.getvalue()))
        token = outputs[1][1].strip()
        token_id = next(iter(store.tokens))
        self.assertEqual(
            [(e.actor, e.action, e.target, e.status) for e in audit.entries],
            [(cli_actor(), "wardenctl admin add", "alice", 0),
             (cli_actor(), "wardenctl admin token", token_id, 0),
             (cli_actor(), "wardenctl admin disable", "alice", 0),
             (cli_actor(), "wardenctl admin enable", "alice", 0),
             (cli_actor(), "wardenctl admin remove", "alice", 0),
             (cli_actor(), "wardenctl admin token", "", 1)],
        )  # fmt: skip
        self.assertEqual(audit.entries[1].detail["scopes"], ["read", "write"])
        password = outputs[0][1].split("one-time password: ")[1].split()[0]
        text = json.dumps([e.to_json() for e in audit.entries])
        for secret in (token, token.split("_")[-1], password):
            self.assertNotIn(secret, text)
