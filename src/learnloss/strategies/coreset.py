"""Core-set selection by k-center greedy.

References:
    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018,
    Algorithm 1 (k-Center-Greedy).
"""

from __future__ import annotations

import numpy as np
import torch

from learnloss.inference import BatchOutputs, Need
from learnloss.strategies.base import QueryContext, Strategy


def min_distances(points: torch.Tensor, centers: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of each point to its nearest center, computed ``chunk`` centers at a time so that
    memory is ``O(len(points) * chunk)``, never ``O(N²)``."""
    nearest = torch.full((points.shape[0],), float("inf"), device=points.device)
    for start in range(0, centers.shape[0], chunk):
        nearest = torch.minimum(nearest, torch.cdist(points, centers[start : start + chunk]).min(dim=1).values)
    return nearest


def k_center_greedy(points: torch.Tensor, centers: torch.Tensor, k: int, chunk: int = 4096) -> np.ndarray:
    """Greedily pick ``k`` rows of ``points`` that minimise the largest distance of any point to its nearest
    center (the labeled set ``centers`` plus the picks). Returns positions in ``points``, in pick order."""
    if centers.shape[0] > 0:
        nearest = min_distances(points, centers, chunk)
    else:  # no labeled set: start from the first point, as the greedy algorithm has no other anchor
        nearest = torch.full((points.shape[0],), float("inf"), device=points.device)
        nearest[0] = torch.finfo(nearest.dtype).max
    picks = []
    for _ in range(k):
        pick = int(torch.argmax(nearest))
        picks.append(pick)
        nearest = torch.minimum(nearest, torch.cdist(points, points[pick : pick + 1]).squeeze(1))
        nearest[pick] = -1.0  # never picked twice, even with duplicate points
    return np.asarray(picks, dtype=np.int64)


class CoreSet(Strategy):
    """Select candidates that cover the embedding space of the labeled set best (k-center greedy).

    Args:
        chunk: centers per distance block; bounds memory to ``candidates × chunk`` distances.
    """

    name = "core-set"
    needs = frozenset({Need.EMBEDDINGS, Need.LABELED_EMBEDDINGS})

    def __init__(self, chunk: int = 4096) -> None:
        self.chunk = chunk

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        return {"embedding": batch.embeddings}

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        points = torch.as_tensor(values["embedding"], device=context.device)
        labeled = context.labeled_embeddings
        centers = torch.as_tensor(labeled if labeled is not None else np.empty((0, points.shape[1])),
                                  dtype=points.dtype, device=context.device)
        return candidates[k_center_greedy(points, centers, k, self.chunk)]
