"""Scalar metrics of an active-learning run.

* :func:`aubc` -- the area under the budget curve (accuracy against the number of labels), the summary number
  of a learning curve recommended by Zhan et al. 2021, "A comparative survey of deep active learning".
* :func:`ranking_accuracy` -- how well a loss prediction module orders samples by their true loss, the
  measure Yoo & Kweon report for their loss prediction module ("Learning Loss for Active Learning",
  CVPR 2019): over all pairs of samples whose true losses differ, the fraction the module orders correctly.
* :func:`spearman` -- Spearman's rank correlation of predicted against true losses.
* :func:`mean_std` -- mean and population standard deviation over seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from learnloss.errors import UsageError

__all__ = ["aubc", "mean_std", "ranking_accuracy", "spearman"]


def _as_1d_float(values: Any, name: str) -> npt.NDArray[np.float64]:
    """``values`` (array-like or a torch tensor on any device) as a flat float64 array; finite values only."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, possibly on a GPU
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{name} must be a sequence of numbers; could not convert it: {exc}") from exc
    bad = ~np.isfinite(array)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise UsageError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (first at index {index}: {array[index]}); "
            "remove NaN/inf entries (e.g. from a diverged model) before computing the metric"
        )
    return array


def _paired(predicted: Any, true: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    pred = _as_1d_float(predicted, "predicted")
    target = _as_1d_float(true, "true")
    if pred.size != target.size:
        raise UsageError(
            f"predicted and true losses must have the same number of samples, got {pred.size} and "
            f"{target.size}; pass one predicted loss per sample"
        )
    return pred, target


def aubc(n_labeled: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under the budget curve, normalised to the label range (Zhan et al. 2021).

    The budget curve is the test accuracy against the number of labelled samples. Its area is taken with
    the trapezoid rule from the first to the last point and divided by ``n_labeled[-1] - n_labeled[0]``, so
    the result is an accuracy (a constant curve at ``a`` gives ``a``) and non-uniform label schedules are
    weighted by the budget each step spends. With a single point the accuracy of that point is returned.

    Raises:
        UsageError: the sequences are empty or differ in length, ``n_labeled`` is not strictly increasing,
            or a value is not finite.
    """
    x = _as_1d_float(n_labeled, "n_labeled")
    y = _as_1d_float(accuracy, "accuracy")
    if x.size != y.size:
        raise UsageError(
            f"n_labeled and accuracy must have the same length, got {x.size} and {y.size}; "
            "give one accuracy per point of the label schedule"
        )
    if x.size == 0:
        raise UsageError("aubc needs at least one (n_labeled, accuracy) point, got none")
    if x.size == 1:
        return float(y[0])
    steps = np.diff(x)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        raise UsageError(
            f"n_labeled must be strictly increasing, but n_labeled[{i}]={x[i]:g} is followed by "
            f"n_labeled[{i + 1}]={x[i + 1]:g}; sort the points by label count and drop duplicates"
        )
    area = float(np.sum(steps * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def ranking_accuracy(predicted: npt.ArrayLike, true: npt.ArrayLike, chunk: int = 2048) -> float:
    """Pairwise ranking accuracy of predicted losses (Yoo & Kweon, CVPR 2019).

    Over all pairs ``i < j`` whose *true* losses differ, the fraction with
    ``sign(predicted[i] - predicted[j]) == sign(true[i] - true[j])``. A tie in the predicted losses counts
    as wrong; pairs tied in the true loss are left out. Returns ``nan`` when no pair qualifies (fewer than
    two samples, or all true losses equal).

    The count is exact. Samples are sorted by ``(true, predicted)``; then the number of correctly ordered
    pairs is, summed over samples ``a``, the number of samples of a strictly smaller true loss and a
    strictly smaller predicted loss. The rows are processed ``chunk`` at a time: the part of that count
    before the chunk comes from a binary search in the sorted predictions seen so far, the part inside the
    chunk from a ``chunk x chunk`` comparison. Memory is ``O(N + chunk**2)`` and time
    ``O(N**2 / chunk + N * chunk)`` in element operations (plus ``O(N log N)``), a fraction of a second for
    ``N = 50_000``. The result does not depend on ``chunk``.

    Args:
        predicted: predicted losses, one per sample (any shape; flattened). A torch tensor is accepted.
        true: true losses, same number of samples.
        chunk: rows processed at once; bounds the memory of the in-chunk comparison.

    Raises:
        UsageError: sizes differ, a value is not finite, or ``chunk`` is not a positive integer.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise UsageError(f"chunk must be a positive integer, got {chunk!r}")
    chunk = int(chunk)
    pred, target = _paired(predicted, true)
    n = pred.size
    if n < 2:
        return math.nan

    order = np.lexsort((pred, target))  # by true loss, then predicted loss
    ts, ps = target[order], pred[order]
    index = np.arange(n)
    new_group = np.ones(n, dtype=bool)  # first sample of a run of equal true losses
    new_group[1:] = ts[1:] != ts[:-1]
    new_run = new_group.copy()  # first sample of a run of equal (true, predicted)
    new_run[1:] |= ps[1:] != ps[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, index, 0))
    run_start = np.maximum.accumulate(np.where(new_run, index, 0))

    group_sizes = np.diff(np.append(np.flatnonzero(new_group), n)).astype(np.int64)
    valid_pairs = n * (n - 1) // 2 - int(np.sum(group_sizes * (group_sizes - 1) // 2))
    if valid_pairs == 0:
        return math.nan

    # correct = sum over a of #{b < group_start[a] : ps[b] < ps[a]}
    correct = 0
    seen = np.empty(0, dtype=np.float64)  # ps[:s], sorted
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        pa, ga, ha = ps[s:e], group_start[s:e], run_start[s:e]
        below = np.searchsorted(seen, pa, side="left").astype(np.int64)  # #{b < s : ps[b] < ps[a]}
        # a's group began before the chunk: drop b in [ga, s) (same group, ps[b] <= ps[a]) unless ps[b] == ps[a]
        straddle = ga < s
        below[straddle] -= (s - ga[straddle]) - np.maximum(0, s - ha[straddle])
        correct += int(below.sum())
        # b inside the chunk but in an earlier group than a: s <= b < ga
        limit = ga - s
        if limit.max(initial=0) > 0:
            local = np.arange(e - s)
            smaller = (pa[None, :] < pa[:, None]) & (local[None, :] < limit[:, None])
            correct += int(np.count_nonzero(smaller))
        seen = np.sort(np.concatenate((seen, pa)), kind="stable")  # a merge of two sorted runs
    return correct / valid_pairs


def spearman(predicted: npt.ArrayLike, true: npt.ArrayLike) -> float:
    """Spearman's rank correlation between predicted and true losses (:func:`scipy.stats.spearmanr`).

    Returns ``nan`` (without emitting a warning) when it is undefined: fewer than two samples or a constant
    input.

    Raises:
        UsageError: sizes differ or a value is not finite.
    """
    pred, target = _paired(predicted, true)
    if pred.size < 2 or np.all(pred == pred[0]) or np.all(target == target[0]):
        return math.nan
    from scipy import stats  # imported lazily: scipy.stats takes most of a second to import

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        result = stats.spearmanr(pred, target)
    value = float(result.statistic)  # type: ignore[attr-defined]
    return value if math.isfinite(value) else math.nan


def mean_std(values: Sequence[float] | npt.ArrayLike) -> tuple[float, float]:
    """Mean and *population* standard deviation (``ddof=0``) of ``values``, e.g. one metric over seeds.

    A single value gives a standard deviation of 0.

    Raises:
        UsageError: ``values`` is empty.
    """
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise UsageError("mean_std needs at least one value, got none")
    return float(np.mean(array)), float(np.std(array, ddof=0))
