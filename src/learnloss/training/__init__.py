"""Joint training of a target model and its loss prediction module."""

from learnloss.training.trainer import EpochLog, TrainConfig, Trainer

__all__ = ["EpochLog", "TrainConfig", "Trainer"]
