"""
Bencoding (the BitTorrent encoding) for rtpengine's ng control protocol.

Four kinds of value: byte strings (``<length>:<bytes>``), integers
(``i<digits>e``), lists (``l...e``) and dictionaries (``d...e``, keys are byte
strings). L{encode} writes what Warden sends; L{decode} reads what comes back,
and a reply is as hostile as any other datagram from the network: decoding is
strict (one canonical form per integer and length: no ``+``, no leading zero, no
``-0``; ASCII digits only; nothing after the value; no duplicate key) and
bounded (input length, nesting depth, number of values, digits of a number), so
a malformed or hostile reply costs a bounded amount of work and ends in
L{BencodeError}, never another exception.

Decoded dictionaries have ``str`` keys (UTF-8; a key that is not is an error);
strings values stay ``bytes`` for the caller to interpret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The most bytes L{decode} reads: a UDP datagram's payload cannot be longer.
MAX_INPUT = 65535
#: How deeply lists and dictionaries may nest.
MAX_DEPTH = 32
#: How many values (strings, integers, lists, dictionaries) one input may hold.
MAX_VALUES = 20000
#: The most digits of an integer or a string length.
MAX_DIGITS = 19

_DIGITS = frozenset(b"0123456789")


class BencodeError(ValueError):
    """Bytes that are not one well-formed, bounded bencoded value."""


def encode(value: Any) -> bytes:
    """
    Bencode ``value``: ``bytes``, ``str`` (as UTF-8), ``int`` (not ``bool``),
    lists or tuples, and mappings with ``str`` or ``bytes`` keys (written sorted,
    as the encoding requires).

    Raises:
        TypeError: a value of another type, or a key that is not a string.
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TypeError("bencode: nested too deeply")
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, bool):
        raise TypeError("bencode: booleans have no encoding")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, Mapping):
        keys: dict[bytes, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode("utf-8")
            if not isinstance(key, bytes):
                raise TypeError(f"bencode: dictionary key {key!r} is not a string")
            keys[key] = item
        out.append(b"d")
        for key in sorted(keys):
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(keys[key], out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"bencode: cannot encode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """
    The one value ``data`` holds.

    Raises:
        BencodeError: ``data`` is longer than L{MAX_INPUT}, malformed, holds
            trailing bytes, nests deeper than L{MAX_DEPTH} or holds more than
            L{MAX_VALUES} values.
    """
    if len(data) > MAX_INPUT:
        raise BencodeError(f"{len(data)} bytes, more than {MAX_INPUT}")
    decoder = _Decoder(bytes(data))
    value = decoder.value(0)
    if decoder.at != len(data):
        raise BencodeError(f"trailing bytes at offset {decoder.at}")
    return value


class _Decoder:
    __slots__ = ("at", "data", "values")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.values = 0

    def value(self, depth: int) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise BencodeError(f"more than {MAX_VALUES} values")
        if self.at >= len(self.data):
            raise BencodeError("truncated")
        lead = self.data[self.at]
        if lead == ord("i"):
            self.at += 1
            return self.integer(b"e", signed=True)
        if lead in _DIGITS:
            return self.string()
        if depth >= MAX_DEPTH:
            raise BencodeError(f"nested deeper than {MAX_DEPTH}")
        if lead == ord("l"):
            self.at += 1
            items: list[Any] = []
            while self.peek() != ord("e"):
                items.append(self.value(depth + 1))
            self.at += 1
            return items
        if lead == ord("d"):
            self.at += 1
            mapping: dict[str, Any] = {}
            while self.peek() != ord("e"):
                if self.peek() not in _DIGITS:
                    raise BencodeError(f"dictionary key is not a string at offset {self.at}")
                raw = self.string()
                try:
                    key = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise BencodeError(
                        f"dictionary key is not UTF-8 at offset {self.at}"
                    ) from None
                if key in mapping:
                    raise BencodeError(f"duplicate dictionary key {key[:40]!r}")
                mapping[key] = self.value(depth + 1)
            self.at += 1
            return mapping
        raise BencodeError(f"unexpected byte {lead:#04x} at offset {self.at}")

    def peek(self) -> int:
        if self.at >= len(self.data):
            raise BencodeError("truncated")
        return self.data[self.at]

    def integer(self, end: bytes, signed: bool) -> int:
        """ASCII digits up to ``end``, in canonical form; consumes ``end``."""
        stop = self.data.find(end, self.at, self.at + MAX_DIGITS + 2)
        if stop < 0:
            raise BencodeError(f"number without end or too long at offset {self.at}")
        text = self.data[self.at : stop]
        negative = signed and text.startswith(b"-")
        digits = text[1:] if negative else text
        # bytes.isdigit() is true for ASCII 0-9 only.
        if not digits or not digits.isdigit() or len(digits) > MAX_DIGITS:
            raise BencodeError(f"bad number at offset {self.at}")
        if (digits[0] == ord("0") and len(digits) > 1) or (negative and digits == b"0"):
            raise BencodeError(f"number not in canonical form at offset {self.at}")
        self.at = stop + 1
        value = int(digits)
        return -value if negative else value

    def string(self) -> bytes:
        length = self.integer(b":", signed=False)
        end = self.at + length
        if end > len(self.data):
            raise BencodeError(f"string of {length} bytes runs past the end")
        value = self.data[self.at : end]
        self.at = end
        return value
