#!/usr/bin/env python3
"""
Make Warden's shipped music on hold, ``warden/rtp/hold-music.wav``: a short
melody synthesised here (an arpeggio over C, A minor, F and G, soft sine
tones with a few harmonics and a gentle attack and decay), 8 kHz mono 16-bit
PCM, about 13 s, which the relay loops. It is made of nothing but this
script, so it carries no one else's copyright. The WAV is committed; run this
again after changing the melody:

    python3 tools/hold_music.py

The output depends only on this script (integer rounding of IEEE doubles).
"""

from __future__ import annotations

import math
import sys
import wave
from array import array
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "warden" / "rtp" / "hold-music.wav"
RATE = 8000
#: Seconds per note.
NOTE = 0.4
#: The chords, each played as an arpeggio of eight notes (MIDI note numbers).
CHORDS = [
    (60, 64, 67, 72, 76, 72, 67, 64),  # C
    (57, 60, 64, 69, 72, 69, 64, 60),  # A minor
    (53, 57, 60, 65, 69, 65, 60, 57),  # F
    (55, 59, 62, 67, 71, 67, 62, 59),  # G
]
#: Relative strength of the harmonics of each note.
HARMONICS = (1.0, 0.35, 0.12)
AMPLITUDE = 7000


def frequency(note: int) -> float:
    """Equal temperament, A4 (note 69) = 440 Hz."""
    return 440.0 * 2 ** ((note - 69) / 12)


def note_samples(note: int, bass: int) -> list[float]:
    """One note over its chord's bass an octave down, with attack and decay."""
    count = int(NOTE * RATE)
    out = []
    for i in range(count):
        t = i / RATE
        envelope = min(1.0, t / 0.02) * math.exp(-3.0 * t)
        value = sum(
            h * math.sin(2 * math.pi * frequency(note) * (k + 1) * t)
            for k, h in enumerate(HARMONICS)
        )
        value += 0.5 * math.sin(2 * math.pi * frequency(bass - 12) * t)
        out.append(envelope * value)
    return out


def melody() -> array[int]:
    """The whole loop as 16-bit samples."""
    samples: list[float] = []
    for chord in CHORDS:
        for note in chord:
            samples.extend(note_samples(note, chord[0]))
    peak = max(abs(s) for s in samples)
    return array("h", (round(AMPLITUDE * s / peak) for s in samples))


def main() -> int:
    pcm = melody()
    if sys.byteorder == "big":  # pragma: no cover
        pcm.byteswap()
    with wave.open(str(OUT), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
