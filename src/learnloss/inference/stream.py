"""Streaming inference over a pool: one forward pass per batch, keeping only per-sample values.

Whatever a strategy needs (probabilities, LPM scores, embeddings, true losses) is computed lazily from the
batch's single forward pass; only the per-sample values the strategy keeps are moved to the CPU, so memory
grows with the number of scored samples times what is kept of each, never with the pool's features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from functools import cached_property
from typing import Any

import numpy as np
import torch

from learnloss.data.batches import Batch
from learnloss.errors import UsageError
from learnloss.inference.view import ModelView


class Need(str, Enum):
    """What a strategy asks the loop to provide."""

    PROBABILITIES = "probabilities"
    EMBEDDINGS = "embeddings"
    LPM_SCORES = "lpm_scores"
    TRUE_LOSSES = "true_losses"
    LABELED_EMBEDDINGS = "labeled_embeddings"
    INPUTS = "inputs"  # the strategy runs passes of its own over each batch (MC dropout)
    UNCERTAINTY = "uncertainty"  # the task's own uncertainty of each sample (Task.uncertainty)


class BatchOutputs:
    """Lazily derived per-sample values of one forward pass; each is computed at most once.

    ``inputs`` is the batch the model saw, for strategies that run further passes of their own (MC dropout).
    """

    def __init__(
        self, view: ModelView, indices: torch.Tensor, inputs: torch.Tensor, output: Any, targets: torch.Tensor | None
    ) -> None:
        self.view, self.indices, self.inputs, self.output, self.targets = view, indices, inputs, output, targets

    @cached_property
    def probabilities(self) -> torch.Tensor:
        return self.view.task.probabilities(self.output)

    @cached_property
    def uncertainty(self) -> torch.Tensor:
        return self.view.task.uncertainty(self.output)

    @cached_property
    def lpm_scores(self) -> torch.Tensor:
        if self.view.learning_loss is None:
            raise UsageError("LPM scores were requested but no loss prediction module is attached")
        return self.view.learning_loss.predicted_loss()

    @cached_property
    def embeddings(self) -> torch.Tensor:
        return self.view.embeddings()

    @cached_property
    def true_losses(self) -> torch.Tensor:
        if self.targets is None:
            raise UsageError("true losses need ground-truth labels, which only a simulation has")
        return self.view.task.per_sample_loss(self.output, self.targets)


def stream(
    view: ModelView,
    batches: Iterable[Batch],
    collect: Callable[[BatchOutputs], dict[str, torch.Tensor]],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run the model over ``batches`` in eval mode without gradients and keep what ``collect`` returns.

    Returns the pool indices in the order they were visited and, for each key of ``collect``, the values
    aligned with those indices — so a shuffled batch order cannot misalign scores and samples.
    """
    modules = view.modules()
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    indices: list[np.ndarray] = []
    kept: dict[str, list[np.ndarray]] = {}
    try:
        with torch.inference_mode(), view.precision.autocast(view.device):
            for index, inputs, targets in batches:
                inputs = view.precision.inputs(inputs)
                outputs = BatchOutputs(view, index, inputs, view.model(inputs), targets)
                for key, value in collect(outputs).items():
                    # Copy into memory numpy owns: keeping many small torch storages alive between the large
                    # per-batch activations fragments the heap, and resident memory then grows with the pool.
                    kept.setdefault(key, []).append(value.detach().float().cpu().numpy().copy())
                indices.append(index.numpy().copy())
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
        view.clear()
    if not indices:
        return np.empty(0, dtype=np.int64), {}
    return np.concatenate(indices), {key: np.concatenate(values) for key, values in kept.items()}
