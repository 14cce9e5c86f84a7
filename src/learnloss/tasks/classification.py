"""Classification: per-sample cross-entropy and top-1 accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learnloss.tasks.base import Metric, Task


class Accuracy(Metric):
    """Top-1 accuracy."""

    name = "accuracy"

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += int((output.argmax(dim=1) == target).sum())
        self.total += int(target.shape[0])

    def compute(self) -> float:
        return self.correct / self.total if self.total else float("nan")


class ClassificationTask(Task):
    """Multi-class classification from logits ``(B, K)`` and integer targets ``(B,)``."""

    name = "classification"

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def new_metric(self) -> Accuracy:
        return Accuracy()

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output.float(), dim=1)
