"""Training of a target model and its loss prediction module, as an ordered list of stages per cycle."""

from learnloss.training.semi import SemiConfig, SemiEpochLog, SemiSupervisedLPM
from learnloss.training.stages import CycleData, JointTraining, Stage
from learnloss.training.trainer import EpochLog, TrainConfig, Trainer

__all__ = [
    "CycleData", "EpochLog", "JointTraining", "SemiConfig", "SemiEpochLog", "SemiSupervisedLPM", "Stage", "TrainConfig",
    "Trainer",
]
