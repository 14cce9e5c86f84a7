"""Loss-aware diverse selection: shortlist the highest scores, cluster them, take the best of each cluster.

Ranking by a score alone fills a batch with near-duplicates when the high scores sit in one region of the
embedding space. Hwang, Choi & Choi shortlist the ``S`` candidates with the highest predicted loss, cluster their
backbone features into ``k`` groups (``k`` = the query size) and query the highest-loss member of each group, so
the batch is both informative and diverse.

References:
    Hwang, Choi & Choi, "Semi-Supervised Learning Loss Prediction for Active Learning" (loss-aware diverse
    selection; agglomerative clustering with complete linkage of a 25,000 shortlist into K = 2,500 clusters),
    IEEE Access, 2024.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np
import torch

from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, Need
from learnloss.strategies.base import QueryContext, ScoreStrategy, Strategy, WrapperStrategy, check_finite, top_k

__all__ = [
    "BYTES_PER_PAIR",
    "METHODS",
    "DiverseSelection",
    "Method",
    "Shortlist",
    "max_shortlist",
    "plan_shortlist",
    "select_diverse",
    "shortlist_cluster",
]

Method = Literal["agglomerative", "kmeans"]
METHODS: tuple[str, ...] = get_args(Method)

#: Peak memory of scikit-learn's complete-linkage clustering (scikit-learn 1.9, SciPy backend) per pair of
#: shortlisted candidates, measured as growth of the peak resident set: 15.7-16.7 bytes per pair for S = 2,000,
#: 4,000, 5,000, 8,000 and 12,000 (d = 128). The condensed distance matrix (S(S-1)/2 float64, 8 bytes a pair)
#: exists twice at the peak: SciPy's ``pdist`` output and the working copy its linkage reduces in place.
#: ``tracemalloc`` sees only the numpy half (9.0 bytes per pair); the copy made in C is invisible to it.
BYTES_PER_PAIR = 16


@dataclass(frozen=True)
class Shortlist:
    """The size of a shortlist: the one asked for (``round(ratio * k)`` within ``[k, candidates]``) and the one
    used, smaller when agglomerative clustering of the requested one would not fit in ``memory_mb``.

    Attributes:
        requested: ``round(ratio * k)``, at least ``k``, at most the number of candidates.
        size: the shortlist clustered.
        limit: the largest shortlist that fits the memory budget (agglomerative only, else None).
    """

    requested: int
    size: int
    limit: int | None = None

    @property
    def cut(self) -> bool:
        """Whether the memory budget shortened the shortlist."""
        return self.size < self.requested


def max_shortlist(memory_mb: int) -> int:
    """The largest shortlist whose agglomerative clustering fits in ``memory_mb`` MiB (``2**20`` bytes), at
    :data:`BYTES_PER_PAIR` bytes per pair of candidates; non-decreasing in ``memory_mb``, at least 1. The
    embeddings themselves (``S × d`` float64) come on top; they are small beside the pairs unless ``d`` is
    comparable to ``S``."""
    pairs_budget = max(int(memory_mb), 0) * 2**20 // BYTES_PER_PAIR  # S (S - 1) / 2 <= pairs_budget
    size = int((1 + math.isqrt(1 + 8 * pairs_budget)) // 2)
    while size * (size - 1) // 2 > pairs_budget:  # isqrt rounds down, but guard the boundary anyway
        size -= 1
    return max(size, 1)


def plan_shortlist(candidates: int, k: int, *, ratio: float, method: str, memory_mb: int) -> Shortlist:
    """The shortlist :func:`shortlist_cluster` clusters for ``candidates`` candidates and ``k`` picks.

    Raises:
        UsageError: agglomerative clustering of even ``k`` candidates does not fit in ``memory_mb``.
    """
    requested = min(max(int(round(ratio * k)), k), candidates)
    if method != "agglomerative":
        return Shortlist(requested, requested)
    limit = max_shortlist(memory_mb)
    if limit < k:
        needed = math.ceil(BYTES_PER_PAIR * k * (k - 1) / 2 / 2**20)
        raise UsageError(
            f"agglomerative clustering into k={k} clusters needs a shortlist of at least {k} candidates, about "
            f"{needed} MiB, more than memory-mb={memory_mb}; use method=kmeans or raise memory-mb to {needed}"
        )
    return Shortlist(requested, min(requested, limit), limit)


def shortlist_cluster(
    scores: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    *,
    ratio: float = 10.0,
    method: str = "agglomerative",
    memory_mb: int = 1024,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions of ``k`` distinct candidates, highest score first: the best-scoring member of each of ``k``
    clusters of the ``S`` highest-scoring candidates (:func:`plan_shortlist` gives ``S``).

    Ties in score are broken by position (the earlier first), so the same inputs give the same picks; ``kmeans``
    draws its seed from ``rng``. When a clustering yields fewer than ``k`` non-empty clusters (duplicate
    embeddings), the next-highest scores not yet picked fill the batch.

    Args:
        scores: ``(N,)`` finite scores, higher is better.
        embeddings: ``(N, d)`` features clustered as they are (not normalised).
        k: the number of picks, ``1 <= k <= N``.
        ratio: ``S = round(ratio * k)``, clamped to ``[k, N]``.
        method: ``agglomerative`` (complete linkage) or ``kmeans``.
        memory_mb: the memory budget of agglomerative clustering, which cuts ``S`` to :func:`max_shortlist`.
        rng: the source of the k-means seed.
    """
    scores = np.asarray(scores)
    embeddings = np.asarray(embeddings)
    n = len(scores)
    if embeddings.ndim != 2 or len(embeddings) != n:
        raise ValueError(f"expected ({n}, d) embeddings for {n} scores, got shape {embeddings.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"cannot pick {k} of {n} candidates")
    return _cluster_shortlist(scores, embeddings, k, plan_shortlist(n, k, ratio=ratio, method=method,
                                                                    memory_mb=memory_mb), method, rng)


def _cluster_shortlist(scores: np.ndarray, embeddings: np.ndarray, k: int, plan: Shortlist, method: str,
                       rng: np.random.Generator) -> np.ndarray:
    """:func:`shortlist_cluster` with its shortlist already planned."""
    ranked = top_k(scores, plan.size)  # positions, highest score first, ties by position
    if plan.size == k:  # every shortlisted candidate is its own cluster
        return ranked
    features = embeddings[ranked]
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=k, linkage="complete").fit_predict(features.astype(np.float64))
    elif method == "kmeans":
        from sklearn.cluster import KMeans

        seed = int(rng.integers(2**31 - 1))
        with warnings.catch_warnings():  # duplicates give fewer distinct clusters; the fill below handles them
            warnings.simplefilter("ignore")
            labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(features).labels_
    else:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    # The first member of each cluster in score order is its best; the picks stay in score order.
    _, first = np.unique(labels, return_index=True)
    chosen = np.zeros(plan.size, dtype=bool)
    chosen[first[:k]] = True
    missing = k - int(chosen.sum())
    if missing > 0:
        chosen[np.flatnonzero(~chosen)[:missing]] = True
    return ranked[chosen]


def check_parameters(strategy: str, ratio: float, method: str, memory_mb: int) -> None:
    """Refuse a shortlist ratio, clustering method or memory budget that cannot work (one-line UsageError)."""
    if not (math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"parameter 'ratio' of {strategy} must be a positive number, got {ratio}")
    if method not in METHODS:
        raise UsageError(f"parameter 'method' of {strategy} must be one of {', '.join(METHODS)}, got {method!r}")
    if memory_mb <= 0:
        raise UsageError(f"parameter 'memory-mb' of {strategy} must be a positive number of MiB, got {memory_mb}")


def check_embeddings(strategy: str, candidates: np.ndarray, embeddings: np.ndarray) -> None:
    """Refuse non-finite embeddings: no clustering of them is meaningful."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise LearnLossError(
            f"strategy {strategy} got {int(bad.sum())} non-finite embeddings (e.g. for pool index "
            f"{int(candidates[bad][0])}); the model has diverged — lower the learning rate"
        )


class DiverseSelection(WrapperStrategy):
    """Loss-aware diverse selection (Hwang, Choi & Choi, IEEE Access 2024) around any scoring strategy:
    shortlist the ``S = round(ratio * k)`` candidates with the highest inner score, cluster their embeddings into
    ``k`` groups and query the highest-scoring member of each group, highest score first
    (:func:`shortlist_cluster`). ``diverse(learning-loss)`` is the paper's selection on the LPM's predicted loss;
    ``ssl-lpm`` is the paper's whole method under one name.

    Embeddings are clustered raw (the paper clusters unnormalised backbone features). What each ``method`` costs
    (measured on this project's 2-core CPU, scikit-learn 1.9, for ``S = 5,000``, ``k = 500``, ``d = 128``):

    * ``agglomerative`` (the paper's choice): scikit-learn ``AgglomerativeClustering(linkage="complete")``.
      Memory ``O(S²)``: the condensed pairwise distance matrix (``S(S-1)/2`` float64) exists twice at the peak,
      :data:`BYTES_PER_PAIR` = 16 bytes per pair ≈ ``8·S²`` bytes (measured 15.7-16.7 bytes per pair as peak-RSS
      growth for ``S`` = 2,000 to 12,000: 32 MiB at 2,000, 120 MiB at 4,000, 188 MiB at 5,000, 483 MiB at 8,000,
      1,090 MiB at 12,000). Time ``O(S²·d)`` for the distances plus ``O(S²)`` for the linkage: 1.2 s at
      ``S = 5,000``, 3.9 s at 8,000, 10 s at 12,000. ``memory_mb`` caps ``S`` at :func:`max_shortlist`
      (11,585 for the default 1,024 MiB); the size used is in :attr:`last_shortlist`. The paper's ``S = 25,000``
      needs about 4.7 GiB (``memory-mb=4800``).
    * ``kmeans``: scikit-learn ``KMeans(n_clusters=k, n_init=1)`` seeded from the query's generator. Memory
      ``O(S·d)`` plus ``O(chunk·k)`` distance blocks (3.6 MiB of peak-RSS growth, 5.2 MiB traced); time
      ``O(S·k·d·iterations)``: 1.0 s. The better choice for a large shortlist; not the paper's clustering.

    Args:
        inner: a scoring strategy (:class:`ScoreStrategy`), e.g. ``learning-loss``, ``entropy``, ``margin``.
        ratio: shortlist size over query size (the paper: 25,000 / 2,500 = 10); ``S`` is at least ``k`` and at
            most the number of candidates.
        method: ``agglomerative`` or ``kmeans``.
        memory_mb: memory budget of agglomerative clustering in MiB; a longer shortlist is cut to fit, and a
            budget that cannot hold even ``k`` candidates is a usage error.

    Attributes:
        last_shortlist: the :class:`Shortlist` of the last selection (None before the first), whose ``cut``
            tells whether the memory budget shortened it.
    """

    name = "diverse"

    def __init__(self, inner: Strategy, ratio: float = 10.0, method: Method = "agglomerative",
                 memory_mb: int = 1024) -> None:
        if not isinstance(inner, ScoreStrategy):
            raise UsageError(
                f"{self.name} shortlists by score, but {inner.spec} does not score candidates one by one; "
                "wrap a scoring strategy (e.g. learning-loss, entropy, margin, baal-bald)"
            )
        check_parameters(self.name, ratio, method, memory_mb)
        super().__init__(inner)
        self.ratio, self.method, self.memory_mb = float(ratio), method, memory_mb
        self.last_shortlist: Shortlist | None = None

    @property
    def needs(self) -> frozenset[Need]:  # type: ignore[override]
        return self.inner.needs | {Need.EMBEDDINGS}

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        return {**self.inner.collect(batch), "embedding": batch.embeddings}

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        picks, self.last_shortlist = select_diverse(self, candidates, values, k, context)
        return picks


def select_diverse(
    strategy: DiverseSettings, candidates: np.ndarray, values: dict[str, np.ndarray], k: int,
    context: QueryContext,
) -> tuple[np.ndarray, Shortlist]:
    """The ``k`` pool indices :func:`shortlist_cluster` picks from the kept ``score`` and ``embedding`` values with
    ``strategy``'s ``ratio``, ``method`` and ``memory_mb``, after checking both are finite; and the shortlist used."""
    scores, embeddings = values["score"], values["embedding"]
    check_finite(str(strategy.spec), candidates, scores)
    check_embeddings(str(strategy.spec), candidates, embeddings)
    plan = plan_shortlist(len(candidates), k, ratio=strategy.ratio, method=strategy.method,
                          memory_mb=strategy.memory_mb)
    return candidates[_cluster_shortlist(scores, embeddings, k, plan, strategy.method, context.rng)], plan


class DiverseSettings(Protocol):
    """What :func:`select_diverse` reads of a strategy."""

    ratio: float
    method: Method
    memory_mb: int

    @property
    def spec(self) -> object: ...
