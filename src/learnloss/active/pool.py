"""The pool: the single source of truth about which samples are labeled, with what, and when."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from learnloss.errors import BudgetError, UsageError


class Pool:
    """Labels of a pool of ``size`` samples and the cycle in which each was labeled.

    Simulation and real labeling use the same pool; only the oracle that supplies labels differs.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise UsageError(f"a pool needs at least one sample, got size={size}")
        self.labels = np.full(size, -1, dtype=np.int64)
        self.labeled_at = np.full(size, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labeled_indices(self) -> np.ndarray:
        """Sorted indices of labeled samples."""
        return np.flatnonzero(self.labeled_at >= 0)

    @property
    def unlabeled_indices(self) -> np.ndarray:
        """Sorted indices of unlabeled samples."""
        return np.flatnonzero(self.labeled_at < 0)

    @property
    def n_labeled(self) -> int:
        """Number of labeled samples."""
        return int((self.labeled_at >= 0).sum())

    def add_labels(self, indices: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray, cycle: int) -> None:
        """Record ``labels`` for ``indices``, labeled in ``cycle``; refuses anything inconsistent, atomically."""
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if indices.shape != labels.shape or indices.ndim != 1:
            raise UsageError(f"got {indices.shape} indices but {labels.shape} labels")
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise UsageError(f"pool indices must lie in [0, {len(self)}); got {indices.min()}..{indices.max()}")
        if len(np.unique(indices)) != len(indices):
            raise UsageError("the same pool index appears twice in one labeling")
        already = indices[self.labeled_at[indices] >= 0]
        if already.size:
            raise UsageError(f"pool indices already labeled: {already[:10].tolist()}")
        if labels.size and labels.min() < 0:
            raise UsageError("labels must be non-negative class indices")
        self.labels[indices] = labels
        self.labeled_at[indices] = cycle

    def sample_unlabeled(self, count: int | None, rng: np.random.Generator) -> np.ndarray:
        """A random subset of ``count`` unlabeled indices (all of them if None), sorted."""
        unlabeled = self.unlabeled_indices
        if count is None or count >= len(unlabeled):
            return unlabeled
        if count <= 0:
            raise BudgetError(f"the scoring subset size must be positive, got {count}")
        return np.sort(rng.choice(unlabeled, size=count, replace=False))
