"""Tests for warden.rtp.packet: RTP/RTCP headers, RFC 4733 events, stream statistics."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.errors import WardenError
from warden.rtp.errors import RtpParseError
from warden.rtp.packet import (
    DtmfCounter,
    StreamStats,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
    parse_telephone_event,
)
from warden.testing.rtpnet import dtmf, rtcp_rr, rtp


class RtpHeaderTests(SynchronousTestCase):
    """parse_rtp reads RFC 3550 §5.1 headers and rejects what is not RTP."""

    def test_fixed_header(self) -> None:
        """Every field of the fixed header is read."""
        header = parse_rtp(rtp(0xBEEF, 0xDEADBEEF, 0xCAFEBABE, 8, b"abc", marker=True))
        self.assertEqual(header.version, 2)
        self.assertEqual(
            (header.marker, header.payload_type, header.sequence, header.timestamp, header.ssrc),
            (True, 8, 0xBEEF, 0xDEADBEEF, 0xCAFEBABE),
        )
        self.assertEqual((header.padding, header.extension, header.csrc_count), (False, False, 0))
        self.assertEqual((header.payload_offset, header.payload_length), (12, 3))

    def test_csrc_extension_padding(self) -> None:
        """The payload starts after CSRCs and the extension and stops before padding."""
        data = rtp(1, payload=b"voice", csrcs=(1, 2), extension=b"\x10\xaa\x00\x00", padding=3)
        header = parse_rtp(data)
        self.assertEqual((header.csrc_count, header.extension, header.padding), (2, True, True))
        self.assertEqual(header.payload_offset, 12 + 8 + 4 + 4)
        self.assertEqual(header.payload(data), b"voice")

    def test_rejected(self) -> None:
        """Short packets, other versions, truncated headers and bad padding raise."""
        good = rtp(1, payload=b"x")
        cases = {
            "empty": b"",
            "11 bytes": good[:11],
            "version 0 (STUN)": b"\x00\x01" + good[2:],
            "version 1": bytes([0x40]) + good[1:],
            "version 3": bytes([0xC0]) + good[1:],
            "CSRC list truncated": bytes([0x83]) + good[1:],
            "extension truncated": bytes([0x90]) + good[1:],
            "extension longer than packet": rtp(1, extension=b"\x00" * 4, payload=b"")[:-2],
            "padding zero": bytes([0xA0]) + good[1:-1] + b"\x00",
            "padding too long": bytes([0xA0]) + good[1:-1] + b"\x40",
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertRaises(RtpParseError, parse_rtp, data)
        self.assertTrue(issubclass(RtpParseError, WardenError))


class RtcpTests(SynchronousTestCase):
    """RTCP demultiplexing (RFC 5761 §4) and header checks."""

    def test_demux(self) -> None:
        """RTCP types 192-223 are RTCP; RTP payload types 0-127, with or without marker, not."""
        for packet_type in (200, 201, 202, 203, 204, 205, 206):
            self.assertTrue(is_rtcp(rtcp_rr(packet_type=packet_type)), packet_type)
        for pt in (0, 8, 9, 18, 96, 101, 127):
            self.assertFalse(is_rtcp(rtp(1, payload_type=pt)), pt)
            self.assertFalse(is_rtcp(rtp(1, payload_type=pt, marker=True)), pt)
        self.assertFalse(is_rtcp(b"\x00\xc9"))

    def test_parse(self) -> None:
        """parse_rtcp reads type, count and length; rejects bad packets."""
        header = parse_rtcp(rtcp_rr())
        self.assertEqual((header.packet_type, header.count, header.length), (201, 0, 1))
        for bad in [b"\x80\xc9\x00", rtcp_rr()[:7], b"\x40" + rtcp_rr()[1:],
                    rtcp_rr(packet_type=150), b"\x80\xc9\x00\x05" + b"\x00" * 4]:  # fmt: skip
            self.assertRaises(RtpParseError, parse_rtcp, bad)


class TelephoneEventTests(SynchronousTestCase):
    """RFC 4733 §2.3 payloads and event counting."""

    def test_parse(self) -> None:
        """Event, end bit, volume and duration are read."""
        data = dtmf(1, 1000, event=11, end=True, duration=800)
        event = parse_telephone_event(parse_rtp(data).payload(data))
        self.assertEqual(
            (event.event, event.end, event.volume, event.duration), (11, True, 10, 800)
        )
        self.assertRaises(RtpParseError, parse_telephone_event, b"\x01\x02")

    def test_count_events_not_packets(self) -> None:
        """Start, updates and three end packets of one digit count once; a new digit again."""
        counter = DtmfCounter()
        packets = [dtmf(1, 1000, duration=160), dtmf(2, 1000, duration=320)]
        packets += [dtmf(n, 1000, end=True, duration=480) for n in (3, 4, 5)]
        packets += [dtmf(6, 5000, event=7), dtmf(7, 5000, event=7, end=True)]
        for data in packets:
            header = parse_rtp(data)
            counter.record(header, parse_telephone_event(header.payload(data)))
        self.assertEqual(counter.events, 2)
        assert counter.last is not None
        self.assertEqual((counter.last.event, counter.last.end), (7, True))


def feed(stats: StreamStats, seqs: list[int], start_ts: int = 0) -> None:
    """Record packets with sequence numbers ``seqs``, 20 ms apart, arriving on time."""
    for i, seq in enumerate(seqs):
        data = rtp(seq, start_ts + 160 * (seq - seqs[0]))
        stats.record(parse_rtp(data), len(data), 100.0 + 0.02 * i)


class LossTests(SynchronousTestCase):
    """Loss from extended sequence numbers (RFC 3550 A.1)."""

    def test_no_loss(self) -> None:
        """Consecutive packets: nothing lost; packets and bytes counted."""
        stats = StreamStats()
        feed(stats, list(range(100, 150)))
        self.assertEqual((stats.packets, stats.bytes, stats.lost), (50, 50 * 172, 0))

    def test_gap(self) -> None:
        """A gap of three sequence numbers is three packets lost."""
        stats = StreamStats()
        feed(stats, [1, 2, 3, 7, 8])
        self.assertEqual(stats.lost, 3)

    def test_wrap(self) -> None:
        """Sequence numbers wrapping at 65535 are not loss; a gap across the wrap is."""
        stats = StreamStats()
        feed(stats, [65533, 65534, 65535, 0, 1, 2])
        self.assertEqual(stats.lost, 0)
        feed(stats, [4, 5])
        self.assertEqual(stats.lost, 1)

    def test_many_wraps(self) -> None:
        """Three full cycles of sequence numbers lose nothing."""
        seqs = [n % 65536 for n in range(60000, 60000 + 3 * 65536)]
        stats = StreamStats()
        for seq in seqs:
            stats.record(parse_rtp(rtp(seq)), 12, 0.0)
        self.assertEqual((stats.lost, stats.packets), (0, len(seqs)))

    def test_reordering_is_not_loss(self) -> None:
        """A late packet fills its gap."""
        stats = StreamStats()
        feed(stats, [1, 2, 4, 3, 5])
        self.assertEqual(stats.lost, 0)

    def test_duplicates(self) -> None:
        """Duplicates are counted apart and do not hide real loss."""
        stats = StreamStats()
        feed(stats, [1, 2, 2, 3, 3, 6, 3])
        self.assertEqual((stats.duplicates, stats.lost), (3, 2))

    def test_restart(self) -> None:
        """A far jump is believed when the next packet follows it; earlier loss is kept."""
        stats = StreamStats()
        feed(stats, [1, 2, 4])
        feed(stats, [30000])
        self.assertEqual(stats.lost, 1)
        feed(stats, [30001, 30002])
        self.assertEqual(stats.lost, 1)
        feed(stats, [30004])
        self.assertEqual(stats.lost, 2)

    def test_stray_far_packet_ignored(self) -> None:
        """A single far-off packet does not count as thousands lost."""
        stats = StreamStats()
        feed(stats, [1, 2])
        feed(stats, [40000])
        feed(stats, [3, 4])
        self.assertEqual(stats.lost, 0)


class JitterTests(SynchronousTestCase):
    """Interarrival jitter (RFC 3550 A.8)."""

    def record(self, stats: StreamStats, seq: int, ts: int, at: float, **kw: object) -> None:
        """Record packet ``seq`` with timestamp ``ts`` arriving at ``at``."""
        data = rtp(seq, ts)
        stats.record(parse_rtp(data), len(data), at, **kw)  # type: ignore[arg-type]

    def test_regular_arrivals(self) -> None:
        """Packets arriving exactly every 20 ms have no jitter."""
        stats = StreamStats()
        for i in range(50):
            self.record(stats, i, 160 * i, 10.0 + 0.020 * i)
        self.assertAlmostEqual(stats.jitter, 0.0, places=6)
        self.assertEqual(stats.last_packet_at, 10.0 + 0.020 * 49)

    def test_irregular_arrivals(self) -> None:
        """Hand-computed: transits 0, 80, 0 give J = 5 then 9.6875 (1.2109375 ms at 8 kHz)."""
        stats = StreamStats()
        self.record(stats, 1, 0, 0.000)
        self.record(stats, 2, 160, 0.030)
        self.assertAlmostEqual(stats.jitter, 5.0)
        self.record(stats, 3, 320, 0.040)
        self.assertAlmostEqual(stats.jitter, 9.6875)
        self.assertAlmostEqual(stats.jitter_ms, 1.2109375)

    def test_clock_rate(self) -> None:
        """At 48 kHz the same delay is six times as many timestamp units, same ms."""
        stats = StreamStats(clock_rate=48000)
        self.record(stats, 1, 0, 0.000)
        self.record(stats, 2, 960, 0.030)
        self.assertAlmostEqual(stats.jitter, 30.0)
        self.assertAlmostEqual(stats.jitter_ms, 0.625)
        other = StreamStats()
        self.record(other, 1, 0, 0.000, clock_rate=48000)
        self.record(other, 2, 960, 0.030, clock_rate=48000)
        self.assertAlmostEqual(other.jitter_ms, 0.625)

    def test_untimed_packets_skipped(self) -> None:
        """Packets recorded with timing=False (RFC 4733 events) leave jitter alone."""
        stats = StreamStats()
        self.record(stats, 1, 0, 0.0)
        self.record(stats, 2, 160, 0.020)
        self.record(stats, 3, 160, 0.500, timing=False)
        self.record(stats, 4, 480, 0.060)
        self.assertAlmostEqual(stats.jitter, 0.0)
        self.assertEqual(stats.lost, 0)

    def test_timestamp_wrap(self) -> None:
        """A timestamp wrapping at 2**32 is not a jitter spike."""
        stats = StreamStats()
        start = (1 << 32) - 320
        for i in range(5):
            self.record(stats, i, start + 160 * i, 0.020 * i)
        self.assertAlmostEqual(stats.jitter, 0.0, places=3)
