"""
The RTP endpoint of local applications (warden.rtp.endpoint) and G.711
(warden.rtp.g711), on a Clock and fake sockets: SDP answers, paced playback
(sequence, timestamp, SSRC, marker), recording by timestamp with its limits,
RFC 4733 digits and their bound, the end of the call.
"""

from __future__ import annotations

import itertools
import struct
from array import array

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.rtp import g711
from warden.rtp.endpoint import MAX_PENDING_DIGITS, HungUp, Recording, RtpEndpoint
from warden.rtp.packet import parse_rtp
from warden.sip.sdp import SdpError, parse_sdp, payload_formats
from warden.testing.rtpnet import FakeNetwork, dtmf, rtp, sdp_body

RELAY = ("192.0.2.1", 30002)


def frequency(pcm: bytes) -> float:
    """The dominant frequency of a tone, from its zero crossings."""
    samples = array("h")
    samples.frombytes(pcm)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    return crossings / (len(samples) / g711.SAMPLE_RATE)


class G711Tests(SynchronousTestCase):
    def test_known_codewords(self) -> None:
        self.assertEqual(
            g711.decode("PCMU", b"\xff\x7f\x00\x80"), struct.pack("<4h", 0, 0, -32124, 32124)
        )
        self.assertEqual(g711.decode("PCMA", b"\xd5\x55"), struct.pack("<2h", 8, -8))
        self.assertEqual(
            g711.encode("PCMU", struct.pack("<3h", 0, 32767, -32768)), b"\xff\x80\x00"
        )
        self.assertEqual(g711.encode("PCMA", struct.pack("<2h", 0, 32767)), b"\xd5\xaa")

    def test_round_trip_keeps_a_tone(self) -> None:
        pcm = g711.tone(1000, 0.5)
        for codec in ("PCMU", "PCMA"):
            back = g711.decode(codec, g711.encode(codec, pcm))
            self.assertEqual(len(back), len(pcm))
            self.assertLess(abs(frequency(back) - 1000), 10)
            self.assertLess(abs(g711.level(back) - g711.level(pcm)), g711.level(pcm) * 0.05)

    def test_wav(self) -> None:
        pcm = g711.tone(440, 0.25)
        self.assertEqual(g711.read_wav(g711.wav_bytes(pcm)), pcm)
        self.assertRaises(g711.WavError, g711.read_wav, b"RIFF nonsense")
        self.assertRaises(g711.WavError, g711.read_wav, g711.wav_bytes(pcm), max_seconds=0.1)


class EndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()
        self.endpoint = RtpEndpoint(self.clock, self.listen, "192.0.2.1", ssrc=0x1234)
        self.answer = self.endpoint.answer(sdp_body(*RELAY))
        self.history: list[bytes] = []

    def listen(self, port: int, protocol: object, interface: str) -> object:
        return self.network.listen_udp(port or 50000, protocol, interface)  # type: ignore[arg-type]

    def sent(self) -> list[bytes]:
        """The packets sent to the relay since the last call (kept in ``history``)."""
        new = [data for data, addr in self.network.sent_from(50000) if addr == RELAY]
        self.history.extend(new)
        return new

    def deliver(self, packet: bytes, source: tuple[str, int] = RELAY) -> None:
        self.network.deliver(50000, packet, source)

    def test_answer(self) -> None:
        sdp = parse_sdp(self.answer)
        media = sdp.media[0]
        self.assertEqual(media.port, 50000)
        self.assertEqual([c.name for c in payload_formats(media)], ["PCMU", "telephone-event"])
        self.assertEqual(sdp.connection_for(0).address, "192.0.2.1")  # type: ignore[union-attr]
        self.assertEqual(self.endpoint.remote, RELAY)

    def test_answer_prefers_the_offer_order_and_refuses_streams(self) -> None:
        offer = sdp_body(*RELAY).replace(b"RTP/AVP 0 8 101", b"RTP/AVP 8 0 101")
        offer += b"m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        endpoint = RtpEndpoint(
            self.clock, lambda p, pr, i: self.network.listen_udp(50002, pr, i), "192.0.2.1"
        )
        sdp = parse_sdp(endpoint.answer(offer))
        self.assertEqual(endpoint.codec, "PCMA")
        self.assertEqual([(m.media, m.port) for m in sdp.media], [("audio", 50002), ("video", 0)])

    def test_answer_refuses_what_it_cannot_play(self) -> None:
        for offer in (
            sdp_body(*RELAY).replace(b"RTP/AVP", b"RTP/SAVP"),
            sdp_body(*RELAY).replace(b"RTP/AVP 0 8 101", b"RTP/AVP 18"),
            b"garbage",
        ):
            self.assertRaises(SdpError, self.endpoint.answer, offer)

    def test_play_paces_20ms_packets(self) -> None:
        done = self.endpoint.play(g711.tone(440, 0.1))  # 5 frames
        self.assertEqual(len(self.sent()), 1)  # the first at once
        self.clock.advance(0.02)
        self.assertEqual(len(self.sent()), 1)
        self.clock.pump([0.02] * 5)
        self.assertEqual(self.successResultOf(done), "")
        self.clock.advance(1.0)
        second = self.endpoint.play(g711.tone(440, 0.04))
        self.clock.pump([0.02] * 3)
        self.successResultOf(second)
        self.sent()
        packets = [parse_rtp(p) for p in self.history]
        self.assertEqual(len(packets), 7)
        self.assertEqual({p.ssrc for p in packets}, {0x1234})
        self.assertEqual({p.payload_type for p in packets}, {0})
        seqs = [p.sequence for p in packets]
        self.assertEqual([(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)], [1] * 6)
        stamps = [p.timestamp for p in packets]
        steps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)]
        self.assertEqual(steps[:4], [160] * 4)
        self.assertGreaterEqual(steps[4], 160 + 8000)  # the pause advanced the clock
        self.assertEqual(steps[5], 160)
        self.assertEqual(
            [p.marker for p in packets], [True, False, False, False, False, True, False]
        )

    def test_late_ticks_catch_up(self) -> None:
        self.endpoint.play(g711.tone(440, 1.0))
        self.sent()
        self.clock.advance(0.1)  # one late tick owes five frames
        self.assertEqual(len(self.sent()), 5)

    def test_play_interrupted_by_a_digit(self) -> None:
        done = self.endpoint.play(g711.tone(440, 5.0), interrupt="0123456789")
        self.clock.advance(0.02)
        self.deliver(dtmf(1, 1000, event=7))
        self.assertEqual(self.successResultOf(done), "7")
        self.clock.advance(1)
        self.sent()
        self.clock.advance(1)
        self.assertEqual(self.sent(), [])
        self.assertNoResult(self.endpoint.next_digit(1.0))  # taken by the interruption

    def test_record_by_timestamp_until_hash(self) -> None:
        recording = self.endpoint.record(max_seconds=10, silence_seconds=3)
        tone = g711.encode("PCMU", g711.tone(1000, 1.0))
        for i in range(50):
            if i == 20:
                continue  # lost: silence in its place
            self.deliver(rtp(100 + i, 5000 + 160 * i, payload=tone[160 * i : 160 * (i + 1)]))
            self.clock.advance(0.02)
        self.deliver(dtmf(200, 9000, event=11))  # '#'
        result = self.successResultOf(recording)
        self.assertEqual((result.ended_by, result.digit), ("digit", "#"))
        self.assertEqual(result.seconds, 1.0)
        self.assertLess(abs(frequency(result.pcm) - 1000), 25)  # 20 ms of it lost
        self.assertEqual(g711.level(result.pcm[20 * 320 : 21 * 320]), 0.0)

    def test_record_stops_at_the_limit(self) -> None:
        recording = self.endpoint.record(max_seconds=1, silence_seconds=5)
        payload = g711.encode("PCMU", g711.tone(500, 0.02))
        for i in range(100):
            self.deliver(rtp(i, 160 * i, payload=payload))
        result = self.successResultOf(recording)
        self.assertEqual((result.ended_by, len(result.pcm)), ("limit", 16000))

    def test_record_stops_on_silence(self) -> None:
        recording = self.endpoint.record(max_seconds=60, silence_seconds=2)
        speech = g711.encode("PCMU", g711.tone(500, 0.02))
        quiet = b"\xff" * 160
        for i in range(200):
            self.deliver(rtp(i, 160 * i, payload=speech if i < 10 else quiet))
        result = self.successResultOf(recording)
        self.assertEqual(result.ended_by, "silence")
        self.assertEqual(result.seconds, 2.2)

    def test_record_without_packets_ends(self) -> None:
        recording = self.endpoint.record(max_seconds=60, silence_seconds=3)
        self.clock.pump([0.5] * 6)
        self.assertEqual(self.successResultOf(recording), Recording(b"", "silence"))

    def test_record_ignores_strangers(self) -> None:
        recording = self.endpoint.record(max_seconds=60, silence_seconds=3)
        self.deliver(rtp(1, 0), source=("203.0.113.5", 30002))
        self.deliver(b"\x00junk", source=RELAY)
        self.deliver(dtmf(2, 160, event=11), source=("203.0.113.5", 30002))
        self.assertNoResult(recording)
        self.assertEqual(self.endpoint.packets_in, 0)

    def test_one_digit_per_event(self) -> None:
        for seq, end in ((1, False), (2, False), (3, True), (4, True), (5, True)):
            self.deliver(dtmf(seq, 8000, event=1, end=end))
        self.deliver(dtmf(6, 8800, event=2))
        self.assertEqual(self.successResultOf(self.endpoint.next_digit(1)), "1")
        self.assertEqual(self.successResultOf(self.endpoint.next_digit(1)), "2")
        waiting = self.endpoint.next_digit(5)
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(waiting), "")

    def test_digit_flood_is_bounded(self) -> None:
        for i in range(5000):
            self.deliver(dtmf(i, 160 * i, event=i % 10))
        self.endpoint.digit_received("9")  # SIP INFO
        self.assertEqual(len(self.endpoint._digits), MAX_PENDING_DIGITS)
        self.assertEqual(self.endpoint.digits_dropped, 5001 - MAX_PENDING_DIGITS)

    def test_read_digits(self) -> None:
        for event in (1, 2, 3, 11, 4):
            self.deliver(dtmf(event, 160 * event, event=event))
        d = self.endpoint.read_digits(8, 5.0)
        self.assertEqual(self.successResultOf(d), "123")  # type: ignore[arg-type]

    def test_close_ends_every_wait(self) -> None:
        play = self.endpoint.play(g711.tone(440, 2))
        digit_endpoint = RtpEndpoint(
            self.clock, lambda p, pr, i: self.network.listen_udp(50004, pr, i), "192.0.2.1"
        )
        digit_endpoint.answer(sdp_body(*RELAY))
        digit = digit_endpoint.next_digit(10)
        recording = digit_endpoint.record(10, 5)
        self.deliver(rtp(1, 0, payload=b"\x80" * 160))
        self.endpoint.close()
        digit_endpoint.close()
        self.failureResultOf(play, HungUp)
        self.failureResultOf(digit, HungUp)
        self.assertEqual(self.successResultOf(recording).ended_by, "hangup")
        self.failureResultOf(self.endpoint.play(b"\x00\x00"), HungUp)
        self.assertNotIn(50000, self.network.ports)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.endpoint.close()  # twice is fine
