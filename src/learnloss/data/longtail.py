"""Long-tailed training pools: a class-imbalanced subsample of a dataset's train split, the test split untouched.

The exponential profile of Cui, Jia, Lin, Song & Belongie ("Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019), used for CIFAR-10-LT: class ``c`` of ``C`` keeps ``n_max · ratio^(-c / (C - 1))`` samples,
so the first class keeps ``n_max`` and the last ``n_max / ratio``. Active learning on such a pool rewards a strategy
that finds the rare classes; the balanced test split measures every class alike.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from learnloss.data.dataset import Dataset
from learnloss.errors import UsageError

__all__ = ["long_tail", "long_tail_sizes"]


def long_tail_sizes(available: list[int], ratio: float) -> list[int]:
    """Samples kept per class (in class order) for an imbalance ``ratio`` ≥ 1, given each class's count."""
    if not (math.isfinite(ratio) and ratio >= 1):
        raise UsageError(f"the imbalance ratio must be a number ≥ 1, got {ratio}")
    classes = len(available)
    top = min(available)
    if classes < 2:
        return list(available)
    return [max(1, min(count, int(top * ratio ** (-c / (classes - 1))))) for c, count in enumerate(available)]


def long_tail(dataset: Dataset, ratio: float = 100.0, seed: int = 0) -> Dataset:
    """``dataset`` with its train split subsampled to an exponential long tail of imbalance ``ratio``.

    Which samples each class keeps is drawn with its own ``seed`` (not the run's), so every run of a benchmark sees
    the same pool; the kept samples stay in their original order. Normalisation statistics are recomputed on the
    kept pool.
    """
    if dataset.task != "classification":
        raise UsageError(f"a long-tailed pool needs class labels; dataset {dataset.name!r} is {dataset.task}")
    labels = dataset.y_train.numpy()
    available = [int((labels == c).sum()) for c in range(dataset.num_classes)]
    sizes = long_tail_sizes(available, ratio)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), size=size, replace=False) for c, size in enumerate(sizes)
    ]))
    index = torch.as_tensor(keep)
    return replace(dataset, name=f"{dataset.name}-lt", x_train=dataset.x_train[index], y_train=dataset.y_train[index],
                   mean=None, std=None)
