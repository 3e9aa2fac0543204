"""
The voicemail plugin (warden.features.voicemail, ADR 0022) on the B2BUA test
stack: calls to a busy, unanswered or unregistered extension leave a message
(greeting, beep, recording by RTP timestamp, stored with its WAV), a full
mailbox tells the caller, ``*97``/``*98`` open mailboxes with a PIN and a
lockout, and the DTMF menu plays, saves and deletes messages.
"""

from __future__ import annotations

import re
from array import array
from pathlib import Path
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.features.test_blf import BlfTestCase
from tests.sip.test_b2bua import ALICE, BOB, only
from warden import secrets as warden_secrets
from warden.errors import ConfigError
from warden.features import voicemail
from warden.features.callfeatures import dialog_events
from warden.features.mwi import MessageWaiting, summary
from warden.features.voicemail import VoicemailAudio, VoicemailConfig, VoicemailPlugin, prompt
from warden.model.voicemail import Mailbox, VoicemailMessage
from warden.rtp import g711
from warden.rtp.endpoint import RtpEndpoint
from warden.sip.hooks import CallHooks
from warden.sip.message import Request, Response, new_tag
from warden.sip.sdp import parse_sdp
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.rtpnet import dtmf, rtp
from warden.testing.sipstack import REALM
from warden.testing.voicemail import MemoryVoicemailStore

DIGIT_EVENTS = {str(d): d for d in range(10)} | {"*": 10, "#": 11}


def frequency(pcm: bytes) -> float:
    """The dominant frequency of a tone, from its zero crossings."""
    samples = array("h")
    samples.frombytes(pcm)
    crossings = sum(1 for i in range(1, len(samples)) if samples[i - 1] < 0 <= samples[i])
    return crossings / (len(samples) / g711.SAMPLE_RATE)


class Caller:
    """Alice's media: RTP into the relay, digits as RFC 4733 events, 20 ms at a time."""

    def __init__(self, test: VoicemailTestCase, ok: Response) -> None:
        self.test = test
        self.stack = test.stack
        self.relay = parse_sdp(ok.body).media[0].port
        self.source = (ALICE[0], test.alice.rtp_port)
        self.seq = 0
        self.timestamp = 0
        self.heard = 0

    @property
    def endpoint(self) -> RtpEndpoint:
        return self.test.plugin_endpoint()

    def tick(self, payload: bytes | None = None) -> None:
        """20 ms: send ``payload`` (if any), carry packets, advance the clock."""
        if self.relay not in self.stack.network.ports:
            self.stack.clock.advance(0.02)  # the call ended
            return
        if payload is not None:
            self.stack.network.deliver(
                self.relay, rtp(self.seq, self.timestamp, payload=payload), self.source
            )
            self.seq += 1
        self.timestamp += 160
        self.test.shuttle()
        self.heard += len(self.stack.network.sent_from(self.relay))
        self.stack.clock.advance(0.02)
        self.test.shuttle()

    def wait(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self.tick()

    def until(self, condition: Any, limit: float = 60.0) -> None:
        """Ticks (silent) until ``condition()``."""
        for _ in range(round(limit / 0.02)):
            if condition():
                return
            self.tick()
        raise AssertionError("condition not met in time")

    def press(self, digits: str) -> None:
        """Each digit as one RFC 4733 event (start and end packets), then a pause."""
        for digit in digits:
            event = DIGIT_EVENTS[digit]
            for end in (False, True):
                packet = dtmf(self.seq, self.timestamp, event=event, end=end)
                self.stack.network.deliver(self.relay, packet, self.source)
                self.seq += 1
            self.timestamp += 800
            self.tick()
            self.tick()

    def speak(self, pcm: bytes) -> None:
        """Send ``pcm`` as PCMU in real time."""
        encoded = g711.encode("PCMU", pcm)
        for i in range(0, len(encoded), 160):
            self.tick(encoded[i : i + 160])

    @property
    def recording(self) -> bool:
        return self.endpoint._recorder is not None


class VoicemailTestCase(SynchronousTestCase):
    """Alice (1001) calls; Bob (1002) is registered; 1003 exists without a phone."""

    config = VoicemailConfig()

    def setUp(self) -> None:
        self.plugin = VoicemailPlugin()
        self.store = MemoryVoicemailStore()
        self.audio = VoicemailAudio(Path(self.mktemp()))
        self.stack = CallStack(hooks=CallHooks([self.plugin]), applications=(self.plugin,))
        self.plugin.use(
            self.store, self.audio, self.stack.directory, self.stack.clock, self.config
        )
        self.changes: list[str] = []
        self.plugin.changed = self.changes.append
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack.register("1002", BOB)
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)

    def plugin_endpoint(self) -> RtpEndpoint:
        assert self.stack.calls.applications is not None
        (endpoint,) = self.stack.calls.applications.endpoints.values()
        return endpoint

    def shuttle(self) -> None:
        self.stack.shuttle()

    def answered(self, number: str) -> tuple[Request, Response, Caller]:
        """Alice calls ``number``; Warden answers at once (no phone rings)."""
        invite, sent = self.alice.call(number)
        return self.acknowledge(invite, sent)

    def acknowledge(
        self, invite: Request, sent: list[tuple[Any, Any]]
    ) -> tuple[Request, Response, Caller]:
        ok = only(sent, ALICE, 200)
        assert isinstance(ok, Response)
        self.stack.deliver(self.alice.ack_for(invite, ok), ALICE)
        return invite, ok, Caller(self, ok)

    def ended(self, before: int) -> bool:
        return any(getattr(m, "method", "") == "BYE" for m, _ in self.stack.sent_since(before))

    def add_message(
        self, mailbox: str, pcm: bytes, message_id: str = "a" * 32, folder: str = "new"
    ) -> None:
        name = f"{mailbox}/{message_id}.wav"
        size = self.stack.successResultOf_(self.audio.save(name, pcm))
        message = VoicemailMessage(
            message_id, mailbox, "1004", "Dan", 100.0, len(pcm) / 16000, folder, name, size
        )
        self.stack.successResultOf_(self.store.add_message(message))

    def messages(self, mailbox: str) -> list[VoicemailMessage]:
        listed: list[VoicemailMessage] = self.stack.successResultOf_(
            self.store.list_messages(mailbox)
        )
        return listed


class LeaveMessageTests(VoicemailTestCase):
    def test_busy_leaves_a_message(self) -> None:
        """Bob busy: greeting, beep, Alice's 3 s tone recorded until '#', stored as WAV."""
        invite, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        sent = self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)
        _, _, caller = self.acknowledge(invite, sent)
        caller.until(lambda: caller.recording, limit=20)
        self.assertGreater(caller.heard, 300)  # the greeting and the beep reached Alice
        caller.speak(g711.tone(1000, 3.0))
        before = self.stack.mark()
        caller.press("#")
        caller.until(lambda: self.ended(before), limit=10)  # "recorded", then BYE
        (message,) = self.messages("1002")
        self.assertEqual(
            (message.caller, message.caller_name, message.folder), ("1001", "Alice", "new")
        )
        self.assertLess(abs(message.duration - 3.0), 0.1)
        pcm = self.stack.successResultOf_(self.audio.load(message.audio))
        self.assertLess(abs(frequency(pcm) - 1000), 20)
        self.assertTrue((self.audio.root / "1002" / f"{message.message_id}.wav").exists())
        self.assertEqual(self.changes, ["1002"])

    def test_unregistered_message_ends_on_silence(self) -> None:
        """1003 has no phone: a message ends after 5 s of silence, trimmed."""
        _, _, caller = self.answered("1003")
        caller.until(lambda: caller.recording, limit=20)
        caller.speak(g711.tone(700, 2.0))
        caller.until(lambda: not caller.recording, limit=10)
        (message,) = self.messages("1003")
        self.assertLess(abs(message.duration - 2.0), 0.1)  # no packets: nothing after the tone

    def test_hangup_keeps_the_message(self) -> None:
        """Alice hangs up while recording: what was said is kept, nothing more is played."""
        invite, ok, caller = self.answered("1003")
        caller.until(lambda: caller.recording, limit=20)
        caller.speak(g711.tone(500, 1.5))
        self.stack.deliver(self.alice.in_dialog("BYE", invite, ok, uac=True), ALICE)
        (message,) = self.messages("1003")
        self.assertLess(abs(message.duration - 1.5), 0.1)

    def test_nothing_said_keeps_nothing(self) -> None:
        """A message shorter than a second is not kept."""
        _, _, caller = self.answered("1003")
        caller.until(lambda: caller.recording, limit=20)
        caller.press("#")
        caller.wait(2)
        self.assertEqual(self.messages("1003"), [])
        self.assertEqual(self.changes, [])

    def test_full_mailbox(self) -> None:
        """A mailbox at its quota: the caller hears it is full and nothing is recorded."""
        self.plugin.config = VoicemailConfig(quota_messages=1)
        self.add_message("1003", g711.tone(400, 1.0))
        before = self.stack.mark()
        _, _, caller = self.answered("1003")
        caller.until(lambda: self.ended(before), limit=20)
        self.assertEqual(len(self.messages("1003")), 1)
        full = len(prompt("mailbox-full")) / 320  # packets of the prompt
        self.assertLess(abs(caller.heard - full), 3)

    def test_custom_greeting(self) -> None:
        """A mailbox's own greeting plays instead of the default."""
        self.stack.successResultOf_(self.audio.save("1003/greeting.wav", g711.tone(300, 1.0)))
        self.stack.successResultOf_(
            self.store.set_mailbox(Mailbox("1003", greeting="1003/greeting.wav"))
        )
        _, _, caller = self.answered("1003")
        caller.until(lambda: caller.recording, limit=20)
        self.assertLess(caller.heard, 80)  # 1 s greeting + 0.25 s beep, not the 6 s prompt

    def test_ring_timeout(self) -> None:
        """Bob does not answer: after [voicemail] ring_timeout (20 s) it goes to voicemail."""
        invite, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        self.stack.clock.advance(19.9)
        before = self.stack.mark()
        self.stack.clock.advance(0.1)
        sent = self.stack.sent_since(before)
        only(sent, BOB, "CANCEL")
        self.acknowledge(invite, sent)

    def test_extension_ring_timeout(self) -> None:
        """1002's own ring timeout (8 s) takes it to voicemail before [voicemail]'s 20 s."""
        directory = self.stack.directory
        bob = self.stack.successResultOf_(directory.get_extension("1002"))
        self.stack.successResultOf_(
            directory.update_extension(attrs.evolve(bob, ring_timeout=8.0))
        )
        invite, sent = self.alice.call("1002")
        bob_invite = only(sent, BOB, "INVITE")
        assert isinstance(bob_invite, Request)
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        before = self.stack.mark()
        self.stack.clock.advance(7.9)
        self.assertEqual(self.stack.sent_since(before), [])
        self.stack.clock.advance(0.1)
        sent = self.stack.sent_since(before)
        only(sent, BOB, "CANCEL")
        self.acknowledge(invite, sent)


class HookTests(VoicemailTestCase):
    def test_unknown_numbers_are_not_voicemail(self) -> None:
        """A number that is no extension fails as before (404)."""
        _, sent = self.alice.call("5555")
        only(sent, ALICE, 404)

    def test_disabled(self) -> None:
        """enabled = false: an unregistered extension is 480 again, *97 is a number."""
        self.plugin.config = VoicemailConfig(enabled=False)
        _, sent = self.alice.call("1003")
        only(sent, ALICE, 480)
        _, sent = self.alice.call("*97")
        only(sent, ALICE, 404)

    def test_config(self) -> None:
        """[voicemail] keys are checked and named."""
        parsed = self.plugin.parse_section(
            "voicemail", {"ring_timeout": 15, "quota_messages": 5}, None
        )
        self.assertEqual(parsed, VoicemailConfig(ring_timeout=15, quota_messages=5))
        for table, key in (
            ({"quota_messages": 0}, "voicemail.quota_messages"),
            ({"ring_timeout": "x"}, "voicemail.ring_timeout"),
            ({"enabled": 1}, "voicemail.enabled"),
            ({"greeting": "x"}, "voicemail.greeting"),
            ({"max_message_seconds": float("inf")}, "voicemail.max_message_seconds"),
        ):
            error = self.assertRaises(
                ConfigError, self.plugin.parse_section, "voicemail", table, None
            )
            self.assertEqual(error.path, key)

    def test_every_prompt_is_shipped(self) -> None:
        """Each prompt the plugin plays is a shipped 8 kHz WAV."""
        source = Path(voicemail.__file__).read_text(encoding="utf-8")
        names = set(re.findall(r'prompt\("([a-z0-9-]+)"\)', source)) | set("0123456789")
        for name in names:
            self.assertGreater(len(prompt(name)), 1000, name)


class MailboxAccessTests(VoicemailTestCase):
    def test_own_mailbox_listen_and_delete(self) -> None:
        """*97 without a PIN opens Alice's own mailbox; 1 plays the new message, 7 deletes it."""
        self.add_message("1001", g711.tone(800, 1.0))
        _, _, caller = self.answered("*97")
        caller.wait(0.5)
        caller.press("1")  # during the announcement: new messages
        caller.wait(1.5)  # the message
        caller.press("7")
        caller.wait(0.5)
        self.assertEqual(self.messages("1001"), [])
        self.assertEqual(list((self.audio.root / "1001").iterdir()), [])
        self.assertEqual(self.changes, ["1001"])
        before = self.stack.mark()
        caller.until(
            lambda: (
                caller.endpoint._play_done is None and caller.endpoint._digit_waiter is not None
            )
        )
        caller.press("*")
        caller.until(lambda: self.ended(before), limit=10)

    def test_listened_message_is_saved(self) -> None:
        """A new message heard and skipped (6) becomes saved."""
        self.add_message("1001", g711.tone(800, 0.5))
        _, _, caller = self.answered("*97")
        caller.press("1")
        caller.wait(1.0)
        caller.press("6")
        caller.wait(0.5)
        (message,) = self.messages("1001")
        self.assertEqual(message.folder, "saved")
        self.assertEqual(self.changes, ["1001"])

    def test_any_mailbox_with_pin(self) -> None:
        """*98: mailbox number and PIN by DTMF, then the menu."""
        pin_hash = warden_secrets.hash_password("4321")
        self.stack.successResultOf_(self.store.set_mailbox(Mailbox("1002", pin_hash=pin_hash)))
        self.add_message("1002", g711.tone(800, 0.5))
        _, _, caller = self.answered("*98")
        caller.press("1002#")
        caller.press("4321#")
        caller.press("2")  # saved messages: none
        caller.wait(3.0)  # "there are no messages", then the main menu
        caller.press("1")  # new
        caller.wait(1.0)
        caller.press("9")
        caller.wait(0.5)
        (message,) = self.messages("1002")
        self.assertEqual(message.folder, "saved")

    def test_mailbox_without_pin_only_for_its_owner(self) -> None:
        """*98 to a mailbox with no PIN does not open it."""
        self.add_message("1002", g711.tone(800, 0.5))
        before = self.stack.mark()
        _, _, caller = self.answered("*98")
        caller.press("1002#")
        caller.until(lambda: self.ended(before), limit=20)
        self.assertEqual(self.messages("1002")[0].folder, "new")

    def test_wrong_pins_lock_the_mailbox(self) -> None:
        """Three wrong PINs lock the mailbox; the right PIN is refused until the lock ends."""
        self.stack.successResultOf_(
            self.store.set_mailbox(Mailbox("1001", pin_hash=warden_secrets.hash_password("1234")))
        )
        before = self.stack.mark()
        _, _, caller = self.answered("*97")
        for pin in ("1111#", "2222#", "3333#"):
            caller.press(pin)
            caller.wait(2.0)
        caller.until(lambda: self.ended(before), limit=20)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertGreater(box.locked_until, self.stack.clock.seconds())
        before = self.stack.mark()
        _, _, caller = self.answered("*97")
        caller.until(lambda: self.ended(before), limit=20)  # "locked", goodbye, without asking
        self.stack.clock.advance(300)
        _, _, caller = self.answered("*97")
        caller.press("1234#")
        caller.wait(1.0)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertEqual((box.failed_logins, box.locked_until), (0, 0.0))

    def test_change_pin(self) -> None:
        """4 in the menu sets a new PIN, stored hashed."""
        _, _, caller = self.answered("*97")
        caller.press("4")
        caller.press("97531#")
        caller.wait(1.0)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertTrue(box.pin_hash.startswith("scrypt$"))
        self.assertTrue(warden_secrets.verify_password("97531", box.pin_hash))

    def test_record_greeting(self) -> None:
        """3 in the menu records the greeting, kept as the mailbox's."""
        _, _, caller = self.answered("*97")
        caller.press("3")
        caller.until(lambda: caller.recording, limit=20)
        caller.speak(g711.tone(600, 1.5))
        caller.press("#")
        caller.wait(0.5)
        box = self.stack.successResultOf_(self.store.get_mailbox("1001"))
        self.assertEqual(box.greeting, "1001/greeting.wav")
        pcm = self.stack.successResultOf_(self.audio.load(box.greeting))
        self.assertLess(abs(len(pcm) / 16000 - 1.5), 0.1)


class AudioFileTests(SynchronousTestCase):
    def test_only_voicemail_names(self) -> None:
        """Names outside <mailbox>/<alnum>.wav are refused (no path escapes)."""
        audio = VoicemailAudio(Path(self.mktemp()))
        for name in (
            "../x.wav",
            "1001/../x.wav",
            "1001/x.txt",
            "abc/x.wav",
            "1001/.wav",
            "/1001/x.wav",
        ):
            self.assertRaises(ValueError, audio.path, name)
        self.assertEqual(audio.path("1001/ab12.wav"), audio.root / "1001" / "ab12.wav")


class MessageWaitingTests(BlfTestCase):
    """Bob (1002) subscribes to his mailbox's message summary (RFC 3842)."""

    def setUp(self) -> None:
        self.plugin_vm = VoicemailPlugin()
        self.store = MemoryVoicemailStore()
        stack = CallStack(hooks=CallHooks([self.plugin_vm]), applications=(self.plugin_vm,))
        self.plugin_vm.use(
            self.store, VoicemailAudio(Path(self.mktemp())), stack.directory, stack.clock
        )
        self.mwi = MessageWaiting(
            dialog_events(stack.clock, stack.directory, stack.sip), self.store.count_messages,
            stack.location.bindings_for, stack.sip.addressing.flow_for,
            stack.sip.addressing.via_for, REALM,
        )  # fmt: skip
        self.plugin_vm.use_mwi(self.mwi)
        stack.register("1002", BOB)
        self.stack = stack
        self.call_id = f"{new_tag()}@bob"
        self.cseq = 0

    def mwi_subscribe(self, **headers: str) -> tuple[Response, list[tuple[Any, Any]]]:
        values = {"Event": "message-summary", "Accept": "application/simple-message-summary"}
        values.update(headers)
        return self.subscribe("1002", values)

    def leave(self, message_id: str, folder: str = "new") -> None:
        message = VoicemailMessage(message_id, "1002", "1001", "Alice", 1.0, 2.0, folder)
        self.stack.successResultOf_(self.store.add_message(message))

    def changed(self) -> list[tuple[Any, Any]]:
        before = self.stack.mark()
        self.plugin_vm.changed("1002")
        self.stack.clock.advance(0)
        return self.stack.sent_since(before)

    def test_subscribe_and_changes(self) -> None:
        """200 and a NOTIFY with the counts at once; another after each change."""
        self.leave("a" * 32, folder="saved")
        response, sent = self.mwi_subscribe()
        self.assertEqual(response.status, 200)
        (first,) = self.notifies(sent)
        self.assertEqual(first.get("Event"), "message-summary")
        self.assertEqual(first.get("Content-Type"), "application/simple-message-summary")
        self.assertEqual(
            first.body,
            f"Messages-Waiting: no\r\nMessage-Account: sip:1002@{REALM}\r\n"
            "Voice-Message: 0/1 (0/0)\r\n".encode(),
        )
        self.leave("b" * 32)
        (second,) = self.notifies(self.changed())  # no unsolicited one: Bob subscribed
        self.assertIn(b"Messages-Waiting: yes\r\n", second.body)
        self.assertIn(b"Voice-Message: 1/1 (0/0)", second.body)
        self.stack.successResultOf_(self.store.remove_message("1002", "b" * 32))
        (third,) = self.notifies(self.changed())
        self.assertIn(b"Messages-Waiting: no\r\n", third.body)
        self.assertEqual(self.mwi.unsolicited, 0)

    def test_unsolicited_without_subscription(self) -> None:
        """A phone that did not subscribe gets a NOTIFY out of dialog on each change."""
        self.leave("c" * 32)
        (notify,) = self.notifies(self.changed())
        self.assertIsNone(notify.to.tag)
        self.assertEqual(notify.get("Subscription-State"), "active")
        self.assertIn(b"Voice-Message: 1/0 (0/0)", notify.body)
        self.assertEqual(self.mwi.unsolicited, 1)

    def test_bad_subscribes(self) -> None:
        """Malformed or unservable SUBSCRIBEs get 400, 406, 423, 489 or 404."""
        cases = [
            ({"Event": "presence"}, b"", 489),
            ({"Accept": "application/pidf+xml"}, b"", 406),
            ({"Expires": "abc"}, b"", 400),
            ({"Expires": "10"}, b"", 423),
            ({}, b"<filter/>", 400),
        ]
        for headers, body, status in cases:
            values = {"Event": "message-summary", "Accept": "application/simple-message-summary"}
            values.update(headers)
            response, _ = self.subscribe("1002", values, body=body)
            self.assertEqual(response.status, status, (headers, body))
        response, _ = self.subscribe(
            "9999", {"Event": "message-summary", "Accept": "application/simple-message-summary"}
        )
        self.assertEqual(response.status, 404)
        self.assertNotIn("9999", self.mwi.known)  # counts are kept for extensions only

    def test_summary(self) -> None:
        """RFC 3842 §5 body."""
        self.assertEqual(
            summary(3, 4, "sip:1@x"),
            b"Messages-Waiting: yes\r\nMessage-Account: sip:1@x\r\nVoice-Message: 3/4 (0/0)\r\n",
        )
