"""Deterministic stratified train/test splits."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``, each sorted, holding out ``test_fraction`` of every class.

    Each class with ``n >= 2`` members puts ``round(test_fraction * n)`` of them, clamped to ``1 .. n - 1``,
    in the test split, drawn by a generator seeded with ``seed``; a class with a single member stays in training.
    The result depends only on ``labels``, ``test_fraction`` and ``seed``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.empty(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx
