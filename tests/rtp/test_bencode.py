"""Tests for L{warden.rtp.bencode}: round trips, canonical encoding, strict bounded decoding."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.rtp import bencode
from warden.rtp.bencode import BencodeError, decode, encode


class EncodeTests(SynchronousTestCase):
    """What Warden sends."""

    def test_kinds(self) -> None:
        """Strings, integers, lists and dictionaries (keys sorted)."""
        self.assertEqual(encode(b"spam"), b"4:spam")
        self.assertEqual(encode("é"), b"2:\xc3\xa9")
        self.assertEqual(encode(-42), b"i-42e")
        self.assertEqual(encode(0), b"i0e")
        self.assertEqual(encode(["a", 1, []]), b"l1:ai1elee")
        self.assertEqual(
            encode({"sdp": b"v=0", "command": "offer", b"flags": ("trust-address",)}),
            b"d7:command5:offer5:flagsl13:trust-addresse3:sdp3:v=0e",
        )

    def test_refused(self) -> None:
        """Other types, booleans and non-string keys are TypeErrors."""
        for value in (1.5, None, True, {1: b"x"}, object()):
            self.assertRaises(TypeError, encode, value)
        deep: list[object] = []
        for _ in range(bencode.MAX_DEPTH + 2):
            deep = [deep]
        self.assertRaises(TypeError, encode, deep)

    def test_round_trip(self) -> None:
        """decode(encode(x)) gives x back, keys as str and strings as bytes."""
        value = {"result": b"ok", "tags": {"a": {"packets": 12, "list": [b"", -1]}}}
        self.assertEqual(decode(encode(value)), value)


class DecodeTests(SynchronousTestCase):
    """What comes back from the network."""

    def test_reply(self) -> None:
        """A real rtpengine reply decodes; dictionary order is not enforced."""
        self.assertEqual(decode(b"d6:result2:ok3:sdp3:v=0e"), {"result": b"ok", "sdp": b"v=0"})

    def test_malformed(self) -> None:
        """Everything not one canonical value is a BencodeError, never another exception."""
        bad = [
            b"", b"i", b"ie", b"i-e", b"i-0e", b"i03e", b"i+3e", b"i3", b"i 3e", b"i3.0e",
            b"i\xd9\xa3e", b"5:abc", b"01:a", b"-1:a", b"1a", b"l", b"d", b"d1:ae",
            b"di1ei2ee", b"d1:a1:b1:a1:ce", b"x", b"4:spamX", b"le1:a", b"d2:\xff\xfei1ee",
            b"i" + b"9" * 40 + b"e", b"9" * 40 + b":", b"\x00",
        ]  # fmt: skip
        for data in bad:
            self.assertRaises(BencodeError, decode, data)

    def test_bounds(self) -> None:
        """Depth, value count and input size are bounded."""
        deep = b"l" * (bencode.MAX_DEPTH + 1) + b"e" * (bencode.MAX_DEPTH + 1)
        self.assertRaises(BencodeError, decode, deep)
        ok = b"l" * bencode.MAX_DEPTH + b"e" * bencode.MAX_DEPTH
        self.assertIsInstance(decode(ok), list)
        many = b"l" + b"i1e" * bencode.MAX_VALUES + b"e"
        self.assertRaises(BencodeError, decode, many)
        self.assertRaises(BencodeError, decode, b"0:" + b" " * bencode.MAX_INPUT)

    def test_string_with_colons_and_binary(self) -> None:
        """A string's bytes are taken by length, whatever they hold."""
        self.assertEqual(decode(b"5:a:b\x00e"), b"a:b\x00e")
