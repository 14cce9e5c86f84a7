"""Loss-prediction losses: the paper's pairwise margin ranking loss, the pairwise logistic (RankNet) loss of the
semi-supervised LPM, and the MSE ablation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from learnloss.errors import UnknownNameError

LossPredictionLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pairs(values: torch.Tensor) -> torch.Tensor:
    """Differences ``v_i - v_j`` over the ``B // 2`` pairs (i, B-1-i) of a batch; the middle of an odd batch
    sits out."""
    half = values.shape[0] // 2
    return values[:half] - values.flip(0)[:half]


def margin_ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise margin ranking loss of Yoo & Kweon (CVPR 2019), Eq. 2.

    The batch is split into ``B // 2`` pairs ``(i, j)``; for each pair
    ``max(0, -sign(l_i - l_j) * (l̂_i - l̂_j) + ξ)`` with ``sign = +1`` if ``l_i > l_j`` else ``-1`` (ties
    give ``-1``). The target losses are constants: no gradient flows into them. Works for any batch size;
    a batch with fewer than two samples has no pair and contributes zero (with a graph, so ``backward`` works).
    """
    if predicted.shape != target.shape or predicted.dim() != 1:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must both be (B,)")
    if predicted.shape[0] < 2:
        return predicted.sum() * 0.0
    target = target.detach()
    sign = torch.where(_pairs(target) > 0, 1.0, -1.0).to(predicted.dtype)
    return torch.clamp(margin - sign * _pairs(predicted), min=0.0).mean()


def logistic_ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise logistic ranking loss (RankNet; Burges et al., ICML 2005), the form the semi-supervised LPM of
    Hwang, Choi & Choi (IEEE Access 2024) trains with.

    Pairs as in :func:`margin_ranking_loss`; for each pair the binary cross-entropy between
    ``sigmoid(l̂_i - l̂_j)`` and the target order ``1[l_i > l_j]`` (ties count as 0), computed from the logits so
    it cannot overflow. Unlike the hinge it never stops pushing apart a correctly ordered pair, but ever more
    gently. ``margin`` is accepted for a uniform signature and ignored. A batch with fewer than two samples has no
    pair and contributes zero (with a graph).
    """
    del margin
    if predicted.shape != target.shape or predicted.dim() != 1:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must both be (B,)")
    if predicted.shape[0] < 2:
        return predicted.sum() * 0.0
    order = (_pairs(target.detach()) > 0).to(predicted.dtype)
    return F.binary_cross_entropy_with_logits(_pairs(predicted), order)


def mse_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The "learn loss MSE" ablation of the paper: mean squared error against the detached target losses.

    ``margin`` is accepted for a uniform signature and ignored.
    """
    del margin
    return F.mse_loss(predicted, target.detach())


LPM_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ranking": margin_ranking_loss, "logistic": logistic_ranking_loss, "mse": mse_loss,
}


def get_lpm_loss(name: str) -> Callable[..., torch.Tensor]:
    """Look up a loss-prediction loss by name (``ranking``, ``logistic`` or ``mse``)."""
    try:
        return LPM_LOSSES[name]
    except KeyError:
        raise UnknownNameError("LPM loss", name, list(LPM_LOSSES)) from None
