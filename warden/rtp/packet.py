"""
RTP and RTCP packets (RFC 3550), RFC 4733 telephone-events, and per-stream
receive statistics.

Pure: bytes and arrival times (from an injected clock, passed in as floats) in,
values out.

- ``parse_rtp`` reads the fixed header of RFC 3550 §5.1 and finds the payload
  past the CSRC list, the header extension (§5.3.1) and the padding.
- ``is_rtcp`` tells RTCP from RTP on a shared port (RFC 5761 §4: the second octet
  of RTCP is a packet type in 192-223, which for RTP would be marker + payload
  types 64-95, which RTP profiles never assign); ``parse_rtcp`` checks the first
  RTCP packet's header (RFC 3550 §6.4).
- ``parse_telephone_event`` reads an RFC 4733 §2.3 event payload, and
  ``DtmfCounter`` counts events (not packets: every packet of an event carries
  the event's start timestamp, §2.5.1.2).
- ``StreamStats`` counts packets and bytes, loss from sequence numbers extended
  to 32 bits as RFC 3550 A.1 does, and interarrival jitter as RFC 3550 A.8 does.
"""

from __future__ import annotations

import struct

import attrs

from warden.rtp.errors import RtpParseError

RTP_VERSION = 2
RTP_HEADER_BYTES = 12
#: RTCP packet types of RFC 3550 §12.1: SR, RR, SDES, BYE, APP.
RTCP_PACKET_TYPES = frozenset(range(200, 205))
#: Second-octet range that RFC 5761 §4 reserves for RTCP on a multiplexed port.
RTCP_MUX_RANGE = range(192, 224)

# RFC 3550 A.1 constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16
# Remembered sequence numbers behind the highest, to tell duplicates from late packets.
_WINDOW = 128

_FIXED = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")


@attrs.frozen
class RtpHeader:
    """
    The RTP fixed header (RFC 3550 §5.1) and where the payload is.

    Attributes:
        padding: the P bit; the last payload octet counts the padding.
        extension: the X bit; a header extension follows the CSRC list.
        csrc_count: the CC field.
        marker: the M bit.
        payload_type: 0-127.
        sequence: 16-bit sequence number.
        timestamp: 32-bit media timestamp.
        ssrc: synchronisation source.
        payload_offset: where the payload starts in the packet.
        payload_length: payload octets, padding excluded.
    """

    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_length: int

    @property
    def version(self) -> int:
        """Always 2: other versions do not parse."""
        return RTP_VERSION

    def payload(self, packet: bytes) -> bytes:
        """The payload of ``packet`` (the bytes this header was parsed from)."""
        return packet[self.payload_offset : self.payload_offset + self.payload_length]


def parse_rtp(data: bytes) -> RtpHeader:
    """
    Parse an RTP packet's header.

    Raises:
        RtpParseError: shorter than its header says, version other than 2,
            or padding longer than the payload.
    """
    if len(data) < RTP_HEADER_BYTES:
        raise RtpParseError(f"RTP packet of {len(data)} bytes is shorter than 12")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version {first >> 6} is not 2")
    csrc_count = first & 0x0F
    offset = RTP_HEADER_BYTES + 4 * csrc_count
    extension = bool(first & 0x10)
    if extension:
        if len(data) < offset + 4:
            raise RtpParseError("RTP header extension is truncated")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    if len(data) < offset:
        raise RtpParseError("RTP header is longer than the packet")
    end = len(data)
    padding = bool(first & 0x20)
    if padding:
        count = data[-1]
        if count == 0 or end - count < offset:
            raise RtpParseError("RTP padding is longer than the payload")
        end -= count
    return RtpHeader(
        padding, extension, csrc_count, bool(second & 0x80), second & 0x7F,
        sequence, timestamp, ssrc, offset, end - offset,
    )  # fmt: skip


def is_rtcp(data: bytes) -> bool:
    """Whether ``data`` is RTCP rather than RTP on a shared port (RFC 5761 §4)."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and data[1] in RTCP_MUX_RANGE


@attrs.frozen
class RtcpHeader:
    """
    The header of the first packet of an RTCP compound packet (RFC 3550 §6.4).

    Attributes:
        packet_type: 200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP (205/206 feedback).
        count: the report count (or subtype) field.
        length: the packet's length in 32-bit words minus one.
    """

    packet_type: int
    count: int
    length: int


def parse_rtcp(data: bytes) -> RtcpHeader:
    """
    Parse the first RTCP header of a (compound) packet.

    Raises:
        RtpParseError: shorter than 8 octets or than its length field says,
            version other than 2, or a packet type outside 192-223.
    """
    if len(data) < 8:
        raise RtpParseError(f"RTCP packet of {len(data)} bytes is shorter than 8")
    first, packet_type, length = _EVENT.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTCP version {first >> 6} is not 2")
    if packet_type not in RTCP_MUX_RANGE:
        raise RtpParseError(f"RTCP packet type {packet_type} is out of range")
    if 4 * (length + 1) > len(data):
        raise RtpParseError("RTCP length field exceeds the packet")
    return RtcpHeader(packet_type, first & 0x1F, length)


@attrs.frozen
class TelephoneEvent:
    """
    An RFC 4733 §2.3 event payload.

    Attributes:
        event: 0-9, 10 ``*``, 11 ``#``, 12-15 A-D, 16 flash, ...
        end: the E bit, set on the (three) last packets of the event.
        volume: power level in -dBm0, 0-63.
        duration: in timestamp units since the event's timestamp.
    """

    event: int
    end: bool
    volume: int
    duration: int


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload; RtpParseError when shorter than 4 octets."""
    if len(payload) < 4:
        raise RtpParseError("telephone-event payload is shorter than 4 bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class DtmfCounter:
    """
    Counts RFC 4733 events: one per (SSRC, timestamp), however many packets
    carry it (the start, the updates, and the three end retransmissions).

    Attributes:
        events: events seen.
        last: the last event payload seen, if any.
    """

    def __init__(self) -> None:
        self.events = 0
        self.last: TelephoneEvent | None = None
        self._key: tuple[int, int] | None = None

    def record(self, header: RtpHeader, event: TelephoneEvent) -> bool:
        """Note one event packet; True when it starts a new event."""
        self.last = event
        key = (header.ssrc, header.timestamp)
        if key == self._key:
            return False
        self._key = key
        self.events += 1
        return True


class StreamStats:
    """
    Receive statistics of one RTP stream (one direction of one call leg).

    Loss follows RFC 3550 A.1: sequence numbers are extended with a cycle count
    across the 16-bit wrap, expected = highest - base + 1, lost = expected -
    received. Packets up to MAX_MISORDER behind the highest are late, not lost;
    a duplicate of one of the last 128 is counted in ``duplicates`` only. A jump
    of more than MAX_DROPOUT ahead is believed only when the next packet follows
    it (the sender restarted); loss counted until then is kept.

    Jitter follows RFC 3550 A.8: J += (|D(i-1,i)| - J) / 16, with D the change in
    transit time in timestamp units. Pass ``timing=False`` for packets whose
    timestamp is not a sampling instant (RFC 4733 events keep their start
    timestamp), and ``clock_rate`` when the payload's rate differs from the
    default; a change of rate restarts the transit reference.

    Args:
        clock_rate: default timestamp rate in Hz (8000 for PCMU, PCMA, G.722,
            telephone-event).
    """

    def __init__(self, clock_rate: int = 8000) -> None:
        self.default_clock_rate = clock_rate
        self.packets = 0
        self.bytes = 0
        self.duplicates = 0
        self.jitter = 0.0
        self.last_packet_at: float | None = None
        self._clock_rate = clock_rate
        self._base: int | None = None
        self._max = 0
        self._cycles = 0
        self._received = 0
        self._bad_seq: int | None = None
        self._window = 0
        self._lost_before = 0
        self._transit: float | None = None

    @property
    def lost(self) -> int:
        """Packets expected but not received (never negative)."""
        if self._base is None:
            return self._lost_before
        expected = self._cycles + self._max - self._base + 1
        return self._lost_before + max(0, expected - self._received)

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self._clock_rate

    def record(
        self,
        header: RtpHeader,
        size: int,
        arrival: float,
        clock_rate: int | None = None,
        timing: bool = True,
    ) -> None:
        """
        Account one received packet.

        Args:
            header: its parsed header.
            size: its length in octets (the whole datagram).
            arrival: when it arrived, in seconds (the clock's time).
            clock_rate: its payload's timestamp rate, if not the default.
            timing: whether its timestamp takes part in jitter.
        """
        self.record_fields(header.sequence, header.timestamp, size, arrival, clock_rate, timing)

    def record_fields(
        self,
        sequence: int,
        timestamp: int,
        size: int,
        arrival: float,
        clock_rate: int | None = None,
        timing: bool = True,
    ) -> None:
        """L{record} from the header's sequence number and timestamp alone."""
        self.packets += 1
        self.bytes += size
        self.last_packet_at = arrival
        if not self._sequence(sequence):
            return
        if timing:
            self._jitter(timestamp, arrival, clock_rate or self.default_clock_rate)

    def _sequence(self, seq: int) -> bool:
        """Update loss accounting; False for a duplicate or an unbelieved jump."""
        if self._base is None:
            self._restart(seq)
            return True
        delta = (seq - self._max) % SEQ_MOD
        if delta == 0:
            self.duplicates += 1
            return False
        if delta < MAX_DROPOUT:
            if seq < self._max:
                self._cycles += SEQ_MOD
            self._max = seq
            self._window = ((self._window << delta) | 1) & ((1 << _WINDOW) - 1)
            self._received += 1
            return True
        if delta <= SEQ_MOD - MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) % SEQ_MOD
                return False
            self._lost_before = self.lost
            self._restart(seq)
            return True
        behind = SEQ_MOD - delta
        if behind < _WINDOW:
            if self._window & (1 << behind):
                self.duplicates += 1
                return False
            self._window |= 1 << behind
        self._received += 1
        return True

    def _restart(self, seq: int) -> None:
        self._base = seq
        self._max = seq
        self._cycles = 0
        self._received = 1
        self._bad_seq = None
        self._window = 1
        self._transit = None

    def _jitter(self, timestamp: int, arrival: float, clock_rate: int) -> None:
        if clock_rate != self._clock_rate:
            self._clock_rate = clock_rate
            self._transit = None
            self.jitter = 0.0
        transit = arrival * clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            # Timestamps wrap at 2**32; a transit change that large is the wrap.
            if d > 1 << 31:
                d = abs(d - (1 << 32))
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit
