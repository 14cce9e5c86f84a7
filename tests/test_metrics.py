"""Metrics: AUBC (Zhan et al. 2021), LPM ranking accuracy (Yoo & Kweon 2019), Spearman, mean/std."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import numpy.typing as npt
import pytest
import torch

from learnloss.errors import UsageError
from learnloss.reports import aubc, mean_std, ranking_accuracy, spearman


# ------------------------------------------------------------------------------------------------ aubc


def test_aubc_uniform_spacing() -> None:
    assert aubc([1, 2, 3], [0.5, 0.7, 0.9]) == pytest.approx(0.7)


def test_aubc_non_uniform_spacing() -> None:
    # trapezoids: 1 * (0.5 + 0.7) / 2 = 0.6 and 3 * (0.7 + 0.9) / 2 = 2.4 -> 3.0 over a range of 4
    assert aubc([1, 2, 5], [0.5, 0.7, 0.9]) == pytest.approx(0.75)
    assert aubc([1000, 1500, 3000], [0.2, 0.4, 0.6]) == pytest.approx((500 * 0.3 + 1500 * 0.5) / 2000)


def test_aubc_constant_curve_and_single_point() -> None:
    assert aubc([10, 20, 40, 80], [0.6] * 4) == pytest.approx(0.6)
    assert aubc([1000], [0.83]) == 0.83
    assert aubc(np.array([1, 3]), np.array([0.0, 1.0])) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("n_labeled", "accuracy", "message"),
    [
        ([1, 2], [0.5], "same length"),
        ([], [], "at least one"),
        ([1, 1, 2], [0.1, 0.2, 0.3], "strictly increasing"),
        ([3, 2], [0.1, 0.2], "strictly increasing"),
        ([1, 2], [0.1, math.nan], "non-finite"),
        ([1, math.inf], [0.1, 0.2], "non-finite"),
        (["a", "b"], [0.1, 0.2], "sequence of numbers"),
    ],
)
def test_aubc_rejects_bad_input(n_labeled: list[float], accuracy: list[float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        aubc(n_labeled, accuracy)


# ------------------------------------------------------------------------------------------------ ranking


def brute_force_ranking_accuracy(pred: npt.NDArray[np.float64], true: npt.NDArray[np.float64]) -> float:
    correct = valid = 0
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            if true[i] == true[j]:
                continue
            valid += 1
            correct += int(np.sign(pred[i] - pred[j]) == np.sign(true[i] - true[j]))
    return correct / valid if valid else math.nan


@pytest.mark.parametrize("seed", range(12))
def test_ranking_accuracy_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 90))
    # few distinct values: many ties in the true and in the predicted losses
    true = rng.integers(0, int(rng.integers(2, 8)), n).astype(np.float64)
    pred = rng.integers(0, int(rng.integers(2, 8)), n).astype(np.float64) + 0.5 * true * rng.integers(0, 2)
    expected = brute_force_ranking_accuracy(pred, true)
    for chunk in (1, 2, 3, 7, 16, 2048):
        assert ranking_accuracy(pred, true, chunk=chunk) == pytest.approx(expected, abs=1e-12), chunk


def test_ranking_accuracy_continuous_values() -> None:
    rng = np.random.default_rng(123)
    true = rng.random(300)
    pred = true + rng.normal(scale=0.3, size=300)
    expected = brute_force_ranking_accuracy(pred, true)
    assert ranking_accuracy(pred, true, chunk=37) == pytest.approx(expected, abs=1e-12)
    assert 0.5 < expected < 1.0


def test_ranking_accuracy_perfect_reversed_and_ties() -> None:
    true = np.array([0.1, 0.5, 0.3, 2.0, 1.0])
    assert ranking_accuracy(true * 3 + 1, true) == 1.0
    assert ranking_accuracy(-true, true) == 0.0
    assert ranking_accuracy(np.zeros(5), true) == 0.0  # a tie in predicted counts as wrong
    # pairs tied in the true loss are left out: only (0,2),(1,2) qualify, one right, one wrong
    assert ranking_accuracy([1.0, 3.0, 2.0], [0.0, 0.0, 1.0]) == 0.5


def test_ranking_accuracy_chunk_independence_large() -> None:
    rng = np.random.default_rng(7)
    true = np.round(rng.random(3000), 2)
    pred = np.round(true + rng.normal(scale=0.2, size=3000), 2)
    values = {ranking_accuracy(pred, true, chunk=c) for c in (1, 5, 64, 999, 3000, 10_000)}
    assert len(values) == 1


def test_ranking_accuracy_undefined_is_nan() -> None:
    assert math.isnan(ranking_accuracy([], []))
    assert math.isnan(ranking_accuracy([1.0], [2.0]))
    assert math.isnan(ranking_accuracy([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))


def test_ranking_accuracy_accepts_tensors_and_column_vectors() -> None:
    true = torch.tensor([0.1, 0.4, 0.2, 0.9])
    pred = torch.tensor([[0.0], [3.0], [1.0], [2.0]], requires_grad=True)
    assert ranking_accuracy(pred, true) == pytest.approx(5 / 6)


def test_ranking_accuracy_rejects_bad_input() -> None:
    with pytest.raises(UsageError, match="same number of samples"):
        ranking_accuracy([1.0, 2.0], [1.0])
    with pytest.raises(UsageError, match="non-finite"):
        ranking_accuracy([1.0, math.nan], [1.0, 2.0])
    for chunk in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="chunk"):
            ranking_accuracy([1.0, 2.0], [1.0, 2.0], chunk=chunk)  # type: ignore[arg-type]


def test_ranking_accuracy_is_fast_for_large_n() -> None:
    rng = np.random.default_rng(0)
    true = rng.random(10_000)
    pred = true + rng.normal(size=10_000)
    start = time.perf_counter()
    value = ranking_accuracy(pred, true)
    assert time.perf_counter() - start < 1.0
    assert 0.5 < value < 1.0


# ------------------------------------------------------------------------------------------------ spearman


def test_spearman_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


def test_spearman_undefined_is_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert math.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
        assert math.isnan(spearman([1.0], [2.0]))
        assert math.isnan(spearman([], []))


def test_spearman_rejects_mismatched_sizes() -> None:
    with pytest.raises(UsageError, match="same number"):
        spearman([1, 2, 3], [1, 2])


# ------------------------------------------------------------------------------------------------ mean_std


def test_mean_std_is_population_std() -> None:
    mean, std = mean_std([0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.7)
    assert std == pytest.approx(math.sqrt(0.02 / 3))
    assert mean_std([2.0]) == (2.0, 0.0)
    with pytest.raises(UsageError, match="at least one"):
        mean_std([])
