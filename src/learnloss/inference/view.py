"""The target model with what is attached to it: the unit that training, inference and strategies share."""

from __future__ import annotations

import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.inference.precision import Precision
from learnloss.lpm.attach import LearningLoss
from learnloss.lpm.taps import FeatureTaps
from learnloss.tasks.base import Task

__all__ = ["ModelView"]


class ModelView:
    """The target model with whatever is attached to it: an LPM, and/or taps for embeddings.

    Args:
        model: the target model.
        task: the task that turns outputs into losses and probabilities.
        learning_loss: the attached LPM, if any.
        embedding_taps: taps whose only layer gives embeddings, used when there is no LPM.
        precision: autocast dtype and memory format of every pass (training, evaluation, scoring).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        learning_loss: LearningLoss | None = None,
        embedding_taps: FeatureTaps | None = None,
        precision: Precision | None = None,
    ) -> None:
        self.model, self.task, self.learning_loss, self.embedding_taps = model, task, learning_loss, embedding_taps
        self.precision = precision or Precision()

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live (the CPU for a model without parameters)."""
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def modules(self) -> list[nn.Module]:
        """The trainable modules: the model, then the LPM if one is attached."""
        return [self.model] + ([self.learning_loss.lpm] if self.learning_loss is not None else [])

    def embeddings(self) -> torch.Tensor:
        """Pooled embeddings ``(B, C)`` of the last forward pass."""
        if self.learning_loss is not None:
            return self.learning_loss.embeddings()
        if self.embedding_taps is None:
            raise UsageError("embeddings were requested but no embedding layer is tapped")
        return self.embedding_taps.pooled()[0]

    def _attached(self) -> list[LearningLoss | FeatureTaps]:
        return [taps for taps in (self.learning_loss, self.embedding_taps) if taps is not None]

    def clear(self) -> None:
        """Free the features captured by the last forward pass."""
        for taps in self._attached():
            taps.clear()

    def remove(self) -> None:
        """Remove every hook from the model."""
        for taps in self._attached():
            taps.remove()
