"""
Statistics of a load test: percentiles of timers, and the ITU-T G.107 E-model
(06/2015) that turns packet loss and one-way delay into a transmission rating R
and an estimated MOS.

Percentiles interpolate linearly between the two nearest ranks (Hyndman and Fan's
definition 7, the default of numpy and of most spreadsheets): for sorted values
x[0..n-1], the p-th percentile is at position h = (n - 1) * p / 100, between
x[floor(h)] and x[ceil(h)].

The E-model uses the default values of G.107 Table 3 for everything a load test
does not measure (loudness ratings, sidetone, noise, echo loss), so with no delay
and no loss it gives the standard R = 93.2. The load test measures the mean
one-way delay Ta; it takes the echo path delays as T = Ta and Tr = 2 Ta, the loss
as random (BurstR = 1), and G.711 with packet loss concealment (Ie = 0,
Bpl = 25.1, ITU-T G.113 Appendix I).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

#: The percentiles every timer reports.
PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """
    The ``p``-th percentile (0-100) of ``values`` by linear interpolation between
    closest ranks; None for no values.

    Raises:
        ValueError: ``p`` outside 0-100.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0-100, not {p}")
    if not values:
        return None
    ordered = sorted(values)
    return _interpolate(ordered, p)


def _interpolate(ordered: Sequence[float], p: float) -> float:
    position = (len(ordered) - 1) * p / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@attrs.frozen
class Summary:
    """Count, mean and percentiles (p50, p90, p95, p99, max) of one timer, in seconds."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready, in seconds (field names as above)."""
        return attrs.asdict(self)

    def as_ms_dict(self) -> dict[str, float | int | None]:
        """JSON-ready, in milliseconds with the unit in each name: ``count``, ``p95_ms``..."""
        out: dict[str, float | int | None] = {"count": self.count}
        for name in ("mean", "p50", "p90", "p95", "p99", "min", "max"):
            out[f"{name}_ms"] = to_ms(getattr(self, name))
        return out


def to_ms(seconds: float | None) -> float | None:
    """``seconds`` as milliseconds rounded to microseconds (None stays None)."""
    return round(seconds * 1000.0, 3) if seconds is not None else None


def summarize(values: Sequence[float]) -> Summary:
    """The L{Summary} of ``values`` (all None but the count when there are none)."""
    if not values:
        return Summary(0, None, None, None, None, None, None, None)
    ordered = sorted(values)
    p50, p90, p95, p99 = (_interpolate(ordered, p) for p in PERCENTILES)
    return Summary(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        min=ordered[0],
        max=ordered[-1],
    )


# -- ITU-T G.107 E-model ----------------------------------------------------------


@attrs.frozen
class EModelInputs:
    """
    The E-model parameters (G.107 Table 3 defaults). Delays in milliseconds,
    ratings in dB, ``ppl`` in percent.
    """

    slr: float = 8.0
    rlr: float = 2.0
    stmr: float = 15.0
    lstr: float = 18.0
    ds: float = 3.0
    dr: float = 3.0
    telr: float = 65.0
    wepl: float = 110.0
    t: float = 0.0
    tr: float = 0.0
    ta: float = 0.0
    qdu: float = 1.0
    ie: float = 0.0
    bpl: float = 1.0
    ppl: float = 0.0
    burst_r: float = 1.0
    nc: float = -70.0
    nfor: float = -64.0
    ps: float = 35.0
    pr: float = 35.0
    a: float = 0.0


def _noise(x: EModelInputs) -> float:
    """No, the total noise power (G.107 §7.2, formulas 7-3 to 7-7)."""
    olr = x.slr + x.rlr
    nos = x.ps - x.slr - x.ds - 100 + 0.004 * (x.ps - olr - x.ds - 14) ** 2
    pre = x.pr + 10 * math.log10(1 + 10 ** ((10 - x.lstr) / 10))
    nor = x.rlr - 121 + pre + 0.008 * (pre - 35) ** 2
    nfo = x.nfor + x.rlr
    return 10 * math.log10(
        10 ** (x.nc / 10) + 10 ** (nos / 10) + 10 ** (nor / 10) + 10 ** (nfo / 10)
    )


def _sidetone(x: EModelInputs) -> float:
    """Ist, the sidetone impairment (G.107 formulas 7-10, 7-11)."""
    stmro = -10 * math.log10(10 ** (-x.stmr / 10) + math.exp(-x.t / 4) * 10 ** (-x.telr / 10))
    return float(
        12 * (1 + ((stmro - 13) / 6) ** 8) ** (1 / 8)
        - 28 * (1 + ((stmro + 1) / 19.4) ** 35) ** (1 / 35)
        - 13 * (1 + ((stmro - 3) / 33) ** 13) ** (1 / 13)
        + 29
    )


def _simultaneous(x: EModelInputs, r0: float, no: float) -> float:
    """Is = Iolr + Ist + Iq (G.107 §7.3)."""
    olr = x.slr + x.rlr
    xolr = olr + 0.2 * (64 + no - x.rlr)
    iolr = 20 * ((1 + (xolr / 8) ** 8) ** (1 / 8) - xolr / 8)
    ist = _sidetone(x)
    q = 37 - 15 * math.log10(x.qdu)
    g = 1.07 + 0.258 * q + 0.0602 * q**2
    y = (r0 - 100) / 15 + 46 / 8.4 - g / 9
    z = 46 / 30 - g / 40
    iq = 15 * math.log10(1 + 10**y + 10**z)
    return float(iolr + ist + iq)


def _delay(x: EModelInputs, r0: float, no: float) -> float:
    """Id = Idte + Idle + Idd (G.107 §7.4)."""
    roe = -1.5 * (no - x.rlr)
    terv = x.telr - 40 * math.log10((1 + x.t / 10) / (1 + x.t / 150)) + 6 * math.exp(-0.3 * x.t**2)
    if x.stmr < 9:  # with little sidetone, TERV becomes TERVs = TERV + Ist / 2
        terv += _sidetone(x) / 2
    re = 80 + 2.5 * (terv - 14)
    idte = ((roe - re) / 2 + math.sqrt((roe - re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-x.t))
    rle = 10.5 * (x.wepl + 7) * (x.tr + 1) ** -0.25
    idle = (r0 - rle) / 2 + math.sqrt((r0 - rle) ** 2 / 4 + 169)
    idd = 0.0
    if x.ta > 100:
        xd = math.log10(x.ta / 100) / math.log10(2)
        idd = 25 * ((1 + xd**6) ** (1 / 6) - 3 * (1 + (xd / 3) ** 6) ** (1 / 6) + 2)
    return float(idte + idle + idd)


def effective_equipment_impairment(ie: float, ppl: float, bpl: float, burst_r: float) -> float:
    """Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl) (G.107 formula 7-29)."""
    return ie + (95 - ie) * ppl / (ppl / burst_r + bpl)


def r_factor(x: EModelInputs) -> float:
    """The transmission rating R = R0 - Is - Id - Ie,eff + A (G.107 formula 7-1)."""
    no = _noise(x)
    r0 = 15 - 1.5 * (x.slr + no)
    return (
        r0
        - _simultaneous(x, r0, no)
        - _delay(x, r0, no)
        - effective_equipment_impairment(x.ie, x.ppl, x.bpl, x.burst_r)
        + x.a
    )


def mos_from_r(r: float) -> float:
    """The estimated MOS (conversational quality) for rating ``r`` (G.107 Annex B)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


#: G.711 with packet loss concealment under random loss (ITU-T G.113 Appendix I).
G711_PLC_BPL = 25.1


def call_quality(loss_ratio: float, one_way_delay_ms: float) -> tuple[float, float]:
    """
    (R, MOS) of a G.711 call with ``loss_ratio`` (0-1) of its packets lost and
    a mean one-way mouth-to-ear delay of ``one_way_delay_ms``.
    """
    delay = max(0.0, one_way_delay_ms)
    inputs = EModelInputs(
        t=delay,
        tr=2 * delay,
        ta=delay,
        ie=0.0,
        bpl=G711_PLC_BPL,
        ppl=100.0 * min(1.0, max(0.0, loss_ratio)),
    )
    r = r_factor(inputs)
    return r, mos_from_r(r)
