"""One streaming pass sharded over the ranks of a distributed run, gathered back in the original order.

Each rank runs :func:`~learnloss.inference.stream.stream` over its share of the batches — whole batches, dealt
out in turn (batch ``b`` to rank ``b mod world_size``) — so every sample is computed in exactly the batch it has
in one process: the same composition, the same kernels, the same values to the last bit. The kept values are then
gathered and put back in the order of the batches, so what :func:`stream_sharded` returns on every rank is what
:func:`stream` returns in one process. The scoring of a query, the evaluation on the test split and every other
pass of the loop over many samples go through it; the model is never wrapped here (the passes have no gradient).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from learnloss.data.batches import ArrayBatches, Batch
from learnloss.distributed import Distributed
from learnloss.inference.stream import BatchOutputs, stream
from learnloss.inference.view import ModelView

__all__ = ["Shard", "gather_shards", "shard_batches", "stream_shard", "stream_sharded"]


@dataclass
class Shard:
    """What one rank kept of its batches: the position of each sample in the full pass (``0 … N-1``, increasing),
    its pool index, and the kept values aligned with both."""

    positions: np.ndarray
    order: np.ndarray
    values: dict[str, np.ndarray]

    def take(self, rows: np.ndarray) -> Shard:
        """The samples at ``rows`` of this shard (in that order), with their values."""
        return Shard(self.positions[rows], self.order[rows], {key: value[rows] for key, value in self.values.items()})


def shard_batches(batches: ArrayBatches, dist: Distributed) -> tuple[list[ArrayBatches], np.ndarray]:
    """This rank's batches of an unshuffled pass — each a whole batch of the full pass, in order — and the
    positions their samples have in it.

    Raises:
        ValueError: ``batches`` shuffles or merges a last singleton (scoring and evaluation do neither).
    """
    if batches.shuffle is not None or batches.merge_singleton:
        raise ValueError("only an unshuffled pass without merged batches can be sharded")
    count, size = len(batches.indices), batches.batch_size
    starts = list(range(0, count, size))
    mine = [starts[b] for b in dist.owned(len(starts))]
    parts = [dataclasses.replace(batches, indices=np.asarray(batches.indices)[start: start + size]) for start in mine]
    positions = [np.arange(start, min(start + size, count), dtype=np.int64) for start in mine]
    return parts, (np.concatenate(positions) if positions else np.empty(0, dtype=np.int64))


def stream_shard(
    view: ModelView, batches: ArrayBatches, collect: Callable[[BatchOutputs], dict[str, torch.Tensor]],
    dist: Distributed,
) -> Shard:
    """:func:`stream` over this rank's batches (:func:`shard_batches`), without gathering: the rank's :class:`Shard`."""
    parts, positions = shard_batches(batches, dist)

    def chained() -> Iterator[Batch]:
        for part in parts:
            yield from part

    order, values = stream(view, chained(), collect)
    return Shard(positions, order, values)


def gather_shards(shards: Sequence[Shard]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every rank's shard in the order of the full pass: ``(pool indices, values)`` as :func:`stream` returns them
    (values only of keys some sample kept; a rank without batches keeps none)."""
    filled = [shard for shard in shards if len(shard.positions)]
    if not filled:
        return np.empty(0, dtype=np.int64), {}
    positions = np.concatenate([shard.positions for shard in filled])
    rows = np.argsort(positions, kind="stable")
    order = np.concatenate([shard.order for shard in filled])[rows]
    keys = list(dict.fromkeys(key for shard in filled for key in shard.values))
    values = {key: np.concatenate([shard.values[key] for shard in filled])[rows] for key in keys}
    return order, values


def stream_sharded(
    view: ModelView, batches: ArrayBatches, collect: Callable[[BatchOutputs], dict[str, torch.Tensor]],
    dist: Distributed, what: str = "a pass over the pool",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """What ``stream(view, batches, collect)`` returns in one process, computed with each rank streaming its share
    of the batches and every rank receiving all of it (``what``: the pass, for the error of a lost rank). In one
    process it is :func:`stream` itself. ``collect`` runs only on the batches of this rank."""
    if not dist.active:
        return stream(view, batches, collect)
    return gather_shards(dist.all_gather(stream_shard(view, batches, collect, dist), f"gathering {what}"))
