"""
Voicemail to email: the ``[voicemail] smtp_*`` keys checked (a password only
from the environment or a file, never inline and never without STARTTLS), the
email built for a message (caller, time, duration, the WAV attached, hostile
caller names tamed), and a message left in a mailbox with an address handed to
the mail queue after it is stored, without delaying the caller.
"""

from __future__ import annotations

import email
import email.policy
import io
import os
import wave
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.features.test_voicemail import VoicemailTestCase
from warden.errors import ConfigError
from warden.features.smtp import MailQueue
from warden.features.voicemail import VoicemailConfig, VoicemailPlugin
from warden.features.voicemail_email import mail_queue, voicemail_email
from warden.model.voicemail import Mailbox, VoicemailMessage
from warden.rtp import g711

MESSAGE = VoicemailMessage(
    "a" * 32, "1002", "1001", "Alice", 1_765_000_000.0, 7.25, "new", "1002/x.wav", 1000
)


def parse(data: bytes) -> Any:
    """The email as the standard library reads it."""
    return email.message_from_bytes(data, policy=email.policy.default)


class ConfigTests(SynchronousTestCase):
    """The relay keys of ``[voicemail]``."""

    def parse(self, table: dict[str, Any]) -> VoicemailConfig:
        config = VoicemailPlugin().parse_section("voicemail", table, None)
        assert isinstance(config, VoicemailConfig)
        return config

    def test_defaults_and_keys(self) -> None:
        """No smtp_host: no email; the keys are read as given."""
        self.assertEqual(VoicemailConfig().smtp_host, "")
        config = self.parse({
            "smtp_host": "mail.example.org", "smtp_port": 587, "smtp_from": "pbx@example.org",
            "smtp_username": "pbx", "smtp_password_env": "WARDEN_SMTP_PASSWORD",
        })  # fmt: skip
        self.assertEqual(
            (config.smtp_host, config.smtp_port, config.smtp_tls, config.smtp_username),
            ("mail.example.org", 587, "starttls", "pbx"),
        )

    def test_errors(self) -> None:
        """Each bad key or combination names the key."""
        base = {"smtp_host": "mail.example.org", "smtp_from": "pbx@example.org"}
        auth = {**base, "smtp_username": "pbx"}
        for table, key in (
            ({**base, "smtp_password": "hunter2"}, "voicemail.smtp_password"),
            ({"smtp_host": "mail.example.org"}, "voicemail.smtp_from"),
            ({**base, "smtp_host": "bad host"}, "voicemail.smtp_host"),
            ({**base, "smtp_port": 0}, "voicemail.smtp_port"),
            ({**base, "smtp_port": True}, "voicemail.smtp_port"),
            ({**base, "smtp_port": "25"}, "voicemail.smtp_port"),
            ({**base, "smtp_from": "pbx"}, "voicemail.smtp_from"),
            ({**base, "smtp_tls": "ssl"}, "voicemail.smtp_tls"),
            (auth, "voicemail.smtp_password_env"),
            ({**base, "smtp_password_env": "X"}, "voicemail.smtp_username"),
            ({**auth, "smtp_password_env": "1X"}, "voicemail.smtp_password_env"),
            ({**auth, "smtp_password_env": "X", "smtp_password_file": "/f"},
             "voicemail.smtp_password_file"),
            ({**auth, "smtp_password_env": "X", "smtp_tls": "none"}, "voicemail.smtp_tls"),
            ({**auth, "smtp_username": "a\nb", "smtp_password_env": "X"},
             "voicemail.smtp_username"),
        ):  # fmt: skip
            with self.assertRaises(ConfigError) as caught:
                self.parse(table)
            self.assertEqual(caught.exception.path, key, table)
            self.assertNotIn("hunter2", str(caught.exception))

    def test_password_read_at_start(self) -> None:
        """make() reads the password: an unset variable is a config error naming the key."""
        config = self.parse({
            "smtp_host": "mail.example.org", "smtp_from": "pbx@example.org",
            "smtp_username": "pbx", "smtp_password_env": "WARDEN_TEST_UNSET_SMTP",
        })  # fmt: skip
        os.environ.pop("WARDEN_TEST_UNSET_SMTP", None)
        with self.assertRaises(ConfigError) as caught:
            mail_queue(None, config)
        self.assertEqual(caught.exception.path, "voicemail.smtp_password_env")


class MessageTests(SynchronousTestCase):
    """The email of one message."""

    def test_content(self) -> None:
        """Headers, a body with caller, time and duration, and the WAV attached."""
        pcm = g711.tone(440, 1.0)
        mail = parse(voicemail_email("pbx@example.org", "bob@example.org", MESSAGE, pcm))
        self.assertEqual((mail["From"], mail["To"]), ("pbx@example.org", "bob@example.org"))
        self.assertEqual(mail["Subject"], "Voicemail for 1002 from Alice <1001> (0:07)")
        body = mail.get_body(preferencelist=("plain",)).get_content()
        self.assertIn("From:     Alice <1001>", body)
        self.assertIn("Received: 2025-12-06 05:46:40 UTC", body)
        self.assertIn("Duration: 0:07 (7.2 seconds)", body)
        (attachment,) = mail.iter_attachments()
        self.assertEqual(attachment.get_content_type(), "audio/wav")
        self.assertEqual(attachment.get_filename(), "voicemail-1002-20251206-054640.wav")
        with wave.open(io.BytesIO(attachment.get_payload(decode=True))) as wav:
            self.assertEqual((wav.getframerate(), wav.getnchannels(), wav.getnframes()),
                             (8000, 1, 8000))  # fmt: skip

    def test_hostile_caller_name(self) -> None:
        """A caller name with line breaks or controls cannot add headers."""
        import attrs

        message = attrs.evolve(MESSAGE, caller_name="Eve\r\nBcc: all@example.org\x00" + "x" * 99)
        data = voicemail_email("pbx@example.org", "bob@example.org", message, b"")
        mail = parse(data)
        self.assertIsNone(mail["Bcc"])
        self.assertNotIn(b"\nBcc:", data)
        self.assertLessEqual(len(mail["Subject"]), 120)


class LeaveMessageEmailTests(VoicemailTestCase):
    """A message left in a mailbox with an email address."""

    def setUp(self) -> None:
        super().setUp()
        self.plugin.config = VoicemailConfig(smtp_host="mail", smtp_from="pbx@example.org")
        self.sent: list[tuple[str, bytes]] = []
        self.results: list[Deferred[None]] = []

        def send(recipient: str, data: bytes) -> Deferred[None]:
            self.sent.append((recipient, data))
            d: Deferred[None] = Deferred()
            self.results.append(d)
            return d

        self.mailer = MailQueue(self.stack.clock, send, "voicemail")
        self.plugin.use_mailer(self.mailer)

    def leave(self, number: str) -> VoicemailMessage:
        """Alice leaves a 2 s message for ``number`` (no phone): the stored message."""
        _, _, caller = self.answered(number)
        caller.until(lambda: caller.recording, limit=20)
        caller.speak(g711.tone(700, 2.0))
        caller.until(lambda: not caller.recording, limit=10)
        (message,) = self.messages(number)
        return message

    def test_emailed_after_storing(self) -> None:
        """The stored message is emailed to the mailbox's address with its audio."""
        self.stack.successResultOf_(
            self.store.set_mailbox(Mailbox("1003", email="carol@example.org"))
        )
        message = self.leave("1003")
        ((recipient, data),) = self.sent
        self.assertEqual(recipient, "carol@example.org")
        mail = parse(data)
        self.assertIn("1001", mail["Subject"])
        body = mail.get_body(preferencelist=("plain",)).get_content()
        self.assertIn(f"({message.duration:.1f} seconds)", body)
        (attachment,) = mail.iter_attachments()
        with wave.open(io.BytesIO(attachment.get_payload(decode=True))) as wav:
            self.assertAlmostEqual(wav.getnframes() / 8000, message.duration, places=1)
        self.assertEqual(self.mailer.waiting, 1)  # the send has not finished: nobody waits
        self.results[0].callback(None)
        self.assertEqual(self.mailer.waiting, 0)

    def test_no_address_no_email(self) -> None:
        """A mailbox without an address: the message is kept and nothing is sent."""
        self.leave("1003")
        self.assertEqual(self.sent, [])
