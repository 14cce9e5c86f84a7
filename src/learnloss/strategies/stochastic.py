"""Stochastic batch acquisition: sample the batch from the scores instead of taking the top ``k``.

Taking the ``k`` highest scores of a batch fills it with near-duplicates when high scores cluster; Kirsch et al.
show that sampling the batch without replacement, with probabilities that favour high scores, is a simple
baseline that matches or beats far more expensive batch-aware methods (BatchBALD, BADGE) at the cost of top-k.

References:
    Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic Batch Acquisition: A Simple
    Baseline for Deep Active Learning", TMLR 2023 (arXiv:2106.12059), Sec. 3 (softmax, power and softrank
    acquisition) and the Gumbel-top-k sampling they use;
    Kool, van Hoof & Welling, "Stochastic Beams and Where to Find Them", ICML 2019 (Gumbel-top-k).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from learnloss.errors import UsageError
from learnloss.strategies.base import QueryContext, ScoreStrategy, Strategy, WrapperStrategy, check_finite

Mode = Literal["softmax", "power", "softrank"]
MODES: tuple[str, ...] = get_args(Mode)


class StochasticBatchAcquisition(WrapperStrategy):
    """Sample ``k`` candidates without replacement, each drawn with probability proportional to a weight of the
    inner strategy's score ``s`` (Kirsch et al., arXiv:2106.12059):

    * ``softmax``: ``exp(beta * s)``;
    * ``power``: ``s ** beta`` (scores must be non-negative; a score of 0 is drawn only once every positive one
      is taken);
    * ``softrank``: ``rank ** -beta``, with rank 1 the highest score (ties ranked by position) — independent of
      the scale of the scores, hence the default.

    The sample is the Gumbel-top-``k`` of the log-weights (Kool et al. 2019) with noise from the query's seeded
    strategy stream: same seed, same selection. A large ``beta`` approaches the inner strategy's top-``k``;
    ``beta -> 0`` approaches random sampling. The picks are returned in the order they were drawn.

    Args:
        inner: a scoring strategy (:class:`ScoreStrategy`), e.g. ``entropy``, ``margin``, ``learning-loss``.
        mode: ``softmax``, ``power`` or ``softrank``.
        beta: the inverse temperature / exponent, > 0.
    """

    name = "stochastic"

    def __init__(self, inner: Strategy, mode: Mode = "softrank", beta: float = 1.0) -> None:
        if not isinstance(inner, ScoreStrategy):
            raise UsageError(
                f"{self.name} samples by score, but {inner.spec} does not score candidates one by one; "
                "wrap a scoring strategy (e.g. entropy, margin, learning-loss, baal-bald)"
            )
        if mode not in MODES:
            raise UsageError(f"parameter 'mode' of {self.name} must be one of {', '.join(MODES)}, got {mode!r}")
        if not (np.isfinite(beta) and beta > 0):
            raise UsageError(f"parameter 'beta' of {self.name} must be a positive number, got {beta}")
        super().__init__(inner)
        self.mode, self.beta = mode, float(beta)

    def log_weights(self, scores: np.ndarray) -> np.ndarray:
        """Log of each candidate's unnormalised sampling weight (``-inf`` for weight 0)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.mode == "softmax":
            return self.beta * (scores - scores.max())  # shifted: the same distribution, no overflow
        if self.mode == "power":
            # Allow round-off below zero (BALD is a difference of entropies), refuse real negative scores.
            tolerance = 1e-6 * float(np.abs(scores).max())
            negative = scores < -tolerance
            if negative.any():
                raise UsageError(
                    f"strategy {self.spec}: power mode needs non-negative scores, but {self.inner.spec} gave "
                    f"{int(negative.sum())} negative ones (e.g. {float(scores[negative][0]):.4g}); "
                    "use mode=softmax or mode=softrank"
                )
            with np.errstate(divide="ignore"):
                return self.beta * np.log(np.clip(scores, 0.0, None))
        ranks = np.empty(len(scores), dtype=np.float64)
        ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
        return -self.beta * np.log(ranks)

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        scores = np.asarray(values["score"], dtype=np.float64)
        check_finite(str(self.spec), candidates, scores)
        return candidates[gumbel_top_k(self.log_weights(scores), k, context.rng)]


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` draws without replacement with probability ``∝ exp(log_weights)``, in draw order.

    Perturbing each log-weight with independent Gumbel(0, 1) noise and taking the ``k`` largest is exactly
    sequential sampling without replacement (Kool et al. 2019). Weight-0 (``-inf``) positions come after every
    other one, in a uniformly random order, when ``k`` exceeds the positions with positive weight.
    """
    noise = rng.gumbel(size=len(log_weights))
    possible = np.isfinite(log_weights)
    keys = np.where(possible, log_weights + noise, 0.0)
    # lexsort: the last key is the primary one — possible first, then by perturbed key, then by noise alone.
    return np.lexsort((-noise, -keys, ~possible))[:k]
