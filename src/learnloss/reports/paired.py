"""Paired comparison of two strategies over the seeds they share.

Runs of the same seed start from the same initial labeled set and weights, so the per-seed difference of a
metric (AUBC, Zhan et al. 2021) removes the seed's own luck; the differences are tested with a two-sided
paired t-test (Student 1908; :func:`scipy.stats.ttest_rel`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from learnloss.errors import UsageError

__all__ = ["SIGNIFICANCE_LEVEL", "PairedDifference", "paired_difference"]

SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the seeds both have: mean and population std of the differences, how many seeds ``a``
    won, and the paired t-test's two-sided p-value (NaN with fewer than 2 seeds or identical differences)."""

    seeds: tuple[int, ...]
    mean: float
    std: float
    wins: int
    p_value: float

    @property
    def significant(self) -> bool:
        """The difference is significant at :data:`SIGNIFICANCE_LEVEL`."""
        return self.p_value < SIGNIFICANCE_LEVEL

    def verdict(self) -> str:
        """One plain sentence fragment: higher, lower, or no significant difference, with the evidence."""
        n = len(self.seeds)
        evidence = f"wins {self.wins}/{n}" + ("" if math.isnan(self.p_value) else f", p = {self.p_value:.3f}")
        if self.significant:
            return f"{'higher' if self.mean > 0 else 'lower'} ({evidence})"
        return f"no significant difference ({evidence})"


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> PairedDifference:
    """Compare ``a`` and ``b`` (seed -> metric) on the seeds they share.

    Raises:
        UsageError: the two share no seed.
    """
    seeds = tuple(sorted(a.keys() & b.keys()))
    if not seeds:
        raise UsageError(f"no common seed to pair (seeds {sorted(a)} vs {sorted(b)}); run both with the same seeds")
    diff = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    p_value = math.nan
    if len(seeds) > 1 and np.ptp(diff) > 0:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_value = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    elif len(seeds) > 1 and diff[0] != 0:
        p_value = 0.0  # every seed differs by the same non-zero amount
    return PairedDifference(seeds, float(diff.mean()), float(diff.std(ddof=0)), int((diff > 0).sum()), p_value)
