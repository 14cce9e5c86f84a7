"""The task interface: what the loss prediction module learns to predict, and how a model is scored.

A task supplies the per-sample loss that the target model minimises and the LPM learns to rank, and the
evaluation metric. The LPM never knows which task it serves (Yoo & Kweon, CVPR 2019, Sec. 3: the method is
task-agnostic). Classification, regression, detection and pose all fit: each yields one loss per sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from learnloss.errors import UsageError


class Metric(ABC):
    """An evaluation metric accumulated over batches."""

    name: str = "metric"

    @abstractmethod
    def update(self, output: Any, target: Any) -> None:
        """Add one batch of model outputs and targets."""

    @abstractmethod
    def compute(self) -> float:
        """The metric over every batch added so far."""


class Task(ABC):
    """Per-sample loss and evaluation metric of one kind of problem."""

    name: str = "task"

    @abstractmethod
    def per_sample_loss(self, output: Any, target: Any) -> torch.Tensor:
        """Loss of each sample, shape ``(B,)``, with gradient into ``output``."""

    @abstractmethod
    def new_metric(self) -> Metric:
        """A fresh accumulator of the evaluation metric."""

    def probabilities(self, output: Any) -> torch.Tensor:
        """Class probabilities ``(B, K)`` for uncertainty strategies; tasks without classes refuse."""
        raise UsageError(
            f"task {self.name!r} has no class probabilities; choose a strategy that does not need them "
            "(random, core-set, learning-loss)"
        )
