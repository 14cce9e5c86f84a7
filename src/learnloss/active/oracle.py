"""Oracles supply the targets of queried samples: a simulation's ground truth, or people."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

__all__ = ["GroundTruthOracle", "HumanOracle", "Oracle"]


class Oracle(Protocol):
    """Anything that labels pool indices. ``knows_targets`` says whether it can answer for any sample at once (a
    simulation), which lets the loop measure what only ground truth can tell: the LPM's ranking of the unlabeled
    candidates it scores."""

    knows_targets: bool

    def label(self, indices: np.ndarray) -> torch.Tensor | None:
        """Targets of ``indices``, aligned; None when they arrive later (people label them through
        ``learnloss label``, and the loop takes them up from the store the next time it runs)."""
        ...


class GroundTruthOracle:
    """The simulation oracle: answers at once with the dataset's own targets."""

    knows_targets = True

    def __init__(self, targets: torch.Tensor | np.ndarray) -> None:
        self.targets = torch.as_tensor(targets)

    def label(self, indices: np.ndarray) -> torch.Tensor:
        """The dataset's targets of ``indices``."""
        return self.targets[torch.as_tensor(np.asarray(indices, dtype=np.int64))]


class HumanOracle:
    """People: a query's targets are never known when it is made. They are imported into the project store
    (``learnloss label``), and the journal puts every stored label into the pool when the loop resumes."""

    knows_targets = False

    def label(self, indices: np.ndarray) -> None:
        """Nothing yet: the loop records the query as open and stops."""
        return None
