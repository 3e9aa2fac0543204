"""The mergeable histogram: bucket layout, merging, percentiles within the documented error."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.histogram import (
    MAX_INDEX,
    MAX_UNITS,
    SIGNIFICANT_BITS,
    Histogram,
    bucket_bounds,
    bucket_index,
)
from warden.ops.loadtest.stats import PERCENTILES, percentile, summarize

#: The documented bound: a percentile is within 2**-SIGNIFICANT_BITS of its value plus half a unit.
RELATIVE = 2.0**-SIGNIFICANT_BITS


def within_bound(testcase: SynchronousTestCase, got: float, exact: float, scale: float) -> None:
    """``got`` is within the documented error of ``exact``."""
    bound = abs(exact) * RELATIVE + 0.5 / scale + 1e-12
    testcase.assertLessEqual(abs(got - exact), bound, f"{got} vs {exact} (bound {bound})")


class LayoutTests(SynchronousTestCase):
    """Buckets: exact below 2**bits, then at most 1/2**(bits-1) of their value wide."""

    def test_every_value_in_its_bucket(self) -> None:
        """Each integer lies within the bounds of its bucket; indexes never go back."""
        previous = -1
        rng = random.Random(1)
        for units in [*range(0, 5000), *(rng.randrange(MAX_UNITS) for _ in range(5000))]:
            index = bucket_index(units)
            low, high = bucket_bounds(index)
            self.assertTrue(low <= units < high, (units, index, low, high))
            if units < 5000:
                self.assertGreaterEqual(index, previous)
                previous = index
            self.assertLessEqual((high - low - 1) / 2, units * RELATIVE)
        self.assertEqual(bucket_index(MAX_UNITS), MAX_INDEX)

    def test_small_values_exact(self) -> None:
        """Below 2**bits units, every unit has its own bucket."""
        for units in range(2**SIGNIFICANT_BITS):
            self.assertEqual(bucket_bounds(bucket_index(units)), (units, units + 1))


class MergeTests(SynchronousTestCase):
    """Merged histograms give the percentiles of all the samples together."""

    def test_merged_percentiles_equal_concatenated_samples(self) -> None:
        """
        Samples split unevenly over three histograms (as three workers would):
        the merged percentiles equal those of the concatenated samples within the
        documented error; count, mean, min and max are exact.
        """
        rng = random.Random(7)
        parts = [
            [rng.lognormvariate(-5, 1.2) for _ in range(3000)],
            [rng.expovariate(200) for _ in range(700)],
            [rng.uniform(0.0001, 2.5) for _ in range(41)],
        ]
        merged = Histogram()
        for samples in parts:
            h = Histogram()
            h.extend(samples)
            merged.merge(h)
        everything = [x for samples in parts for x in samples]
        exact = summarize(everything)
        got = merged.summary()
        self.assertEqual(got.count, len(everything))
        self.assertEqual((got.min, got.max), (exact.min, exact.max))
        self.assertAlmostEqual(got.mean, exact.mean, places=9)  # type: ignore[arg-type]
        for p in (*PERCENTILES, 0, 1, 25, 75, 99.9, 100):
            within_bound(self, merged.percentile(p), percentile(everything, p), 1e6)  # type: ignore[arg-type]

    def test_merge_is_order_independent(self) -> None:
        """a+b and b+a have the same buckets and summary."""
        a, b = Histogram(), Histogram()
        a.extend([0.001, 0.002, 0.5])
        b.extend([0.003, 7.0])
        ab, ba = Histogram(), Histogram()
        ab.merge(a), ab.merge(b), ba.merge(b), ba.merge(a)
        self.assertEqual(ab.as_dict(), ba.as_dict())

    def test_not_averaged(self) -> None:
        """
        Two workers, one fast and one slow: the merged p95 is the slow one's range,
        which an average of the two p95s (about halfway) would miss.
        """
        fast, slow = Histogram(), Histogram()
        fast.extend([0.001] * 900)
        slow.extend([1.0] * 100)
        merged = Histogram()
        merged.merge(fast)
        merged.merge(slow)
        within_bound(self, merged.percentile(95), 1.0, 1e6)
        within_bound(self, merged.percentile(50), 0.001, 1e6)

    def test_scales_must_match(self) -> None:
        """A histogram of another unit is not merged silently."""
        self.assertRaises(ValueError, Histogram(1e6).merge, Histogram(1e3))

    def test_empty(self) -> None:
        """No samples: count 0 and no percentiles."""
        h = Histogram()
        self.assertEqual(h.summary().count, 0)
        self.assertIsNone(h.percentile(95))
        self.assertRaises(ValueError, h.percentile, 101)


class SerialisationTests(SynchronousTestCase):
    """as_dict / from_dict round trip, and hostile input refused with the field named."""

    def test_round_trip(self) -> None:
        """A histogram read back equals the one written."""
        h = Histogram(1e3)
        h.extend([0.5, 3.25, 1000.0, 1e9])
        again = Histogram.from_dict(h.as_dict(), "x")
        self.assertEqual(again.as_dict(), h.as_dict())

    def test_hostile(self) -> None:
        """Every kind of malformed histogram is refused with its field in the message."""
        good = Histogram()
        good.extend([0.1, 0.2])
        cases = {
            "x: expected an object": [],
            "x.scale": {**good.as_dict(), "scale": "1e6"},
            "x.significant_bits": {**good.as_dict(), "significant_bits": 4},
            "x.buckets: expected a list": {**good.as_dict(), "buckets": {}},
            "x.buckets[1]": {**good.as_dict(), "buckets": [[5, 1], [5, 1]]},
            "x.buckets[0]": {**good.as_dict(), "buckets": [[MAX_INDEX + 1, 2]]},
            "x.count": {**good.as_dict(), "count": 3},
            "x.min": {**good.as_dict(), "min": None},
        }
        for fragment, data in cases.items():
            error = self.assertRaises(ValueError, Histogram.from_dict, data, "x")
            self.assertIn(fragment, str(error))
        bad = {**good.as_dict(), "buckets": [[1, True]]}
        self.assertRaises(ValueError, Histogram.from_dict, bad, "x")
