"""Two gloo processes select and evaluate exactly as one process does for the same weights (issue 12, item 3).

The loop is the ``quick`` protocol's (digits, small CNN) with several scoring batches per pass; the weights and
random streams of a trained cycle are saved once, then restored in one process and in each of two spawned ranks.
Every kind of selection is covered: the LPM's scores with the candidate diagnostics (every value gathered), a plain
score strategy (only each rank's top K gathered), embeddings with the labeled set's (core-set), a wrapper that
samples from the scores (stochastic), BADGE's gradient embeddings, random sampling, and MC dropout (every rank
scores every candidate).
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))

import ddp_workers  # noqa: E402

from learnloss.data.batches import ArrayBatches  # noqa: E402
from learnloss.distributed import Distributed  # noqa: E402
from learnloss.inference.sharded import Shard, gather_shards, shard_batches  # noqa: E402
from learnloss.strategies.base import top_k  # noqa: E402
from learnloss.training.stages import ShardedBatches  # noqa: E402

STRATEGIES = ["learning-loss", "entropy", "core-set", "stochastic(margin)", "badge", "random"]
if importlib.util.find_spec("baal") is not None:
    STRATEGIES.append("baal-bald:iterations=2")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    """The single-process results and each rank's, for the same snapshots."""
    folder = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same kernels, the same bits
    try:
        snapshots = {}
        for index, name in enumerate(STRATEGIES):
            snapshots[name] = str(folder / f"snapshot-{index}.pt")
            ddp_workers.make_snapshot(name, Path(snapshots[name]))
        single = {name: ddp_workers.select_and_evaluate(name, Path(path)) for name, path in snapshots.items()}
    finally:
        torch.set_num_threads(threads)
    out = str(folder / "rank")
    mp.start_processes(ddp_workers.worker, args=(2, str(folder / "init"), snapshots, out), nprocs=2, join=True,
                       start_method="spawn")
    ranks = []
    for rank in range(2):
        with open(f"{out}-{rank}.pkl", "rb") as handle:
            ranks.append(pickle.load(handle))
    return single, ranks


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_ranks_select_and_evaluate_as_one_process(runs, strategy):
    single, ranks = runs
    for rank in ranks:
        got, want = rank[strategy], single[strategy]
        assert got["selected"] == want["selected"]
        assert got["scores"] == want["scores"]
        assert got["metrics"] == want["metrics"]
        assert (got["ranking"], got["rho"]) == (want["ranking"], want["rho"])
        assert got["candidate"] == want["candidate"]


def test_ranks_end_a_cycle_with_the_same_weights(runs):
    _, ranks = runs
    assert ranks[0]["trained"] == ranks[1]["trained"]


def test_rank_zeros_failure_stops_every_rank_with_its_message(runs):
    _, ranks = runs
    assert ranks[0]["failure"] == ("UsageError", 2, "rank 0 refuses")
    name, code, message = ranks[1]["failure"]
    assert (name, code) == ("RankFailedError", 2)
    assert message == "rank 1 of 2 stopped because rank 0 failed: rank 0 refuses"


# ---------------------------------------------------------------------------------------------- without processes


def _rank(rank: int, world: int) -> Distributed:
    return Distributed(rank=rank, world_size=world)


@pytest.mark.parametrize("world", [2, 3, 5])
def test_top_k_merge_equals_the_global_top_k_ties_included(world):
    """Each rank's top k (by score, ties by candidate order) merged is the global top k, whatever the ties."""
    from learnloss.active.loop import ActiveLearningLoop

    rng = np.random.default_rng(world)
    for trial in range(50):
        count, size = int(rng.integers(1, 60)), int(rng.integers(1, 9))
        scores = rng.integers(0, 4, count).astype(np.float64)  # many ties
        candidates = np.sort(rng.choice(1000, count, replace=False))
        k = int(rng.integers(1, count + 1))
        batches = ArrayBatches(torch.zeros(1000, 1), None, candidates, size, lambda x: x, torch.device("cpu"))
        shards = []
        for rank in range(world):
            _, positions = shard_batches(batches, _rank(rank, world))
            shard = Shard(positions, candidates[positions], {"score": scores[positions]})
            loop = ActiveLearningLoop.__new__(ActiveLearningLoop)  # _top_k_shard reads nothing of the loop
            shards.append(loop._top_k_shard(shard, k))
        merged, values = gather_shards(shards)
        picked = merged[top_k(values["score"], k)]
        assert picked.tolist() == candidates[top_k(scores, k)].tolist(), (trial, world)


def test_sharded_batches_deal_every_sample_once_per_epoch_with_equal_steps():
    indices = np.arange(10, 33)  # 23 samples: padded to 24 for 3 ranks
    seen, lengths = [], set()
    for rank in range(3):
        generator = torch.Generator().manual_seed(7)  # the loop's shared generator, in the same state everywhere
        batches = ShardedBatches(torch.arange(100.0)[:, None], None, indices, 3, lambda x: x, torch.device("cpu"),
                                 generator, _rank(rank, 3))
        epoch = [int(i) for index, _, _ in batches for i in index]
        assert len(epoch) == batches.per_rank == 8
        lengths.add(len(batches))
        seen += epoch
    assert len(lengths) == 1  # as many steps on every rank: DistributedDataParallel needs it
    assert sorted(set(seen)) == indices.tolist() and len(seen) == 24
