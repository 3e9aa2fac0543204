"""Percentiles and the ITU-T G.107 E-model against known values."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.stats import (
    G711_PLC_BPL,
    EModelInputs,
    call_quality,
    effective_equipment_impairment,
    mos_from_r,
    percentile,
    r_factor,
    summarize,
)


class PercentileTests(SynchronousTestCase):
    """Linear interpolation between closest ranks (numpy's default)."""

    def test_known_values(self) -> None:
        """Values worked by hand: h = (n - 1) p / 100 between neighbours."""
        self.assertEqual(percentile([1, 2, 3, 4], 50), 2.5)
        self.assertAlmostEqual(percentile([1, 2, 3, 4], 95), 3.85)  # type: ignore[arg-type]
        self.assertEqual(percentile([15, 20, 35, 40, 50], 40), 29.0)
        self.assertEqual(percentile([4, 1, 3, 2], 0), 1)
        self.assertEqual(percentile([4, 1, 3, 2], 100), 4)
        self.assertEqual(percentile([7.0], 99), 7.0)

    def test_order_does_not_matter(self) -> None:
        """Unsorted input gives the same answer."""
        self.assertEqual(percentile([3, 1, 4, 2], 50), percentile([1, 2, 3, 4], 50))

    def test_empty(self) -> None:
        """No values: None."""
        self.assertIsNone(percentile([], 50))

    def test_out_of_range(self) -> None:
        """A percentile outside 0-100 is refused."""
        self.assertRaises(ValueError, percentile, [1.0], 101)
        self.assertRaises(ValueError, percentile, [1.0], -1)

    def test_summary(self) -> None:
        """Count, mean, min, max and the four percentiles of 1..100."""
        s = summarize([float(i) for i in range(1, 101)])
        self.assertEqual((s.count, s.mean, s.min, s.max), (100, 50.5, 1.0, 100.0))
        self.assertAlmostEqual(s.p50, 50.5)  # type: ignore[arg-type]
        self.assertAlmostEqual(s.p90, 90.1)  # type: ignore[arg-type]
        self.assertAlmostEqual(s.p95, 95.05)  # type: ignore[arg-type]
        self.assertAlmostEqual(s.p99, 99.01)  # type: ignore[arg-type]
        self.assertEqual(summarize([]).count, 0)
        self.assertIsNone(summarize([]).p95)


class EModelTests(SynchronousTestCase):
    """G.107 (06/2015) values."""

    def test_default_rating(self) -> None:
        """With every Table 3 default, R = 93.2 (G.107 §7.7)."""
        self.assertLess(abs(r_factor(EModelInputs()) - 93.2), 0.05)

    def test_mos_mapping(self) -> None:
        """Annex B: MOS = 1 + 0.035R + R(R-60)(100-R)7e-6, clamped to 1 and 4.5."""
        self.assertEqual(mos_from_r(-5), 1.0)
        self.assertEqual(mos_from_r(0), 1.0)
        self.assertEqual(mos_from_r(100), 4.5)
        self.assertEqual(mos_from_r(120), 4.5)
        self.assertAlmostEqual(mos_from_r(50), 2.575)
        self.assertAlmostEqual(mos_from_r(60), 3.1)
        self.assertAlmostEqual(mos_from_r(93.2), 4.409, places=3)

    def test_packet_loss(self) -> None:
        """Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl): 2% random loss, Bpl 4.3."""
        self.assertAlmostEqual(effective_equipment_impairment(0, 2, 4.3, 1), 190 / 6.3)
        with_loss = r_factor(EModelInputs(ppl=2, bpl=4.3))
        self.assertAlmostEqual(r_factor(EModelInputs()) - with_loss, 190 / 6.3)

    def test_absolute_delay(self) -> None:
        """Idd at Ta = 200 ms: X = 1, Idd = 25((2)^(1/6) - 3(1 + 3^-6)^(1/6) + 2) = 3.044."""
        idd = r_factor(EModelInputs()) - r_factor(EModelInputs(ta=200))
        self.assertAlmostEqual(idd, 3.0444, places=4)
        self.assertAlmostEqual(r_factor(EModelInputs(ta=100)), r_factor(EModelInputs()))

    def test_call_quality(self) -> None:
        """A perfect G.711 call scores 93.2 / 4.41; loss and delay lower it monotonically."""
        r, mos = call_quality(0.0, 0.0)
        self.assertLess(abs(r - 93.2), 0.05)
        self.assertLess(abs(mos - 4.41), 0.01)
        r_loss, _ = call_quality(0.01, 0.0)
        self.assertAlmostEqual(r - r_loss, 95 * 1 / (1 + G711_PLC_BPL))
        previous = r
        for delay in (50, 150, 250, 400):
            current, _ = call_quality(0.0, delay)
            self.assertLess(current, previous)
            previous = current
        self.assertEqual(call_quality(1.0, 0.0), call_quality(2.0, 0.0))
