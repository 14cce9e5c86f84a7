"""Baal's MC-dropout heuristics (BALD, entropy) as strategies, so the peer library runs inside the same loop.

Baal (Atighehchian et al., "Baal, a Bayesian Active Learning Library", 2022; PyPI ``baal``, Apache-2.0) has no
loss prediction; it estimates uncertainty from ``T`` stochastic forward passes with dropout left on at query
time (Gal & Ghahramani, ICML 2016). Here Baal does what it does in its own loop — its ``patch_module`` turns the
model's dropout layers into always-on MC dropout and its heuristic computes each candidate's uncertainty from the
``(B, classes, T)`` samples — while learnloss supplies the same model, data, initial set, budget and candidate
subset as every other strategy. Scores are computed per batch, so memory stays bounded by the pool size, not by
``pool × classes × T``.

References:
    Houlsby et al., "Bayesian Active Learning for Classification and Preference Learning", 2011 (BALD);
    Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data", ICML 2017.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch

from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.errors import UsageError
from learnloss.strategies.base import QueryContext, ScoreStrategy
from learnloss.strategies.mc_variance import check_mc_dropout

#: MC-dropout samples per candidate (Baal's examples and Gal et al. 2017 use 20).
MC_ITERATIONS = 20


def _baal() -> Any:
    try:
        import baal.active.heuristics as heuristics
        import baal.bayesian.dropout as dropout
    except ImportError as error:
        raise UsageError(
            f"the Baal strategies need the optional peer library Baal ({error}); install it with "
            "pip install 'learnloss[peer]'"
        ) from None
    return heuristics, dropout


class BaalStrategy(ScoreStrategy):
    """Score candidates with a Baal heuristic over ``iterations`` MC-dropout samples; highest first.

    Args:
        iterations: stochastic forward passes per candidate (the scoring pass counts as the first).
    """

    heuristic: ClassVar[str]
    needs = frozenset({Need.INPUTS})

    def __init__(self, iterations: int = MC_ITERATIONS) -> None:
        if iterations < 2:
            raise UsageError(f"MC dropout needs at least 2 iterations, got {iterations}")
        heuristics, self._dropout = _baal()
        self.iterations = iterations
        self._heuristic = getattr(heuristics, self.heuristic)()

    def check(self, view: ModelView) -> None:
        check_mc_dropout(self.name, view)

    @contextmanager
    def scoring(self, view: ModelView, context: QueryContext) -> Iterator[None]:
        """Dropout always on (Baal's ``patch_module``), with masks drawn from the query's own seed."""
        device = next(view.model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
            torch.manual_seed(int(context.rng.integers(2**63 - 1)))
            self._dropout.patch_module(view.model, inplace=True)
            try:
                yield
            finally:
                self._dropout.unpatch_module(view.model, inplace=True)

    def score(self, batch: BatchOutputs) -> torch.Tensor:
        task, model = batch.view.task, batch.view.model
        passes = [batch.output] + [model(batch.inputs) for _ in range(self.iterations - 1)]
        samples = torch.stack([task.probabilities(output) for output in passes], dim=-1)  # (B, classes, T)
        if not torch.isfinite(samples).all():
            return torch.full((samples.shape[0],), float("nan"))  # refused by ScoreStrategy.select
        return torch.from_numpy(np.asarray(self._heuristic.get_uncertainties(samples.float().cpu().numpy())))


class BaalBALD(BaalStrategy):
    """Baal's BALD: mutual information between the prediction and the model posterior (Houlsby et al. 2011)."""

    name = "baal-bald"
    score_meaning = "BALD mutual information over MC-dropout passes (Baal): higher = the passes disagree more"
    heuristic = "BALD"


class BaalEntropy(BaalStrategy):
    """Baal's entropy of the MC-averaged prediction."""

    name = "baal-entropy"
    score_meaning = "entropy of the MC-dropout-averaged prediction (Baal): higher = less certain"
    heuristic = "Entropy"
