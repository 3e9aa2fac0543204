"""``wardenctl voicemail pin`` and ``voicemail list`` (warden.ctl.voicemail) on memory stores."""

from __future__ import annotations

import io
import json

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from warden import secrets as warden_secrets
from warden.ctl.main import build_parser
from warden.ctl.voicemail import run_voicemail
from warden.model.voicemail import Mailbox, VoicemailMessage
from warden.store.credentials import make_extension
from warden.testing.memory import MemoryDirectory
from warden.testing.voicemail import MemoryVoicemailStore


class VoicemailCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemoryVoicemailStore()
        self.directory = MemoryDirectory()
        self.successResultOf(
            self.directory.add_extension(make_extension("1001", "Alice", "pbx", "pw1001"))
        )

    def run_ctl(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        args = build_parser().parse_args(["voicemail", *argv])
        out, err = io.StringIO(), io.StringIO()
        d = Deferred.fromCoroutine(
            run_voicemail(args, self.store, self.directory, out, err, io.StringIO(stdin))
        )
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def mailbox(self) -> Mailbox:
        box: Mailbox = self.successResultOf(self.store.get_mailbox("1001"))
        return box

    def test_pin_hashed_and_unlocks(self) -> None:
        """The PIN from standard input is stored as a scrypt hash; a lock is lifted."""
        self.successResultOf(
            self.store.set_mailbox(Mailbox("1001", failed_logins=2, locked_until=9e9))
        )
        code, out, _ = self.run_ctl("pin", "1001", stdin="246810\n")
        self.assertEqual((code, out), (0, "PIN of mailbox 1001 set\n"))
        box = self.mailbox()
        self.assertTrue(warden_secrets.verify_password("246810", box.pin_hash))
        self.assertNotIn("246810", box.pin_hash)
        self.assertEqual((box.failed_logins, box.locked_until), (0, 0.0))
        code, _, _ = self.run_ctl("pin", "1001", "--clear")
        self.assertEqual((code, self.mailbox()), (0, Mailbox("1001")))

    def test_bad_pins(self) -> None:
        """Not 4-12 ASCII digits: exit 2, nothing stored."""
        for pin in ("123", "1234567890123", "12a4", "\u0661\u0662\u0663\u0664", ""):
            code, _, err = self.run_ctl("pin", "1001", stdin=pin + "\n")
            self.assertEqual((code, err), (2, "wardenctl: a PIN is 4 to 12 digits\n"), pin)
        self.assertEqual(self.mailbox(), Mailbox("1001"))

    def test_email(self) -> None:
        """email sets the mailbox's address (keeping its PIN); --clear removes it; bad: exit 2."""
        self.successResultOf(self.store.set_mailbox(Mailbox("1001", pin_hash="h")))
        code, out, _ = self.run_ctl("email", "1001", "alice@example.org")
        self.assertEqual(code, 0)
        self.assertIn("alice@example.org", out)
        self.assertEqual(self.mailbox(), Mailbox("1001", pin_hash="h", email="alice@example.org"))
        for bad in (["email", "1001", "alice"], ["email", "1001", "a@b\nBcc: x"],
                    ["email", "1001"], ["email", "1001", "a@b.org", "--clear"]):  # fmt: skip
            self.assertEqual(self.run_ctl(*bad)[0], 2, bad)
        self.assertEqual(self.mailbox().email, "alice@example.org")
        self.assertEqual(self.run_ctl("email", "1001", "--clear")[0], 0)
        self.assertEqual(self.mailbox(), Mailbox("1001", pin_hash="h"))
        self.assertEqual(self.run_ctl("email", "1009", "x@example.org")[0], 1)

    def test_unknown_mailbox(self) -> None:
        """A number that is no extension: exit 1."""
        self.assertEqual(self.run_ctl("list", "1009")[0], 1)
        self.assertEqual(self.run_ctl("pin", "../x", stdin="1234\n")[0], 1)

    def test_list(self) -> None:
        """The messages, oldest first, as a table or JSON."""
        for message_id, at in (("b" * 32, 2000.0), ("a" * 32, 1000.0)):
            message = VoicemailMessage(message_id, "1001", "1002", "Bob", at, 3.25, "new", "x", 9)
            self.successResultOf(self.store.add_message(message))
        code, out, _ = self.run_ctl("list", "1001", "--json")
        rows = json.loads(out)
        self.assertEqual([r["id"] for r in rows], ["a" * 32, "b" * 32])
        self.assertEqual(
            (rows[0]["caller"], rows[0]["seconds"], rows[0]["folder"]), ("1002", 3.25, "new")
        )
        self.assertEqual(code, 0)
        code, out, _ = self.run_ctl("list", "1001")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertIn("1002 (Bob)", lines[1])
