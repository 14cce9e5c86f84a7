"""The pool: the single source of truth about which samples are labeled, with what, and when."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from learnloss.errors import BudgetError, UsageError
from learnloss.tasks.base import Task
from learnloss.tasks.classification import ClassificationTask

__all__ = ["Pool"]


class Pool:
    """Targets of a pool of ``size`` samples and the cycle in which each was labeled.

    Simulation and real labeling use the same pool; only the oracle that supplies targets differs. What a target
    is — a class index, a float vector — the ``task`` decides (:meth:`~learnloss.tasks.Task.empty_targets`,
    :meth:`~learnloss.tasks.Task.check_targets`).

    Args:
        size: number of samples.
        task: the task whose targets the pool holds (classification by default).
        like: an example of the dataset's targets (shape past the first dimension, dtype).
    """

    def __init__(self, size: int, task: Task | None = None, like: torch.Tensor | None = None) -> None:
        if size <= 0:
            raise UsageError(f"a pool needs at least one sample, got size={size}")
        self.task = task or ClassificationTask()
        self.targets = self.task.empty_targets(size, like if like is not None else torch.zeros(1, dtype=torch.long))
        self.labeled_at = np.full(size, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labeled_at)

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

    def add_labels(self, indices: Sequence[int] | np.ndarray, targets: Sequence | np.ndarray | torch.Tensor,
                   cycle: int) -> None:
        """Record ``targets`` for ``indices``, labeled in ``cycle``; refuses anything inconsistent, atomically."""
        indices = np.asarray(indices, dtype=np.int64)
        values = self.task.check_targets(torch.as_tensor(targets))
        if indices.ndim != 1 or values.shape[0] != indices.shape[0]:
            raise UsageError(f"got {indices.shape} indices but {tuple(values.shape)} targets")
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise UsageError(f"pool indices must lie in [0, {len(self)}); got {indices.min()}..{indices.max()}")
        if len(np.unique(indices)) != len(indices):
            raise UsageError("the same pool index appears twice in one labeling")
        already = indices[self.labeled_at[indices] >= 0]
        if already.size:
            raise UsageError(f"pool indices already labeled: {already[:10].tolist()}")
        self.targets[torch.as_tensor(indices)] = values.to(self.targets.dtype)
        self.labeled_at[indices] = cycle

    def sample_unlabeled(self, count: int | None, rng: np.random.Generator) -> np.ndarray:
        """A random subset of ``count`` unlabeled indices (all of them if None), sorted."""
        unlabeled = self.unlabeled_indices
        if count is None or count >= len(unlabeled):
            return unlabeled
        if count <= 0:
            raise BudgetError(f"the scoring subset size must be positive, got {count}")
        return np.sort(rng.choice(unlabeled, size=count, replace=False))
