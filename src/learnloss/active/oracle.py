"""Oracles supply labels for queried samples."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Oracle(Protocol):
    """Anything that labels pool indices: a simulation's ground truth, or people."""

    def label(self, indices: np.ndarray) -> np.ndarray:
        """Labels of ``indices``, aligned."""
        ...


class GroundTruthOracle:
    """The simulation oracle: answers with the dataset's own labels."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels)

    def label(self, indices: np.ndarray) -> np.ndarray:
        """The dataset's labels of ``indices``."""
        return self.labels[np.asarray(indices, dtype=np.int64)]
