"""
The control channel between Warden and its media process (ADR 0033).

Messages are JSON objects, each sent as a 4-byte big-endian length and that
many bytes of UTF-8 JSON, over the media process's standard input (Warden to
the relay) and standard output (the relay to Warden). Binary values (SDP,
keys, tapped audio) travel as base64 text (L{pack}, L{unpack}).

Both ends are Warden's own code, yet a frame is still read as untrusted: at
most L{MAX_FRAME} bytes, a JSON object with a string ``"op"``, or the channel
is broken (L{ControlError}) and the reader closes it.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_FRAME", "ControlError", "FrameReader", "frame", "pack", "unpack"]

#: The largest frame either end accepts (a batch of 500 sessions' stats is ~1 MB).
MAX_FRAME = 8 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class ControlError(ValueError):
    """A frame that breaks the protocol: too long, not JSON, not a message."""


# One encoder for every frame: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def frame(message: dict[str, Any]) -> bytes:
    """``message`` as one frame."""
    data = _ENCODER.encode(message).encode("ascii")
    if len(data) > MAX_FRAME:
        raise ControlError(f"message of {len(data)} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(data)) + data


def pack(data: bytes) -> str:
    """Bytes as text for a message."""
    return base64.b64encode(data).decode("ascii")


def unpack(value: object) -> bytes:
    """Bytes from L{pack}'s text; ControlError when it is not."""
    if not isinstance(value, str):
        raise ControlError("expected base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ControlError(f"bad base64: {e}") from None


class FrameReader:
    """Cuts a byte stream into messages."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """
        The whole messages ``data`` completes, in order.

        Raises:
            ControlError: a frame is too long or not a JSON object with an ``op``.
        """
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if length > self.max_frame:
                raise ControlError(f"frame of {length} bytes is over {self.max_frame}")
            end = _LENGTH.size + length
            if len(buffer) < end:
                return
            body = bytes(buffer[_LENGTH.size : end])
            del buffer[:end]
            try:
                message = json.loads(body.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ControlError(f"frame is not JSON: {e}") from None
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                raise ControlError("frame is not a message (a JSON object with an op)")
            yield message
