"""One simulated active-learning experiment from named settings: what ``learnloss run`` does."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.active.loop import ActiveLearningLoop, CycleResult, LoopConfig
from learnloss.data import load_dataset
from learnloss.device import resolve_device
from learnloss.models import default_taps, embedding_layer, model_builder
from learnloss.errors import UsageError
from learnloss.runs.journal import StoreJournal
from learnloss.project.store import DB_FILENAME, ProjectStore
from learnloss.runs.presets import resolve_settings
from learnloss.metrics import aubc
from learnloss.reports.results import environment_info
from learnloss.strategies import build_strategy
from learnloss.training.trainer import TrainConfig


def _check_run_folder(out: Path, resume: bool) -> None:
    exists = (out / DB_FILENAME).exists()
    if exists and not resume:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not exists:
        raise UsageError(f"{out} holds no run to resume (no {DB_FILENAME}); run without --resume to start one")


def run_experiment(
    protocol: str = "quick",
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    on_cycle: Callable[[CycleResult], None] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Resolve the settings, run the loop and return the ``results.json`` document.

    With ``out``, the run is journaled in a project store there (:class:`~learnloss.runs.journal.StoreJournal`):
    every step is durable as it completes, and ``resume=True`` continues a run that stopped (a crash, a kill,
    Ctrl-C) after its last completed step, selecting what the uninterrupted run would have. Every name and
    count is validated before any training starts.

    Raises:
        UsageError: bad settings; ``out`` holds a run but ``resume`` is false, or holds none but it is true. The document records the resolved settings
    (``config``), the environment, every cycle, the AUBC, the initial labeled set (so paired comparisons can be
    checked) and the run's wall time.
    """
    started = time.perf_counter()
    if out is not None:
        _check_run_folder(Path(out), resume)
    settings = resolve_settings(protocol, overrides or {})
    device = resolve_device(settings["device"])
    strategy = build_strategy(settings["strategy"])
    subset = None if settings["subset"] == "all" else int(settings["subset"])
    stop_grad_epoch = None if settings["stop_grad_epoch"] == "never" else int(settings["stop_grad_epoch"])
    train = TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        momentum=settings["momentum"], weight_decay=settings["weight_decay"], milestones=settings["milestones"],
        gamma=settings["gamma"], lpm_weight=settings["lpm_weight"], margin=settings["margin"],
        lpm_loss=settings["lpm_loss"], stop_grad_epoch=stop_grad_epoch, augment=settings["augment"],
    )
    make_model = model_builder(settings["model"])  # an unknown name fails before the data is loaded
    dataset = load_dataset(settings["dataset"], settings["data_dir"], download=settings["download"])
    torch.manual_seed(settings["seed"])
    model = make_model(dataset.in_channels, dataset.num_classes, dropout=settings["dropout"])
    layers = settings["layers"] or list(default_taps(model))
    loop_config = LoopConfig(
        initial=settings["initial"], query=settings["query"], cycles=settings["cycles"], subset=subset,
        seed=settings["seed"], reset=settings["reset"], layers=layers,
        embedding_layer=settings["embedding_layer"] or embedding_layer(model), lpm_width=settings["lpm_width"],
    )
    loop = ActiveLearningLoop(model, dataset, strategy, loop_config, train, device=device, progress=progress)
    if out is None:
        cycles = [result.to_dict() for result in loop.run(on_cycle)]
    else:
        with ProjectStore(out, create=not resume) as store, store.exclusive("run"):
            journal = StoreJournal(store, settings, list(dataset.classes), strategy.name)
            cycles = [result.to_dict() for result in loop.run(on_cycle, journal)]
    config = {
        **settings,
        "dataset": dataset.name,
        "strategy": strategy.name,
        "subset": subset if subset is not None else "all",
        "layers": list(layers),
        "embedding_layer": loop_config.embedding_layer,
        "lpm_attached": loop.view.learning_loss is not None,
        "milestones": list(train.milestones),
        "device": str(device),
        "pool_size": len(loop.pool),
        "test_size": int(dataset.x_test.shape[0]),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
    }
    return {
        "config": config,
        "environment": environment_info(str(device)),
        "cycles": cycles,
        "aubc": aubc([c["n_labeled"] for c in cycles], [c["test_accuracy"] for c in cycles]),
        "initial_labeled": np.flatnonzero(loop.pool.labeled_at == 0).tolist(),
        "wall_seconds": time.perf_counter() - started,
    }
