"""
SIPp's trace files: ``-trace_stat`` (cumulative counters), ``-trace_rtt``
(response times) and ``-trace_err`` (unexpected messages), as SIPp 3.6 writes
them into its working directory (``<scenario>_<pid>_.csv``, ``_rtt.csv``,
``_errors.log``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple


class SippStats(NamedTuple):
    """Cumulative counters from the last row of SIPp's ``-trace_stat`` file."""

    created: int
    successful: int
    failed: int
    retransmissions: int
    row: dict[str, str]


def _one_file(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {pattern} in {directory}")
    return found[-1]


def read_sipp_stats(directory: Path) -> SippStats:
    """The final statistics SIPp wrote in ``directory`` (``*_.csv``)."""
    path = _one_file(directory, "*_[0-9]*_.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    row = dict(zip(header, last))

    def number(name: str) -> int:
        return int(row.get(name, "0") or 0)

    return SippStats(
        created=number("TotalCallCreated"),
        successful=number("SuccessfulCall(C)"),
        failed=number("FailedCall(C)"),
        retransmissions=number("Retransmissions(C)"),
        row=row,
    )


def read_sipp_rtts(directory: Path) -> list[float]:
    """Every response time (ms) SIPp recorded with ``-trace_rtt`` in ``directory``."""
    try:
        path = _one_file(directory, "*_rtt.csv")
    except FileNotFoundError:
        return []
    out: list[float] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(";")
            if len(parts) >= 2:
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue  # the header line
    return out


def read_sipp_errors(directory: Path, limit: int = 4000) -> str:
    """The start of SIPp's ``-trace_err`` file, if any."""
    try:
        path = _one_file(directory, "*_errors.log")
    except FileNotFoundError:
        return ""
    return path.read_text(encoding="utf-8", errors="replace")[:limit]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of non-empty ``values``."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def read_sipp_messages(directory: Path) -> str:
    """SIPp's message trace (``-trace_msg``) in ``directory``; "" before it is written."""
    return "".join(p.read_text(errors="replace") for p in directory.glob("*_messages.log"))
