"""
Test audio for the baresip phones: sine tones written as WAV files at test time
(nothing binary is committed), and what a recorded WAV file holds.

The analysis is pure Python: the Goertzel algorithm gives the power of one
frequency in a block of samples, so "is this a 1000 Hz tone" costs one pass over
the samples, and the dominant frequency is found by scanning a few hundred
frequencies over one block.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

#: G.711 runs at 8 kHz; the phones' audio source and recordings use it too.
SAMPLE_RATE = 8000
#: Analysis block: 100 ms, a whole number of periods of every test tone.
BLOCK = SAMPLE_RATE // 10
#: A block quieter than this RMS (of 32767) counts as silence.
SILENCE_RMS = 300.0


def write_tone(path: Path, frequency: float, seconds: float, amplitude: float = 0.4) -> Path:
    """
    Write a sine of ``frequency`` Hz lasting ``seconds`` to ``path``: 8 kHz, mono,
    16-bit PCM WAV, ``amplitude`` of full scale. Returns ``path``.
    """
    count = int(SAMPLE_RATE * seconds)
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / SAMPLE_RATE
    frames = struct.pack(f"<{count}h", *(round(peak * math.sin(step * i)) for i in range(count)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(frames)
    return path


def read_samples(path: Path) -> list[int]:
    """
    The samples of a mono 16-bit WAV file at L{SAMPLE_RATE}.

    Raises:
        ValueError: the file has another layout.
        wave.Error, EOFError: it is not a complete WAV file.
    """
    with wave.open(str(path), "rb") as wav:
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        if layout != (1, 2, SAMPLE_RATE):
            raise ValueError(
                f"{path}: (channels, width, rate) {layout}, not (1, 2, {SAMPLE_RATE})"
            )
        count = wav.getnframes()
        return list(struct.unpack(f"<{count}h", wav.readframes(count)))


def goertzel_power(samples: Sequence[int], frequency: float) -> float:
    """|X(f)|² of ``samples`` at ``frequency`` Hz (one DFT term, Goertzel)."""
    coefficient = 2 * math.cos(2 * math.pi * frequency / SAMPLE_RATE)
    previous = before = 0.0
    for x in samples:
        previous, before = x + coefficient * previous - before, previous
    return previous * previous + before * before - coefficient * previous * before


def rms(samples: Sequence[int]) -> float:
    """Root mean square of ``samples``."""
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


def purity(samples: Sequence[int], frequency: float) -> float:
    """
    The share of the energy of ``samples`` that lies at ``frequency``: 1.0 for a
    pure sine of that frequency over whole periods, near 0 for another tone.
    """
    energy = sum(x * x for x in samples)
    if not energy:
        return 0.0
    return 2 * goertzel_power(samples, frequency) / (len(samples) * energy)


def dominant_frequency(samples: Sequence[int], low: int = 100, high: int = 3900) -> int:
    """The frequency (10 Hz steps from ``low`` to ``high``) with the most power."""
    return max(range(low, high + 1, 10), key=lambda f: goertzel_power(samples, f))


class ToneAnalysis(NamedTuple):
    """
    What a recording holds, in 100 ms blocks.

    Attributes:
        seconds: length of the recording.
        loud_seconds: blocks louder than L{SILENCE_RMS}.
        tone_seconds: loud blocks at least 80% made of the expected frequency.
        dominant: the dominant frequency of the loudest block (0 if all silent).
        peak_rms: RMS of the loudest block.
    """

    seconds: float
    loud_seconds: float
    tone_seconds: float
    dominant: int
    peak_rms: float

    def describe(self, frequency: float) -> str:
        """One line for failure messages."""
        return (
            f"{self.seconds:.2f}s recorded, {self.loud_seconds:.1f}s not silent,"
            f" {self.tone_seconds:.1f}s of {frequency:g} Hz; dominant {self.dominant} Hz,"
            f" peak RMS {self.peak_rms:.0f}"
        )


def analyse_tone(samples: Sequence[int], frequency: float) -> ToneAnalysis:
    """Measure how much of ``samples`` is a tone of ``frequency`` Hz."""
    blocks = [samples[i : i + BLOCK] for i in range(0, len(samples) - BLOCK + 1, BLOCK)]
    levels = [rms(block) for block in blocks]
    loud = [block for block, level in zip(blocks, levels) if level >= SILENCE_RMS]
    tone = [block for block in loud if purity(block, frequency) >= 0.8]
    loudest = blocks[levels.index(max(levels))] if blocks else []
    return ToneAnalysis(
        seconds=len(samples) / SAMPLE_RATE,
        loud_seconds=len(loud) * BLOCK / SAMPLE_RATE,
        tone_seconds=len(tone) * BLOCK / SAMPLE_RATE,
        dominant=dominant_frequency(loudest) if loud else 0,
        peak_rms=max(levels, default=0.0),
    )
