"""Query strategies: the learning-loss strategy, the classic baselines and wrappers around them.

A strategy is named by a specification text ``NAME[(INNER)][:KEY=VALUE]*`` (:mod:`learnloss.strategies.spec`),
e.g. ``learning-loss``, ``core-set:chunk=2048``, ``stochastic(margin):beta=2``, ``diverse(learning-loss)``,
``badge`` or ``ssl-lpm:semi=false``.
"""

from __future__ import annotations

from learnloss.strategies.baal_peer import BaalBALD, BaalEntropy, BaalStrategy
from learnloss.strategies.badge import Badge, badge_seeding, gradient_factors, gradient_sq_distances
from learnloss.strategies.base import QueryContext, ScoreStrategy, Strategy, WrapperStrategy, top_k
from learnloss.strategies.coreset import CoreSet, k_center_greedy
from learnloss.strategies.diverse import (
    DiverseSelection,
    Shortlist,
    max_shortlist,
    plan_shortlist,
    shortlist_cluster,
)
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
from learnloss.strategies.ssl_lpm import SSLLPM
from learnloss.strategies.stochastic import StochasticBatchAcquisition, gumbel_top_k
from learnloss.strategies.uncertainty import Entropy, LeastConfidence, Margin, UncertaintyStrategy

__all__ = [
    "SSLLPM",
    "STRATEGIES",
    "BaalBALD",
    "BaalEntropy",
    "BaalStrategy",
    "Badge",
    "CoreSet",
    "DiverseSelection",
    "Entropy",
    "LearningLossStrategy",
    "LeastConfidence",
    "Margin",
    "QueryContext",
    "RandomSampling",
    "ScoreStrategy",
    "Shortlist",
    "StochasticBatchAcquisition",
    "Strategy",
    "StrategySpec",
    "TrueLoss",
    "UncertaintyStrategy",
    "WrapperStrategy",
    "available_strategies",
    "badge_seeding",
    "build_strategy",
    "gradient_factors",
    "gradient_sq_distances",
    "gumbel_top_k",
    "k_center_greedy",
    "max_shortlist",
    "parse_strategy",
    "plan_shortlist",
    "shortlist_cluster",
    "split_strategy_settings",
    "strategy_parameters",
    "top_k",
]
