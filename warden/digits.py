"""
ASCII-only number parsing for text that comes from outside (SIP and SDP
messages, admin API queries, dialplan rules, command lines, state URLs).

Python's ``str.isdigit()`` and ``str.isdecimal()`` accept any Unicode digit
(``'²'``, ``'٣'``), ``int()`` accepts Unicode decimal digits, surrounding
whitespace, a sign and underscores, and refuses more than 4,300 digits with a
``ValueError``. None of that is what a protocol means by a number: RFC 3261
§25.1 (``DIGIT``), RFC 4566 §9 and RFC 5234 §B.1 all mean the ASCII octets
``0``-``9``. Every number Warden reads from outside goes through this module,
so the rule lives in one place: ASCII ``0``-``9`` only (``isascii()`` and
``isdigit()`` together accept exactly those), a bounded length and a bounded
value; anything else is "not a number" for the caller to answer.
"""

from __future__ import annotations

import re

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: How many digits each ``maximum`` given to L{parse_uint} has (the callers
#: pass a few constants; at most 64 are kept).
_WIDTHS: dict[int, int] = {}


def is_digits(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits ``0``-``9`` and nothing else."""
    # The only ASCII characters isdigit() accepts are 0-9.
    return text.isascii() and text.isdigit()


def parse_uint(text: str, maximum: int, max_digits: int | None = None) -> int | None:
    """
    The value of ``text`` when it is ASCII digits only, at most ``max_digits``
    long (by default as many as ``maximum`` has) and at most ``maximum``;
    otherwise None. No sign, space, underscore or non-ASCII digit is accepted.
    """
    if max_digits is None:
        limit = _WIDTHS.get(maximum)
        if limit is None:
            limit = len(str(maximum))
            if len(_WIDTHS) < 64:
                _WIDTHS[maximum] = limit
    else:
        limit = max_digits
    if len(text) > limit or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


def parse_decimal(text: str, maximum: float, max_chars: int = 32) -> float | None:
    """
    The value of ``text`` when it is ASCII digits with an optional ``.`` and
    fraction digits (``20``, ``0.5``), at most ``max_chars`` long and at most
    ``maximum``; otherwise None. No sign, exponent, ``inf``, ``nan``,
    underscore or non-ASCII digit is accepted, all of which ``float()`` takes.
    """
    if len(text) > max_chars or _DECIMAL.fullmatch(text) is None:
        return None
    value = float(text)
    return value if value <= maximum else None
