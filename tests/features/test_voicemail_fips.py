"""Voicemail PINs in FIPS mode (``[security] fips``, ADR 0029): PBKDF2, scrypt refused."""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.features.test_voicemail import VoicemailTestCase
from warden import secrets as warden_secrets
from warden.ctl.main import build_parser
from warden.ctl.voicemail import run_voicemail
from warden.model.voicemail import Mailbox
from warden.secrets import PasswordHasher
from warden.store.credentials import make_extension
from warden.testing.memory import MemoryDirectory
from warden.testing.voicemail import MemoryVoicemailStore


class FipsPinTests(VoicemailTestCase):
    """The voicemail plugin built with FIPS mode on."""

    def setUp(self) -> None:
        super().setUp()
        self.plugin.pins = PasswordHasher(fips=True)
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def set_pin_hash(self, pin_hash: str) -> None:
        self.stack.successResultOf_(self.store.set_mailbox(Mailbox("1001", pin_hash=pin_hash)))

    def test_scrypt_pin_refused(self) -> None:
        """
        A PIN set before FIPS mode (scrypt) is not checked: the caller hears
        "locked" without being asked, no failure is counted, and the log says
        how to set it again.
        """
        self.set_pin_hash(warden_secrets.hash_password("1234", n=2**10))
        before = self.stack.mark()
        _, _, caller = self.answered("*97")
        caller.press("1234#")
        caller.until(lambda: self.ended(before), limit=20)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertEqual(box.failed_logins, 0)
        [line] = [formatEvent(e) for e in self.events if "cannot be opened" in formatEvent(e)]
        self.assertIn("wardenctl voicemail pin 1001", line)
        self.assertIn("scrypt", line)

    def test_pbkdf2_pin_opens(self) -> None:
        """A PBKDF2 PIN opens the mailbox; a wrong one is counted."""
        self.set_pin_hash(warden_secrets.hash_password_pbkdf2("1234", iterations=1000))
        _, _, caller = self.answered("*97")
        caller.press("9999#")
        caller.wait(2.0)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertEqual(box.failed_logins, 1)
        caller.press("1234#")
        caller.wait(2.0)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertEqual(box.failed_logins, 0)


class FipsPinCtlTests(SynchronousTestCase):
    """``wardenctl voicemail pin`` hashes with PBKDF2 when FIPS mode is on."""

    def test_pin_hashed_with_pbkdf2(self) -> None:
        """The PIN read from standard input is stored as PBKDF2 and verifies."""
        store, directory = MemoryVoicemailStore(), MemoryDirectory()
        self.successResultOf(directory.add_extension(make_extension("1001", "A", "pbx", "pw")))
        args = build_parser().parse_args(["voicemail", "pin", "1001"])
        out, err = io.StringIO(), io.StringIO()
        stdin = io.StringIO("2468\n2468\n")
        d = Deferred.fromCoroutine(
            run_voicemail(args, store, directory, out, err, stdin, fips=True)
        )
        self.assertEqual(self.successResultOf(d), 0, err.getvalue())
        stored = self.successResultOf(store.get_mailbox("1001")).pin_hash
        self.assertTrue(stored.startswith("pbkdf2_sha256$600000$"))
        self.assertTrue(PasswordHasher(fips=True).verify("2468", stored))
