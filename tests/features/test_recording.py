"""
The recording plugin (warden.features.recording): ``[recording]`` parsing,
the policy, recording calls through the B2BUA and the relay (always, and on
demand with ``*1`` as RFC 4733 events or SIP INFO), the link from the call
record, and the retention sweep.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.rtp.test_recorder import ALAW_LOUD, LOUD, read_channels
from tests.sip.test_b2bua import ALICE, BOB
from tests.store.conformance import call_record
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.features.recording import (
    DELETED,
    STARTED,
    RecordingConfig,
    RecordingPlugin,
    RecordingPolicy,
    Recordings,
    delete_recordings,
    inside,
    recording_name,
)
from warden.interfaces import ICallHook, IWardenPlugin
from warden.model import CallRecord
from warden.plugin import discover
from warden.rtp.session import MediaSession
from warden.sip.hooks import CallHooks
from warden.sip.message import Request, Response
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.memory import MemoryCallRecordStore
from warden.testing.rtpnet import dtmf, rtp
from warden.testing.sipstack import REALM

DAY = 86400.0


class ConfigTests(SynchronousTestCase):
    """``[recording]`` parses to its defaults; bad values name the key."""

    def parse(self, text: str) -> RecordingConfig:
        config = parse_config_text(text, "warden.toml", plugins=discover())
        section = config.plugin_sections.get("recording", RecordingConfig())
        assert isinstance(section, RecordingConfig)
        return section

    def test_plugin(self) -> None:
        """The plugin is installed, enabled by default, and records nothing unconfigured."""
        plugin = discover()["recording"]
        self.assertTrue(verifyObject(IWardenPlugin, plugin))
        self.assertTrue(verifyObject(ICallHook, plugin))
        self.assertIn("recording", parse_config_text("").plugins.enabled)
        self.assertFalse(RecordingPolicy(self.parse("")).records_anything)

    def test_keys(self) -> None:
        """Every key is read; integers are accepted as seconds and days."""
        config = self.parse(
            '[recording]\nalways = ["1001"]\non_demand = ["*"]\nalways_routes = ["_9NXX."]\n'
            'on_demand_routes = ["2000"]\ncode = "#9"\ndirectory = "rec"\n'
            "retention_days = 30\nmax_seconds = 600\n"
        )
        self.assertEqual(
            config,
            RecordingConfig(("1001",), ("*",), ("_9NXX.",), ("2000",), "#9", "rec", 30.0, 600.0),
        )

    def test_errors(self) -> None:
        """A bad value stops start-up with the file, the key and the problem."""
        for text, key in [
            ('always = "1001"', "recording.always"),
            ('on_demand = ["10 01"]', "recording.on_demand"),
            ('always_routes = ["_9[1"]', "recording.always_routes"),
            ('code = "1"', "recording.code"),
            ('code = "*1x"', "recording.code"),
            ('directory = ""', "recording.directory"),
            ("retention_days = 0.5", "recording.retention_days"),
            ("max_seconds = 0", "recording.max_seconds"),
            ("colour = 1", "recording.colour"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                self.parse(f"[recording]\n{text}\n")
            self.assertEqual(caught.exception.path, key, text)
            self.assertIn("warden.toml", str(caught.exception))


class PolicyTests(SynchronousTestCase):
    """Which calls are recorded always, and who may start recording."""

    def test_always(self) -> None:
        """Listed callers or callees, every extension with "*", or a matching route."""
        policy = RecordingPolicy(RecordingConfig(always=("1001",), always_routes=("_9NXX",)))
        self.assertTrue(policy.always("1001", "1002", "1002"))
        self.assertTrue(policy.always("1003", "1001", "1001"))
        self.assertTrue(policy.always("1003", "", "9555"))
        self.assertFalse(policy.always("1003", "1002", "1002"))
        self.assertFalse(policy.always("1003", "", "9155"))
        self.assertTrue(RecordingPolicy(RecordingConfig(always=("*",))).always("x", "y", "z"))

    def test_on_demand(self) -> None:
        """A listed extension, anybody with "*", or either party of a matching route."""
        policy = RecordingPolicy(RecordingConfig(on_demand=("1002",), on_demand_routes=("2000",)))
        self.assertTrue(policy.on_demand("1002", "1001"))
        self.assertFalse(policy.on_demand("1001", "1002"))
        self.assertTrue(policy.on_demand("1001", "2000"))
        self.assertTrue(policy.records_anything)

    def test_names(self) -> None:
        """Files go by UTC day and call id; names that would leave the directory are refused."""
        self.assertEqual(recording_name("ab/..c", 0.0), "1970/01/01/ab_..c.wav")
        self.assertIsNone(inside("/rec", "../etc/passwd"))
        self.assertEqual(inside("/rec", "2026/12/05/x.wav"), "/rec/2026/12/05/x.wav")


class RecordedCallTests(SynchronousTestCase):
    """Calls through the B2BUA and the relay, recorded by the plugin's hooks."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())

    def stack(self, **config: Any) -> CallStack:
        self.plugin = RecordingPlugin()
        stack = CallStack(hooks=CallHooks([self.plugin]))
        self.recordings = Recordings(
            RecordingConfig(**config), self.directory, stack.clock, stack.records
        )
        self.plugin.recordings = self.recordings
        stack.register("1002", BOB)
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.alice = Phone(stack, "1001", ALICE)
        self.bob = Phone(stack, "1002", BOB)
        self.calls = stack
        return stack

    def live_recording(self) -> bool:
        """Whether the call's live summary (``wardenctl calls``) says it is recorded."""
        (live,) = self.calls.successResultOf_(self.calls.live.list())
        return live.recording

    def answered(self) -> tuple[Request, Response, MediaSession]:
        invite, _, _, ok = self.alice.call_answered("1002", self.bob)
        (session,) = self.calls.media.sessions()
        assert isinstance(session, MediaSession)
        return invite, ok, session

    def audio(self, session: MediaSession, packets: int, first: int = 0) -> None:
        """Both phones send ``packets`` of 20 ms, 20 ms apart: Alice loud, Bob quiet-negative."""
        for n in range(first, first + packets):
            a = rtp(n, 160 * n, ssrc=1, payload=LOUD * 160)
            b = rtp(n, 7000 + 160 * n, ssrc=2, payload_type=8, payload=ALAW_LOUD * 160)
            self.calls.network.deliver(session.side_a.rtp_port, a, (ALICE[0], 40010))
            self.calls.network.deliver(session.side_b.rtp_port, b, (BOB[0], 40020))
            self.calls.clock.advance(0.02)

    def hang_up(self, invite: Request, ok: Response) -> CallRecord:
        bye = self.alice.in_dialog("BYE", invite, ok, uac=True)
        self.calls.deliver(bye, ALICE)
        (record,) = self.successResultOf(self.calls.records.list())
        assert isinstance(record, CallRecord)
        return record

    def test_always(self) -> None:
        """
        A call of an ``always`` extension is recorded from the answer: a stereo
        WAV with Alice on the left and Bob on the right, named in the record.
        """
        self.stack(always=["1001"])
        before = STARTED.labels("always")._value.get()
        invite, ok, session = self.answered()
        self.assertEqual(STARTED.labels("always")._value.get(), before + 1)
        self.assertTrue(self.live_recording())  # published as soon as it started
        started = self.calls.clock.seconds()
        self.audio(session, 100)
        record = self.hang_up(invite, ok)
        self.assertEqual(record.recording, recording_name(record.call_id, started))
        self.assertEqual(record.recording_info, {"started_at": started, "trigger": "always"})
        left, right, reader = read_channels(os.path.join(self.directory, record.recording))
        self.assertEqual((reader.getnchannels(), reader.getframerate()), (2, 8000))
        self.assertEqual(len(left), 16000)
        self.assertEqual(set(left), {32124})
        self.assertEqual(set(right), {32256})

    def test_not_the_builtin_relay(self) -> None:
        """A media session of another engine (rtpengine) gets no recorder: no empty files."""
        self.stack(on_demand=["*"])

        class OtherSession:
            tap = None

        _, _, session = self.answered()
        attempt = next(iter(self.calls.calls.calls.values())).attempt
        attempt.media = OtherSession()  # type: ignore[assignment]
        self.assertFalse(self.recordings.start(attempt, "always", ""))
        self.assertEqual(attempt.recording, "")
        attempt.media = session
        self.assertTrue(self.recordings.start(attempt, "always", ""))

    def test_not_recorded(self) -> None:
        """A call no policy names is not recorded; its record says so."""
        self.stack(always=["1003"], on_demand=["1003"])
        invite, ok, session = self.answered()
        self.assertIsNone(session.tap)
        self.audio(session, 5)
        self.calls.clock.advance(1)
        record = self.hang_up(invite, ok)
        self.assertEqual((record.recording, record.recording_info), ("", {}))
        self.assertFalse(os.path.exists(self.directory))

    def test_on_demand_rfc4733(self) -> None:
        """
        ``*1`` as RFC 4733 events from an extension that may record starts the
        recording then; the file begins at that moment.
        """
        self.stack(on_demand=["1001"])
        invite, ok, session = self.answered()
        self.audio(session, 50)
        self.assertIsNone(session.tap)
        self.assertFalse(self.live_recording())
        for packet in [dtmf(60, 99, event=10), dtmf(61, 99, event=10, end=True)]:
            self.calls.network.deliver(session.side_a.rtp_port, packet, (ALICE[0], 40010))
        self.calls.clock.advance(1)
        self.calls.network.deliver(
            session.side_a.rtp_port, dtmf(62, 999, event=1), (ALICE[0], 40010)
        )
        started = self.calls.clock.seconds()
        self.assertIsNotNone(session.tap)
        self.assertTrue(self.live_recording())  # published at the digit, not minutes later
        self.audio(session, 50, first=50)
        record = self.hang_up(invite, ok)
        self.assertEqual(
            record.recording_info, {"started_at": started, "trigger": "on_demand", "by": "1001"}
        )
        left, right, _ = read_channels(os.path.join(self.directory, record.recording))
        self.assertEqual(len(right), 8000)
        self.assertEqual(len(left), 8000)

    def test_on_demand_refused_and_slow(self) -> None:
        """Bob may not record; Alice's ``*`` then ``1`` more than 5 s later is no code."""
        self.stack(on_demand=["1001"])
        invite, ok, session = self.answered()
        for n, event in enumerate((10, 1)):
            self.calls.network.deliver(
                session.side_b.rtp_port, dtmf(n, n, event=event), (BOB[0], 40020)
            )
        self.calls.network.deliver(
            session.side_a.rtp_port, dtmf(0, 0, event=10), (ALICE[0], 40010)
        )
        self.calls.clock.advance(5.5)
        self.calls.network.deliver(
            session.side_a.rtp_port, dtmf(1, 800, event=1), (ALICE[0], 40010)
        )
        self.assertIsNone(session.tap)
        self.calls.network.deliver(
            session.side_a.rtp_port, dtmf(2, 1600, event=10), (ALICE[0], 40010)
        )
        self.calls.network.deliver(
            session.side_a.rtp_port, dtmf(3, 2400, event=1), (ALICE[0], 40010)
        )
        self.assertIsNotNone(session.tap)
        self.assertEqual(self.hang_up(invite, ok).recording_info["by"], "1001")

    def test_on_demand_sip_info(self) -> None:
        """``*1`` as SIP INFO (application/dtmf-relay) from the callee records the call."""
        self.stack(on_demand=["1002"])
        invite, ok, session = self.answered()
        (bob_invite,) = [
            m for m, a in self.calls.sent_since(0)
            if isinstance(m, Request) and m.method == "INVITE" and tuple(a) == BOB
        ]  # fmt: skip
        bob_ok = self.bob.answer(bob_invite, 200)
        for signal in ("*", "1"):
            info = self.bob.in_dialog("INFO", bob_invite, bob_ok, uac=False)
            info.set("Content-Type", "application/dtmf-relay")
            info.set_body(f"Signal={signal}\r\nDuration=160\r\n".encode())
            self.calls.deliver(info, BOB)
        self.assertIsNotNone(session.tap)
        self.assertEqual(self.hang_up(invite, ok).recording_info["by"], "1002")


class RetentionTests(SynchronousTestCase):
    """Recordings older than retention_days are deleted and unlinked."""

    def test_sweep(self) -> None:
        """
        The sweep deletes old recordings and old files no record names, marks
        the records, and leaves newer recordings alone.
        """
        directory = os.path.abspath(self.mktemp())
        now = 100 * DAY
        old, new = "1970/01/10/old.wav", "1970/04/10/new.wav"
        for name, when in [(old, now - 40 * DAY), (new, now - DAY), ("o/orphan.wav", 0.0)]:
            path = os.path.join(directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"RIFF")
            os.utime(path, (when, when))
        records = MemoryCallRecordStore(
            [
                call_record("old", now - 40 * DAY, recording=old),
                call_record("new", now - DAY, recording=new),
            ]
        )
        clock = Clock()
        clock.advance(now)
        recordings = Recordings(RecordingConfig(retention_days=30), directory, clock, records)
        before = DELETED._value.get()
        self.assertEqual(self.successResultOf(recordings.sweep()), 2)
        self.assertEqual(DELETED._value.get(), before + 2)
        self.assertEqual(sorted(os.listdir(directory)), ["1970"])
        self.assertEqual(os.listdir(os.path.join(directory, "1970")), ["04"])
        stored = {r.call_id: r for r in self.successResultOf(records.list())}
        self.assertEqual(stored["old"].recording_info, {"deleted_at": now, "file": old})
        self.assertEqual(stored["new"].recording, new)
        self.assertEqual(self.successResultOf(recordings.sweep()), 0)

    def test_service_sweeps_hourly(self) -> None:
        """With a retention the service sweeps at start and every hour; without, never."""
        clock = Clock()
        calls: list[float] = []
        recordings = Recordings(
            RecordingConfig(retention_days=1), self.mktemp(), clock, MemoryCallRecordStore()
        )
        recordings.sweep = lambda: calls.append(clock.seconds())  # type: ignore[method-assign,assignment,return-value]
        recordings.startService()
        clock.advance(3600)
        recordings.stopService()
        clock.advance(3600)
        self.assertEqual(calls, [0.0, 3600.0])

    def test_hostile_names(self) -> None:
        """A name that leaves the directory is not deleted."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        outside = self.mktemp()
        with open(outside, "wb") as f:
            f.write(b"x")
        delete_recordings(directory, [os.path.join("..", os.path.basename(outside))], 0.0)
        self.assertTrue(os.path.exists(outside))
