"""Confidence intervals over seeds: how far a trial's mean, or the gap between two trials, can be trusted.

A trial's value is the mean of its seeds' values; with n seeds its 95% interval is
mean +- t(0.975, n - 1) s / sqrt(n) (Student's t, s the sample standard deviation).
The gap between two trials that trained the same seeds (the same initialisation,
data order and noise) is paired: the Student-t interval of the per-seed differences,
in which each seed's luck, shared by both trials, cancels. Otherwise it is Welch's
interval, which does not assume equal spreads: d = mean_a - mean_b,
se = sqrt(s_a^2 / n_a + s_b^2 / n_b), and degrees of freedom from the
Welch-Satterthwaite formula. A gap whose interval holds 0 lies within noise. One
seed gives no interval (NaN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float    # NaN when there are too few values for an interval

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def holds_zero(self) -> bool:
        """Whether 0 lies inside (a gap within noise); True when there is no interval."""
        return not math.isfinite(self.half_width) or self.low <= 0 <= self.high

    def describe(self, unit: str = "dB") -> str:
        if not math.isfinite(self.half_width):
            return f"{self.mean:.2f} {unit}"
        return f"{self.mean:.2f} ± {self.half_width:.2f} {unit}"


def _t(df: float) -> float:
    from scipy import stats     # here, not at the top: importing it costs every command half a second

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of `values` with its 95% Student-t interval."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, _t(n - 1) * sd / math.sqrt(n))


def paired_difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a - b) with the 95% Student-t interval of the differences; a[i] and b[i] share seed i."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(a, b)])


def difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) - mean(b) with Welch's 95% interval; NaN width unless both have 2 values or more."""
    if not a or not b:
        return Interval(math.nan, math.nan)
    gap = math.fsum(a) / len(a) - math.fsum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(gap, math.nan)
    var_a = _variance(a) / len(a)
    var_b = _variance(b) / len(b)
    se2 = var_a + var_b
    if se2 == 0:
        return Interval(gap, 0.0)
    df = se2 ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    return Interval(gap, _t(df) * math.sqrt(se2))


def _variance(values: Sequence[float]) -> float:
    mean = math.fsum(values) / len(values)
    return math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
