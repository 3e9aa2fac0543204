"""
The voicemail plugin's admin API endpoints: mailboxes with messages, one
mailbox (never its PIN hash), its PIN set and removed, a message deleted (its
file too); bad input refused; the OpenAPI document lists each route; the
message gauges follow the store.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import ApiHarness, routes_and_operations
from warden import secrets as warden_secrets
from warden.features import voicemail
from warden.features.voicemail import VoicemailAudio, VoicemailPlugin
from warden.model.voicemail import Mailbox, VoicemailMessage
from warden.rtp import g711
from warden.store.credentials import make_extension
from warden.testing.voicemail import MemoryVoicemailStore

V1 = "/api/v1"
ID = "c" * 32


class VoicemailApiTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.plugin = VoicemailPlugin()
        self.store = MemoryVoicemailStore()
        self.audio = VoicemailAudio(Path(self.mktemp()))
        self.h = ApiHarness(endpoints=[self.plugin])
        self.plugin.use(self.store, self.audio, self.h.directory, Clock())
        for number in ("100", "101"):
            self.h.directory.add_extension(make_extension(number, "", "t.example", "pw"))
        self.token = self.h.token("read", "write")
        size = self.successResultOf(self.audio.save(f"100/{ID}.wav", g711.tone(500, 1.0)))
        message = VoicemailMessage(ID, "100", "101", "Bob", 5.0, 1.0, "new", f"100/{ID}.wav", size)
        self.successResultOf(self.store.add_message(message))

    def send(self, method: str, path: str, body: object = None, token: str | None = None):  # type: ignore[no-untyped-def]
        return self.h.request(method, V1 + path, body, token or self.token)

    def test_read_pin_delete(self) -> None:
        """GET lists and shows; PATCH sets the PIN hashed; DELETE removes the message and file."""
        listed = self.send("GET", "/voicemail").json()
        self.assertEqual(listed["items"][0]["number"], "100")
        self.assertEqual(listed["items"][0]["new"], 1)
        shown = self.send("GET", "/extensions/100/voicemail").json()
        self.assertEqual((shown["pin_set"], shown["messages"][0]["id"]), (False, ID))
        self.assertNotIn("audio", shown["messages"][0])
        response = self.send("PATCH", "/extensions/100/voicemail", {"pin": "8642"})
        self.assertEqual((response.status, response.json()["pin_set"]), (200, True))
        box = self.successResultOf(self.store.get_mailbox("100"))
        self.assertTrue(warden_secrets.verify_password("8642", box.pin_hash))
        self.assertNotIn("8642", repr(self.h.audit.entries))
        self.assertEqual(self.send("PATCH", "/extensions/100/voicemail", {"pin": ""}).status, 200)
        self.assertEqual(self.successResultOf(self.store.get_mailbox("100")), Mailbox("100"))
        response = self.send("DELETE", f"/extensions/100/voicemail/messages/{ID}")
        self.assertEqual(response.status, 204)
        self.assertEqual(self.successResultOf(self.store.list_messages("100")), [])
        self.assertFalse((self.audio.root / "100" / f"{ID}.wav").exists())
        self.assertEqual(voicemail.MESSAGES.labels("new")._value.get(), 0)

    def test_email(self) -> None:
        """PATCH sets and clears the mailbox's email address, shown by GET; the PIN stays."""
        self.send("PATCH", "/extensions/100/voicemail", {"pin": "8642"})
        response = self.send("PATCH", "/extensions/100/voicemail", {"email": "bob@example.org"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json(), {"number": "100", "pin_set": True,
                                           "email": "bob@example.org"})  # fmt: skip
        shown = self.send("GET", "/extensions/100/voicemail").json()
        self.assertEqual(shown["email"], "bob@example.org")
        self.assertEqual(self.successResultOf(self.store.get_mailbox("100")).email,
                         "bob@example.org")  # fmt: skip
        self.send("PATCH", "/extensions/100/voicemail", {"email": ""})
        box = self.successResultOf(self.store.get_mailbox("100"))
        self.assertEqual((box.email, bool(box.pin_hash)), ("", True))
        for bad in ("bob", "bob@", "a b@example.org", "b\u00f6b@example.org", "x@y\r\nBcc: z",
                    "a" * 250 + "@example.org", 5):  # fmt: skip
            response = self.send("PATCH", "/extensions/100/voicemail", {"email": bad})
            self.assertEqual(response.status, 400, bad)
        self.assertEqual(self.successResultOf(self.store.get_mailbox("100")).email, "")

    def test_refused(self) -> None:
        """Unknown mailbox or message 404; bad PIN 400; read-only token 403."""
        self.assertEqual(self.send("GET", "/extensions/999/voicemail").status, 404)
        self.assertEqual(
            self.send("DELETE", f"/extensions/101/voicemail/messages/{ID}").status, 404
        )
        for body in ({"pin": "12"}, {"pin": "12a4"}, {"pin": 1234}, {"colour": "red"}, {}):
            self.assertEqual(
                self.send("PATCH", "/extensions/100/voicemail", body).status, 400, body
            )
        reader = self.h.token("read")
        self.assertEqual(
            self.send("PATCH", "/extensions/100/voicemail", {"pin": "1234"}, reader).status, 403
        )

    def test_metrics(self) -> None:
        """The gauges count the store's messages by folder and their bytes."""
        self.successResultOf(self.plugin.refresh_metrics())
        self.assertEqual(voicemail.MESSAGES.labels("new")._value.get(), 1)
        self.assertEqual(voicemail.MESSAGES.labels("saved")._value.get(), 0)
        self.assertGreater(voicemail.STORAGE_BYTES._value.get(), 16000)

    def test_openapi(self) -> None:
        """The document has exactly the plugin's routes besides the core's."""
        routes, operations = routes_and_operations(self.h, [self.plugin])
        self.assertEqual(routes, operations)
        self.assertIn(
            ("delete", "/extensions/{number}/voicemail/messages/{message_id}"), operations
        )
