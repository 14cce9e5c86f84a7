"""BADGE: batch active learning by diverse gradient embeddings.

References:
    Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse, Uncertain Gradient
    Lower Bounds", ICLR 2020, Algorithm 1 (gradient embedding for the hypothesised label, k-means++ seeding);
    Arthur & Vassilvitskii, "k-means++: The Advantages of Careful Seeding", SODA 2007.
"""

from __future__ import annotations

import numpy as np
import torch

from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.strategies.base import QueryContext, Strategy

__all__ = ["Badge", "badge_seeding", "gradient_factors", "gradient_sq_distances"]


def gradient_factors(probabilities: torch.Tensor) -> torch.Tensor:
    """``a = p - onehot(argmax p)``, ``(N, K)``: with the embedding ``h``, the last layer's gradient embedding of
    the cross-entropy for the hypothesised label is ``g = a ⊗ h`` (ties in ``argmax`` go to the first class)."""
    a = probabilities.clone()
    a[torch.arange(len(a), device=a.device), probabilities.argmax(dim=1)] -= 1.0
    return a


def gradient_sq_distances(
    a: torch.Tensor, h: torch.Tensor, center: int,
    a_sq: torch.Tensor | None = None, h_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖g_i - g_c‖²`` for every row ``i`` and the row ``c = center``, where ``g = a ⊗ h``, without forming any
    outer product: ``‖a_i‖²‖h_i‖² + ‖a_c‖²‖h_c‖² - 2 (a_i·a_c)(h_i·h_c)``, ``O(N (K + D))``. Round-off below
    ``1e-9`` (float64; ``1e-5`` float32) of the two squared norms is set to 0 so that duplicates are at distance
    0. ``a_sq`` and ``h_sq`` are the rows' squared norms when already known."""
    a_sq = (a * a).sum(dim=1) if a_sq is None else a_sq
    h_sq = (h * h).sum(dim=1) if h_sq is None else h_sq
    g_sq = a_sq * h_sq
    total = g_sq + g_sq[center]
    d = total - 2.0 * (a @ a[center]) * (h @ h[center])
    tolerance = 1e-9 if d.dtype == torch.float64 else 1e-5
    return torch.where(d > tolerance * total, d, torch.zeros_like(d))


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """A position drawn with probability ``∝ weights`` (non-negative, positive sum); never a weight-0 one."""
    cumulative = np.cumsum(weights)
    position = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    positive = np.flatnonzero(weights > 0)
    if position >= len(weights) or weights[position] <= 0:  # round-off at the upper end
        position = int(positive[-1])
    return position


def badge_seeding(
    probabilities: torch.Tensor, embeddings: torch.Tensor, k: int, rng: np.random.Generator
) -> np.ndarray:
    """BADGE's k-means++ seeding over gradient embeddings ``g_i = (p_i - onehot(ŷ_i)) ⊗ h_i``; positions in
    pick order.

    The first center is the candidate with the largest ``‖g‖`` (ties: the earlier one); each next one is drawn
    with probability ``∝ D²``, its squared distance to the nearest chosen center, kept as a running minimum. A
    chosen center is never drawn again; when every unchosen ``D²`` is 0 (duplicates), the next is uniform among
    the unchosen. Candidates whose ``g`` is exactly 0 (probabilities one-hot: training on the hypothesised label
    would not change the last layer) come after every other one, in uniformly random order — BADGE's seeding
    could draw one of them at distance ``‖g_c‖`` from the origin.

    Args:
        probabilities: ``(N, K)`` class probabilities.
        embeddings: ``(N, D)`` inputs of the last layer, on the same device.
        k: the number of picks, ``1 <= k <= N``.
        rng: the source of every draw.
    """
    n = len(probabilities)
    if not 1 <= k <= n or len(embeddings) != n:
        raise ValueError(f"cannot pick {k} of {n} candidates with {len(embeddings)} embeddings")
    dtype = torch.float32 if probabilities.device.type == "mps" else torch.float64
    a = gradient_factors(probabilities.to(dtype))
    h = embeddings.to(dtype)
    a_sq, h_sq = (a * a).sum(dim=1), (h * h).sum(dim=1)
    g_sq = a_sq * h_sq
    informative = (g_sq > 0).cpu().numpy()
    picked = np.zeros(n, dtype=bool)
    nearest = torch.full((n,), float("inf"), dtype=dtype, device=a.device)
    picks: list[int] = []
    for _ in range(k):
        if not picks:
            pick = int(torch.argmax(g_sq)) if informative.any() else int(rng.integers(n))
        else:
            weights = np.where(informative & ~picked, nearest.cpu().numpy(), 0.0)
            if weights.sum() > 0:
                pick = _draw(weights, rng)
            else:  # duplicates of chosen centers, then zero gradients: uniform among the unchosen
                pool = np.flatnonzero(~picked & informative)
                pool = pool if len(pool) else np.flatnonzero(~picked)
                pick = int(pool[rng.integers(len(pool))])
        picks.append(pick)
        picked[pick] = True
        nearest = torch.minimum(nearest, gradient_sq_distances(a, h, pick, a_sq, h_sq))
        nearest[pick] = 0.0
    return np.asarray(picks, dtype=np.int64)


class Badge(Strategy):
    """BADGE (Ash et al., ICLR 2020): query candidates whose last-layer gradient embeddings are large (uncertain)
    and spread out (diverse), by k-means++ seeding over them (:func:`badge_seeding`).

    For the hypothesised label ``ŷ = argmax p``, the cross-entropy's gradient with respect to the last linear
    layer is ``g = (p - onehot(ŷ)) ⊗ h``, ``h`` the pooled input of that layer (the loop's embedding layer must
    be it). Its ``K·D`` entries are never formed: distances factorise into ``O(K + D)`` dot products per
    candidate (:func:`gradient_sq_distances`), computed on the query's device, so a query costs
    ``O(k · N · (K + D))`` time and ``O(N · (K + D))`` memory. Classification only. Picks are returned in pick
    order.
    """

    name = "badge"
    needs = frozenset({Need.PROBABILITIES, Need.EMBEDDINGS})

    def check(self, view: ModelView) -> None:
        if view.task.name != "classification":
            raise UsageError(
                f"strategy {self.name} embeds the gradient of the classification loss, but the task is "
                f"{view.task.name!r}; choose a strategy for any task (random, core-set, learning-loss)"
            )

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        return {"probabilities": batch.probabilities, "embedding": batch.embeddings}

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        probabilities, embeddings = values["probabilities"], values["embedding"]
        bad = ~(np.isfinite(probabilities).all(axis=1) & np.isfinite(embeddings).all(axis=1))
        if bad.any():
            raise LearnLossError(
                f"strategy {self.name} got {int(bad.sum())} non-finite probabilities or embeddings (e.g. for pool "
                f"index {int(candidates[bad][0])}); the model has diverged — lower the learning rate"
            )
        picks = badge_seeding(torch.as_tensor(probabilities, device=context.device),
                              torch.as_tensor(embeddings, device=context.device), k, context.rng)
        return candidates[picks]
