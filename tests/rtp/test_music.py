"""
Music on hold in the built-in relay (warden.rtp.music, ADR 0026), on fake
sockets and a Clock: a phone put on hold (sendonly, inactive, c=0.0.0.0)
hears the music in its own G.711 codec, 50 packets a second, instead of the
holder's media, until the holder resumes; the shipped music and
``[media] hold_music`` are read or refused with the key named.
"""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.features.test_voicemail import frequency
from tests.rtp.conformance import CALLEE, CALLER
from tests.rtp.test_relay import RelayTestMixin
from tests.rtp.test_rtpengine import RtpengineTestMixin
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.plugins.media import hold_music, hold_music_path
from warden.rtp import g711
from warden.rtp.music import HoldMusic, shipped_music
from warden.rtp.rtpengine import RtpengineRelay
from warden.rtp.session import MediaSession
from warden.testing.rtpnet import rtp, sdp_body

#: Half a second of 500 Hz as the music.
MUSIC = g711.tone(500, 0.5)


def headers(packets: list[tuple[bytes, tuple[str, int]]]) -> list[tuple[int, int, int, int]]:
    """(marker and payload type byte, sequence, timestamp, ssrc) of each packet."""
    return [struct.unpack("!xBHII", data[:12]) for data, _ in packets]


class HoldMusicCase(RelayTestMixin, SynchronousTestCase):
    """A relay with half a second of 500 Hz as its music."""

    def setUp(self) -> None:
        super().setUp()
        self.relay = self.make_relay(hold_music=HoldMusic(MUSIC))

    def run_for(self, seconds: float) -> None:
        """Let ``seconds`` pass, 20 ms at a time (the reactor's pace)."""
        for _ in range(round(seconds / 0.02)):
            self.clock.advance(0.02)

    def hold(self, session: MediaSession, direction: str = "sendonly", version: int = 2) -> None:
        """The caller re-offers with ``direction``; the callee answers."""
        answer = {"sendonly": "recvonly", "inactive": "inactive"}.get(direction, "sendrecv")
        session.offer_from("a", sdp_body(CALLER, 4000, version, direction, user="caller"))
        session.answer_from("b", sdp_body(CALLEE, 5000, version, answer, user="callee"))


class HoldMusicTests(HoldMusicCase):
    """The caller holds the callee (and the other way round)."""

    def test_held_phone_hears_the_music(self) -> None:
        """sendonly: 50 packets a second of the music (PCMU) go to the callee; none before."""
        session = self.call()
        self.run_for(1.0)
        self.assertEqual(self.to_callee(session), [])
        self.hold(session)
        self.run_for(0.98)
        packets = self.to_callee(session)
        self.assertLessEqual(abs(len(packets) - 50), 2)  # float time: a tick may slip
        self.assertEqual({a for _, a in packets}, {(CALLEE, 5000)})
        fields = headers(packets)
        self.assertEqual([f[0] for f in fields[:2]], [0x80, 0x00])  # marker first, PCMU
        self.assertEqual(len({f[3] for f in fields}), 1)
        self.assertTrue(all((b[1] - a[1]) & 0xFFFF == 1 for a, b in itertools.pairwise(fields)))
        self.assertTrue(all(b[2] - a[2] == 160 for a, b in itertools.pairwise(fields)))
        pcm = b"".join(g711.decode("PCMU", data[12:]) for data, _ in packets)
        self.assertLess(abs(frequency(pcm) - 500), 10)

    def test_music_loops_and_replaces_the_holder(self) -> None:
        """The half-second music loops; the holder's own packets are not relayed meanwhile."""
        session = self.call()
        self.hold(session)
        self.stream(session, "a", 1, 5, (CALLER, 4000))
        self.run_for(2.0)
        packets = self.to_callee(session)
        self.assertLessEqual(abs(len(packets) - 101), 2)
        self.assertEqual(packets[0][0][12:], packets[25][0][12:])  # 25 packets = 0.5 s
        self.assertNotIn(rtp(1), [data for data, _ in packets])

    def test_resume_stops_the_music(self) -> None:
        """The caller's sendrecv offer: the music stops, the caller's media flows again."""
        session = self.call()
        self.hold(session)
        self.run_for(1.0)
        self.hold(session, "sendrecv", version=3)
        self.to_callee(session)
        self.run_for(1.0)
        self.assertEqual(self.to_callee(session), [])
        self.from_caller(session, rtp(7))
        self.assertEqual([d for d, _ in self.to_callee(session)], [rtp(7)])
        self.assertEqual(session.players, {})

    def test_inactive_and_zero_address(self) -> None:
        """a=inactive and c=0.0.0.0 are holds too."""
        session = self.call()
        self.hold(session, "inactive")
        self.run_for(0.5)
        self.assertGreater(len(self.to_callee(session)), 20)
        other = self.call()
        zero = sdp_body(CALLER, 4000, 2, user="caller").replace(
            b"c=IN IP4 " + CALLER.encode(), b"c=IN IP4 0.0.0.0"
        )
        other.offer_from("a", zero)
        other.answer_from("b", sdp_body(CALLEE, 5000, 2, "recvonly", user="callee"))
        self.run_for(0.5)
        self.assertGreater(len(self.to_callee(other)), 20)

    def test_callee_holds_the_caller(self) -> None:
        """The callee's sendonly offer: the caller hears the music, in PCMA when it asks for it."""
        pcma = sdp_body(CALLER, 4000, user="caller").replace(b"RTP/AVP 0 8", b"RTP/AVP 8 0")
        session = self.call(caller_sdp=pcma)
        session.offer_from("b", sdp_body(CALLEE, 5000, 2, "sendonly", user="callee"))
        session.answer_from("a", pcma.replace(b"t=0 0", b"a=recvonly\r\nt=0 0"))
        self.run_for(0.5)
        packets = self.to_caller(session)
        self.assertGreater(len(packets), 20)
        self.assertEqual(headers(packets)[1][0], 8)
        self.assertEqual(self.to_callee(session), [])

    def test_no_music_configured(self) -> None:
        """A relay without music: a held phone hears nothing from the relay."""
        self.relay = self.make_relay()
        session = self.call()
        self.hold(session)
        self.run_for(1.0)
        self.assertEqual(self.to_callee(session), [])

    def test_release_stops_the_music(self) -> None:
        """A call ended on hold: no packet after the release."""
        session = self.call()
        self.hold(session)
        self.run_for(0.5)
        self.assertTrue(session.players["b"].playing)
        player = session.players["b"]
        session.release()
        self.assertFalse(player.playing)
        self.assertEqual(session.players, {})


class MusicFileTests(SynchronousTestCase):
    def test_shipped_music(self) -> None:
        """The shipped music: about 13 s of 8 kHz audio, not silent."""
        pcm = shipped_music()
        self.assertLess(abs(len(pcm) / 16000 - 12.8), 0.1)
        self.assertGreater(g711.level(pcm), 500)

    def test_too_short(self) -> None:
        """Less than one packet of music is refused."""
        self.assertRaises(ValueError, HoldMusic, b"\0\0" * 100)

    def config(self, value: str) -> object:
        text = f'[media]\nhold_music = "{value}"\n'
        return hold_music(parse_config_text(text), "warden.toml")

    def test_setting(self) -> None:
        """ "default" is the shipped music, "" none, a path that file's audio."""
        default = self.config("default")
        assert isinstance(default, HoldMusic)
        self.assertEqual(default.pcm, shipped_music())
        self.assertIsNone(self.config(""))
        path = Path(self.mktemp())
        path.write_bytes(g711.wav_bytes(MUSIC))
        own = self.config(str(path))
        assert isinstance(own, HoldMusic)
        self.assertEqual(own.pcm, MUSIC)

    def test_path_for_rtpengine(self) -> None:
        """rtpengine gets an absolute path: the shipped file's, or the configured one's."""
        default = hold_music_path(parse_config_text('[media]\nhold_music = "default"\n'))
        self.assertTrue(Path(default).is_absolute() and Path(default).is_file())
        own = hold_music_path(parse_config_text('[media]\nhold_music = "music/x.wav"\n'))
        self.assertEqual(own, str(Path("music/x.wav").resolve()))

    def test_bad_files(self) -> None:
        """A missing file or another format: the file, the key and the problem."""
        e = self.assertRaises(ConfigError, self.config, "/nonexistent/music.wav")
        self.assertEqual((e.path, e.filename), ("media.hold_music", "warden.toml"))
        self.assertIn("/nonexistent/music.wav", e.problem)
        path = Path(self.mktemp())
        path.write_bytes(b"RIFF not really")
        e = self.assertRaises(ConfigError, self.config, str(path))
        self.assertIn(str(path), str(e))


class HoldEndsTests(HoldMusicCase):
    """How a hold ends besides the holder's resume."""

    def test_new_phone_answering_sendrecv(self) -> None:
        """A transfer's new phone on the holder's side answers sendrecv: the music stops."""
        session = self.call()
        self.hold(session)
        self.run_for(0.2)
        session.offer_from("b", sdp_body(CALLEE, 5000, 3, user="callee"))
        session.answer_from("a", sdp_body(CALLER, 4002, 1, user="other"))
        self.assertEqual(session.players, {})

    def test_holder_answer_keeps_the_hold(self) -> None:
        """The held phone re-offers; the holder answers sendonly: the music goes on."""
        session = self.call()
        self.hold(session)
        session.offer_from("b", sdp_body(CALLEE, 5000, 3, user="callee"))
        session.answer_from("a", sdp_body(CALLER, 4000, 3, "sendonly", user="caller"))
        self.assertEqual(list(session.players), ["b"])


class RtpengineMusicTests(RtpengineTestMixin, SynchronousTestCase):
    """With rtpengine, Warden asks it to play the music (ng play media / stop media)."""

    def setUp(self) -> None:
        super().setUp()
        self.relay = RtpengineRelay(
            self.clock, self.server.listen_udp, self.server.address, hold_music="/m/hold.wav"
        )

    def music(self) -> list[tuple[object, ...]]:
        """(command, from-tag, file, repeat-times) of each play/stop request."""
        return [
            (r["command"], r["from-tag"], r.get("file"), r.get("repeat-times"))
            for r in self.server.requests
            if r["command"] in (b"play media", b"stop media")
        ]

    def test_hold_and_resume(self) -> None:
        """The caller holds: music to the callee's leg (warden-b), stopped on resume."""
        session = self.answered()
        session.offer_from("a", sdp_body(CALLER, 4000, 2, "sendonly"))
        session.answer_from("b", sdp_body(CALLEE, 5000, 2, "recvonly"))
        self.assertEqual(self.music(), [(b"play media", b"warden-b", b"/m/hold.wav", 10000)])
        session.offer_from("a", sdp_body(CALLER, 4000, 3))
        session.answer_from("b", sdp_body(CALLEE, 5000, 3))
        self.assertEqual(self.music()[1:], [(b"stop media", b"warden-b", None, None)])

    def test_callee_holds(self) -> None:
        """The callee's inactive offer: music to the caller's leg (warden-a)."""
        session = self.answered()
        session.offer_from("b", sdp_body(CALLEE, 5000, 2, "inactive"))
        self.assertEqual(self.music(), [(b"play media", b"warden-a", b"/m/hold.wav", 10000)])

    def test_refused_play_keeps_the_call(self) -> None:
        """rtpengine refusing to play: logged, the call's media goes on."""
        session = self.answered()
        handle = self.server.handle
        self.server.handle = lambda request: (  # type: ignore[method-assign]
            {"result": "error", "error-reason": "no media player"}
            if request.get("command") == b"play media"
            else handle(request)
        )
        session.offer_from("a", sdp_body(CALLER, 4000, 2, "sendonly"))
        session.answer_from("b", sdp_body(CALLEE, 5000, 2, "recvonly"))
        self.assertEqual(self.timeouts, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(self.server.requests[-1]["command"], b"answer")

    def test_no_music(self) -> None:
        """A relay without music asks for none."""
        self.relay = RtpengineRelay(self.clock, self.server.listen_udp, self.server.address)
        session = self.answered()
        session.offer_from("a", sdp_body(CALLER, 4000, 2, "sendonly"))
        self.assertEqual(self.music(), [])
