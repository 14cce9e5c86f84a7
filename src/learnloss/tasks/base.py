"""The task interface: what the loss prediction module learns to predict, what a target is, and how a model is
scored.

A task supplies the per-sample loss that the target model minimises and the LPM learns to rank, the type of its
targets (a class index, a float vector, later boxes or keypoints), and its evaluation metrics with the one that
draws the learning curve. The LPM never knows which task it serves (Yoo & Kweon, CVPR 2019, Sec. 3: the method
is task-agnostic): classification, regression, detection and pose all yield one loss per sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from learnloss.errors import UsageError

__all__ = ["Metric", "Task"]


class Metric(ABC):
    """An evaluation metric accumulated over batches."""

    name: ClassVar[str] = "metric"

    @abstractmethod
    def update(self, output: Any, target: Any) -> None:
        """Add one batch of model outputs and targets."""

    @abstractmethod
    def compute(self) -> float:
        """The metric over every batch added so far (NaN when nothing was added)."""


class Task(ABC):
    """Per-sample loss, targets and evaluation metrics of one kind of problem.

    Attributes:
        name: the task's registered name (``classification``, ``regression``).
        metrics: names of the metrics it reports on the test split, each a key ``test_<name>`` of a cycle's
            results.
        primary_metric: the metric of the learning curve (AUBC, plots, comparisons); higher must be better.
    """

    name: ClassVar[str] = "task"
    metrics: ClassVar[tuple[str, ...]] = ()
    primary_metric: ClassVar[str] = ""

    @abstractmethod
    def per_sample_loss(self, output: Any, target: Any) -> torch.Tensor:
        """Loss of each sample, shape ``(B,)``, with gradient into ``output``."""

    @abstractmethod
    def new_metrics(self) -> dict[str, Metric]:
        """Fresh accumulators, one per name of :attr:`metrics`."""

    @abstractmethod
    def empty_targets(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """A container for the targets of a pool of ``size`` samples, all unknown; ``like`` is an example of the
        dataset's targets (its shape past the first dimension and its dtype)."""

    @abstractmethod
    def check_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """``targets`` converted to the task's type; raises :class:`UsageError` naming what is wrong."""

    def new_metric(self) -> Metric:
        """A fresh accumulator of the primary metric."""
        return self.new_metrics()[self.primary_metric]

    def probabilities(self, output: Any) -> torch.Tensor:
        """Class probabilities ``(B, K)`` for uncertainty strategies; tasks without classes refuse."""
        raise UsageError(
            f"task {self.name!r} has no class probabilities; choose a strategy that does not need them "
            "(random, core-set, learning-loss)"
        )

    def uncertainty(self, output: Any) -> torch.Tensor:
        """The task's own uncertainty of each sample, ``(B,)``, higher = less certain: the per-task baseline the
        ``uncertainty`` strategy ranks by (classification: the entropy of the class probabilities; detection:
        the highest Bernoulli entropy of the image's detection peaks; keypoints: the heatmaps' lack of confidence).
        Tasks without
        one refuse."""
        raise UsageError(
            f"task {self.name!r} has no uncertainty score of its own; choose random, core-set, learning-loss or, "
            "with dropout in the model, mc-variance"
        )

    def predict(self, output: Any) -> tuple[list[Any], list[float | None]]:
        """Each sample's prediction (as a JSON-ready value) and a confidence in it, or None where the task has
        no such notion."""
        values = output.detach().float().cpu()
        return [row.tolist() for row in values], [None] * int(values.shape[0])
