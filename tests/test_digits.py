"""
warden.digits: numbers from outside are ASCII digits only, bounded in length
and value.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.digits import is_digits, parse_decimal, parse_uint


class ParseUintTests(SynchronousTestCase):
    """parse_uint accepts exactly ``[0-9]+`` within its bounds."""

    def test_ascii_digits(self) -> None:
        """Plain ASCII numbers up to the maximum are read."""
        self.assertEqual(parse_uint("0", 65535), 0)
        self.assertEqual(parse_uint("5060", 65535), 5060)
        self.assertEqual(parse_uint("65535", 65535), 65535)
        self.assertEqual(parse_uint("00070", 255, max_digits=10), 70)

    def test_unicode_digits(self) -> None:
        """Digits Python's isdigit()/isdecimal()/int() accept but ASCII does not are refused."""
        for text in ("\u00b2", "\u0663", "\u0667\u0660", "\uff15\uff10\uff16\uff10", "\U0001d7d9"):
            self.assertIsNone(parse_uint(text, 2**32), repr(text))

    def test_what_int_accepts(self) -> None:
        """Sign, spaces, underscores and empty text are not numbers."""
        for text in ("", "+1", "-1", " 1", "1 ", "1_000", "0x10", "1.0", "1e3"):
            self.assertIsNone(parse_uint(text, 2**32), repr(text))

    def test_bounds(self) -> None:
        """Too large a value or too many digits is refused, before int() sees it."""
        self.assertIsNone(parse_uint("65536", 65535))
        self.assertIsNone(parse_uint("000001", 65535))
        self.assertIsNone(parse_uint("9" * 5000, 2**32 - 1, max_digits=10))


class IsDigitsTests(SynchronousTestCase):
    """is_digits is true for ASCII digits only."""

    def test_is_digits(self) -> None:
        """``0``-``9`` only; superscripts and other scripts' digits are not digits."""
        self.assertTrue(is_digits("0123456789"))
        for text in ("", "\u00b2", "\u0661", "1\n"):
            self.assertFalse(is_digits(text), repr(text))


class ParseDecimalTests(SynchronousTestCase):
    """parse_decimal accepts ASCII digits with an optional fraction, nothing float() adds."""

    def test_parse_decimal(self) -> None:
        """Plain decimals are read; signs, exponents, nan, inf and Unicode digits are not."""
        self.assertEqual(parse_decimal("20", 100.0), 20.0)
        self.assertEqual(parse_decimal("0.5", 100.0), 0.5)
        for text in ("", ".5", "5.", "-1", "+1", "1e3", "nan", "inf", "1_0", "\u0665", " 5"):
            self.assertIsNone(parse_decimal(text, 1e12), repr(text))
        self.assertIsNone(parse_decimal("101", 100.0))
        self.assertIsNone(parse_decimal("1" * 40, 1e100))
