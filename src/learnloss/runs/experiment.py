"""One simulated active-learning experiment from a run specification: what ``learnloss run`` does."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.active.loop import CycleResult
from learnloss.errors import UsageError
from learnloss.metrics import aubc
from learnloss.project.store import DB_FILENAME, ProjectStore
from learnloss.reports.results import environment_info
from learnloss.runs.builder import build_loop
from learnloss.runs.journal import SimulationJournal
from learnloss.runs.spec import RunSpec

__all__ = ["run_experiment"]


def _check_run_folder(out: Path, resume: bool) -> None:
    exists = (out / DB_FILENAME).exists()
    if exists and not resume:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not exists:
        raise UsageError(f"{out} holds no run to resume (no {DB_FILENAME}); run without --resume to start one")


def run_experiment(
    spec: RunSpec,
    progress: bool = False,
    on_cycle: Callable[[CycleResult], None] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the loop ``spec`` describes and return the ``results.json`` document.

    With ``out``, the run is journaled in a project store there (:class:`~learnloss.runs.journal.SimulationJournal`):
    every step is durable as it completes, and ``resume=True`` continues a run that stopped (a crash, a kill,
    Ctrl-C) after its last completed step, selecting what the uninterrupted run would have. Every name and
    count is validated before any training starts.

    The document records the specification with what it resolved to (``config``: the dataset's name, the tapped
    layers, the device, the pool and test sizes), the environment, every cycle, the primary metric's name and its
    AUBC, the initial labeled set (so paired comparisons can be checked) and the run's wall time.

    Raises:
        UsageError: a setting that does not fit; ``out`` holds a run but ``resume`` is false, or holds none but it
            is true, or holds a run of another specification.
    """
    started = time.perf_counter()
    if out is not None:
        _check_run_folder(Path(out), resume)
    loop = build_loop(spec, progress=progress)
    dataset, task = loop.dataset, loop.task
    if out is None:
        cycles = [result.to_dict() for result in loop.run(on_cycle)]
    else:
        with ProjectStore(out, create=not resume) as store, store.exclusive("run"):
            classes = list(dataset.classes) if task.name == "classification" else []
            journal = SimulationJournal(store, spec, classes)
            cycles = [result.to_dict() for result in loop.run(on_cycle, journal)]
    primary = f"test_{task.primary_metric}"
    config = {
        **spec.to_dict(),
        "dataset": dataset.name,
        "task": task.name,
        "layers": list(loop.loop.layers),
        "embedding_layer": loop.loop.embedding_layer,
        "lpm_attached": loop.view.learning_loss is not None,
        "device": str(loop.device),
        "pool_size": len(loop.pool),
        "test_size": int(dataset.x_test.shape[0]),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
    }
    return {
        "config": config,
        "environment": environment_info(str(loop.device)),
        "primary_metric": primary,
        "cycles": cycles,
        "aubc": aubc([c["n_labeled"] for c in cycles], [c[primary] for c in cycles]),
        "initial_labeled": np.flatnonzero(loop.pool.labeled_at == 0).tolist(),
        "wall_seconds": time.perf_counter() - started,
    }
