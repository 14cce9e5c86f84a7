"""What the distributed tests run in each process: the same loop, the same weights, scoring, selection, evaluation.

Imported by name in the processes ``torch.multiprocessing`` spawns (its folder is on ``sys.path``), so it holds
no test of its own.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from learnloss.active.loop import ActiveLearningLoop
from learnloss.distributed import RankFailedError, current
from learnloss.errors import UsageError
from learnloss.runs.builder import build_loop
from learnloss.runs.presets import resolve_spec

EVAL_BATCH = 128  # several batches per pass, so that each rank gets some and the last one is short


def build(strategy: str) -> ActiveLearningLoop:
    """The ``quick`` protocol's loop (digits, small CNN) for ``strategy``, with its initial labeled set."""
    spec = resolve_spec("quick", {"strategy": strategy, "epochs": 1, "cycles": 2, "device": "cpu"})
    loop = build_loop(spec)
    loop.loop.eval_batch_size = EVAL_BATCH
    loop.begin()
    return loop


def make_snapshot(strategy: str, path: Path) -> None:
    """Train cycle 0 in this process and save the loop's snapshot (weights and random streams) to ``path``."""
    loop = build(strategy)
    loop.train_cycle(0)
    torch.save(loop.snapshot(), path)


def state_digest(loop: ActiveLearningLoop) -> str:
    """SHA-256 over every parameter and buffer of the loop's modules."""
    digest = hashlib.sha256()
    for module in loop.view.modules():
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def select_and_evaluate(strategy: str, snapshot: Path) -> dict[str, Any]:
    """For the weights and random streams of ``snapshot``: the evaluation and the query of ``K``."""
    loop = build(strategy)
    loop.restore(torch.load(snapshot, weights_only=False))
    metrics, ranking, rho = loop.evaluate()
    batch = loop.query_batch(loop.loop.query)
    return {
        "metrics": metrics, "ranking": ranking, "rho": rho, "selected": batch.selected.tolist(),
        "scores": None if batch.scores is None else batch.scores.tolist(),
        "candidate": (batch.candidate_ranking_accuracy, batch.candidate_spearman),
    }


def worker(rank: int, world: int, init_file: str, snapshots: dict[str, str], out: str) -> None:
    """One rank: join the gloo group, then for each strategy select and evaluate for its snapshot's weights; then
    train a cycle (the ranks must end with the same weights) and check that rank 0's failure reaches every rank."""
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                         timeout=timedelta(seconds=60))
    try:
        dist = current()
        assert (dist.rank, dist.world_size) == (rank, world)
        results: dict[str, Any] = {name: select_and_evaluate(name, Path(path)) for name, path in snapshots.items()}
        loop = build("learning-loss")
        loop.train_cycle(0)
        results["trained"] = state_digest(loop)

        def fail() -> None:
            raise UsageError("rank 0 refuses")

        try:
            dist.on_main(fail, "a test of shared failures")
        except RankFailedError as error:
            results["failure"] = (type(error).__name__, error.exit_code, str(error))
        except UsageError as error:
            results["failure"] = (type(error).__name__, error.exit_code, str(error))
        with open(f"{out}-{rank}.pkl", "wb") as handle:
            pickle.dump(results, handle)
    finally:
        torch.distributed.destroy_process_group()
