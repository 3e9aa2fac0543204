"""
Voicemail end to end with the default configuration: a real ``twistd warden``
and two baresip phones. A calls B, B refuses (busy): Warden answers, A's
1000 Hz tone is recorded until A presses ``#`` (RFC 4733), and the stored WAV
holds the tone; B's phone gets an unsolicited message-summary NOTIFY with
``Messages-Waiting: yes``. B dials ``*97`` (its own mailbox, no PIN set),
presses 1 (new messages) and 7 (delete) while the message plays, then ``*``:
the message and its file are gone and the next NOTIFY says ``no``. With a
relay configured and an address on the mailbox, a message left is emailed
with its WAV (a test SMTP server on loopback).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.integration.baresip import BaresipPhone, BaresipTestCase, free_port_range
from tests.integration.baresip_audio import analyse_tone, read_samples, write_tone
from tests.integration.clients import pause, poll, real_reactor
from tests.integration.harness import WardenProcess, provision, wardenctl
from warden.testing.smtpserver import start_smtp_server

TONE = 1000.0


def stored_messages(warden: WardenProcess) -> list[tuple[Any, ...]]:
    """The stored messages: (mailbox, caller, duration, folder, audio)."""
    with sqlite3.connect(warden.database_path) as db:
        return list(
            db.execute("SELECT mailbox, caller, duration, folder, audio FROM voicemail_messages")
        )


class VoicemailTests(BaresipTestCase):
    """baresip A leaves a message for baresip B, who listens to it and deletes it."""

    def messages(self, warden: WardenProcess) -> list[tuple[Any, ...]]:
        """The stored messages: (mailbox, caller, duration, folder, audio)."""
        return stored_messages(warden)

    def summaries(self, phone: BaresipPhone) -> list[str]:
        """The message-summary NOTIFY bodies the phone received, in order."""
        return [
            m.body
            for m in phone.received_requests("NOTIFY")
            if "message-summary" in m.header("Event")
        ]

    async def test_leave_listen_delete(self) -> None:
        """
        A's call refused by B leaves a message of A's tone in B's mailbox; B's
        phone is told a message waits, B deletes it with *97, and is told again.
        """
        low, high = free_port_range()
        warden = await self.start_warden({"media": {"port_min": low, "port_max": high}})
        users = await provision(warden.config_path, 2, first=3101)
        tone = write_tone(self.workdir() / "tone.wav", TONE, 120.0)
        a_number, b_number = users.numbers
        a = await self.start_phone("A", warden, a_number, users.passwords[a_number], tone)
        b = await self.start_phone("B", warden, b_number, users.passwords[b_number], tone)
        await a.wait_registered()
        await b.wait_registered()

        # A calls B; B refuses: the call goes to B's mailbox.
        await a.command("dial", a.dial_uri(b_number))
        await b.wait_event("CALL_INCOMING")
        await b.command("hangup")
        await a.wait_event("CALL_ESTABLISHED", timeout=30)
        await pause(10.0)  # the greeting (about 7 s), the beep, then about 3 s of tone
        await a.command("sndcode", "#")
        await a.wait_event("CALL_CLOSED", timeout=30)  # "recorded", goodbye, BYE

        self.assertTrue(await poll(lambda: bool(self.messages(warden)), 15))
        [(mailbox, caller, duration, folder, audio)] = self.messages(warden)
        self.assertEqual((mailbox, caller, folder), (b_number, a_number, "new"))
        self.assertTrue(1.0 <= duration <= 8.0, duration)
        path = warden.data_dir / "voicemail" / audio
        samples = read_samples(path)
        self.assertAlmostEqual(len(samples) / 8000, duration, places=1)
        analysis = analyse_tone(samples, TONE)
        self.assertEqual(analysis.dominant, int(TONE), analysis.describe(TONE))
        self.assertGreater(analysis.tone_seconds, 0.7 * duration, analysis.describe(TONE))

        # Message waiting: B's phone did not subscribe, so Warden told it unsolicited.
        self.assertTrue(
            await poll(lambda: any("Messages-Waiting: yes" in s for s in self.summaries(b)), 15),
            b.describe("no message-summary NOTIFY"),
        )
        self.assertIn("Voice-Message: 1/0", self.summaries(b)[-1])

        # B listens with *97 (own mailbox: no PIN set) and deletes the message.
        await b.command("dial", b.dial_uri("*97"))
        await b.wait_event("CALL_ESTABLISHED", timeout=30)
        await pause(2.0)
        await b.command("sndcode", "1")  # new messages (during the announcement)
        await pause(1.5)
        await b.command("sndcode", "7")  # delete, while the message plays
        await pause(4.0)
        await b.command("sndcode", "*")  # leave: goodbye, BYE
        await b.wait_event("CALL_CLOSED", timeout=60)

        self.assertEqual(self.messages(warden), [])
        self.assertFalse(Path(path).exists())
        self.assertTrue(
            await poll(lambda: "Messages-Waiting: no" in self.summaries(b)[-1], 15),
            b.describe("no NOTIFY after the delete"),
        )


class VoicemailEmailTests(BaresipTestCase):
    """A message left for a mailbox with an email address reaches it by email."""

    async def test_message_emailed(self) -> None:
        """
        A test SMTP server on loopback is ``[voicemail]``'s relay (plain SMTP);
        B's mailbox is given an address with ``wardenctl voicemail email``. B
        has no phone, so A's call goes to B's mailbox; A's 1000 Hz tone is
        recorded until ``#``. The email arrives for B's address, names A and
        the stored duration, and carries the WAV: 8 kHz audio of that length
        holding the tone.
        """
        server = start_smtp_server(real_reactor())
        self.addCleanup(server.stop)
        low, high = free_port_range()
        relay = {"smtp_host": "127.0.0.1", "smtp_port": server.port,
                 "smtp_from": "pbx@example.org", "smtp_tls": "none"}  # fmt: skip
        warden = await self.start_warden(
            {"media": {"port_min": low, "port_max": high}, "voicemail": relay}
        )
        users = await provision(warden.config_path, 2, first=3201)
        a_number, b_number = users.numbers
        changed = await wardenctl(
            warden.config_path, "voicemail", "email", b_number, "bob@example.org"
        )
        self.assertEqual(changed.code, 0, changed.stderr)
        tone = write_tone(self.workdir() / "tone.wav", TONE, 120.0)
        a = await self.start_phone("A", warden, a_number, users.passwords[a_number], tone)
        await a.wait_registered()

        await a.command("dial", a.dial_uri(b_number))  # B has no phone: its mailbox answers
        await a.wait_event("CALL_ESTABLISHED", timeout=30)
        await pause(10.0)  # the greeting (about 7 s), the beep, then about 3 s of tone
        await a.command("sndcode", "#")
        await a.wait_event("CALL_CLOSED", timeout=30)

        self.assertTrue(await poll(lambda: bool(server.messages), 30), warden.log_tail())
        [(mailbox, caller, duration, _, _)] = stored_messages(warden)
        self.assertEqual((mailbox, caller), (b_number, a_number))
        (mail,) = server.messages
        self.assertEqual((mail.sender, mail.recipients), ("pbx@example.org", ("bob@example.org",)))
        self.assertIn(a_number, mail.message["Subject"])
        body = mail.body_text()
        self.assertIn(f"From:     {a_number}", body)
        self.assertIn(f"({duration:.1f} seconds)", body)
        ((name, kind, wav),) = mail.attachments()
        self.assertEqual((kind, name.endswith(".wav")), ("audio/wav", True))
        path = self.workdir() / "emailed.wav"
        path.write_bytes(wav)
        samples = read_samples(path)
        self.assertAlmostEqual(len(samples) / 8000, duration, places=1)
        analysis = analyse_tone(samples, TONE)
        self.assertEqual(analysis.dominant, int(TONE), analysis.describe(TONE))
