"""Mini-batches of a :class:`~learnloss.data.dataset.Dataset` split, moved to the model's device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from learnloss.data.augment import augment_batch
from learnloss.data.dataset import AugmentSpec
from learnloss.data.source import ArraySource, Inputs

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""``(pool indices (B,) on the CPU, normalised inputs on the device, targets on the device or None)``."""


@dataclass
class ArrayBatches:
    """Iterate over ``x[indices]`` in mini-batches.

    Args:
        x: stored inputs (``uint8`` images or float arrays), a tensor on any device or an
            :class:`~learnloss.data.source.ArraySource` that reads each batch's rows when it is needed.
        y: targets aligned with ``x``, or None where they are unknown (an unlabeled pool).
        indices: which rows to visit.
        batch_size: samples per batch; the last batch may be smaller.
        to_float: conversion of a stored batch to normalised float (e.g. ``Dataset.to_float``).
        device: where batches are sent.
        shuffle: a CPU generator to shuffle the order each time the object is iterated, or None to keep it.
        augment: training augmentation, or None (scoring and evaluation never augment).
        merge_singleton: fold a last batch of one sample into the one before it (BatchNorm cannot train on a
            single sample); every sample is still visited once.
        prefetch: read the next batch's rows in a background thread while this batch is used (so reading a file
            or decoding images overlaps the model's work); by default when ``x`` is an array source.
    """

    x: Inputs
    y: torch.Tensor | None
    indices: np.ndarray
    batch_size: int
    to_float: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    shuffle: torch.Generator | None = None
    augment: AugmentSpec | None = None
    merge_singleton: bool = False
    prefetch: bool | None = None

    def _starts(self) -> list[int]:
        starts = list(range(0, len(self.indices), self.batch_size))
        if self.merge_singleton and len(starts) > 1 and len(self.indices) - starts[-1] == 1:
            starts.pop()
        return starts + [len(self.indices)]

    def __len__(self) -> int:
        return len(self._starts()) - 1

    def _read(self, index: torch.Tensor) -> torch.Tensor:
        return self.x[index.to(self.x.device)]

    def _reads_ahead(self) -> bool:
        return isinstance(self.x, ArraySource) if self.prefetch is None else self.prefetch

    def _stored(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The stored rows of each batch; with :attr:`prefetch`, the next batch's are read in a background thread
        while the caller uses this one (reading draws nothing from the generator, so the batches are the same)."""
        if not self._reads_ahead() or len(batches) < 2:
            yield from (self._read(index) for index in batches)
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learnloss-prefetch")
        try:
            pending = executor.submit(self._read, batches[0])
            for i in range(len(batches)):
                stored = pending.result()
                if i + 1 < len(batches):
                    pending = executor.submit(self._read, batches[i + 1])
                yield stored
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.as_tensor(np.asarray(self.indices, dtype=np.int64))
        if self.shuffle is not None:
            order = order[torch.randperm(len(order), generator=self.shuffle)]
        starts = self._starts()
        batches = [order[start:stop] for start, stop in zip(starts[:-1], starts[1:])]
        for index, stored in zip(batches, self._stored(batches)):
            inputs = self.to_float(stored.to(self.device, non_blocking=True))
            if self.augment is not None:
                inputs = augment_batch(inputs, self.augment, generator=self.shuffle)
            targets = None if self.y is None else self.y[index.to(self.y.device)].to(self.device, non_blocking=True)
            yield index, inputs, targets
