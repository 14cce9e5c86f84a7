"""Training of a target model and its loss prediction module, as an ordered list of stages per cycle."""

from learnloss.training.stages import CycleData, JointTraining, Stage
from learnloss.training.trainer import EpochLog, TrainConfig, Trainer

__all__ = ["CycleData", "EpochLog", "JointTraining", "Stage", "TrainConfig", "Trainer"]
