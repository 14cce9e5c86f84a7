"""The loss prediction module, its feature taps and its losses (Yoo & Kweon, CVPR 2019)."""

from learnloss.lpm.attach import LearningLoss, attach
from learnloss.lpm.losses import LPM_LOSSES, get_lpm_loss, logistic_ranking_loss, margin_ranking_loss, mse_loss
from learnloss.lpm.module import LossPredictionModule
from learnloss.lpm.taps import LAYOUTS, FeatureTaps, Layout, pool_features

__all__ = [
    "LAYOUTS",
    "LPM_LOSSES",
    "FeatureTaps",
    "Layout",
    "LearningLoss",
    "LossPredictionModule",
    "attach",
    "get_lpm_loss",
    "logistic_ranking_loss",
    "margin_ranking_loss",
    "mse_loss",
    "pool_features",
]
