"""Query strategies: the learning-loss strategy, the classic baselines and wrappers around them.

A strategy is named by a specification text ``NAME[(INNER)][:KEY=VALUE]*`` (:mod:`learnloss.strategies.spec`),
e.g. ``learning-loss``, ``core-set:chunk=2048`` or ``stochastic(margin):beta=2``.
"""

from __future__ import annotations

from learnloss.strategies.baal_peer import BaalBALD, BaalEntropy, BaalStrategy
from learnloss.strategies.base import QueryContext, ScoreStrategy, Strategy, WrapperStrategy, top_k
from learnloss.strategies.coreset import CoreSet, k_center_greedy
from learnloss.strategies.loss_ranking import LearningLossStrategy, TrueLoss
from learnloss.strategies.random import RandomSampling
from learnloss.strategies.registry import STRATEGIES, available_strategies
from learnloss.strategies.spec import (
    StrategySpec,
    build_strategy,
    parse_strategy,
    split_strategy_settings,
    strategy_parameters,
)
from learnloss.strategies.stochastic import StochasticBatchAcquisition, gumbel_top_k
from learnloss.strategies.uncertainty import Entropy, LeastConfidence, Margin, UncertaintyStrategy

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
    "StochasticBatchAcquisition",
    "Strategy",
    "StrategySpec",
    "TrueLoss",
    "UncertaintyStrategy",
    "WrapperStrategy",
    "available_strategies",
    "build_strategy",
    "gumbel_top_k",
    "k_center_greedy",
    "parse_strategy",
    "split_strategy_settings",
    "strategy_parameters",
    "top_k",
]
