"""
G.711 µ-law and A-law (ITU-T G.711) between 8-bit codewords and 16-bit linear
PCM, and the audio helpers local applications use: 8 kHz mono 16-bit WAV
files, tones, and the loudness of a frame.

Pure: bytes in, bytes out. Linear PCM is little-endian signed 16-bit, as WAV
files hold it. Encoding goes through 64 Ki-entry tables built once per law.
"""

from __future__ import annotations

import io
import math
import sys
import wave
from array import array
from functools import cache

__all__ = [
    "CODECS",
    "SAMPLE_RATE",
    "WavError",
    "decode",
    "encode",
    "level",
    "read_wav",
    "tone",
    "wav_bytes",
]

#: Samples per second of G.711 and of every WAV Warden plays or records.
SAMPLE_RATE = 8000
#: Static RTP payload types of the two laws (RFC 3551 §4.5.14).
CODECS = {"PCMU": 0, "PCMA": 8}

_BIAS = 0x84
_CLIP = 32635


def _ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    sample = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -sample if sign else sample


def _ulaw_encode(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    # On the 14-bit scale G.711 works on (sample >> 2, flooring negatives).
    magnitude = min(-(sample >> 2) << 2 if sample < 0 else sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _alaw_decode(code: int) -> int:
    code ^= 0x55
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        sample = (mantissa << 4) + 8
    else:
        sample = ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


def _alaw_encode(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    magnitude = min(sample if sample >= 0 else -sample - 1, 32767) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


_DECODERS = {"PCMU": _ulaw_decode, "PCMA": _alaw_decode}
_ENCODERS = {"PCMU": _ulaw_encode, "PCMA": _alaw_encode}


@cache
def _decode_table(codec: str) -> tuple[bytes, ...]:
    return tuple(_DECODERS[codec](c).to_bytes(2, "little", signed=True) for c in range(256))


@cache
def _encode_table(codec: str) -> bytes:
    # Indexed by the sample as an unsigned 16-bit number.
    encode = _ENCODERS[codec]
    return bytes(encode(s - 65536 if s >= 32768 else s) for s in range(65536))


def decode(codec: str, payload: bytes) -> bytes:
    """G.711 codewords of ``codec`` (``PCMU``/``PCMA``) as 16-bit little-endian PCM."""
    table = _decode_table(codec)
    return b"".join([table[c] for c in payload])


def _samples(pcm: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":  # pragma: no cover - little-endian machines
        samples.byteswap()
    return samples


def encode(codec: str, pcm: bytes) -> bytes:
    """16-bit little-endian PCM as G.711 codewords of ``codec``."""
    table = _encode_table(codec)
    return bytes([table[s & 0xFFFF] for s in _samples(pcm)])


def level(pcm: bytes) -> float:
    """The mean absolute amplitude of 16-bit PCM (0 for silence, up to 32768)."""
    samples = _samples(pcm)
    if not samples:
        return 0.0
    return sum(map(abs, samples)) / len(samples)


def tone(frequency: float, seconds: float, amplitude: int = 8000) -> bytes:
    """A sine tone of ``frequency`` Hz as 16-bit PCM at 8 kHz."""
    count = int(seconds * SAMPLE_RATE)
    step = 2 * math.pi * frequency / SAMPLE_RATE
    samples = array("h", (int(amplitude * math.sin(step * i)) for i in range(count)))
    if sys.byteorder == "big":  # pragma: no cover
        samples.byteswap()
    return samples.tobytes()


class WavError(ValueError):
    """A WAV file that is not 8 kHz mono 16-bit PCM, or not a WAV file."""


def read_wav(data: bytes, max_seconds: float = 3600.0) -> bytes:
    """
    The 16-bit PCM of an 8 kHz mono 16-bit WAV file (what Warden records and
    ships); WavError for anything else or a file longer than ``max_seconds``.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            shape = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
            if shape != (1, 2, SAMPLE_RATE):
                raise WavError(f"not 8 kHz mono 16-bit PCM (channels, bytes, rate: {shape})")
            frames = reader.getnframes()
            if frames > max_seconds * SAMPLE_RATE:
                raise WavError(f"longer than {max_seconds:g} seconds")
            return reader.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise WavError(f"not a WAV file: {e}") from e


def wav_bytes(pcm: bytes) -> bytes:
    """An 8 kHz mono 16-bit WAV file holding ``pcm``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm)
    return out.getvalue()
