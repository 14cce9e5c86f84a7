"""Classification: per-sample cross-entropy and top-1 accuracy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from learnloss.errors import UsageError
from learnloss.tasks.base import Metric, Task

__all__ = ["Accuracy", "ClassificationTask"]


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


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Predictive entropy ``-Σ_k p_k log p_k`` of each row of ``(B, K)`` probabilities, in nats."""
    return -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=1)


class ClassificationTask(Task):
    """Multi-class classification from logits ``(B, K)`` and integer class targets ``(B,)`` (``-1``: unknown)."""

    name = "classification"
    metrics = ("accuracy",)
    primary_metric = "accuracy"

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def new_metrics(self) -> dict[str, Metric]:
        return {"accuracy": Accuracy()}

    def empty_targets(self, size: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((size,), -1, dtype=torch.long)

    def check_targets(self, targets: torch.Tensor) -> torch.Tensor:
        targets = torch.as_tensor(targets)
        if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 1:
            raise UsageError(f"classification targets must be integer class indices (B,), got {targets.dtype} "
                             f"{tuple(targets.shape)}")
        if targets.numel() and int(targets.min()) < 0:
            raise UsageError("labels must be non-negative class indices")
        return targets.long()

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output.float(), dim=1)

    def uncertainty(self, output: torch.Tensor) -> torch.Tensor:
        """Predictive entropy of each sample (:func:`entropy`, the ``entropy`` strategy's score)."""
        return entropy(self.probabilities(output))

    def predict(self, output: Any) -> tuple[list[Any], list[float | None]]:
        probabilities = self.probabilities(output).cpu()
        confidence, index = probabilities.max(dim=1)
        return index.tolist(), confidence.tolist()
