"""Query strategies: the learning-loss strategy and the classic baselines."""

from __future__ import annotations

from learnloss.errors import UnknownNameError
from learnloss.strategies.baal_peer import BaalBALD, BaalEntropy, BaalStrategy
from learnloss.strategies.base import QueryContext, ScoreStrategy, Strategy, top_k
from learnloss.strategies.coreset import CoreSet, k_center_greedy
from learnloss.strategies.loss_ranking import LearningLossStrategy, TrueLoss
from learnloss.strategies.random import RandomSampling
from learnloss.strategies.uncertainty import Entropy, LeastConfidence, Margin, UncertaintyStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RandomSampling, Entropy, LeastConfidence, Margin, CoreSet, LearningLossStrategy, TrueLoss, BaalBALD, BaalEntropy,
    )
}


def available_strategies() -> list[str]:
    """Names accepted by :func:`build_strategy`."""
    return sorted(STRATEGIES)


def build_strategy(name: str) -> Strategy:
    """Create a strategy by name (e.g. ``learning-loss``, ``entropy``, ``core-set``)."""
    try:
        return STRATEGIES[name.lower()]()
    except KeyError:
        raise UnknownNameError("strategy", name, available_strategies()) from None


__all__ = [
    "STRATEGIES",
    "BaalBALD",
    "BaalEntropy",
    "BaalStrategy",
    "CoreSet",
    "Entropy",
    "LearningLossStrategy",
    "LeastConfidence",
    "Margin",
    "QueryContext",
    "RandomSampling",
    "ScoreStrategy",
    "Strategy",
    "TrueLoss",
    "UncertaintyStrategy",
    "available_strategies",
    "build_strategy",
    "k_center_greedy",
    "top_k",
]
