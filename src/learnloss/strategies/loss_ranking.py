"""Strategies that rank candidates by a loss: predicted (learning loss) or true (a diagnostic oracle)."""

from __future__ import annotations

import torch

from learnloss.inference import BatchOutputs, Need
from learnloss.strategies.base import ScoreStrategy


class LearningLossStrategy(ScoreStrategy):
    """Query the samples with the highest loss predicted by the loss prediction module.

    References:
        Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019, Sec. 3.1.
    """

    name = "learning-loss"
    score_meaning = ("predicted loss of the loss prediction module: higher = more likely wrong; the scale is arbitrary and may "
                     "be negative, only the order matters")
    needs = frozenset({Need.LPM_SCORES})

    def score(self, batch: BatchOutputs) -> torch.Tensor:
        return batch.lpm_scores


class TrueLoss(ScoreStrategy):
    """Query the samples with the highest *true* loss — an upper-bound diagnostic that reads the ground
    truth, so it exists only in simulation."""

    name = "true-loss"
    score_meaning = "the model's true loss on the item (an oracle, for simulations): higher = more wrong"
    needs = frozenset({Need.TRUE_LOSSES})

    def score(self, batch: BatchOutputs) -> torch.Tensor:
        return batch.true_losses
