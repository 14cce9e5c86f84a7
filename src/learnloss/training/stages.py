"""A cycle's training as an ordered list of stages, each with its own optimiser, data and epochs.

Today's joint training of the target and its loss prediction module (Yoo & Kweon, CVPR 2019, Eq. 5) is the one
default stage, :class:`JointTraining`. A stage after it may train other parameters on other data — the
semi-supervised LPM of Hwang, Choi & Choi (IEEE Access 2024) fine-tunes the LPM alone on labeled *and* unlabeled
batches with the backbone frozen — by reading what it needs from :class:`CycleData`.

In a distributed run (:attr:`CycleData.dist`) the joint stage trains each rank on its share of every epoch's
labeled samples (:meth:`CycleData.training_batches`, :class:`ShardedBatches`) under DistributedDataParallel. Other
stages read :meth:`CycleData.labeled_batches` and :meth:`CycleData.unlabeled_batches`, which stay whole: such a
stage runs the same on every rank, and the loop then copies rank 0's weights to every rank after each stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from learnloss.data.batches import ArrayBatches, Batch
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.source import Inputs
from learnloss.distributed import SINGLE, Distributed
from learnloss.inference import ModelView
from learnloss.training.trainer import EpochLog, TrainConfig, Trainer

__all__ = ["CycleData", "JointTraining", "ShardedBatches", "Stage"]


@dataclass
class ShardedBatches:
    """This rank's share of each epoch's shuffled samples in a distributed run (as ``DistributedSampler`` deals them).

    Each epoch, every rank draws the same permutation of ``indices`` from the shared ``generator`` (the loop's,
    in the same state on every rank: the same seed gives the same global order), pads it by repeating its first
    samples to a multiple of the world size — every rank gets as many samples, hence as many steps, which
    DistributedDataParallel needs — and takes every ``world_size``-th sample from its rank on. The rank batches
    them ``batch_size`` at a time (a last batch of one merged into the one before), in an order and with the
    augmentation drawn from a generator of its own, seeded from the shared one and its rank. One more draw from
    the shared generator per epoch keeps it in step on every rank.

    Args:
        x, y, indices, to_float, device, augment: as :class:`~learnloss.data.batches.ArrayBatches`.
        batch_size: samples per batch on this rank.
        generator: the loop's shared generator.
        dist: this rank.
    """

    x: Inputs
    y: torch.Tensor | None
    indices: np.ndarray
    batch_size: int
    to_float: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    generator: torch.Generator
    dist: Distributed
    augment: AugmentSpec | None = None

    def _local(self, indices: np.ndarray, generator: torch.Generator | None) -> ArrayBatches:
        return ArrayBatches(self.x, self.y, indices, self.batch_size, self.to_float, self.device, shuffle=generator,
                            augment=self.augment, merge_singleton=True)

    @property
    def per_rank(self) -> int:
        """Samples each rank trains on per epoch (padding included)."""
        return math.ceil(len(self.indices) / self.dist.world_size)

    def __len__(self) -> int:
        return len(self._local(np.zeros(self.per_rank, dtype=np.int64), None))

    def __iter__(self) -> Iterator[Batch]:
        count, world = len(self.indices), self.dist.world_size
        if count == 0:
            return
        order = torch.as_tensor(np.asarray(self.indices, dtype=np.int64))[torch.randperm(count, generator=self.generator)]
        total = self.per_rank * world
        if total > count:  # pad with the first samples of the permutation (repeated if the set is tiny)
            order = order.repeat(math.ceil(total / count))[:total]
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        own = torch.Generator().manual_seed(seed + self.dist.rank)
        yield from self._local(order[self.dist.rank::world].numpy(), own)


@dataclass
class CycleData:
    """What a cycle's stages may train on: the dataset, the labeled and unlabeled pool indices with the labeled
    targets, the device, and the loop's seeded generator (shuffling and augmentation draw from it, so the same
    seed trains the same way).

    Attributes:
        dataset: inputs of the pool (``x_train``) and their normalisation.
        targets: pool-sized targets; only the labeled rows are meaningful.
        labeled: pool indices of the labeled samples, sorted.
        unlabeled: pool indices of the unlabeled samples, sorted.
        device: where batches go.
        generator: the loop's CPU generator.
        query: whether a query follows this cycle's training (False after the last cycle of a run: a stage that
            only serves the selection, such as the semi-supervised LPM, is skipped).
        easy: labeled pool indices the target model leaves out this cycle (:attr:`LoopConfig.drop_easy`).
        dist: this process's rank in a distributed run (:data:`~learnloss.distributed.SINGLE` in one process).
    """

    dataset: Dataset
    targets: torch.Tensor
    labeled: np.ndarray
    unlabeled: np.ndarray
    device: torch.device
    generator: torch.Generator
    query: bool = True
    easy: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    dist: Distributed = SINGLE

    def labeled_batches(self, batch_size: int, augment: bool = True, without_easy: bool = False) -> ArrayBatches:
        """Shuffled (and, with ``augment``, augmented) batches of the labeled samples with their targets; a last
        batch of one sample is folded into the one before (BatchNorm cannot train on one sample). With
        ``without_easy`` the :attr:`easy` samples are left out."""
        data = self.dataset
        labeled = np.setdiff1d(self.labeled, self.easy) if without_easy and len(self.easy) else self.labeled
        return ArrayBatches(
            data.x_train, self.targets, labeled, batch_size, data.to_float, self.device, shuffle=self.generator,
            augment=data.augment if augment else None, merge_singleton=True,
        )

    def training_batches(self, batch_size: int, augment: bool = True,
                         without_easy: bool = False) -> ArrayBatches | ShardedBatches:
        """:meth:`labeled_batches` in one process; in a distributed run this rank's share of them
        (:class:`ShardedBatches`), ``ceil(batch_size / world_size)`` samples per batch on each rank, so a step
        still averages the gradient over about ``batch_size`` samples. For stages that train under
        DistributedDataParallel (the joint stage)."""
        if not self.dist.active:
            return self.labeled_batches(batch_size, augment, without_easy)
        data = self.dataset
        labeled = np.setdiff1d(self.labeled, self.easy) if without_easy and len(self.easy) else self.labeled
        return ShardedBatches(data.x_train, self.targets, labeled, math.ceil(batch_size / self.dist.world_size),
                              data.to_float, self.device, self.generator, self.dist,
                              augment=data.augment if augment else None)

    def unlabeled_batches(self, batch_size: int) -> ArrayBatches:
        """Shuffled batches of the unlabeled samples, not augmented and without targets (a stage draws its own
        views of them)."""
        data = self.dataset
        return ArrayBatches(data.x_train, None, self.unlabeled, batch_size, data.to_float, self.device,
                            shuffle=self.generator)


@runtime_checkable
class Stage(Protocol):
    """One stage of a cycle's training."""

    name: str

    def run(self, view: ModelView, data: CycleData) -> list[EpochLog]:
        """Train ``view`` on ``data`` and return one log per epoch."""
        ...


class JointTraining:
    """The paper's training: the target and its LPM together on the labeled set (Yoo & Kweon, CVPR 2019, Eq. 5),
    with the stop-gradient from :attr:`TrainConfig.stop_grad_epoch` on. The default stage; the labeled samples of
    :attr:`CycleData.easy` are left out.

    Args:
        config: optimiser, schedule and loss settings.
        progress: show a progress bar.
        on_epoch: called with each epoch's log.
    """

    name = "joint"

    def __init__(self, config: TrainConfig, progress: bool = False,
                 on_epoch: Callable[[EpochLog], None] | None = None) -> None:
        self.config, self.on_epoch = config, on_epoch
        self.trainer = Trainer(config, progress=progress)

    def run(self, view: ModelView, data: CycleData) -> list[EpochLog]:
        """Train ``view`` jointly on the labeled batches of ``data`` (shuffled and augmented from the loop's
        generator) for the configured epochs."""
        batches = data.training_batches(self.config.batch_size, self.config.augment, without_easy=True)
        return self.trainer.fit(view, batches, self.on_epoch, dist=data.dist)
