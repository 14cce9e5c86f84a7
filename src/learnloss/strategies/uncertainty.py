"""Uncertainty baselines on class probabilities: entropy, least confidence, margin.

References:
    Settles, "Active Learning Literature Survey", 2009, Sec. 3.1 (uncertainty sampling).
    Shannon entropy as used by Yoo & Kweon (CVPR 2019) as a baseline.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from learnloss.inference import BatchOutputs, Need
from learnloss.strategies.base import ScoreStrategy
from learnloss.tasks.classification import entropy


class UncertaintyStrategy(ScoreStrategy):
    """Score each sample by an uncertainty of its predicted class distribution."""

    needs = frozenset({Need.PROBABILITIES})

    def score(self, batch: BatchOutputs) -> torch.Tensor:
        return self.uncertainty(batch.probabilities)

    @staticmethod
    @abstractmethod
    def uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
        """Uncertainty ``(B,)`` of probabilities ``(B, K)``; higher is more uncertain."""


class Entropy(UncertaintyStrategy):
    """Predictive entropy ``-Σ_k p_k log p_k``."""

    name = "entropy"
    score_meaning = "entropy of the predicted class probabilities, in nats: higher = less certain"

    @staticmethod
    def uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
        return entropy(probabilities)


class LeastConfidence(UncertaintyStrategy):
    """One minus the probability of the predicted class."""

    name = "least-confidence"
    score_meaning = "1 - the probability of the predicted class: higher = less certain"

    @staticmethod
    def uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
        return 1.0 - probabilities.max(dim=1).values


class Margin(UncertaintyStrategy):
    """Negative gap between the two most probable classes (a small gap is uncertain)."""

    name = "margin"
    score_meaning = ("second-highest minus highest class probability (from -1 to 0): higher = a closer call "
                     "between the top two classes")

    @staticmethod
    def uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
        top2 = probabilities.topk(2, dim=1).values
        return top2[:, 1] - top2[:, 0]


class TaskUncertainty(ScoreStrategy):
    """The task's own uncertainty baseline (:meth:`~learnloss.tasks.Task.uncertainty`): for classification the
    predictive entropy (the same ranking as ``entropy``), for detection the highest Bernoulli entropy of an image's
    detection peaks, for keypoints the heatmaps' lack of confidence — one name for "the uncertainty baseline" of
    whatever task a run has, so a benchmark's arms read the same across tasks."""

    name = "uncertainty"
    needs = frozenset({Need.UNCERTAINTY})
    score_meaning = "the task's own uncertainty of the prediction: higher = less certain"

    def score(self, batch: BatchOutputs) -> torch.Tensor:
        return batch.uncertainty
