"""
How call records and live calls are read and shown, by ``wardenctl`` and the
admin API alike: times as typed (``parse_when``) and dispositions
(``parse_disposition``) in; tables, JSON and CSV of call records and live
calls out. Neither side imports the other: both use this module.

Pure functions: the current time and the time zone are arguments (``tz=None``
means the system's local zone), so tests pin both.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO

import attrs

from warden.model import DISPOSITIONS, CallRecord, LiveCall

CSV_COLUMNS = (
    "call_id",
    "started_at",
    "answered_at",
    "ended_at",
    "caller",
    "caller_name",
    "dialled",
    "callee",
    "disposition",
    "hangup_cause",
    "hangup_side",
    "duration",
    "billsec",
    "codec",
    "node_id",
    "recording",
    "stir_attest",
    "stir_verstat",
    "emergency",
)

_RELATIVE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WHEN_FORMATS = "2026-11-25T10:00, a date like 2026-11-25, or a time ago like 30m, 1h, 7d"


def parse_when(text: str, now: float, tz: tzinfo | None = None) -> float:
    """
    A time given on the command line, as seconds since the epoch.

    Accepts ISO-8601 (``2026-11-25T10:00``, with seconds, fractions or an offset
    such as ``Z`` or ``+01:00``), a date (``2026-11-25``: its midnight), or a time
    ago: a number and one of s, m, h, d, w (``30m``, ``1h``, ``7d``). A time
    without an offset is in ``tz`` (None: the local zone).

    Raises:
        ValueError: ``text`` is none of these; the message says what is accepted.
    """
    stripped = text.strip()
    relative = _RELATIVE.match(stripped.lower())
    if relative is not None:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"expected a time like {WHEN_FORMATS}; got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
    return when.timestamp()


def parse_disposition(text: str) -> str:
    """
    A disposition as typed (``busy``, ``no-answer``, ``NO_ANSWER``), normalised.

    Raises:
        ValueError: not one of the dispositions.
    """
    value = re.sub(r"[\s_-]+", " ", text.strip().upper())
    if value not in DISPOSITIONS:
        known = ", ".join(sorted(DISPOSITIONS))
        raise ValueError(f"unknown disposition {text!r} (one of {known})")
    return value


# -- output ----------------------------------------------------------------------


def _datetime(when: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(when, UTC).astimezone(tz)


def local_time(when: float, tz: tzinfo | None = None) -> str:
    """``2026-11-25 10:00:05`` in ``tz`` (None: local)."""
    return _datetime(when, tz).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(when: float | None, tz: tzinfo | None = None) -> str:
    """ISO-8601 with milliseconds and the UTC offset of ``tz``; "" for None."""
    if when is None:
        return ""
    return _datetime(when, tz).isoformat(timespec="milliseconds")


def clock_duration(seconds: float) -> str:
    """``H:MM:SS``, rounded to the nearest second."""
    whole = int(max(0.0, seconds) + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned lines, columns two spaces apart (the last one not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows
    ]


# -- call records ----------------------------------------------------------------


def record_table(records: Iterable[CallRecord], tz: tzinfo | None = None) -> list[str]:
    """
    The ``cdr list`` table: local start time, parties, outcome, duration,
    billsec, hangup, and the call's recording (its file, "deleted" once
    retention removed it, "-" for none).
    """
    rows = [
        ("STARTED", "FROM", "NAME", "DIALLED", "TO", "DISPOSITION", "DURATION", "BILLSEC",
         "HANGUP", "RECORDING"),
    ]  # fmt: skip
    for r in records:
        rows.append(
            (
                local_time(r.started_at, tz),
                r.caller,
                r.caller_name,
                r.dialled,
                r.callee or "-",
                r.disposition,
                clock_duration(r.duration),
                clock_duration(r.billsec),
                f"{r.hangup_cause} ({r.hangup_side})",
                recording_label(r),
            )
        )
    return table(rows)


def recording_label(record: CallRecord) -> str:
    """The recording column: the file, "deleted" (retention), or "-"."""
    if record.recording:
        return record.recording
    return "deleted" if "deleted_at" in record.recording_info else "-"


def record_json(record: CallRecord) -> dict[str, Any]:
    """A record for ``--json``: every field (epoch seconds), duration and billsec."""
    return {
        **record.to_json_dict(),
        "duration": round(record.duration, 3),
        "billsec": round(record.billsec, 3),
    }


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?[0-9][0-9 .]*$")


def csv_cell(text: str) -> str:
    """
    ``text`` made safe for spreadsheets: a cell that a spreadsheet would run as a
    formula (it starts with = + - @, tab or CR, and is not a plain number such as
    ``+15551234567``) gets a leading apostrophe. Caller names and numbers come
    from outside callers, so an export must not carry formulas.
    """
    if text.startswith(_FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def csv_row(record: CallRecord, tz: tzinfo | None = None) -> list[str]:
    """One record as the cells of L{CSV_COLUMNS}."""
    return [
        csv_cell(record.call_id),
        iso_time(record.started_at, tz),
        iso_time(record.answered_at, tz),
        iso_time(record.ended_at, tz),
        csv_cell(record.caller),
        csv_cell(record.caller_name),
        csv_cell(record.dialled),
        csv_cell(record.callee),
        record.disposition,
        csv_cell(record.hangup_cause),
        record.hangup_side,
        _seconds(record.duration),
        _seconds(record.billsec),
        csv_cell(record.codec),
        csv_cell(record.node_id),
        csv_cell(record.recording),
        record.stir_attest,
        record.stir_verstat,
        "true" if record.emergency else "false",
    ]


class CsvWriter:
    """RFC 4180 CSV (CRLF line ends, quoting as needed) of call records, header first."""

    def __init__(self, out: TextIO, tz: tzinfo | None = None) -> None:
        self._writer = csv.writer(out, lineterminator="\r\n")
        self._tz = tz
        self._writer.writerow(CSV_COLUMNS)

    def write(self, records: Iterable[CallRecord]) -> int:
        """Write ``records``; return how many."""
        count = 0
        for record in records:
            self._writer.writerow(csv_row(record, self._tz))
            count += 1
        return count


# -- live calls ------------------------------------------------------------------


def live_table(calls: Iterable[LiveCall], now: float) -> list[str]:
    """
    The ``calls`` table: from, to, state, duration so far, codec, media per leg
    (caller/callee: ``srtp`` encrypted, ``rtp`` plain), signalling per leg
    (``tls`` encrypted, ``udp``/``tcp`` plain), whether it is being recorded
    (``REC``), packets, node.
    """
    rows = [
        ("FROM", "TO", "STATE", "DURATION", "CODEC", "SIGNALLING", "MEDIA", "REC", "PACKETS",
         "NODE")
    ]  # fmt: skip
    for c in calls:
        rows.append(
            (
                c.caller,
                c.callee or c.dialled,
                c.state,
                clock_duration(now - c.started_at),
                c.codec or "-",
                f"{c.caller_signalling or '-'}/{c.callee_signalling or '-'}",
                f"{c.caller_media or '-'}/{c.callee_media or '-'}",
                "yes" if c.recording else "-",
                str(c.packets),
                c.node_id or "-",
            )
        )
    return table(rows)


def live_json(call: LiveCall, now: float) -> dict[str, Any]:
    """A live call for ``--json``: every field and its duration so far."""
    return {**attrs.asdict(call), "duration": round(max(0.0, now - call.started_at), 3)}
