"""A cycle's training as an ordered list of stages, each with its own optimiser, data and epochs.

Today's joint training of the target and its loss prediction module (Yoo & Kweon, CVPR 2019, Eq. 5) is the one
default stage, :class:`JointTraining`. A stage after it may train other parameters on other data — the
semi-supervised LPM of Hwang, Choi & Choi (IEEE Access 2024) fine-tunes the LPM alone on labeled *and* unlabeled
batches with the backbone frozen — by reading what it needs from :class:`CycleData`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import Dataset
from learnloss.inference import ModelView
from learnloss.training.trainer import EpochLog, TrainConfig, Trainer

__all__ = ["CycleData", "JointTraining", "Stage"]


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
    """

    dataset: Dataset
    targets: torch.Tensor
    labeled: np.ndarray
    unlabeled: np.ndarray
    device: torch.device
    generator: torch.Generator
    query: bool = True
    easy: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

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
        batches = data.labeled_batches(self.config.batch_size, self.config.augment, without_easy=True)
        return self.trainer.fit(view, batches, self.on_epoch)
