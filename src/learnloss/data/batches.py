"""Mini-batches of a :class:`~learnloss.data.dataset.Dataset` split, moved to the model's device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from learnloss.data.augment import augment_batch
from learnloss.data.dataset import AugmentSpec

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""``(pool indices (B,) on the CPU, normalised inputs on the device, targets on the device or None)``."""


@dataclass
class ArrayBatches:
    """Iterate over ``x[indices]`` in mini-batches.

    Args:
        x: stored inputs (``uint8`` images or float arrays), on any device.
        y: targets aligned with ``x``, or None where they are unknown (an unlabeled pool).
        indices: which rows to visit.
        batch_size: samples per batch; the last batch may be smaller.
        to_float: conversion of a stored batch to normalised float (e.g. ``Dataset.to_float``).
        device: where batches are sent.
        shuffle: a CPU generator to shuffle the order each time the object is iterated, or None to keep it.
        augment: training augmentation, or None (scoring and evaluation never augment).
        merge_singleton: fold a last batch of one sample into the one before it (BatchNorm cannot train on a
            single sample); every sample is still visited once.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    indices: np.ndarray
    batch_size: int
    to_float: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    shuffle: torch.Generator | None = None
    augment: AugmentSpec | None = None
    merge_singleton: bool = False

    def _starts(self) -> list[int]:
        starts = list(range(0, len(self.indices), self.batch_size))
        if self.merge_singleton and len(starts) > 1 and len(self.indices) - starts[-1] == 1:
            starts.pop()
        return starts + [len(self.indices)]

    def __len__(self) -> int:
        return len(self._starts()) - 1

    def __iter__(self) -> Iterator[Batch]:
        order = torch.as_tensor(np.asarray(self.indices, dtype=np.int64))
        if self.shuffle is not None:
            order = order[torch.randperm(len(order), generator=self.shuffle)]
        starts = self._starts()
        for start, stop in zip(starts[:-1], starts[1:]):
            index = order[start:stop]
            rows = index.to(self.x.device)
            inputs = self.to_float(self.x[rows].to(self.device, non_blocking=True))
            if self.augment is not None:
                inputs = augment_batch(inputs, self.augment, generator=self.shuffle)
            targets = None if self.y is None else self.y[index.to(self.y.device)].to(self.device, non_blocking=True)
            yield index, inputs, targets
