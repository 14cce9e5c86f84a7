"""Paired differences between strategies over shared seeds."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from learnloss.errors import UsageError
from learnloss.reports.paired import paired_difference


def test_difference_is_taken_seed_by_seed_on_shared_seeds_only():
    a = {0: 0.80, 1: 0.70, 2: 0.90, 7: 0.1}
    b = {0: 0.75, 1: 0.72, 2: 0.80, 3: 0.99}
    diff = paired_difference(a, b)
    assert diff.seeds == (0, 1, 2)
    assert diff.mean == pytest.approx((0.05 - 0.02 + 0.10) / 3)
    assert diff.wins == 2
    assert diff.p_value == pytest.approx(stats.ttest_rel([0.80, 0.70, 0.90], [0.75, 0.72, 0.80]).pvalue)
    assert not diff.significant
    assert diff.verdict().startswith("no significant difference (wins 2/3, p = ")


def test_consistent_differences_are_significant_in_the_right_direction():
    a = {s: 0.5 + 0.01 * s for s in range(5)}
    lower = paired_difference({s: v - 0.05 - 0.001 * s for s, v in a.items()}, a)
    assert lower.significant and lower.mean < 0 and lower.verdict().startswith("lower (wins 0/5")
    assert paired_difference(a, {s: v - 0.05 for s, v in a.items()}).verdict().startswith("higher (wins 5/5, p = 0.000")


def test_one_seed_has_no_p_value():
    diff = paired_difference({0: 0.9}, {0: 0.8})
    assert math.isnan(diff.p_value) and not diff.significant
    assert diff.verdict() == "no significant difference (wins 1/1)"


def test_identical_runs_are_no_difference():
    diff = paired_difference({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert diff.mean == 0 and diff.wins == 0 and math.isnan(diff.p_value)


def test_no_common_seed_is_a_usage_error():
    with pytest.raises(UsageError, match="no common seed"):
        paired_difference({0: 0.5}, {1: 0.5})
