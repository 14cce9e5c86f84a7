"""The one builder: a :class:`~learnloss.active.loop.ActiveLearningLoop` from a :class:`~learnloss.runs.spec.RunSpec`.

``learnloss run``, ``bench``, ``query`` and the Python API all build their loop here, so a setting means the same
thing wherever it is given. Names are checked before the data is loaded; the model is initialised from the seed.
In a distributed run every rank builds the same loop (same seed, same initial weights); rank 0 loads the data
first, so a download happens once, and a CUDA device becomes ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from learnloss.active.loop import ActiveLearningLoop, LoopConfig, check_oracle
from learnloss.active.oracle import Oracle
from learnloss.data import load_dataset
from learnloss.data.dataset import Dataset
from learnloss.device import resolve_device
from learnloss.distributed import Distributed, current
from learnloss.inference.precision import Precision
from learnloss.models import default_taps, embedding_layer, input_dims, model_builder
from learnloss.runs.spec import RunSpec
from learnloss.strategies import build_strategy
from learnloss.tasks import build_task
from learnloss.errors import UsageError
from learnloss.strategies.base import Strategy
from learnloss.training.semi import SemiConfig, SemiSupervisedLPM
from learnloss.training.stages import JointTraining, Stage
from learnloss.training.trainer import TrainConfig

__all__ = ["STAGES", "build_loop", "build_stages", "semi_config", "train_config"]


def train_config(spec: RunSpec) -> TrainConfig:
    """The default training stage's settings of ``spec``."""
    return TrainConfig(
        epochs=spec.epochs, batch_size=spec.batch_size, optimizer=spec.optimizer, lr=spec.lr, momentum=spec.momentum,
        weight_decay=spec.weight_decay, milestones=spec.milestones, gamma=spec.gamma, lpm_weight=spec.lpm_weight,
        margin=spec.margin, lpm_loss=spec.lpm_loss, stop_grad_epoch=spec.stop_grad_epoch, augment=spec.augment,
    )


def semi_config(spec: RunSpec) -> SemiConfig:
    """Stage B's settings of ``spec`` (the semi-supervised LPM); batch size, momentum and weight decay are the
    joint stage's."""
    return SemiConfig(
        epochs=spec.semi_epochs, lr=spec.semi_lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
        batch_size=spec.batch_size, threshold=spec.semi_threshold, lpm_loss=spec.semi_lpm_loss, margin=spec.margin,
        unlabeled=spec.semi_unlabeled, views=spec.semi_views,
    )


#: The training stages a strategy may ask for by name (:attr:`Strategy.training_stages`), built from a spec.
STAGES: dict[str, Callable[[RunSpec, bool], Stage]] = {
    "semi-lpm": lambda spec, progress: SemiSupervisedLPM(semi_config(spec), progress=progress),
}


def build_stages(spec: RunSpec, strategy: Strategy, progress: bool = False) -> list[Stage]:
    """A cycle's stages for ``spec``: the joint training, then each stage the strategy asks for.

    Raises:
        UsageError: the strategy names a stage that does not exist.
    """
    stages: list[Stage] = [JointTraining(train_config(spec), progress=progress)]
    for name in strategy.training_stages:
        if name not in STAGES:
            raise UsageError(f"strategy {strategy.spec} asks for an unknown training stage {name!r}; known: "
                             f"{', '.join(sorted(STAGES))}")
        stages.append(STAGES[name](spec, progress))
    return stages


def build_loop(
    spec: RunSpec,
    dataset: Dataset | None = None,
    *,
    oracle: Oracle | None = None,
    initial: int | None = None,
    query: int | None = None,
    cycles: int | None = None,
    stages: Sequence[Stage] | None = None,
    progress: bool = False,
    dist: Distributed | None = None,
) -> ActiveLearningLoop:
    """The loop ``spec`` describes, over ``dataset`` (loaded from ``spec.dataset`` when None).

    ``initial``, ``query`` and ``cycles`` replace the specification's for a loop driven step by step (a labeling
    query: as many initial labels as the store holds, ``K`` of this query). ``stages`` replaces the cycle's
    training stages (default: :func:`build_stages`, the joint training and whatever the strategy asks for). The
    model is built after ``torch.manual_seed(spec.seed)``, so the same seed gives the same initial weights.
    ``dist`` is this process's rank in a distributed run (default: :func:`learnloss.distributed.current`).

    Raises:
        UsageError: a setting that does not fit the data (layers, budget) or the device, or a strategy that needs
            what the oracle cannot tell (true-loss with people as the oracle) — both before the data is loaded.
    """
    dist = dist if dist is not None else current()
    device = dist.device(resolve_device(spec.device))
    strategy = build_strategy(spec.strategy)
    if oracle is not None:
        check_oracle(strategy, oracle)  # e.g. true-loss in a labeling project: refused before anything loads
    make_model = model_builder(spec.model)  # an unknown name fails before the data is loaded
    if dataset is None:
        with dist.main_first("rank 0 loading the dataset"):  # a download happens once, on rank 0
            dataset = load_dataset(spec.dataset, spec.data_dir, download=spec.download)
    if len(dataset.input_shape) != input_dims(spec.model):
        kind = "vectors" if len(dataset.input_shape) == 1 else "images"
        fits = "--model mlp" if kind == "vectors" else "an image model (--model small-cnn or a resnet)"
        raise UsageError(f"dataset {dataset.name} holds {kind} of shape {tuple(dataset.input_shape)}, which model "
                         f"{spec.model} cannot read; pass {fits}")
    task = build_task(spec.task or dataset.task)
    torch.manual_seed(spec.seed)
    model = make_model(dataset.in_channels, dataset.num_outputs, dropout=spec.dropout)
    loop_config = LoopConfig(
        initial=spec.initial if initial is None else initial,
        query=spec.query if query is None else query,
        cycles=spec.cycles if cycles is None else cycles,
        subset=spec.subset, seed=spec.seed, reset=spec.reset, layers=list(spec.layers or default_taps(model)),
        embedding_layer=spec.embedding_layer or embedding_layer(model), lpm_width=spec.lpm_width,
        drop_easy=spec.drop_easy,
    )
    return ActiveLearningLoop(
        model, dataset, strategy, loop_config, train_config(spec), task=task, oracle=oracle, device=device,
        progress=progress, stages=stages if stages is not None else build_stages(spec, strategy, progress),
        precision=Precision(spec.precision, spec.channels_last, spec.compile), dist=dist,
    )
