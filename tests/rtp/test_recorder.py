"""
Tests for call recording in the media path: G.711 decoding and the stereo WAV
file (L{warden.rtp.wav}), where packets land in it (L{warden.rtp.recorder}),
and the relay's tap and DTMF callback (L{warden.rtp.session}).
"""

from __future__ import annotations

import io
import os
import wave
from array import array
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.rtp.test_relay import RelayTestMixin
from warden.interfaces import IMediaTap
from warden.rtp.recorder import (
    CallRecorder,
    ChannelTimeline,
    RecorderLimits,
    StereoMixer,
    WriterThread,
    open_recording,
)
from warden.rtp.wav import (
    StereoWavWriter,
    alaw_sample,
    decode,
    interleave,
    ulaw_sample,
)
from warden.testing.rtpnet import dtmf, rtp

#: µ-law octets for +32124 and -32124, and A-law for +32256.
LOUD, NEGATIVE, ALAW_LOUD = b"\x80", b"\x00", b"\xaa"
SILENT = b"\xff"


def read_channels(path: str) -> tuple[array[int], array[int], wave.Wave_read]:
    """The left and right samples of a WAV file, and its reader (closed)."""
    with wave.open(path, "rb") as reader:
        frames = array("h", reader.readframes(reader.getnframes()))
    return frames[0::2], frames[1::2], reader


class G711Tests(SynchronousTestCase):
    """G.711 octets decode to the ITU-T values, as 16-bit little-endian samples."""

    def test_ulaw(self) -> None:
        """µ-law: 0xFF and 0x7F are 0, 0x80 the loudest positive, 0x00 the loudest negative."""
        self.assertEqual([ulaw_sample(c) for c in (0xFF, 0x7F, 0x80, 0x00)], [0, 0, 32124, -32124])
        self.assertEqual([ulaw_sample(c) for c in (0xFE, 0xEF, 0x7E)], [8, 132, -8])

    def test_alaw(self) -> None:
        """A-law: 0xD5 is +8, 0x55 is -8, 0xAA the loudest positive, 0x2A the loudest negative."""
        self.assertEqual(
            [alaw_sample(c) for c in (0xD5, 0x55, 0xAA, 0x2A)], [8, -8, 32256, -32256]
        )

    def test_decode(self) -> None:
        """PCMU and PCMA payloads decode sample by sample; other payload types do not."""
        self.assertEqual(decode(0, LOUD + NEGATIVE), b"\x7c\x7d\x84\x82")
        self.assertEqual(array("h", decode(8, ALAW_LOUD * 3) or b""), array("h", [32256] * 3))
        self.assertIsNone(decode(9, b"\x00" * 160))
        self.assertIsNone(decode(101, b"\x00" * 4))


class WavWriterTests(SynchronousTestCase):
    """The file is a 16-bit 8 kHz stereo WAV that stdlib readers accept."""

    def test_interleave(self) -> None:
        """Frames alternate left and right samples; unequal channels are refused."""
        left, right = array("h", [1, 2]).tobytes(), array("h", [-1, -2]).tobytes()
        self.assertEqual(array("h", interleave(left, right)), array("h", [1, -1, 2, -2]))
        self.assertRaises(ValueError, interleave, left, right[:2])

    def test_header_and_frames(self) -> None:
        """The header says 2 channels, 2 bytes, 8000 Hz and the number of frames written."""
        path = self.mktemp()
        writer = StereoWavWriter(open(path, "wb"))
        writer.write(interleave(b"\x01\x00" * 100, b"\x02\x00" * 100))
        writer.write(interleave(b"\x03\x00" * 60, b"\x04\x00" * 60))
        writer.close()
        writer.close()
        left, right, reader = read_channels(path)
        self.assertEqual(
            (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()), (2, 2, 8000)
        )
        self.assertEqual(writer.frames, 160)
        self.assertEqual(list(left), [1] * 100 + [3] * 60)
        self.assertEqual(list(right), [2] * 100 + [4] * 60)

    def test_bounded(self) -> None:
        """Past max_bytes nothing is written; the excess is counted."""
        stream = io.BytesIO()
        stream.close = lambda: None  # type: ignore[method-assign]
        writer = StereoWavWriter(stream, max_bytes=402)  # rounded down to whole frames
        writer.write(b"\x00" * 300)
        writer.write(b"\x00" * 300)
        writer.close()
        self.assertEqual((writer.data_bytes, writer.truncated_bytes), (400, 200))
        self.assertEqual(len(stream.getvalue()), 44 + 400)


class TimelineTests(SynchronousTestCase):
    """A stream is placed by arrival once, then by its RTP timestamps."""

    def test_timestamps_after_anchor(self) -> None:
        """Later packets follow the timestamp, whatever their jitter."""
        line = ChannelTimeline()
        self.assertEqual(line.position(7, 1000, 800, 16000), 800)
        self.assertEqual(line.position(7, 1160, 1000, 16000), 960)  # arrived late: not moved
        self.assertEqual(line.position(7, 1000 + 160 * 10, 2400, 16000), 2400)
        self.assertEqual(line.position(7, 840, 1000, 16000), 640)  # reordered, behind the anchor
        self.assertEqual(line.anchors, 1)

    def test_wrap(self) -> None:
        """The 32-bit timestamp wraps without a jump."""
        line = ChannelTimeline()
        line.position(7, 2**32 - 80, 0, 16000)
        self.assertEqual(line.position(7, 80, 160, 16000), 160)

    def test_new_stream_or_jump_anchors_again(self) -> None:
        """A new SSRC, or a timestamp beyond the skew, is placed by arrival."""
        line = ChannelTimeline()
        line.position(7, 0, 0, 16000)
        self.assertEqual(line.position(8, 5, 4000, 16000), 4000)
        self.assertEqual(line.position(8, 5 + 2**31 - 1, 4160, 16000), 4160)  # hostile jump
        self.assertEqual(line.anchors, 3)


class MixerTests(SynchronousTestCase):
    """Two channels written aligned, gaps as silence, within bounds."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.limits = RecorderLimits(lag=1.0, skew=2.0)
        self.mixer = StereoMixer(lambda: open_recording(self.path), 100.0, self.limits)

    def packet(
        self, channel: int, seq: int, arrival: float, payload: bytes = LOUD * 160, ssrc: int = 1
    ) -> tuple[int, int, int, int, bytes, float]:
        """A PCMU packet of 20 ms with sequence-derived timestamp."""
        return (channel, ssrc + channel, 5000 + 160 * seq, 0, payload, arrival)

    def test_aligned_by_arrival(self) -> None:
        """The callee's stream starting 0.5 s later starts 4000 samples later on the right."""
        packets = [self.packet(0, n, 100.0 + 0.02 * n) for n in range(50)]
        packets += [self.packet(1, n, 100.5 + 0.02 * n, NEGATIVE * 160) for n in range(25)]
        self.mixer.feed(packets, 101.0)
        self.mixer.close()
        left, right, _ = read_channels(self.path)
        self.assertEqual(len(left), 8000)
        self.assertEqual(set(left), {32124})
        self.assertEqual(set(right[:4000]), {0})
        self.assertEqual(set(right[4000:]), {-32124})

    def test_lost_packets_are_silence(self) -> None:
        """A lost packet leaves 160 samples of silence at its place; jitter moves nothing."""
        packets = [
            self.packet(0, n, 100.0 + 0.02 * n + (0.015 if n % 2 else 0)) for n in range(10)
        ]
        del packets[4]
        self.mixer.feed(packets, 100.2)
        self.mixer.close()
        left, right, _ = read_channels(self.path)
        self.assertEqual(len(left), 1600)
        self.assertEqual(set(left[640:800]), {0})
        self.assertEqual(set(left[:640]) | set(left[800:]), {32124})
        self.assertEqual(set(right), {0})

    def test_streams_in_batches_and_late_packets(self) -> None:
        """Audio older than the lag is written; a packet later than that is cut."""
        self.mixer.feed([self.packet(0, n, 100.0 + 0.02 * n) for n in range(100)], 102.0)
        self.assertEqual(self.mixer.frames, 8000)  # up to now - lag
        self.mixer.feed([self.packet(0, 49, 102.0)], 102.0)  # at 0.98 s: before what is written
        self.assertEqual(self.mixer.late_samples, 160)
        self.mixer.close()
        self.assertEqual(self.mixer.frames, 16000)

    def test_far_future_timestamp_is_bounded(self) -> None:
        """A timestamp hours ahead is placed by arrival; memory stays bounded."""
        far = (0, 1, 5000 + 8000 * 3600 * 3, 0, LOUD * 160, 100.0)
        self.mixer.feed([self.packet(0, 0, 100.0), far], 100.0)
        self.mixer.close()
        self.assertEqual(self.mixer.frames, 160)

    def test_unsupported_payload(self) -> None:
        """Payload types other than G.711 are counted, not written."""
        self.mixer.feed([(0, 1, 0, 9, b"\x00" * 160, 100.0)], 100.0)
        self.mixer.close()
        self.assertEqual((self.mixer.unsupported, self.mixer.frames), (1, 0))
        self.assertEqual(read_channels(self.path)[2].getnframes(), 0)

    def test_max_seconds(self) -> None:
        """Audio beyond max_seconds is not written."""
        mixer = StereoMixer(
            lambda: open_recording(self.path), 100.0, RecorderLimits(max_seconds=0.1)
        )
        mixer.feed([self.packet(0, n, 100.0 + 0.02 * n) for n in range(20)], 101.0)
        mixer.close()
        self.assertEqual(mixer.frames, 800)

    def test_disk_error_stops_recording(self) -> None:
        """An error opening or writing the file stops the recording, and is kept."""

        def refuse() -> io.BufferedWriter:
            raise OSError(28, "No space left on device")

        mixer = StereoMixer(refuse, 100.0, self.limits)
        mixer.feed([self.packet(0, n, 100.0 + 0.02 * n) for n in range(100)], 102.0)
        mixer.feed([self.packet(0, 100, 102.0)], 102.0)
        mixer.close()
        self.assertIn("No space left", mixer.error or "")
        self.assertEqual(mixer.batches_done, 2)


class CallRecorderTests(SynchronousTestCase):
    """The reactor's side batches packets and never queues without bound."""

    def test_batches_and_close(self) -> None:
        """Packets go to the writer in batches; close writes the file."""
        path = os.path.join(self.mktemp(), "2026", "call.wav")
        work: list[Callable[[], None]] = []
        recorder = CallRecorder(path, 10.0, work.append, RecorderLimits(batch_packets=4))
        self.assertTrue(verifyObject(IMediaTap, recorder))
        for n in range(10):
            recorder.rtp("a" if n % 2 else "b", 9, 160 * n, 0, LOUD * 160, 10.0 + 0.01 * n)
        self.assertEqual(len(work), 2)
        recorder.close(10.2)
        recorder.close(10.3)
        recorder.rtp("a", 9, 0, 0, LOUD * 160, 10.4)
        self.assertEqual(len(work), 4)
        for each in work:
            each()
        self.assertEqual(recorder.mixer.packets, [5, 5])
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertGreater(read_channels(path)[2].getnframes(), 0)

    def test_stalled_writer_drops(self) -> None:
        """When the writer has max_batches pending, further batches are dropped and counted."""
        work: list[Callable[[], None]] = []
        limits = RecorderLimits(batch_packets=2, max_batches=3)
        recorder = CallRecorder(self.mktemp(), 0.0, work.append, limits)
        for n in range(10):
            recorder.rtp("a", 1, 160 * n, 0, LOUD * 160, 0.02 * n)
        self.assertEqual((len(work), recorder.overflow_packets), (3, 4))

    def test_writer_thread(self) -> None:
        """Work runs at once when the thread is not running; in order in it when it is."""
        thread = WriterThread()
        done: list[int] = []
        thread.submit(lambda: done.append(1))
        thread.start()
        self.addCleanup(thread.stop)
        for n in range(2, 50):
            thread.submit(lambda n=n: done.append(n))  # type: ignore[misc]
        thread.stop()
        thread.submit(lambda: done.append(50))
        self.assertEqual(done, list(range(1, 51)))


class FakeTap:
    """Records what the session hands its tap."""

    def __init__(self) -> None:
        self.packets: list[tuple[str, int, int, int, bytes, float]] = []
        self.closed: list[float] = []

    def rtp(
        self, side: str, ssrc: int, timestamp: int, payload_type: int, payload: bytes, now: float
    ) -> None:
        self.packets.append((side, ssrc, timestamp, payload_type, payload, now))

    def close(self, now: float) -> None:
        self.closed.append(now)


class SessionTapTests(RelayTestMixin, SynchronousTestCase):
    """The relay hands relayed audio to its tap, and DTMF digits to on_dtmf."""

    def test_tap_sees_both_directions(self) -> None:
        """Audio from each side reaches the tap with side, timestamp and payload; events do not."""
        session = self.call()
        tap = FakeTap()
        session.tap = tap
        self.from_caller(session, rtp(1, 160, ssrc=5, payload=LOUD * 160))
        self.from_callee(session, rtp(1, 320, ssrc=6, payload_type=8, payload=ALAW_LOUD * 160))
        self.from_caller(session, dtmf(2, 480))
        now = self.clock.seconds()
        self.assertEqual(
            tap.packets,
            [("a", 5, 160, 0, LOUD * 160, now), ("b", 6, 320, 8, ALAW_LOUD * 160, now)],
        )
        self.assertEqual(len(self.to_callee(session)), 2)  # relayed all the same
        session.release()
        session.release()
        self.assertEqual(tap.closed, [now])
        self.assertIsNone(session.tap)

    def test_dtmf_digits(self) -> None:
        """on_dtmf hears each event once, as a digit, with its side."""
        session = self.call()
        heard: list[tuple[str, str]] = []
        session.on_dtmf = lambda side, digit: heard.append((side, digit))
        for packet in [dtmf(1, 800, event=10), dtmf(2, 800, event=10, end=True)]:
            self.from_caller(session, packet)
        self.from_caller(session, dtmf(3, 1600, event=1))
        self.from_callee(session, dtmf(1, 100, event=11, ssrc=9))
        self.from_callee(session, dtmf(2, 200, event=16, ssrc=9))  # flash: no digit
        self.assertEqual(heard, [("a", "*"), ("a", "1"), ("b", "#")])

    def test_dtmf_callback_error_is_logged(self) -> None:
        """An on_dtmf that raises is logged; the packet is still relayed."""
        session = self.call()

        def broken(side: str, digit: str) -> None:
            raise RuntimeError("bug")

        session.on_dtmf = broken
        self.from_caller(session, dtmf(1, 800))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.to_callee(session)), 1)
