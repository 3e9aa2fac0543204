"""
Fuzz the RTP and RTCP parsers (RFC 3550 §5.1, §6.4, RFC 5761 §4 demultiplexing),
RFC 4733 telephone-event payloads and the receive statistics fed from them
(RFC 3550 A.1, A.8). Only ``RtpParseError`` is expected. The torture corpus
holds no media, so the seeds are built here: the packets a G.711 call and a
DTMF digit carry.
"""

from __future__ import annotations

import struct

import _harness
import atheris

with atheris.instrument_imports(include=["warden"]):
    from warden.rtp.errors import RtpParseError
    from warden.rtp.packet import (
        DtmfCounter,
        StreamStats,
        is_rtcp,
        parse_rtcp,
        parse_rtp,
        parse_telephone_event,
    )

_STATS = StreamStats()
_DTMF = DtmfCounter()
_ARRIVAL = [0.0]


def check(data: bytes) -> None:
    """The fuzz target: one datagram on a relay port, RTP or RTCP."""
    try:
        if is_rtcp(data):
            parse_rtcp(data)
            return
        header = parse_rtp(data)
        _ARRIVAL[0] += 0.02
        _STATS.record(header, len(data), _ARRIVAL[0], timing=header.payload_type != 101)
        _STATS.lost, _STATS.jitter_ms  # noqa: B018 - read as the metrics do
        if header.payload_type == 101:
            _DTMF.record(header, parse_telephone_event(header.payload(data)))
    except RtpParseError:
        return


def seeds() -> list[bytes]:
    """PCMU audio, an extension header, padding, a DTMF event, RTCP SR and RR."""
    pcmu = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xff" * 160
    marked = struct.pack("!BBHII", 0x80, 0x80 | 8, 2, 320, 0x1234) + b"\xd5" * 160
    extended = (
        struct.pack("!BBHII", 0x90, 0, 3, 480, 0x1234)
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\xaa\x00\x00"
        + b"\xff" * 20
    )
    padded = struct.pack("!BBHII", 0xA0, 0, 4, 640, 0x1234) + b"\xff" * 20 + b"\x00\x00\x00\x04"
    csrc = struct.pack("!BBHIII", 0x81, 0, 5, 800, 0x1234, 0x5678) + b"\xff" * 20
    dtmf = struct.pack("!BBHII", 0x80, 0x80 | 101, 6, 960, 0x1234) + struct.pack(
        "!BBH", 5, 10, 160
    )
    dtmf_end = struct.pack("!BBHII", 0x80, 101, 7, 960, 0x1234) + struct.pack("!BBH", 5, 0x8A, 800)
    sender_report = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x1234, 1, 2, 3, 4, 5)
    receiver_report = struct.pack("!BBHI", 0x81, 201, 7, 0x1234) + b"\x00" * 24
    return [pcmu, marked, extended, padded, csrc, dtmf, dtmf_end, sender_report, receiver_report]


if __name__ == "__main__":
    _harness.run(check, seeds())
