"""Joint training of the target model and the loss prediction module.

Objective (Yoo & Kweon, CVPR 2019, Eq. 5): ``mean_b l_b + λ · L_loss(l̂, l)``, with the target losses ``l``
detached inside ``L_loss``. From epoch :attr:`TrainConfig.stop_grad_epoch` on, the LPM reads detached
features, so it keeps learning but no longer moves the target model (Sec. 4.1: after epoch 120 of 200).
One forward pass of the target model per step: the LPM reads the features captured by the forward hooks.

In a distributed run (:mod:`learnloss.distributed`, ``torchrun``) each rank trains on its share of every batch:
the target model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` for the epochs of a fit (its
forward hooks — the LPM's taps — fire inside the wrapper; the view keeps the unwrapped model, so ``state_dict``
names and checkpoints stay those of one process), the LPM's gradients are averaged over the ranks after each
``backward`` in one all-reduce, and the epoch's losses are averaged over the ranks, so every rank logs, and stops
on divergence, alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from learnloss.inference import ModelView
from learnloss.data.batches import Batch
from learnloss.distributed import SINGLE, Distributed
from learnloss.errors import TrainingDivergedError, UsageError
from learnloss.lpm.losses import get_lpm_loss


@dataclass
class TrainConfig:
    """Optimiser, schedule and loss settings. Defaults are the paper's CIFAR-10 recipe (Sec. 4.1).

    Attributes:
        epochs: training epochs per cycle.
        batch_size: mini-batch size.
        optimizer: ``sgd`` (the paper's classification and detection recipe), ``adam``, or ``rmsprop`` (the
            paper's pose recipe: RMSprop at 2.5e-4 for the stacked hourglass, Yoo & Kweon, CVPR 2019, Sec. 4.3).
        lr: initial learning rate (model and LPM alike).
        momentum: SGD momentum (RMSprop's too; Adam ignores it).
        weight_decay: weight decay.
        milestones: epochs at which the learning rate is multiplied by ``gamma``.
        gamma: learning-rate decay factor.
        lpm_weight: λ, the weight of the loss-prediction loss.
        margin: ξ, the margin of the ranking loss.
        lpm_loss: ``ranking`` (the paper's Eq. 2) or ``mse`` (the ablation).
        stop_grad_epoch: epochs ``0 .. stop_grad_epoch-1`` train with the LPM's gradient into the target;
            from this epoch on it is cut. ``None`` never cuts it.
        augment: apply the dataset's training augmentation.
    """

    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: Sequence[int] = field(default_factory=lambda: (160,))
    gamma: float = 0.1
    lpm_weight: float = 1.0
    margin: float = 1.0
    lpm_loss: str = "ranking"
    stop_grad_epoch: int | None = 120
    augment: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("lr", "lpm_weight", "margin", "weight_decay", "momentum"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise UsageError(f"{name} must be a finite {'positive' if name == 'lr' else 'non-negative'} number, got {value}")
        if self.stop_grad_epoch is not None and self.stop_grad_epoch < 0:
            raise UsageError(f"stop_grad_epoch must be ≥ 0 or None, got {self.stop_grad_epoch}")
        self.milestones = tuple(sorted(int(m) for m in self.milestones))
        get_lpm_loss(self.lpm_loss)  # fail early on an unknown name
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


#: The optimisers a training stage can use.
OPTIMIZERS = ("sgd", "adam", "rmsprop")


@dataclass
class EpochLog:
    """What one epoch did."""

    epoch: int
    lr: float
    task_loss: float
    lpm_loss: float | None
    features_detached: bool


class Trainer:
    """Train a :class:`~learnloss.inference.stream.ModelView` (the model and its LPM, if any) on batches."""

    def __init__(self, config: TrainConfig, progress: bool = False) -> None:
        self.config = config
        self.progress = progress
        self.lpm_loss = get_lpm_loss(config.lpm_loss)

    def make_optimizer(self, view: ModelView) -> torch.optim.Optimizer:
        """One optimiser over the model and the LPM with the same settings (the paper's recipe)."""
        params = [p for module in view.modules() for p in module.parameters() if p.requires_grad]
        config = self.config
        if config.optimizer == "adam":
            return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        if config.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)

    def fit(
        self,
        view: ModelView,
        batches: Iterable[Batch],
        on_epoch: Callable[[EpochLog], None] | None = None,
        dist: Distributed = SINGLE,
    ) -> list[EpochLog]:
        """Train for ``config.epochs`` passes over ``batches`` (re-iterated each epoch) and return the epoch logs.

        With ``dist`` active, ``batches`` are this rank's share (:meth:`~learnloss.training.stages.CycleData.training_batches`):
        the model trains under DistributedDataParallel and the LPM's gradients and the logged losses are averaged
        over the ranks (see the module docstring).

        Raises:
            TrainingDivergedError: an epoch's loss became NaN or infinite.
            DistributedError: another rank stopped or did not answer in time.
        """
        config = self.config
        optimizer = self.make_optimizer(view)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
        ll = view.learning_loss
        precision, device = view.precision, view.device
        scaler = precision.grad_scaler(device)
        for module in view.modules():
            module.train()
        model = dist.wrap(view.model)  # the view itself keeps the unwrapped model (its names, its checkpoints)
        lpm_parameters = [p for p in ll.lpm.parameters() if p.requires_grad] if ll is not None else []
        logs = []
        epochs = tqdm(range(config.epochs), desc="train", unit="epoch", leave=False, disable=not self.progress)
        for epoch in epochs:
            detach = config.stop_grad_epoch is not None and epoch >= config.stop_grad_epoch
            task_sum = lpm_sum = None
            steps = 0
            for _, inputs, targets in batches:
                with precision.autocast(device), dist.guard("training (DistributedDataParallel)"):
                    output = model(precision.inputs(inputs))
                    losses = view.task.per_sample_loss(output, targets)
                    task_loss = losses.mean()
                    total = task_loss
                    if ll is not None:
                        # ranked in float32 whatever the autocast dtype: close losses must keep their order
                        predicted = ll.predicted_loss(detach_features=detach).float()
                        lpm_loss = self.lpm_loss(predicted, losses.detach().float(), config.margin)
                        total = task_loss + config.lpm_weight * lpm_loss
                        lpm_sum = lpm_loss.detach() if lpm_sum is None else lpm_sum + lpm_loss.detach()
                optimizer.zero_grad(set_to_none=True)
                with dist.guard("training (the gradients' all-reduce)"):
                    (total if scaler is None else scaler.scale(total)).backward()
                if dist.active and lpm_parameters:  # DDP averages the model's gradients; the LPM's are averaged here
                    dist.all_reduce_mean_([p.grad for p in lpm_parameters if p.grad is not None],
                                          "averaging the LPM's gradients")
                if scaler is None:
                    optimizer.step()
                else:  # fp16: scale the loss so small gradients do not underflow
                    scaler.step(optimizer)
                    scaler.update()
                task_sum = task_loss.detach() if task_sum is None else task_sum + task_loss.detach()
                steps += 1
            view.clear()
            if steps == 0:
                raise UsageError("training got no batches: the labeled set is empty")
            task_mean = float(task_sum) / steps if task_sum is not None else math.nan
            lpm_mean = None if lpm_sum is None else float(lpm_sum) / steps
            if dist.active:  # every rank logs, and stops on divergence, alike
                means = torch.tensor([task_mean, math.nan if lpm_mean is None else lpm_mean], dtype=torch.float64,
                                     device=device)
                dist.all_reduce_mean_([means], "averaging the epoch's losses")
                task_mean, lpm_mean = float(means[0]), (None if lpm_mean is None else float(means[1]))
            log = EpochLog(
                epoch=epoch,
                lr=optimizer.param_groups[0]["lr"],
                task_loss=task_mean,
                lpm_loss=lpm_mean,
                features_detached=detach,
            )
            # One host sync per epoch, not per step: a NaN step is caught at the end of its epoch.
            if not math.isfinite(log.task_loss) or (log.lpm_loss is not None and not math.isfinite(log.lpm_loss)):
                raise TrainingDivergedError(
                    f"training diverged in epoch {epoch + 1}: task loss {log.task_loss}, LPM loss {log.lpm_loss}; "
                    f"lower the learning rate (now {config.lr}) or λ (now {config.lpm_weight}), or check the data "
                    "for NaN/inf values"
                )
            scheduler.step()  # after the epoch's optimiser steps (docs/pitfalls.md §11)
            logs.append(log)
            if on_epoch is not None:
                on_epoch(log)
            epochs.set_postfix(loss=f"{log.task_loss:.3f}")
        return logs

