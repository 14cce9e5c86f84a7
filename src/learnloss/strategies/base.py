"""The strategy interface: turn what a model says about candidates into a ranked selection.

A strategy never trains anything. It declares what it :attr:`~Strategy.needs` (probabilities, embeddings,
LPM scores, true losses); the loop provides exactly that in one streaming pass and hands the kept values to
:meth:`~Strategy.select`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.errors import LearnLossError, UsageError

if TYPE_CHECKING:
    from learnloss.strategies.spec import StrategySpec


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
    batch) and :meth:`select`. The keyword arguments of a subclass's ``__init__`` (annotated ``int``, ``float``,
    ``str``, ``bool`` or a ``Literal`` of strings, each stored on an attribute of the same name) are its
    parameters in a strategy specification such as ``core-set:chunk=2048`` (:mod:`learnloss.strategies.spec`).

    Attributes:
        name: the registered name (``core-set``), also for a strategy built with parameters.
        needs: what the loop must provide. A class attribute for plain strategies; a wrapper reads it from its
            inner strategy, so always read it from an instance (``strategy.needs``).
    """

    name: ClassVar[str]
    needs: frozenset[Need] = frozenset()
    score_meaning: ClassVar[str] = ""
    """What the strategy's score of one item means, for people reading it (a query file's header, a Label Studio
    prediction); empty when the strategy picks a set and scores no item on its own (``random``, ``core-set``)."""

    @property
    def describes_score(self) -> str:
        """:attr:`score_meaning` of this strategy, or of the strategy it wraps (read it from an instance)."""
        return self.score_meaning

    @property
    def training_stages(self) -> tuple[str, ...]:
        """Names of the training stages this strategy needs after the joint stage of each cycle that queries,
        e.g. ``("semi-lpm",)`` for the semi-supervised LPM of Hwang, Choi & Choi (IEEE Access 2024). The strategy
        never trains anything itself: the run builder (:func:`learnloss.runs.builder.build_loop`) makes each named
        stage from the run specification. None by default."""
        return ()

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

    @property
    def spec(self) -> StrategySpec:
        """The canonical specification of this strategy (``str(strategy.spec)`` is its text, e.g.
        ``stochastic(entropy):beta=2.0``): the one it was built from by :func:`build_strategy`, else the one
        its parameters describe (those that differ from their defaults)."""
        from learnloss.strategies.spec import describe

        built = self.__dict__.get("_spec")
        return built if built is not None else describe(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.spec)!r}>"


class ScoreStrategy(Strategy):
    """A strategy that scores each candidate on its own and picks the ``k`` highest scores.

    The base does the ranking (highest first — docs/pitfalls.md §1), the alignment with pool indices, the stable
    tie-break and the check for non-finite scores; a subclass implements only :meth:`score`.
    """

    score_meaning = "higher = queried first"

    @abstractmethod
    def score(self, batch: BatchOutputs) -> torch.Tensor:
        """Informativeness of each sample of the batch, ``(B,)``; higher is queried first."""

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        return {"score": self.score(batch)}

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        scores = values["score"]
        check_finite(self.name, candidates, scores)
        return candidates[top_k(scores, k)]


class WrapperStrategy(Strategy):
    """A strategy that wraps another one (``NAME(INNER)`` in a specification) and changes only the selection.

    It delegates :attr:`needs`, :meth:`check`, :meth:`scoring` and :meth:`collect` to :attr:`inner`, so the loop
    provides what the inner strategy needs in its one scoring pass; a subclass implements :meth:`select` on the
    values the inner strategy kept.

    Args:
        inner: the wrapped strategy.
    """

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    @property  # a class attribute on plain strategies, read from the inner strategy here
    def needs(self) -> frozenset[Need]:  # type: ignore[override]
        return self.inner.needs

    @property
    def training_stages(self) -> tuple[str, ...]:
        return self.inner.training_stages

    def check(self, view: ModelView) -> None:
        self.inner.check(view)

    def scoring(self, view: ModelView, context: QueryContext) -> AbstractContextManager[object]:
        return self.inner.scoring(view, context)

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        return self.inner.collect(batch)

    @property
    def describes_score(self) -> str:
        return self.inner.describes_score


def check_finite(strategy: str, candidates: np.ndarray, scores: np.ndarray) -> None:
    """Refuse non-finite scores: they mean the model has diverged, and no ranking of them is meaningful."""
    bad = ~np.isfinite(scores)
    if bad.any():
        raise LearnLossError(
            f"strategy {strategy} got {int(bad.sum())} non-finite scores (e.g. for pool index "
            f"{int(candidates[bad][0])}); the model has diverged — lower the learning rate"
        )


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first; ties keep the earlier position."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    threshold = scores[part].min()
    # Include every tie at the threshold, then order stably so ties are broken by position.
    eligible = np.flatnonzero(scores >= threshold)
    return eligible[np.argsort(-scores[eligible], kind="stable")][:k]
