"""The semi-supervised learning-loss method of Hwang, Choi & Choi as one strategy name.

References:
    Hwang, Choi & Choi, "Enhancing Active Learning with Semi-Supervised Loss Prediction Modules", IEEE Access,
    2024:
    stage A trains the target model and the loss prediction module (LPM) jointly on the labeled set (Yoo & Kweon,
    CVPR 2019); stage B trains the LPM further, semi-supervised, on the unlabeled pool; the query ranks the pool by
    predicted loss and selects diversely (loss-aware diverse selection: cluster the shortlisted high-loss samples
    and take the highest-loss one of each cluster).
"""

from __future__ import annotations

import numpy as np
import torch

from learnloss.inference import BatchOutputs, Need
from learnloss.strategies.base import QueryContext, Strategy, check_finite, top_k
from learnloss.strategies.diverse import Method, Shortlist, check_parameters, select_diverse

__all__ = ["SSLLPM"]


class SSLLPM(Strategy):
    """Semi-supervised loss prediction with loss-aware diverse selection (Hwang, Choi & Choi, IEEE Access 2024).

    Its parts, each of which can be switched off for an ablation:

    * stage A, always: the loop's joint training of the target model and the LPM (Yoo & Kweon, CVPR 2019);
    * stage B, ``semi``: semi-supervised training of the LPM on the unlabeled pool after stage A.
      :attr:`training_stages` names it (``"semi-lpm"``) and the run builder adds that stage; the strategy itself
      trains nothing. ``ssl-lpm:semi=false`` is the ablation "without stage B";
    * the query, ``cluster``: shortlist the ``round(ratio * k)`` candidates with the highest predicted loss,
      cluster their embeddings into ``k`` groups and take the highest-loss member of each
      (:func:`~learnloss.strategies.diverse.shortlist_cluster`; memory and time of each ``method`` in
      :class:`~learnloss.strategies.diverse.DiverseSelection`). ``ssl-lpm:cluster=false`` is the ablation "without
      clustering": the plain top-``k`` by predicted loss, and no embeddings are streamed.

    Args:
        semi: add the semi-supervised LPM stage (stage B).
        cluster: select diversely (else plain top-``k`` by predicted loss).
        ratio: shortlist size over query size (the paper: 10).
        method: ``agglomerative`` (the paper's complete linkage) or ``kmeans``.
        memory_mb: memory budget of agglomerative clustering in MiB.

    Attributes:
        last_shortlist: the :class:`~learnloss.strategies.diverse.Shortlist` of the last clustered selection.
    """

    name = "ssl-lpm"
    score_meaning = ("predicted loss of the loss prediction module: higher = more likely wrong; the scale is arbitrary and may "
                     "be negative, only the order matters")
    needs = frozenset({Need.LPM_SCORES, Need.EMBEDDINGS})

    def __init__(self, semi: bool = True, cluster: bool = True, ratio: float = 10.0,
                 method: Method = "agglomerative", memory_mb: int = 1024) -> None:
        check_parameters(self.name, ratio, method, memory_mb)
        self.semi, self.cluster = bool(semi), bool(cluster)
        self.ratio, self.method, self.memory_mb = float(ratio), method, memory_mb
        if not self.cluster:
            self.needs = frozenset({Need.LPM_SCORES})
        self.last_shortlist: Shortlist | None = None

    @property
    def training_stages(self) -> tuple[str, ...]:
        return ("semi-lpm",) if self.semi else ()

    def collect(self, batch: BatchOutputs) -> dict[str, torch.Tensor]:
        if not self.cluster:
            return {"score": batch.lpm_scores}
        return {"score": batch.lpm_scores, "embedding": batch.embeddings}

    def select(
        self, candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext
    ) -> np.ndarray:
        if not self.cluster:
            check_finite(str(self.spec), candidates, values["score"])
            return candidates[top_k(values["score"], k)]
        picks, self.last_shortlist = select_diverse(self, candidates, values, k, context)
        return picks
