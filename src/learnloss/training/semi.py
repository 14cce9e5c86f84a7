"""Stage B: the semi-supervised loss prediction module (Hwang, Choi & Choi, IEEE Access 2024).

The LPM of Yoo & Kweon (CVPR 2019) is trained on labeled data only, yet must rank *unlabeled* data. After the joint
stage of a cycle that queries, this stage freezes the target model (no gradient, eval mode: BatchNorm statistics
stay as they are) and fine-tunes the LPM alone, with its own optimiser and epochs, on labeled *and* unlabeled
batches:

* a labeled batch (with the training augmentation) gives the ranking term of the paper, against the true
  per-sample losses;
* each unlabeled image gets a weak view (flip + pad-crop) and a strong view (an independent flip + pad-crop, then
  RandAugment(n=2, m=10) and Cutout — FixMatch, Sohn et al., NeurIPS 2020). The backbone's softmax on the weak view
  is the soft pseudo-label; only samples whose top probability is at least τ (0.9) count. A counted sample's target
  loss is the cross-entropy between the strong view's prediction and that soft pseudo-label (FixMatch's
  consistency loss), and the LPM reads the strong view's features to predict it;
* the labeled and unlabeled ranking terms are added with weight 1 each. A batch in which fewer than two unlabeled
  samples pass τ contributes no unlabeled term (the naive mean over an empty selection is NaN).

All three views of a step go through the frozen model in one forward pass (eval mode, so they do not interact);
the augmentations are batched tensor operations on the model's device, with random numbers from the loop's seeded
generator. The stage is skipped after the last cycle, where nothing is selected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from learnloss.data.augment import augment_batch
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import normalize
from learnloss.data.strong_augment import strong_augment
from learnloss.errors import TrainingDivergedError, UsageError
from learnloss.inference import ModelView
from learnloss.lpm.losses import get_lpm_loss
from learnloss.training.stages import CycleData
from learnloss.training.trainer import EpochLog

__all__ = ["SemiConfig", "SemiEpochLog", "SemiSupervisedLPM"]


@dataclass
class SemiConfig:
    """Settings of stage B. Defaults are the paper's public code (CIFAR-100, ResNet-18).

    Attributes:
        epochs: epochs of LPM fine-tuning per cycle (30).
        lr: SGD learning rate of the LPM (0.01).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay (5e-4).
        batch_size: labeled samples per step (128).
        threshold: τ, the confidence a weak view's pseudo-label needs to count (0.9).
        lpm_loss: ranking loss of both terms: ``logistic`` (the pairwise BCE of the paper's code), ``ranking``
            (the margin hinge of Yoo & Kweon, Eq. 2) or ``mse``.
        margin: ξ of the hinge.
        unlabeled: unlabeled samples drawn per epoch, spread evenly over its labeled batches (None: every
            unlabeled sample, as the paper's code does). A CPU-sized protocol draws fewer.
        max_unlabeled_batch: cap of the unlabeled samples per step (1536 in the paper's code).
        randaugment_n: RandAugment's number of ops per image (2).
        randaugment_m: RandAugment's magnitude (10).
        cutout: side of the Cutout square in pixels (None: half the smaller image side, FixMatch's 16 of 32).
        views: None draws fresh weak and strong views every epoch (the paper). A number ``V`` runs the frozen
            model over ``V`` epochs' draws only and keeps their pooled features; the other epochs train the LPM
            on those again (each step's samples re-paired, the steps re-ordered). With the backbone frozen and in
            eval mode this changes only how many augmentation draws the LPM sees, and makes the stage cost ``V``
            forward passes instead of ``epochs``: the LPM itself is a few small matrices.
    """

    epochs: int = 30
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    threshold: float = 0.9
    lpm_loss: str = "logistic"
    margin: float = 1.0
    unlabeled: int | None = None
    max_unlabeled_batch: int = 1536
    randaugment_n: int = 2
    randaugment_m: int = 10
    cutout: int | None = None
    views: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_unlabeled_batch", "randaugment_n"):
            if getattr(self, name) <= 0:
                raise UsageError(f"stage B's {name} must be positive, got {getattr(self, name)}")
        if self.views is not None and self.views <= 0:
            raise UsageError(f"--semi-views must be positive or 'all', got {self.views}")
        if self.unlabeled is not None and self.unlabeled < 2:
            raise UsageError(f"--semi-unlabeled must be at least 2 or 'all', got {self.unlabeled}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--semi-lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--semi-threshold must be a probability in [0, 1], got {self.threshold}")
        get_lpm_loss(self.lpm_loss)


@dataclass
class SemiEpochLog(EpochLog):
    """An epoch of stage B: ``task_loss`` is the mean true loss of the labeled batches, ``lpm_loss`` the mean of
    the summed ranking terms; ``confident`` is the fraction of unlabeled samples whose pseudo-label passed τ and
    ``unlabeled_lpm_loss`` the mean unlabeled ranking term over the steps that had one (None if none did)."""

    confident: float = 0.0
    unlabeled_lpm_loss: float | None = None


class SemiSupervisedLPM:
    """Stage B of a cycle: fine-tune the LPM alone on labeled and pseudo-labeled unlabeled data with the target
    model frozen (Hwang, Choi & Choi, IEEE Access 2024; see the module docstring for the recipe).

    Needs an attached LPM, a classification task (the pseudo-labels are class distributions) and ``uint8`` image
    inputs (RandAugment works on pixel values). The target model's parameters are unchanged by this stage: their
    ``requires_grad`` flags are switched off while it runs and restored afterwards.

    Args:
        config: the stage's settings.
        progress: show a progress bar.
        on_epoch: called with each epoch's log.
    """

    name = "semi-lpm"

    def __init__(self, config: SemiConfig | None = None, progress: bool = False,
                 on_epoch: Callable[[SemiEpochLog], None] | None = None) -> None:
        self.config, self.progress, self.on_epoch = config or SemiConfig(), progress, on_epoch
        self.rank = get_lpm_loss(self.config.lpm_loss)

    def check(self, view: ModelView, data: CycleData) -> None:
        """Refuse what the stage cannot train on, with the reason and what to change."""
        if view.learning_loss is None:
            raise UsageError("the semi-supervised LPM stage needs a loss prediction module; use a strategy that "
                             "ranks by predicted loss (ssl-lpm)")
        if view.task.name != "classification":
            raise UsageError(f"the semi-supervised LPM stage needs a classification task (pseudo-labels are class "
                             f"distributions), not {view.task.name}; use ssl-lpm:semi=false")
        x = data.dataset.x_train
        if x.dim() != 4 or x.dtype != torch.uint8:
            raise UsageError("the semi-supervised LPM stage's strong augmentation needs uint8 images (N, C, H, W), "
                             f"but the dataset holds {x.dtype} inputs of shape {tuple(x.shape[1:])}; use "
                             "ssl-lpm:semi=false")

    def run(self, view: ModelView, data: CycleData) -> list[EpochLog]:
        """Fine-tune the LPM of ``view`` on ``data`` for the configured epochs; nothing when no query follows or
        nothing is unlabeled."""
        if not data.query or len(data.unlabeled) < 2 or len(data.labeled) == 0:
            return []
        self.check(view, data)
        model = view.model
        assert view.learning_loss is not None  # checked
        lpm = view.learning_loss.lpm
        frozen = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
        model_mode, lpm_mode = model.training, lpm.training
        for parameter, _ in frozen:
            parameter.requires_grad_(False)
        model.eval()
        lpm.train()
        try:
            return self._fit(view, data)
        finally:
            for parameter, flag in frozen:
                parameter.requires_grad_(flag)
            model.train(model_mode)
            lpm.train(lpm_mode)
            view.clear()

    def _unlabeled_stream(self, data: CycleData) -> _Reshuffled:
        """Pool indices of the unlabeled samples in a shuffled order, reshuffled each time it runs out."""
        return _Reshuffled(torch.as_tensor(np.asarray(data.unlabeled, dtype=np.int64)), data.generator)

    def _draw(self, view: ModelView, data: CycleData, labeled: ArrayBatches, unlabeled: _Reshuffled,
              step_size: int) -> Iterator[_Step]:
        """One epoch of steps through the frozen model: each labeled batch with ``step_size`` unlabeled samples,
        their weak and strong views drawn afresh, all three in one forward pass (eval mode: they do not
        interact). Yields the LPM's inputs (pooled, detached features) and the targets to rank."""
        config, model, device, precision, dataset = self.config, view.model, view.device, view.precision, data.dataset
        assert view.learning_loss is not None and dataset.mean is not None and dataset.std is not None
        mean, std = dataset.mean.to(device), dataset.std.to(device)
        for _, inputs, targets in labeled:
            index = unlabeled.take(step_size)
            raw = dataset.x_train[index.to(dataset.x_train.device)].to(device, non_blocking=True)
            pixels = raw.float().div_(255.0)
            weak = augment_batch(pixels, dataset.augment, generator=data.generator)
            strong = strong_augment(augment_batch(pixels, dataset.augment, generator=data.generator),
                                    n=config.randaugment_n, m=config.randaugment_m, cutout_size=config.cutout,
                                    generator=data.generator)
            views = torch.cat([inputs, normalize(weak, mean, std), normalize(strong, mean, std)])
            n_labeled, n_unlabeled = inputs.shape[0], index.shape[0]
            with torch.no_grad(), precision.autocast(device):
                output = model(precision.inputs(views))
            with torch.no_grad():
                pooled = [level.float() for level in view.learning_loss.taps.pooled(detach=True)]
                logits = output.float()
                true_losses = view.task.per_sample_loss(output[:n_labeled], targets).float()
                pseudo = torch.softmax(logits[n_labeled:n_labeled + n_unlabeled], dim=1)
                keep = pseudo.max(dim=1).values >= config.threshold
                strong_logits = logits[n_labeled + n_unlabeled:]
                pseudo_losses = -(pseudo * F.log_softmax(strong_logits, dim=1)).sum(dim=1)
            view.clear()
            strong_rows = slice(n_labeled + n_unlabeled, None)
            yield _Step(
                labeled=[level[:n_labeled] for level in pooled], labeled_losses=true_losses,
                unlabeled=[level[strong_rows][keep] for level in pooled], unlabeled_losses=pseudo_losses[keep],
                seen=n_unlabeled,
            )

    def _fit(self, view: ModelView, data: CycleData) -> list[EpochLog]:
        config, device = self.config, view.device
        assert view.learning_loss is not None
        lpm = view.learning_loss.lpm
        optimizer = torch.optim.SGD(lpm.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        labeled = data.labeled_batches(config.batch_size, augment=True)
        per_epoch = len(data.unlabeled) if config.unlabeled is None else min(config.unlabeled, len(data.unlabeled))
        step_size = min(config.max_unlabeled_batch, max(2, math.ceil(per_epoch / len(labeled))))
        unlabeled = self._unlabeled_stream(data)
        cached: list[list[_Step]] = []
        logs: list[EpochLog] = []
        epochs = tqdm(range(config.epochs), desc="stage B", unit="epoch", leave=False, disable=not self.progress)
        for epoch in epochs:
            if config.views is None or len(cached) < config.views:
                steps = list(self._draw(view, data, labeled, unlabeled, step_size))
                if config.views is not None:
                    cached.append(steps)
            else:  # a cached draw, its steps in a new order and each step's samples newly paired
                steps = [step.shuffled(data.generator) for step in cached[epoch % config.views]]
                steps = [steps[i] for i in torch.randperm(len(steps), generator=data.generator).tolist()]
            # summed on the device: the only host sync of a step is the count of confident samples
            sums = {key: torch.zeros((), device=device) for key in ("task", "lpm", "unlabeled")}
            unlabeled_steps = seen = confident = 0
            for step in steps:
                total = self.rank(lpm(step.labeled), step.labeled_losses, config.margin)
                kept = int(step.unlabeled_losses.shape[0])
                if kept >= 2:  # fewer than two samples have no pair: no unlabeled term, and no NaN
                    unlabeled_term = self.rank(lpm(step.unlabeled), step.unlabeled_losses, config.margin)
                    total = total + unlabeled_term
                    sums["unlabeled"] += unlabeled_term.detach()
                    unlabeled_steps += 1
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                sums["task"] += step.labeled_losses.mean()
                sums["lpm"] += total.detach()
                seen, confident = seen + step.seen, confident + kept
            count = max(len(steps), 1)
            log = SemiEpochLog(
                epoch=epoch, lr=config.lr, task_loss=float(sums["task"]) / count, lpm_loss=float(sums["lpm"]) / count,
                features_detached=True, confident=confident / max(seen, 1),
                unlabeled_lpm_loss=float(sums["unlabeled"]) / unlabeled_steps if unlabeled_steps else None,
            )
            if log.lpm_loss is None or not math.isfinite(log.lpm_loss):
                raise TrainingDivergedError(
                    f"stage B diverged in epoch {epoch + 1}: LPM loss {log.lpm_loss}; lower --semi-lr (now {config.lr})"
                )
            logs.append(log)
            if self.on_epoch is not None:
                self.on_epoch(log)
            epochs.set_postfix(confident=f"{log.confident:.2f}")
        return logs


class _Reshuffled:
    """An endless stream of ``pool`` in shuffled order, drawn a slice at a time; a new permutation (from
    ``generator``) is drawn only when the current one runs out, so the generator is used as a per-sample stream
    would use it."""

    def __init__(self, pool: torch.Tensor, generator: torch.Generator) -> None:
        self.pool, self.generator = pool, generator
        self.order, self.position = pool[:0], 0

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` pool indices."""
        parts = []
        while count > 0:
            if self.position == len(self.order):
                self.order, self.position = self.pool[torch.randperm(len(self.pool), generator=self.generator)], 0
            part = self.order[self.position:self.position + count]
            parts.append(part)
            self.position += len(part)
            count -= len(part)
        return torch.cat(parts)


@dataclass
class _Step:
    """One step's LPM inputs: pooled features (one ``(B, C_i)`` tensor per tapped layer) and the losses to rank,
    of the labeled batch and of the confident unlabeled samples' strong views; ``seen`` counts all unlabeled
    samples drawn."""

    labeled: list[torch.Tensor]
    labeled_losses: torch.Tensor
    unlabeled: list[torch.Tensor]
    unlabeled_losses: torch.Tensor
    seen: int

    def shuffled(self, generator: torch.Generator) -> _Step:
        """The same samples in a new order, so the ranking loss pairs them differently."""
        def permute(levels: list[torch.Tensor], losses: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
            order = torch.randperm(losses.shape[0], generator=generator).to(losses.device)
            return [level[order] for level in levels], losses[order]

        labeled, labeled_losses = permute(self.labeled, self.labeled_losses)
        unlabeled, unlabeled_losses = permute(self.unlabeled, self.unlabeled_losses)
        return _Step(labeled, labeled_losses, unlabeled, unlabeled_losses, self.seen)
