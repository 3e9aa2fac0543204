"""
The arguments of ``wardenctl cdr`` and ``wardenctl calls`` (times, dispositions,
limits, extensions) as argparse types; what they print is L{warden.present}.
"""

from __future__ import annotations

import argparse

from warden.digits import parse_uint
from warden.present import WHEN_FORMATS, parse_disposition


def disposition_arg(text: str) -> str:
    """argparse type of ``--disposition`` (see L{parse_disposition})."""
    try:
        return parse_disposition(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def limit_arg(text: str) -> int:
    """argparse type of ``--limit``: a whole number >= 1."""
    value = parse_uint(text, 2**31 - 1) or 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"the limit must be a whole number >= 1, got {text!r}")
    return value


def extension_arg(text: str) -> str:
    """argparse type of ``--extension``: any non-empty number (external ones too)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the extension or number must not be empty")
    return text.strip()


def filter_arguments() -> argparse.ArgumentParser:
    """The filters shared by ``cdr list`` and ``cdr export``."""
    filters = argparse.ArgumentParser(add_help=False)
    when = f"WHEN: ISO-8601 like {WHEN_FORMATS}"
    filters.add_argument("--since", metavar="WHEN", help=f"calls started at or after {when}")
    filters.add_argument("--until", metavar="WHEN", help="calls started before WHEN")
    filters.add_argument(
        "--extension", metavar="N", type=extension_arg, help="calls from, to or dialling N"
    )
    filters.add_argument(
        "--disposition",
        metavar="D",
        type=disposition_arg,
        help="ANSWERED, BUSY, NO-ANSWER, FAILED or CANCELLED",
    )
    return filters
