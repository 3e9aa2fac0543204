"""
Emergency-call notification (L{warden.features.e911_notify}): the
``[emergency]`` notification keys, what a notice says, attempts retried with
backoff on a L{Clock}, and the SIP MESSAGE channel on a fake SIP stack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.features.test_e911 import BOB, EmergencyTestCase
from warden.errors import ConfigError
from warden.features.e911_channels import (
    EmailChannel,
    SipMessageChannel,
    WebhookChannel,
    build_channels,
)
from warden.features.e911_notify import (
    NOTIFY_KEYS,
    EmergencyNotice,
    EmergencyNotifier,
    NotifyConfig,
    NotifyFailed,
    parse_notify,
    plugin,
)
from warden.interfaces import IEmergencyObserver, IWardenPlugin
from warden.model import Binding
from warden.model.emergency import EmergencyCall
from warden.secrets import read_password
from warden.sip.message import Request, make_response
from warden.testing.callstack import CallStack
from warden.testing.sipstack import REALM

#: 2026-12-06 01:00:00 UTC.
STARTED = 1796518800.0


def Call(**changes: Any) -> EmergencyCall:  # noqa: N802 (reads as the class it makes)
    """An emergency call as the E911 feature reports it, with ``changes``."""
    values: dict[str, Any] = {
        "call_id": "abc@pbx", "extension": "1001", "caller_name": "Alice Smith",
        "callback_number": "15551230001", "dialled": "911", "test": False,
        "location_name": "hq-2", "civic": {"country": "US", "A1": "CA", "RD": "Main St"},
        "location_text": "100 Main St, San Jose, CA, US, floor 2, room 201",
        "location_is_default": False, "started_at": STARTED, "node": "pbx1",
    }  # fmt: skip
    values.update(changes)
    return EmergencyCall(**values)


class FakeChannel:
    """A channel whose attempts the test finishes by hand."""

    name = "fake"

    def __init__(self, targets: Sequence[str] = ("t1",)) -> None:
        self.targets = tuple(targets)
        self.sent: list[tuple[str, EmergencyNotice, Deferred[None]]] = []

    def describe(self, target: str) -> str:
        return f"fake {target}"

    def send(self, target: str, notice: EmergencyNotice) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.sent.append((target, notice, d))
        return d

    def fail_last(self, reason: str = "refused") -> None:
        self.sent[-1][2].errback(NotifyFailed(reason))


def count(channel: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "warden_emergency_notifications_total", {"channel": channel, "outcome": outcome}
    )
    return value or 0.0


class ConfigTests(SynchronousTestCase):
    """The notification keys of ``[emergency]``."""

    def test_defaults(self) -> None:
        """Nothing configured: no target, 4 attempts 5 s apart (doubling), 10 s each."""
        config = parse_notify({"numbers": ["911"]})
        self.assertEqual(config, NotifyConfig())
        self.assertEqual(config.targets, 0)
        self.assertEqual([config.retry_delay(n) for n in (1, 2, 3)], [5.0, 10.0, 20.0])
        self.assertEqual(NotifyConfig(notify_retry_delay=40.0).retry_delay(3), 60.0)

    def test_values(self) -> None:
        """Every key parsed."""
        config = parse_notify({
            "notify_extensions": ["1000", "1001"], "notify_webhook": "https://h.example/x?k=1",
            "notify_webhook_ca": "/ca.pem", "notify_email": ["sec@example.com"],
            "smtp_from": "pbx@example.com", "smtp_host": "mail.example.com",
            "smtp_port": 587, "smtp_username": "pbx", "smtp_password_file": "/pw",
            "smtp_tls": "starttls", "smtp_ca": "", "notify_attempts": 3,
            "notify_retry_delay": 2, "notify_timeout": 5.5,
        })  # fmt: skip
        self.assertEqual(config.notify_extensions, ("1000", "1001"))
        self.assertEqual(config.targets, 4)
        self.assertEqual((config.smtp_port, config.notify_retry_delay), (587, 2.0))
        self.assertEqual(set(NOTIFY_KEYS), {f.name for f in attrs.fields(NotifyConfig)})

    def test_bad_values(self) -> None:
        """Each bad value is refused naming its key."""
        cases: list[tuple[dict[str, object], str]] = [
            ({"notify_extensions": "1000"}, "notify_extensions"),
            ({"notify_extensions": ["10 0"]}, "notify_extensions"),
            ({"notify_extensions": [str(n) for n in range(65)]}, "notify_extensions"),
            ({"notify_extensions": ["1000", "1000"]}, "notify_extensions"),
            ({"notify_webhook": "http://h.example/x"}, "notify_webhook"),
            ({"smtp_username": "u", "smtp_password_file": "/pw", "smtp_tls": "none"}, "smtp_tls"),
            ({"notify_webhook": "https:///x"}, "notify_webhook"),
            ({"notify_webhook": "https://h.example:99999/"}, "notify_webhook"),
            ({"notify_webhook": "https://h.example/\nx"}, "notify_webhook"),
            ({"notify_email": ["nobody"]}, "notify_email"),
            ({"notify_email": ["a@example.com"], "smtp_from": "p@example.com"}, "notify_email"),
            ({"notify_email": ["a@example.com"], "smtp_host": "h.example"}, "notify_email"),
            ({"notify_webhook": "https://h.example/" + "x" * 2048}, "notify_webhook"),
            ({"smtp_from": "x"}, "smtp_from"),
            ({"smtp_host": "bad host"}, "smtp_host"),
            ({"smtp_port": 0}, "smtp_port"),
            ({"smtp_port": True}, "smtp_port"),
            ({"smtp_tls": "ssl"}, "smtp_tls"),
            ({"smtp_username": "pbx"}, "smtp_password_file"),
            ({"notify_attempts": 0}, "notify_attempts"),
            ({"notify_attempts": 11}, "notify_attempts"),
            ({"notify_retry_delay": 0}, "notify_retry_delay"),
            ({"notify_retry_delay": 61}, "notify_retry_delay"),
            ({"notify_timeout": "5"}, "notify_timeout"),
        ]
        for table, key in cases:
            with self.assertRaises(ConfigError, msg=table) as raised:
                parse_notify(table)
            self.assertEqual(raised.exception.path, f"emergency.{key}", table)

    def test_password_file(self) -> None:
        """The relay's password is the file's first line; a missing file names the key."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\nignored\n")
        key = "emergency.smtp_password_file"
        self.assertEqual(read_password("", path, "", key), "s3cret")
        with self.assertRaises(ConfigError) as raised:
            read_password("", path + ".missing", "", key)
        self.assertEqual(raised.exception.path, "emergency.smtp_password_file")


class NoticeTests(SynchronousTestCase):
    """What every channel says."""

    def test_text(self) -> None:
        """Extension, name, callback number, location, dialled number and time."""
        notice = EmergencyNotice.of(Call())
        self.assertEqual(notice.subject, "EMERGENCY CALL (911) from 1001 (Alice Smith)")
        self.assertEqual(
            notice.text,
            "EMERGENCY CALL (911): extension 1001 (Alice Smith) dialled 911\r\n"
            "Callback number: 15551230001\r\n"
            "Location: 100 Main St, San Jose, CA, US, floor 2, room 201\r\n"
            "Time: 2026-12-06T01:00:00Z\r\n",
        )

    def test_test_call(self) -> None:
        """A test call is marked as one; a default location says so."""
        notice = EmergencyNotice.of(Call(test=True, dialled="9933", location_is_default=True))
        self.assertTrue(notice.subject.startswith("TEST CALL (933) from 1001"))
        self.assertIn("TEST CALL (933): extension 1001 (Alice Smith) dialled 9933", notice.text)
        self.assertIn("[site default: the phone has no location of its own]", notice.text)
        self.assertIs(notice.document["test"], True)
        self.assertIs(notice.document["location"]["default"], True)

    def test_document(self) -> None:
        """The webhook's JSON carries the same facts, the civic address as an object."""
        document = json.loads(EmergencyNotice.of(Call()).json())
        self.assertEqual(
            document,
            {
                "event": "emergency_call", "test": False, "call_id": "abc@pbx",
                "extension": "1001", "caller_name": "Alice Smith",
                "callback_number": "15551230001", "dialled": "911",
                "location": {
                    "name": "hq-2",
                    "text": "100 Main St, San Jose, CA, US, floor 2, room 201",
                    "civic": {"country": "US", "A1": "CA", "RD": "Main St"},
                    "default": False,
                },
                "started_at": "2026-12-06T01:00:00Z", "node": "pbx1",
            },
        )  # fmt: skip

    def test_hostile_fields(self) -> None:
        """Control characters become spaces (no header injection), long fields are cut."""
        notice = EmergencyNotice.of(
            Call(caller_name="Eve\r\nBcc: x@example.com", location_text="x" * 5000, civic={})
        )
        self.assertNotIn("\n", notice.subject)
        self.assertIn("Eve Bcc: x@example.com", notice.subject)
        location = notice.document["location"]
        self.assertEqual(len(location["text"]), 512)
        self.assertEqual(location["civic"], {})
        pairs = EmergencyNotice.of(Call(civic=[("RD", "Main"), ("HNO", "")]))
        self.assertEqual(pairs.document["location"]["civic"], {"RD": "Main"})


class NotifierTests(SynchronousTestCase):
    """Attempts, retries with backoff, timeouts, logging and metrics."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.channel = FakeChannel(("t1", "t2"))
        self.config = NotifyConfig(notify_attempts=3, notify_retry_delay=5.0, notify_timeout=10.0)
        self.notifier = EmergencyNotifier(self.clock, [self.channel], self.config)
        self.logged: list[str] = []

        def observe(event: LogEvent) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def started(self, call: EmergencyCall | None = None) -> None:
        """The notifier hears of ``call``; the reactor turns once."""
        self.notifier.emergency_call_started(call or Call())
        self.clock.advance(0)

    def test_every_target_at_once(self) -> None:
        """
        The call returns at once; in the reactor's next turn every target has
        its first attempt under way.
        """
        delivered = count("fake", "delivered")
        self.assertIsNone(self.notifier.emergency_call_started(Call()))
        self.assertEqual(self.channel.sent, [])
        self.clock.advance(0)
        self.assertEqual([t for t, _, _ in self.channel.sent], ["t1", "t2"])
        for _, _, d in self.channel.sent:
            d.callback(None)
        self.assertEqual(count("fake", "delivered") - delivered, 2)
        self.assertEqual(
            [(a.target, a.attempt, a.outcome) for a in self.notifier.history],
            [("t1", 1, "delivered"), ("t2", 1, "delivered")],
        )
        self.assertIn("by fake to fake t1: attempt 1/3 delivered", self.logged[0])
        self.assertIn("abc@pbx", self.logged[0])

    def test_backoff(self) -> None:
        """A failed attempt is retried after 5 s, then 10 s; the third failure is final."""
        retried, failed = count("fake", "retried"), count("fake", "failed")
        self.channel.targets = ("t1",)
        self.started()
        self.channel.fail_last("503 Service Unavailable")
        self.clock.advance(4.999)
        self.assertEqual(len(self.channel.sent), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(self.channel.sent), 2)
        self.channel.fail_last()
        self.clock.advance(9.999)
        self.assertEqual(len(self.channel.sent), 2)
        self.clock.advance(0.001)
        self.assertEqual(len(self.channel.sent), 3)
        self.channel.fail_last()
        self.clock.advance(3600)
        self.assertEqual(len(self.channel.sent), 3)
        self.assertEqual(
            [(a.attempt, a.outcome, a.reason) for a in self.notifier.history],
            [(1, "retried", "503 Service Unavailable"), (2, "retried", "refused"),
             (3, "failed", "refused")],
        )  # fmt: skip
        self.assertEqual(count("fake", "retried") - retried, 2)
        self.assertEqual(count("fake", "failed") - failed, 1)
        self.assertIn("attempt 3/3 failed (refused)", self.logged[-1])

    def test_retry_then_delivered(self) -> None:
        """A retry that succeeds ends the target's attempts."""
        self.channel.targets = ("t1",)
        self.started()
        self.channel.fail_last()
        self.clock.advance(5)
        self.channel.sent[-1][2].callback(None)
        self.clock.advance(3600)
        self.assertEqual(len(self.channel.sent), 2)
        self.assertEqual(self.notifier.history[-1].outcome, "delivered")

    def test_timeout(self) -> None:
        """An attempt unanswered for notify_timeout is cancelled and retried."""
        self.channel.targets = ("t1",)
        self.started()
        self.clock.advance(9.999)
        self.assertEqual(len(self.notifier.history), 0)
        self.clock.advance(0.001)
        self.assertEqual(self.notifier.history[-1].reason, "timed out")
        self.clock.advance(5)
        self.assertEqual(len(self.channel.sent), 2)

    def test_channel_raises(self) -> None:
        """A channel raising at once is a failed attempt, never the caller's error."""

        class Broken(FakeChannel):
            def send(self, target: str, notice: EmergencyNotice) -> Deferred[None]:
                raise RuntimeError("bug")

        notifier = EmergencyNotifier(self.clock, [Broken(("t1",))], self.config)
        notifier.emergency_call_started(Call())
        self.clock.advance(0)
        self.assertEqual(notifier.history[0].reason, "RuntimeError: bug")
        self.clock.advance(5)
        self.assertEqual(len(notifier.history), 2)

    def test_stop_before_start(self) -> None:
        """A call whose attempts had not started when Warden stopped: each target given up."""
        self.notifier.emergency_call_started(Call())
        self.notifier.stop()
        self.clock.advance(3600)
        self.assertEqual(self.channel.sent, [])
        self.assertEqual(
            [(a.target, a.outcome) for a in self.notifier.history],
            [("t1", "failed"), ("t2", "failed")],
        )

    def test_observer(self) -> None:
        """The notifier and its plugin are emergency observers; the plugin a Warden plugin."""
        verifyObject(IEmergencyObserver, self.notifier)
        verifyObject(IEmergencyObserver, plugin)
        verifyObject(IWardenPlugin, plugin)
        self.assertEqual((plugin.name, plugin.needs), ("e911notify", ("sip", "e911")))

    def test_bad_call(self) -> None:
        """A call object that cannot be read is logged; the caller is not disturbed."""
        self.notifier.emergency_call_started(object())  # type: ignore[arg-type]
        self.assertEqual(self.channel.sent, [])
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)

    def test_stop(self) -> None:
        """
        Stopping cancels waiting retries and attempts in flight; nothing more
        is sent, not even for a call starting afterwards.
        """
        self.started()
        self.channel.sent[0][2].errback(NotifyFailed("x"))
        self.notifier.stop()
        self.clock.advance(3600)
        self.assertEqual(len(self.channel.sent), 2)
        self.assertEqual(
            sorted((a.target, a.attempt, a.outcome, a.reason) for a in self.notifier.history),
            [("t1", 1, "retried", "x"), ("t1", 2, "failed", "Warden stopping"),
             ("t2", 1, "failed", "Warden stopping")],
        )  # fmt: skip
        self.started()
        self.assertEqual(len(self.channel.sent), 2)


class SipMessageTests(SynchronousTestCase):
    """MESSAGE (RFC 3428) to the phones of a notified extension."""

    def setUp(self) -> None:
        self.stack = CallStack()
        self.phone = ("192.0.2.50", 5070)
        self.stack.register("1002", self.phone)
        sip = self.stack.sip
        calls = sip.calls
        assert calls is not None
        self.channel = SipMessageChannel(
            self.stack.clock, ["1002"], self.stack.location.bindings_for,
            sip.addressing.flow_for, sip.addressing.via_for, calls.contact_for,
            sip.transactions.send_request, sip.transactions.new_branch, REALM,
        )  # fmt: skip

    def sent(self, d: Deferred[None]) -> Request:
        self.stack.clock.advance(0)
        [(message, address)] = self.stack.sent_since(0)
        self.assertEqual(address, self.phone)
        assert isinstance(message, Request)
        return message

    def test_delivered(self) -> None:
        """A text/plain MESSAGE to the phone's contact; its 200 delivers."""
        d = self.channel.send("1002", EmergencyNotice.of(Call()))
        message = self.sent(d)
        self.assertEqual(message.method, "MESSAGE")
        self.assertEqual(str(message.uri), "sip:1002@192.0.2.50:5070")
        self.assertEqual(message.get("Content-Type"), "text/plain;charset=UTF-8")
        self.assertIn(f"sip:1002@{REALM}", message.get("To") or "")
        self.assertEqual(message.body, EmergencyNotice.of(Call()).text.encode())
        self.assertNoResult(d)
        self.stack.deliver(make_response(message, 200, to_tag="x"), self.phone)
        self.assertIsNone(self.successResultOf(d))

    def test_refused(self) -> None:
        """The phone's error answer fails the attempt, naming the status."""
        d = self.channel.send("1002", EmergencyNotice.of(Call()))
        message = self.sent(d)
        self.stack.deliver(make_response(message, 100), self.phone)
        self.assertNoResult(d)
        self.stack.deliver(make_response(message, 415, to_tag="x"), self.phone)
        failure = self.failureResultOf(d, NotifyFailed)
        self.assertEqual(failure.getErrorMessage(), "415 Unsupported Media Type")

    def test_no_answer(self) -> None:
        """No answer within Timer F (64*T1) fails the attempt."""
        d = self.channel.send("1002", EmergencyNotice.of(Call()))
        self.sent(d)
        self.stack.clock.advance(64 * 0.5)
        self.assertEqual(self.failureResultOf(d, NotifyFailed).getErrorMessage(), "no answer")

    def test_not_registered(self) -> None:
        """An extension with no phone registered fails the attempt (a retry may find one)."""
        d = self.channel.send("1003", EmergencyNotice.of(Call()))
        failure = self.failureResultOf(d, NotifyFailed)
        self.assertEqual(failure.getErrorMessage(), "no phone registered")

    def test_unreachable(self) -> None:
        """A phone registered over a TCP connection that is gone cannot be reached."""
        binding = Binding(
            aor="1003", contact="sip:1003@192.0.2.51:5070;transport=tcp",
            key="1003@192.0.2.51:5070", expires_at=self.stack.clock.seconds() + 3600,
            received="tcp:192.0.2.51:40000",
        )  # fmt: skip
        self.stack.successResultOf_(self.stack.location.apply("1003", [binding], []))
        d = self.channel.send("1003", EmergencyNotice.of(Call()))
        failure = self.failureResultOf(d, NotifyFailed)
        self.assertIn("no registered phone reachable", failure.getErrorMessage())

    def test_describe(self) -> None:
        """Logs name the extension."""
        self.assertEqual(self.channel.describe("1002"), "extension 1002")


class WebhookDescribeTests(SynchronousTestCase):
    """What logs say of a webhook."""

    def test_no_path(self) -> None:
        """Only the host and port: a token in the path, query or user part is never logged."""
        channel = WebhookChannel(Clock(), "https://u:p@hooks.example:8443/T0K3N?k=s", "", 5.0)
        self.assertEqual(
            channel.describe(channel.targets[0]), "webhook https://hooks.example:8443/..."
        )


class BuildTests(SynchronousTestCase):
    """The channels a configuration asks for."""

    def test_channels(self) -> None:
        """Extensions, a webhook and addresses make the three channels, in that order."""
        stack = CallStack()
        config = NotifyConfig(
            notify_extensions=("1002",), notify_webhook="https://h.example/x",
            notify_email=("a@example.com",), smtp_from="pbx@example.com", smtp_host="localhost",
            smtp_tls="none",
        )  # fmt: skip
        channels = build_channels(stack.clock, config, stack.sip, REALM)
        self.assertEqual([c.name for c in channels], ["sip", "webhook", "email"])
        self.assertEqual([tuple(c.targets) for c in channels],
                         [("1002",), ("https://h.example/x",), ("a@example.com",)])  # fmt: skip
        self.assertEqual(build_channels(stack.clock, NotifyConfig(), stack.sip, REALM), [])

    def test_bad_ca(self) -> None:
        """A CA bundle that cannot be read, or is not PEM, stops start-up naming the key."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        for ca in (path, path + ".missing"):
            with self.assertRaises(ConfigError) as raised:
                WebhookChannel(Clock(), "https://h.example/", ca, 5.0)
            self.assertEqual(raised.exception.path, "emergency.notify_webhook_ca")
            config = NotifyConfig(notify_email=("a@example.com",), smtp_ca=ca)
            with self.assertRaises(ConfigError) as raised:
                EmailChannel(Clock(), config)
            self.assertEqual(raised.exception.path, "emergency.smtp_ca")


class InCallTests(EmergencyTestCase):
    """The notifier as an observer of the e911 plugin in a call."""

    def test_message_after_invite(self) -> None:
        """
        Alice dials 911: the INVITE goes to the trunk first; in the reactor's
        next turn Bob's phone gets the MESSAGE naming her, her callback
        number and location.
        """
        sip = self.stack.sip
        assert sip.calls is not None
        config = NotifyConfig(notify_extensions=("1002",))
        notifier = EmergencyNotifier(self.stack.clock, build_channels(
            self.stack.clock, config, sip, REALM), config)  # fmt: skip
        service = self.e911.service
        assert service is not None
        service.observers = (notifier,)
        before = self.stack.mark()
        self.dial("911")
        self.assertEqual([m for m, _ in self.stack.sent_since(before)
                          if getattr(m, "method", "") == "MESSAGE"], [])  # fmt: skip
        before = self.stack.mark()
        self.stack.clock.advance(0)
        [(message, address)] = self.stack.sent_since(before)
        self.assertEqual((getattr(message, "method", ""), tuple(address)), ("MESSAGE", BOB))
        text = message.body.decode()
        self.assertIn("EMERGENCY CALL (911): extension 1001 (Alice) dialled 911", text)
        self.assertIn("Callback number: 15551230001", text)  # her DID
        self.assertIn("Location: Lobby, San Jose, CA, US [site default", text)
