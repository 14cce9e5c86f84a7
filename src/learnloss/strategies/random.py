"""Uniform random sampling, the baseline every method must beat."""

from __future__ import annotations

import numpy as np

from learnloss.strategies.base import QueryContext, Strategy


class RandomSampling(Strategy):
    """Choose ``k`` candidates uniformly at random from the cycle's seeded generator; needs no model pass."""

    name = "random"

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        return context.rng.choice(candidates, size=k, replace=False)
