"""
A mergeable latency histogram: exact counts in fixed log-linear buckets, so the
reports of several generator processes (or machines) merge into the histogram of
all their samples, and percentiles come from the merged counts, never from
averaging percentiles (ADR 0030).

Layout (HDR-like): a value is first scaled to a non-negative integer ``u``
(``scale`` units per value: microseconds for timers in seconds). Below
``2 ** SIGNIFICANT_BITS`` every integer has its own bucket; above, a bucket holds
the values sharing the top ``SIGNIFICANT_BITS`` bits, so its width is at most
``1 / 2 ** (SIGNIFICANT_BITS - 1)`` of its lower bound. The index of a bucket
depends only on the value, so two histograms merge by adding counts index by
index.

Percentiles use the same definition as L{warden.ops.loadtest.stats.percentile}
(linear interpolation between the closest ranks), with each ranked sample
replaced by the middle of its bucket (clamped to the exact min and max). The
error of a percentile is therefore at most ``2 ** -SIGNIFICANT_BITS`` of the
value (0.39% with 8 bits) plus half a unit (0.5 us for timers); count, sum
(so the mean), min and max are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from .stats import Summary

#: Bits of each value kept: buckets are at most 1/128 of their value wide.
SIGNIFICANT_BITS = 8
_EXACT = 1 << SIGNIFICANT_BITS
_HALF = _EXACT >> 1
#: Largest scaled value recorded (larger ones go into the last bucket; min/max stay exact).
MAX_UNITS = (1 << 62) - 1
#: Highest bucket index a valid histogram can hold.
MAX_INDEX = _EXACT + (MAX_UNITS.bit_length() - SIGNIFICANT_BITS) * _HALF - 1


def bucket_index(units: int) -> int:
    """The bucket of the non-negative integer ``units``."""
    if units < _EXACT:
        return units
    shift = units.bit_length() - SIGNIFICANT_BITS
    return _EXACT + (shift - 1) * _HALF + ((units >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The integers ``[low, high)`` bucket ``index`` holds."""
    if index < _EXACT:
        return index, index + 1
    shift = (index - _EXACT) // _HALF + 1
    mantissa = (index - _EXACT) % _HALF + _HALF
    return mantissa << shift, (mantissa + 1) << shift


class Histogram:
    """
    Counts of values in log-linear buckets, with the exact count, sum, min and max.

    Args:
        scale: integer units per value (1e6: values in seconds kept to the microsecond).
    """

    def __init__(self, scale: float = 1e6) -> None:
        self.scale = scale
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min: float | None = None
        self.max: float | None = None

    def record(self, value: float) -> None:
        """Add one sample (NaN and infinities are ignored; negatives count as 0 units)."""
        if not math.isfinite(value):
            return
        # bucket_index(), written out: this runs several times per operation.
        units = round(value * self.scale)
        if units < _EXACT:
            index = units if units > 0 else 0
        else:
            if units > MAX_UNITS:
                units = MAX_UNITS
            shift = units.bit_length() - SIGNIFICANT_BITS
            index = _EXACT + (shift - 1) * _HALF + ((units >> shift) - _HALF)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        self.total += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value

    def extend(self, values: Iterable[float]) -> None:
        """Add every value of ``values``."""
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s samples (same scale) to this one."""
        if other.scale != self.scale:
            raise ValueError(f"cannot merge a histogram of scale {other.scale} into {self.scale}")
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        for value in (other.min, other.max):
            if value is not None:
                self.min = value if self.min is None else min(self.min, value)
                self.max = value if self.max is None else max(self.max, value)

    def _ranked(self) -> Iterator[tuple[int, int]]:
        """(bucket index, cumulative count up to and including it), ascending."""
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            yield index, seen

    def _value_at(self, index: int) -> float:
        low, high = bucket_bounds(index)
        middle = (low + high - 1) / 2 / self.scale
        assert self.min is not None and self.max is not None
        return min(self.max, max(self.min, middle))

    def percentiles(self, ps: Iterable[float]) -> list[float | None]:
        """The ``p``-th percentiles (0-100), in one pass; None each when empty."""
        wanted = list(ps)
        for p in wanted:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile must be within 0-100, not {p}")
        if not self.count:
            return [None] * len(wanted)
        ranks: set[int] = set()
        for p in wanted:
            position = (self.count - 1) * p / 100.0
            ranks.update((math.floor(position), min(math.floor(position) + 1, self.count - 1)))
        values: dict[int, float] = {}
        pending = sorted(ranks)
        for index, cumulative in self._ranked():
            while pending and pending[0] < cumulative:
                values[pending.pop(0)] = self._value_at(index)
            if not pending:
                break
        out: list[float | None] = []
        for p in wanted:
            position = (self.count - 1) * p / 100.0
            low = math.floor(position)
            high = min(low + 1, self.count - 1)
            out.append(values[low] + (values[high] - values[low]) * (position - low))
        return out

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0-100); None when empty."""
        return self.percentiles([p])[0]

    def summary(self) -> Summary:
        """Count, mean, p50/p90/p95/p99, min, max (the mean, min and max exact)."""
        if not self.count:
            return Summary(0, None, None, None, None, None, None, None)
        p50, p90, p95, p99 = self.percentiles((50, 90, 95, 99))
        return Summary(self.count, self.total / self.count, p50, p90, p95, p99, self.min, self.max)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``buckets`` is a list of ``[index, count]``, ascending by index."""
        return {
            "scale": self.scale,
            "significant_bits": SIGNIFICANT_BITS,
            "count": self.count,
            "sum": self.total,
            "min": self.min,
            "max": self.max,
            "buckets": [[index, self.counts[index]] for index in sorted(self.counts)],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Histogram:
        """
        A histogram from L{as_dict}'s form, checked as untrusted input.

        Raises:
            ValueError: naming ``where`` and the field that is wrong.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object")
        scale: Any = data.get("scale")
        if not _number(scale) or not 0 < scale <= 1e9:
            raise ValueError(f"{where}.scale: expected a number within (0, 1e9]")
        if data.get("significant_bits") != SIGNIFICANT_BITS:
            raise ValueError(f"{where}.significant_bits: expected {SIGNIFICANT_BITS}")
        made = cls(float(scale))
        buckets = data.get("buckets")
        if not isinstance(buckets, list) or len(buckets) > MAX_INDEX + 1:
            raise ValueError(f"{where}.buckets: expected a list of at most {MAX_INDEX + 1}")
        previous = -1
        for i, pair in enumerate(buckets):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(_integer(x) for x in pair)
                or not previous < pair[0] <= MAX_INDEX
                or not 0 < pair[1] <= 2**53
            ):
                raise ValueError(
                    f"{where}.buckets[{i}]: expected [index, count], indexes ascending "
                    f"within 0..{MAX_INDEX}, counts positive"
                )
            previous = pair[0]
            made.counts[pair[0]] = pair[1]
        made.count = sum(made.counts.values())
        if data.get("count") != made.count:
            raise ValueError(f"{where}.count: does not equal the sum of the bucket counts")
        for name in ("sum", "min", "max"):
            value = data.get(name)
            if made.count and not _number(value):
                raise ValueError(f"{where}.{name}: expected a number")
            if not made.count and value not in (None, 0, 0.0):
                raise ValueError(f"{where}.{name}: expected null for an empty histogram")
        if made.count:
            made.total, made.min, made.max = (float(data[k]) for k in ("sum", "min", "max"))
            if made.min > made.max:
                raise ValueError(f"{where}.min: greater than max")
        return made


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
