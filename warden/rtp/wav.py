"""
G.711 decoding and a streaming stereo WAV file (16-bit PCM, 8 kHz) for call
recordings.

- L{decode} turns a G.711 payload (µ-law, payload type 0; A-law, payload type
  8: RFC 3551 §4.5.14, ITU-T G.711) into 16-bit little-endian linear samples,
  through two 256-entry translation tables per law (low and high octets).
- L{StereoWavWriter} writes a canonical RIFF/WAVE file (``fmt `` chunk with
  format 1, PCM; ``data`` chunk) frame by frame, never holding more than the
  frames it is given; the sizes in the header are written when it is closed.
  A file cut short (Warden killed) keeps a header with sizes 0, which readers
  such as sox repair from the file length.

Pure apart from the file the writer owns: no reactor, no clock.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable
from typing import BinaryIO

__all__ = [
    "CHANNELS",
    "RATE",
    "SAMPLE_BYTES",
    "StereoWavWriter",
    "alaw_sample",
    "decode",
    "interleave",
    "ulaw_sample",
]

#: Samples per second of G.711 (RFC 3551 §4.5.14) and of the recording.
RATE = 8000
CHANNELS = 2
SAMPLE_BYTES = 2
#: Payload types the recorder decodes: 0 PCMU, 8 PCMA (RFC 3551 table 4).
PCMU, PCMA = 0, 8
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
HEADER_BYTES = _HEADER.size
#: The largest data chunk a RIFF file can describe (32-bit sizes).
MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)


def ulaw_sample(code: int) -> int:
    """The linear value (-32124..32124) of one µ-law octet (ITU-T G.711)."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def alaw_sample(code: int) -> int:
    """The linear value (-32256..32256) of one A-law octet (ITU-T G.711)."""
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _tables(law: Callable[[int], int]) -> tuple[bytes, bytes]:
    """The low and high octets of each code's little-endian sample, as translate() tables."""
    samples = [law(code) & 0xFFFF for code in range(256)]
    return bytes(s & 0xFF for s in samples), bytes(s >> 8 for s in samples)


_TABLES = {PCMU: _tables(ulaw_sample), PCMA: _tables(alaw_sample)}


def decode(payload_type: int, payload: bytes) -> bytes | None:
    """
    ``payload`` as 16-bit little-endian samples, one per octet; None when
    ``payload_type`` is not G.711 (PCMU 0, PCMA 8).
    """
    tables = _TABLES.get(payload_type)
    if tables is None:
        return None
    samples = bytearray(2 * len(payload))
    samples[0::2] = payload.translate(tables[0])
    samples[1::2] = payload.translate(tables[1])
    return bytes(samples)


def interleave(left: bytes, right: bytes) -> bytes:
    """Two equally long 16-bit little-endian channels as stereo frames (L, R, L, R...)."""
    if len(left) != len(right) or len(left) % SAMPLE_BYTES:
        raise ValueError("channels must hold the same whole number of samples")
    frames = array("h", bytes(2 * len(left)))
    frames[0::2] = array("h", left)
    frames[1::2] = array("h", right)
    if sys.byteorder == "big":  # pragma: no cover - the samples are little-endian
        frames.byteswap()
    return frames.tobytes()


class StereoWavWriter:
    """
    A 16-bit, 8 kHz, two-channel WAV file written as frames come.

    Args:
        stream: a new binary file, open for writing and seekable.
        max_bytes: the most audio bytes written (at most what RIFF can hold);
            frames past it are counted in L{truncated_bytes}, not written.
    """

    def __init__(self, stream: BinaryIO, max_bytes: int = MAX_DATA_BYTES) -> None:
        self._stream = stream
        self.max_bytes = min(max_bytes, MAX_DATA_BYTES)
        self.max_bytes -= self.max_bytes % (CHANNELS * SAMPLE_BYTES)
        self.data_bytes = 0
        self.truncated_bytes = 0
        self.closed = False
        stream.write(self._header(0))

    @staticmethod
    def _header(data_bytes: int) -> bytes:
        block = CHANNELS * SAMPLE_BYTES
        return _HEADER.pack(
            b"RIFF", HEADER_BYTES - 8 + data_bytes, b"WAVE", b"fmt ", 16, 1, CHANNELS,
            RATE, RATE * block, block, 8 * SAMPLE_BYTES, b"data", data_bytes,
        )  # fmt: skip

    @property
    def frames(self) -> int:
        """Stereo frames written (one per 1/8000 s)."""
        return self.data_bytes // (CHANNELS * SAMPLE_BYTES)

    def write(self, frames: bytes) -> None:
        """Append interleaved frames (as L{interleave} makes them)."""
        room = self.max_bytes - self.data_bytes
        if len(frames) > room:
            self.truncated_bytes += len(frames) - room
            frames = frames[:room]
        if frames:
            self._stream.write(frames)
            self.data_bytes += len(frames)

    def close(self) -> None:
        """Write the sizes into the header and close the file. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._stream.seek(0)
            self._stream.write(self._header(self.data_bytes))
        finally:
            self._stream.close()
