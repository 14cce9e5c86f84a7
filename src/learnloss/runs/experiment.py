"""One simulated active-learning experiment from a run specification: what ``learnloss run`` does.

Under ``torchrun`` (:mod:`learnloss.distributed`) every rank runs the experiment — the same loop, training and
scoring its share (:mod:`learnloss.active.loop`) — and every rank returns the same document, but only rank 0
checks and opens the run folder, journals the run in its store and writes its checkpoints; the other ranks never
touch ``out``, and stop with rank 0's message when it fails there.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.active.loop import CycleResult
from learnloss.distributed import current
from learnloss.errors import UsageError
from learnloss.metrics import aubc
from learnloss.project.store import DB_FILENAME, ProjectStore
from learnloss.reports.results import environment_info
from learnloss.runs.builder import build_loop
from learnloss.runs.journal import SimulationJournal, data_fingerprint
from learnloss.runs.spec import RunSpec

__all__ = ["run_experiment"]


def _check_run_folder(out: Path, resume: bool) -> None:
    exists = (out / DB_FILENAME).exists()
    if exists and not resume:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not exists:
        raise UsageError(f"{out} holds no run to resume (no {DB_FILENAME}); run without --resume to start one")


def _say(line: str) -> None:
    print(f"learnloss: {line}", file=sys.stderr)


def _curve_aubc(cycles: list[dict[str, Any]], primary: str, test_size: int, say: Callable[[str], None]) -> float:
    """The AUBC of the learning curve, or NaN — said once, with why — when a cycle has no finite test metric."""
    values = [cycle[primary] for cycle in cycles]
    if all(value is not None and math.isfinite(value) for value in values):
        return aubc([c["n_labeled"] for c in cycles], values)
    if test_size == 0:
        say(f"note: the test split is empty, so {primary.replace('_', ' ')} and the AUBC are not defined (null in "
            "results.json); give data with test samples to measure the run")
    else:
        bad = next(c["cycle"] for c in cycles if c[primary] is None or not math.isfinite(c[primary]))
        say(f"warning: {primary.replace('_', ' ')} is not finite in cycle {bad}, so the AUBC is not defined (null in "
            "results.json); check the test data for NaN/inf values")
    return math.nan


def run_experiment(
    spec: RunSpec,
    progress: bool = False,
    on_cycle: Callable[[CycleResult], None] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    require_test: bool = False,
) -> dict[str, Any]:
    """Run the loop ``spec`` describes and return the ``results.json`` document.

    With ``out``, the run is journaled in a project store there (:class:`~learnloss.runs.journal.SimulationJournal`):
    every step is durable as it completes, and ``resume=True`` continues a run that stopped (a crash, a kill,
    Ctrl-C) after its last completed step, selecting what the uninterrupted run would have. Every name and
    count is validated before any training starts.

    The document records the specification with what it resolved to (``config``: the dataset's name, the tapped
    layers, the device, the pool and test sizes), the environment, every cycle, the primary metric's name and its
    AUBC, the initial labeled set (so paired comparisons can be checked) and the run's wall time; its environment
    says how many processes ran it (``world_size``). In a distributed run, ``progress`` and ``on_cycle`` are
    rank 0's only, and only rank 0 reads or writes ``out`` (see the module docstring).

    Raises:
        UsageError: a setting that does not fit; ``out`` holds a run but ``resume`` is false, or holds none but it
            is true, or holds a run of another specification or on other data, or is a labeling project; no test
            samples with ``require_test``.
        CheckpointError: a checkpoint passed its checksum but does not fit the model, or ``checkpoints/`` is a
            symbolic link.
    """
    say = log or _say
    started = time.perf_counter()
    recovered: list[str] = []
    dist = current()
    if out is not None:
        dist.on_main(lambda: _check_run_folder(Path(out), resume), "rank 0 checking the run folder")
    loop = build_loop(spec, progress=progress and dist.is_main, dist=dist)
    dataset, task = loop.dataset, loop.task
    if require_test and dataset.x_test.shape[0] == 0:
        raise UsageError(f"dataset {dataset.name} has no test samples, and a benchmark compares runs by their test "
                         "metric; give data with a test split (x_test and y_test in an .npz)")
    on_cycle = on_cycle if dist.is_main else None
    if out is None:
        cycles = [result.to_dict() for result in loop.run(on_cycle)]
    else:
        with ExitStack() as stack:

            def open_journal() -> SimulationJournal:  # rank 0's: the store is its alone
                store = stack.enter_context(ProjectStore(out, create=not resume, kind="simulation"))
                stack.enter_context(store.exclusive("run"))
                classes = list(dataset.classes) if task.name == "classification" else []
                return SimulationJournal(store, spec, classes, data_fingerprint(dataset), log=say)

            journal = dist.on_main(open_journal, "rank 0 opening the run's store")
            cycles = [result.to_dict() for result in loop.run(on_cycle, journal)]
            recovered = journal.recovered if journal is not None else []
    primary = f"test_{task.primary_metric}"
    config = {
        **spec.to_dict(),
        "dataset": dataset.name,
        "task": task.name,
        "layers": list(loop.loop.layers),
        "embedding_layer": loop.loop.embedding_layer,
        "lpm_attached": loop.view.learning_loss is not None,
        "device": str(loop.device),
        "precision_used": loop.view.precision.dtype,
        "pool_size": len(loop.pool),
        "test_size": int(dataset.x_test.shape[0]),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
    }
    document = {
        "config": config,
        "environment": {**environment_info(str(loop.device)), "world_size": dist.world_size},
        "primary_metric": primary,
        "cycles": cycles,
        "aubc": _curve_aubc(cycles, primary, config["test_size"], say),
        "initial_labeled": np.flatnonzero(loop.pool.labeled_at == 0).tolist(),
        "wall_seconds": time.perf_counter() - started,
    }
    if recovered:
        document["recovered"] = recovered
    return document
