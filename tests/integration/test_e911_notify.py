"""
Emergency-call notification on real sockets.

End to end: a real ``twistd warden`` with SIPp as the emergency trunk
(127.0.0.2); extension 1000 dials 911, then the 933 test number; a SIPp
phone registered as the notified extension 1001 gets a SIP MESSAGE for each,
a local HTTPS server (its self-signed certificate given as
``notify_webhook_ca``) gets the JSON POSTs, its first answer a 500 that is
retried, and the local ESMTP test server gets the emails over verified
STARTTLS with AUTH.

The channels alone: the webhook refused without its CA, a 500 retried until
a 200, the email's temporary refusal retried, an unverifiable relay refused.
"""

from __future__ import annotations

import json
import os
from base64 import b64encode
from typing import Any

from tests.features.test_e911_notify import Call
from tests.integration.admin_client import new_admin
from tests.integration.clients import LOCALHOST, poll, real_reactor
from tests.integration.harness import (
    IntegrationTestCase,
    free_media_port,
    free_port,
    provision,
    register_sipp_phone,
    require_sipp,
)
from tests.integration.sipp_traces import read_sipp_messages
from tests.integration.test_trunks import BENCH_SCENARIOS, SCENARIOS, dial
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

    async def test_webhook_fips(self) -> None:
        """In FIPS mode the webhook is reached over an approved suite."""
        hook = start_webhook_server(self.workdir())
        self.addCleanup(hook.stop)
        channel = WebhookChannel(
            real_reactor(), hook.url(SECRET_PATH), str(hook.ca_path), 5.0, fips=True
        )
        notifier = self.notifier(channel)
        notifier.emergency_call_started(Call())
        self.assertEqual(await self.settled(notifier, 1), [(1, "delivered")])

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


ITSP_HOST = "127.0.0.2"
CALLBACK = "15551230000"
CIVIC = "country=US,A1=CA,A3=San Jose,RD=Main St,HNO=100,FLR=2,ROOM=201"


class EmergencyNotifyTests(IntegrationTestCase):
    """911 and 933 from an extension, notified on every channel."""

    def setUp(self) -> None:
        """SIPp is needed."""
        super().setUp()
        require_sipp(self)

    async def test_911_and_933(self) -> None:
        """
        Each call reaches the trunk and is notified: MESSAGE to the phone,
        webhook (500 retried), email; 933 marked as a test call.
        """
        directory = self.workdir()
        hook = start_webhook_server(directory)
        self.addCleanup(hook.stop)
        hook.statuses = [500]
        smtp_cert, smtp_tls = server_certificate(directory, "smtp")
        smtp = start_smtp_server(real_reactor(), username="pbx", password="relay-pw", tls=smtp_tls)
        self.addCleanup(smtp.stop)
        (directory / "smtp.pw").write_text("relay-pw\n")
        trunk_dir, trunk_port = self.workdir(), free_port()
        trunk = self.spawn_sipp([
            "-sf", str(BENCH_SCENARIOS / "call_uas.xml"), "-i", ITSP_HOST, "-p", str(trunk_port),
            "-mp", str(free_media_port()), "-m", "2", "-trace_err", "-trace_msg",
        ], trunk_dir)  # fmt: skip
        warden = await self.start_warden({
            "trunks": [{"name": "itsp", "host": ITSP_HOST, "port": trunk_port,
                        "register": False, "from_number": CALLBACK}],
            "emergency": {
                "trunks": ["itsp"], "notify_extensions": ["1001"],
                "notify_webhook": hook.url(SECRET_PATH),
                "notify_webhook_ca": str(hook.ca_path), "notify_email": ["security@example.com"],
                "smtp_host": LOCALHOST, "smtp_port": smtp.port, "smtp_from": "pbx@example.com",
                "smtp_username": "pbx", "smtp_password_file": str(directory / "smtp.pw"),
                "smtp_ca": str(smtp_cert), "notify_retry_delay": 0.5,
            },
        })  # fmt: skip
        users = await provision(warden.config_path, 2, first=1000)
        admin, _ = await new_admin(warden)
        put = await admin.request("PUT", "/api/v1/locations/hq-floor2", {"civic": CIVIC})
        self.assertEqual(put.status, 201, put.body)
        assigned = await admin.request(
            "PUT", "/api/v1/extensions/1000/location", {"location": "hq-floor2"}
        )
        self.assertEqual(assigned.status, 200, assigned.body)
        phone_dir, phone_port = self.workdir(), free_port()
        reg, errors = await register_sipp_phone(
            warden.address, "1001", users.passwords["1001"], phone_port, phone_dir
        )
        self.assertEqual(reg.code, 0, reg.stderr + errors)
        phone = self.spawn_sipp([
            "-sf", str(SCENARIOS / "message_uas.xml"), "-i", LOCALHOST, "-p", str(phone_port),
            "-m", "2", "-trace_err", "-trace_msg",
        ], phone_dir)  # fmt: skip

        await dial(self, warden, users, "911")
        first = await smtp.next_message()
        self.assertTrue(await poll(lambda: len(hook.requests) >= 2, 20), hook.requests)
        await dial(self, warden, users, "933")
        second = await smtp.next_message()
        self.assertTrue(await poll(lambda: len(hook.requests) >= 3, 20), hook.requests)
        await self.sipp_finished(phone, phone_dir)
        await self.sipp_finished(trunk, trunk_dir)

        messages = read_sipp_messages(phone_dir)
        self.assertIn("EMERGENCY CALL (911): extension 1000 dialled 911", messages)
        self.assertIn("TEST CALL (933): extension 1000 dialled 933", messages)
        self.assertIn("Location: 100 Main St", messages)
        posted = [json.loads(r.body) for r in hook.requests]
        self.assertEqual(posted[0], posted[1])  # the 500, then the retry
        self.assertEqual(
            [(p["dialled"], p["test"], p["extension"], p["callback_number"]) for p in posted],
            [("911", False, "1000", CALLBACK)] * 2 + [("933", True, "1000", CALLBACK)],
        )
        self.assertEqual(posted[0]["location"]["civic"]["ROOM"], "201")
        self.assertEqual(posted[0]["location"]["name"], "hq-floor2")
        self.assertEqual(first.message["Subject"], "EMERGENCY CALL (911) from 1000")
        self.assertEqual(second.message["Subject"], "TEST CALL (933) from 1000")
        self.assertTrue(first.tls and first.authenticated == "pbx")
        self.assertIn(f"Callback number: {CALLBACK}", first.body_text())
        log = warden.log_text()
        self.assertIn("by webhook to webhook https://127.0.0.1:", log)
        self.assertIn("attempt 1/4 retried (HTTP 500)", log)
        self.assertIn("by sip to extension 1001: attempt 1/4 delivered", log)
        self.assertIn("by email to email security@example.com: attempt 1/4 delivered", log)
        self.assertNotIn(SECRET_PATH, log)
        self.assertNotIn("relay-pw", log)
