"""The registered strategies, by name."""

from __future__ import annotations

from learnloss.strategies.baal_peer import BaalBALD, BaalEntropy
from learnloss.strategies.badge import Badge
from learnloss.strategies.base import Strategy
from learnloss.strategies.coreset import CoreSet
from learnloss.strategies.diverse import DiverseSelection
from learnloss.strategies.loss_ranking import LearningLossStrategy, TrueLoss
from learnloss.strategies.mc_variance import MCVariance
from learnloss.strategies.random import RandomSampling
from learnloss.strategies.ssl_lpm import SSLLPM
from learnloss.strategies.stochastic import StochasticBatchAcquisition
from learnloss.strategies.uncertainty import Entropy, LeastConfidence, Margin, TaskUncertainty

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RandomSampling, Entropy, LeastConfidence, Margin, CoreSet, LearningLossStrategy, TrueLoss, BaalBALD, BaalEntropy,
        StochasticBatchAcquisition, DiverseSelection, Badge, SSLLPM, TaskUncertainty, MCVariance,
    )
}


def available_strategies() -> list[str]:
    """Names accepted by :func:`~learnloss.strategies.build_strategy`."""
    return sorted(STRATEGIES)
