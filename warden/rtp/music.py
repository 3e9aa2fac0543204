"""
Music on hold (ADR 0026): who holds whom (L{holding_after}, L{held_sides},
shared with rtpengine's sessions, which ask rtpengine to play the file), and
the built-in relay's player.

When one phone of a call puts the other on hold (its offer says ``sendonly``
or ``inactive``, or ``c=0.0.0.0``: RFC 3264 §8.4), the relay's session plays
L{HoldMusic} to the held phone from the relay's own socket on that side, as
an RTP stream of its own (random SSRC, sequence +1 and timestamp +160 per
20 ms packet, the marker bit on the first), in the first G.711 codec (PCMU
or PCMA) of the held phone's SDP, looping, until the holder's next offer
resumes the call (``sendrecv`` or ``recvonly``) or the call ends. What the
holder sends meanwhile (its own music, silence) is not relayed to the held
phone. A held phone whose SDP names no G.711 codec hears nothing.

The shipped music (``warden/rtp/hold-music.wav``, 8 kHz mono 16-bit PCM) is
synthesised by ``tools/hold_music.py``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from importlib import resources

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from warden.rtp import g711

__all__ = [
    "HoldMusic",
    "MusicPlayer",
    "held_sides",
    "holding_after",
    "shipped_music",
    "shipped_path",
]

#: Seconds of audio per packet, and samples (bytes of G.711) per packet.
FRAME_SECONDS = 0.02
FRAME_SAMPLES = 160
#: The most packets one late tick sends to catch up.
MAX_CATCH_UP = 10
#: The longest music file played, in seconds.
MAX_MUSIC_SECONDS = 600.0
_HEADER = struct.Struct("!BBHII")


def shipped_path() -> str:
    """Where the shipped hold music is (a file of the installed package)."""
    return str(resources.files("warden.rtp").joinpath("hold-music.wav"))


def shipped_music() -> bytes:
    """The 16-bit PCM of the shipped hold music."""
    data = resources.files("warden.rtp").joinpath("hold-music.wav").read_bytes()
    return g711.read_wav(data, MAX_MUSIC_SECONDS)


def holding_after(holding: bool, direction: str, offer: bool) -> bool:
    """
    Whether a phone holds the other after sending an SDP ``offer`` (or answer)
    with ``direction`` (RFC 3264 §8.4): an offer puts the other phone on hold
    (``sendonly``, ``inactive``; ``c=0.0.0.0`` reads as ``sendonly``) or
    resumes it; an answer willing to receive (a phone that took over the side
    in a transfer) resumes it; another answer changes nothing.
    """
    if offer:
        return direction in ("sendonly", "inactive")
    return False if direction in ("sendrecv", "recvonly") else holding


def held_sides(holding: Mapping[str, bool]) -> set[str]:
    """The sides (``a``, ``b``) held by the other and not holding it: they hear music."""
    return {
        side for side, other in (("a", "b"), ("b", "a")) if holding[other] and not holding[side]
    }


class HoldMusic:
    """
    The music, encoded once per codec.

    Args:
        pcm: 16-bit PCM at 8 kHz (at least one packet's worth).
    """

    def __init__(self, pcm: bytes) -> None:
        if len(pcm) < 2 * FRAME_SAMPLES:
            raise ValueError("hold music shorter than 20 ms")
        usable = len(pcm) // (2 * FRAME_SAMPLES) * 2 * FRAME_SAMPLES
        self.pcm = pcm[:usable]
        self._frames: dict[str, bytes] = {}

    def frames(self, codec: str) -> bytes:
        """The music as ``codec`` (``PCMU`` or ``PCMA``) bytes, 160 per packet."""
        frames = self._frames.get(codec)
        if frames is None:
            frames = self._frames[codec] = g711.encode(codec, self.pcm)
        return frames


class MusicPlayer:
    """
    Plays L{HoldMusic} to one side of a session, looping, paced by ``clock``.

    Args:
        clock: paces the packets.
        frames: the music in the held phone's codec.
        payload_type: that codec's payload type in the held phone's SDP.
        send: sends one RTP packet to the held phone (False when it could not).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        frames: bytes,
        payload_type: int,
        send: Callable[[bytes], bool],
    ) -> None:
        self.frames = frames
        self.payload_type = payload_type
        self._send = send
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.sequence = int.from_bytes(os.urandom(2), "big")
        self.timestamp = int.from_bytes(os.urandom(4), "big")
        self.offset = 0
        self.packets = 0
        self._marker = True
        self._loop = LoopingCall.withCount(self._tick)
        self._loop.clock = clock
        self._loop.start(FRAME_SECONDS, now=True).addErrback(
            lambda f: self.log.failure("Hold music stopped", f)
        )

    @property
    def playing(self) -> bool:
        """Whether the music still plays."""
        return self._loop.running

    def stop(self) -> None:
        """Stop playing."""
        if self._loop.running:
            self._loop.stop()

    def _tick(self, count: int) -> None:
        for _ in range(min(count, MAX_CATCH_UP)):
            payload = self.frames[self.offset : self.offset + FRAME_SAMPLES]
            self.offset = (self.offset + FRAME_SAMPLES) % len(self.frames)
            second = (0x80 if self._marker else 0) | self.payload_type
            self._marker = False
            header = _HEADER.pack(0x80, second, self.sequence, self.timestamp, self.ssrc)
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
            if self._send(header + payload):
                self.packets += 1
        # Timestamps of the packets a very late tick skipped still advance.
        skipped = max(0, count - MAX_CATCH_UP)
        self.timestamp = (self.timestamp + skipped * FRAME_SAMPLES) & 0xFFFFFFFF
