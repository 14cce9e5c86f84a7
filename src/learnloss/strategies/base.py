"""The strategy interface: turn what a model says about candidates into a ranked selection.

A strategy never trains anything. It declares what it :attr:`~Strategy.needs` (probabilities, embeddings,
LPM scores, true losses); the loop provides exactly that in one streaming pass and hands the kept values to
:meth:`~Strategy.select`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.errors import LearnLossError, UsageError


@dataclass
class QueryContext:
    """What a selection may use beyond the candidates' own values.

    Attributes:
        rng: the cycle's random generator (seeded by the loop: same seed, same selection).
        labeled_embeddings: embeddings of the labeled set, when the strategy needs them.
        device: where heavy selection arithmetic may run.
    """

    rng: np.random.Generator
    labeled_embeddings: np.ndarray | None = None
    device: torch.device = torch.device("cpu")


class Strategy(ABC):
    """Base of every query strategy.

    Subclasses set :attr:`name` and :attr:`needs` and implement :meth:`collect` (what to keep of each scored
    batch) and :meth:`select`.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[Need]] = frozenset()

    def check(self, view: ModelView) -> None:
        """Raise a :class:`UsageError` when the strategy cannot work with this model (called before training)."""

    def scoring(self, view: ModelView, context: QueryContext) -> AbstractContextManager[object]:
        """A context the candidates are streamed in, for strategies that change the model or draw random
        numbers while scoring (MC dropout); nothing by default."""
        return nullcontext()

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        """Per-sample values to keep from one scored batch (none by default)."""
        return {}

    @abstractmethod
    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        """Choose ``k`` of ``candidates`` (pool indices); ``values[key][i]`` belongs to ``candidates[i]``."""

    def query(self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext) -> np.ndarray:
        """Validate the request and return ``k`` distinct pool indices, most informative first."""
        if k <= 0:
            raise UsageError(f"the number of samples to query must be positive, got {k}")
        if k > len(candidates):
            raise UsageError(f"cannot query {k} samples from {len(candidates)} candidates; lower --query or raise --subset")
        selected = np.asarray(self.select(candidates, values, k, context), dtype=np.int64)
        if len(selected) != k or len(np.unique(selected)) != k:
            raise RuntimeError(f"strategy {self.name} returned {len(selected)} indices for k={k}")  # a bug, not bad input
        return selected

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ScoreStrategy(Strategy):
    """A strategy that scores each candidate on its own and picks the ``k`` highest scores.

    The base does the ranking (highest first — docs/pitfalls.md §1), the alignment with pool indices, the stable
    tie-break and the check for non-finite scores; a subclass implements only :meth:`score`.
    """

    @abstractmethod
    def score(self, batch: BatchOutputs) -> torch.Tensor:
        """Informativeness of each sample of the batch, ``(B,)``; higher is queried first."""

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        return {"score": self.score(batch)}

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        scores = values["score"]
        bad = ~np.isfinite(scores)
        if bad.any():
            raise LearnLossError(
                f"strategy {self.name} got {int(bad.sum())} non-finite scores (e.g. for pool index "
                f"{int(candidates[bad][0])}); the model has diverged — lower the learning rate"
            )
        return candidates[top_k(scores, k)]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first; ties keep the earlier position."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    threshold = scores[part].min()
    # Include every tie at the threshold, then order stably so ties are broken by position.
    eligible = np.flatnonzero(scores >= threshold)
    return eligible[np.argsort(-scores[eligible], kind="stable")][:k]
