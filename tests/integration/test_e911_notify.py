"""
Emergency-call notification channels on real sockets: the webhook POSTed to
a local HTTPS server whose self-signed certificate is the configured CA (and
refused without it), a 500 retried until a 200, and the email delivered to
the local ESMTP test server over verified STARTTLS with AUTH, a temporary
refusal retried.
"""

from __future__ import annotations

import json
import os
from base64 import b64encode
from typing import Any

from tests.features.test_e911_notify import Call
from tests.integration.clients import LOCALHOST, poll, real_reactor
from tests.integration.harness import IntegrationTestCase
from tests.integration.webhook_server import server_certificate, start_webhook_server
from warden.features.e911_channels import EmailChannel, WebhookChannel
from warden.features.e911_notify import EmergencyNotifier, NotifyConfig
from warden.testing.smtpserver import start_smtp_server

SECRET_PATH = "/hook/T0KEN-never-logged"
#: Three attempts, 0.2 s then 0.4 s apart.
FAST = NotifyConfig(notify_attempts=3, notify_retry_delay=0.2, notify_timeout=5.0)


class NotifyChannelTests(IntegrationTestCase):
    """The notifier with real channels to real local servers."""

    def notifier(self, channel: Any, config: NotifyConfig = FAST) -> EmergencyNotifier:
        """A notifier on the real reactor with ``channel``, stopped at the end."""
        notifier = EmergencyNotifier(real_reactor(), [channel], config)
        self.addCleanup(notifier.stop)
        return notifier

    async def settled(self, notifier: EmergencyNotifier, attempts: int) -> list[tuple[int, str]]:
        """The (attempt, outcome) of each attempt once ``attempts`` were made."""
        done = await poll(lambda: len(notifier.history) >= attempts, 20)
        self.assertTrue(done, list(notifier.history))
        return [(a.attempt, a.outcome) for a in notifier.history]

    async def test_webhook_retried(self) -> None:
        """A 500 is retried; the 200 that follows delivers the JSON notice once."""
        hook = start_webhook_server(self.workdir())
        self.addCleanup(hook.stop)
        hook.statuses = [500]
        hook.answer_bytes = 200_000  # more than is read: the rest is dropped
        channel = WebhookChannel(real_reactor(), hook.url(SECRET_PATH), str(hook.ca_path), 5.0)
        notifier = self.notifier(channel)
        notifier.emergency_call_started(Call(test=True, dialled="933"))
        self.assertEqual(await self.settled(notifier, 2), [(1, "retried"), (2, "delivered")])
        self.assertEqual(len(hook.requests), 2)
        posted = hook.requests[-1]
        self.assertEqual(posted.path, SECRET_PATH)
        self.assertEqual(posted.headers["content-type"], "application/json")
        document = json.loads(posted.body)
        self.assertEqual(
            (document["extension"], document["callback_number"], document["test"]),
            ("1001", "15551230001", True),
        )
        self.assertEqual(document["location"]["civic"]["RD"], "Main St")
        self.assertEqual(notifier.history[0].reason, "HTTP 500")

    async def test_webhook_untrusted(self) -> None:
        """Without the server's CA (system CAs only) TLS fails: nothing is POSTed."""
        hook = start_webhook_server(self.workdir())
        self.addCleanup(hook.stop)
        channel = WebhookChannel(real_reactor(), hook.url(SECRET_PATH), "", 5.0)
        notifier = self.notifier(channel)
        notifier.emergency_call_started(Call())
        outcomes = await self.settled(notifier, 3)
        self.assertEqual(outcomes, [(1, "retried"), (2, "retried"), (3, "failed")])
        self.assertEqual(hook.requests, [])
        self.assertIn("certificate verify failed", notifier.history[0].reason)

    async def test_email(self) -> None:
        """Over STARTTLS (the relay's certificate verified) with AUTH; a 451 is retried."""
        directory = self.workdir()
        cert, tls = server_certificate(directory, "smtp")
        smtp = start_smtp_server(
            real_reactor(), refuse=1, username="pbx", password="relay-pw", tls=tls
        )
        self.addCleanup(smtp.stop)
        password_file = directory / "smtp.pw"
        password_file.write_text("relay-pw\n")
        os.chmod(password_file, 0o600)
        config = NotifyConfig(
            notify_email=("security@example.com",), smtp_from="pbx@example.com",
            smtp_host=LOCALHOST, smtp_port=smtp.port, smtp_username="pbx",
            smtp_password_file=str(password_file), smtp_ca=str(cert),
            notify_attempts=3, notify_retry_delay=0.2, notify_timeout=5.0,
        )  # fmt: skip
        notifier = self.notifier(EmailChannel(real_reactor(), config, "relay-pw"), config)
        notifier.emergency_call_started(Call())
        self.assertEqual(await self.settled(notifier, 2), [(1, "retried"), (2, "delivered")])
        self.assertEqual(notifier.history[0].reason, "SMTP: 451 No recipients accepted")
        self.assertNotIn(b64encode(b"\0pbx\0relay-pw").decode(), str(list(notifier.history)))
        mail = await smtp.next_message()
        self.assertEqual(mail.recipients, ("security@example.com",))
        self.assertTrue(mail.tls)
        self.assertEqual(mail.authenticated, "pbx")
        self.assertEqual(mail.message["Subject"], "EMERGENCY CALL (911) from 1001 (Alice Smith)")
        body = mail.body_text()
        for fact in ("extension 1001 (Alice Smith)", "Callback number: 15551230001",
                     "Location: 100 Main St, San Jose", "Time: 2026-12-06T01:00:00Z"):  # fmt: skip
            self.assertIn(fact, body)

    async def test_email_untrusted_relay(self) -> None:
        """A relay whose certificate does not verify gets no email."""
        _, tls = server_certificate(self.workdir(), "smtp")
        smtp = start_smtp_server(real_reactor(), tls=tls)
        self.addCleanup(smtp.stop)
        config = NotifyConfig(
            notify_email=("security@example.com",), smtp_from="pbx@example.com",
            smtp_host=LOCALHOST, smtp_port=smtp.port, notify_attempts=1, notify_timeout=5.0,
        )  # fmt: skip
        notifier = self.notifier(EmailChannel(real_reactor(), config), config)
        notifier.emergency_call_started(Call())
        self.assertEqual(await self.settled(notifier, 1), [(1, "failed")])
        self.assertEqual(smtp.messages, [])
