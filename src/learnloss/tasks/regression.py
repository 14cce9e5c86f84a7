"""Regression: per-sample squared error, with R² (primary) and RMSE on the test split.

Learning loss needs nothing of a task but one loss per sample (Yoo & Kweon, "Learning Loss for Active
Learning", CVPR 2019, Sec. 3: the loss prediction module is task-agnostic), so regression plugs in by supplying
the squared error of each sample. R² is the learning-curve metric because, like accuracy, higher is better, so
AUBC, plots and comparisons read the same way as for classification.

Outputs and targets are ``(B, D)`` float tensors (``(B,)`` is read as ``(B, 1)``); unknown targets of a pool
are NaN (:meth:`RegressionTask.empty_targets`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from learnloss.errors import UsageError
from learnloss.tasks.base import Metric, Task

__all__ = ["R2", "RMSE", "RegressionTask"]


def _as_2d(tensor: torch.Tensor) -> torch.Tensor:
    """``(B,)`` as ``(B, 1)``; ``(B, ...)`` as ``(B, D)`` with every component of a sample in a row."""
    return tensor.reshape(-1, 1) if tensor.dim() == 1 else tensor.flatten(1)


def _check_pair(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and target as ``(B, D)`` tensors of the same shape, or a :class:`UsageError` naming both shapes."""
    if output.dim() == 0 or target.dim() == 0:
        raise UsageError(
            f"regression outputs and targets need a batch dimension, got output {tuple(output.shape)} and "
            f"target {tuple(target.shape)}"
        )
    out2 = output.reshape(-1, 1) if output.dim() == 1 else output
    tgt2 = target.reshape(-1, 1) if target.dim() == 1 else target
    if out2.shape != tgt2.shape:
        raise UsageError(
            f"regression output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape; "
            "the model's output width must equal the number of target components"
        )
    return out2.flatten(1), tgt2.flatten(1)


class _Moments:
    """Per-component count, mean, sum of squared deviations of targets, and sum of squared errors, in float64,
    merged batch by batch (Chan et al.'s parallel update) so no sample is kept."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.sse: torch.Tensor | None = None

    def update(self, output: Any, target: Any) -> None:
        output, target = _check_pair(torch.as_tensor(output), torch.as_tensor(target))
        output = output.detach().to("cpu", torch.float64)
        target = target.detach().to("cpu", torch.float64)
        n = int(target.shape[0])
        if n == 0:
            return
        if self.mean is not None and self.mean.shape[0] != target.shape[1]:
            raise UsageError(
                f"regression batch has {target.shape[1]} target components, earlier batches had {self.mean.shape[0]}"
            )
        batch_mean = target.mean(0)
        batch_m2 = ((target - batch_mean) ** 2).sum(0)
        batch_sse = ((output - target) ** 2).sum(0)
        if self.mean is None or self.m2 is None or self.sse is None:
            self.count, self.mean, self.m2, self.sse = n, batch_mean, batch_m2, batch_sse
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.m2 = self.m2 + batch_m2 + delta * delta * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.sse = self.sse + batch_sse
        self.count = total


class _MomentMetric(Metric):
    """A metric computed from the :class:`_Moments` of every batch added."""

    def __init__(self) -> None:
        self._moments = _Moments()

    def update(self, output: Any, target: Any) -> None:
        """Add one batch of outputs and targets, ``(B, D)`` or ``(B,)``."""
        self._moments.update(output, target)


class R2(_MomentMetric):
    """Coefficient of determination ``1 - SS_res / SS_tot`` per target component, averaged uniformly over the
    components (scikit-learn's ``r2_score(..., multioutput="uniform_average")``, including its convention for a
    constant component: 1 if predicted exactly, else 0). NaN with fewer than 2 samples."""

    name = "r2"

    def compute(self) -> float:
        """R² over every batch added so far (NaN with fewer than 2 samples)."""
        m = self._moments
        if m.count < 2 or m.m2 is None or m.sse is None:
            return float("nan")
        nonzero_tot = m.m2 > 0
        scores = torch.where(
            nonzero_tot,
            1.0 - m.sse / torch.where(nonzero_tot, m.m2, torch.ones_like(m.m2)),
            torch.where(m.sse == 0, torch.ones_like(m.sse), torch.zeros_like(m.sse)),
        )
        return float(scores.mean())


class RMSE(_MomentMetric):
    """Root mean squared error over every component of every sample: ``sqrt(mean((output - target)²))``, the
    square root of the mean per-sample loss. NaN when nothing was added."""

    name = "rmse"

    def compute(self) -> float:
        """RMSE over every batch added so far (NaN when nothing was added)."""
        m = self._moments
        if m.count == 0 or m.sse is None:
            return float("nan")
        return math.sqrt(float(m.sse.sum()) / (m.count * int(m.sse.shape[0])))


class RegressionTask(Task):
    """Regression of float targets ``(B, D)`` (or ``(B,)``) from outputs of the same shape.

    The per-sample loss is the squared error averaged over the target's components, the quantity the loss
    prediction module learns to rank (Yoo & Kweon, CVPR 2019, Sec. 3). Metrics: ``r2`` (primary, higher is
    better) and ``rmse``. Unknown targets are NaN.
    """

    name = "regression"
    metrics = ("r2", "rmse")
    primary_metric = "r2"

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error of each sample averaged over its components, ``(B,)``, computed in float32 at least.

        Raises:
            UsageError: output and target differ in shape (a ``(B,)`` tensor counts as ``(B, 1)``).
        """
        output, target = _check_pair(output, target)
        dtype = torch.promote_types(output.dtype, torch.float32)
        return ((output.to(dtype) - target.to(device=output.device, dtype=dtype)) ** 2).flatten(1).mean(1)

    def new_metrics(self) -> dict[str, Metric]:
        """Fresh ``r2`` and ``rmse`` accumulators."""
        return {"r2": R2(), "rmse": RMSE()}

    def empty_targets(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """A float32 NaN tensor ``(size, *like.shape[1:])``: every target unknown."""
        return torch.full((size, *like.shape[1:]), float("nan"), dtype=torch.float32)

    def check_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """``targets`` as float32, after checking they are floating point, finite and have a batch dimension.

        Raises:
            UsageError: the targets are integer/boolean, have no batch dimension, or hold NaN or infinity
                (the message names the first such sample).
        """
        targets = torch.as_tensor(targets)
        if not targets.dtype.is_floating_point:
            raise UsageError(
                f"regression targets must be floating point values (N,) or (N, D), got {targets.dtype} "
                f"{tuple(targets.shape)}; convert them to float"
            )
        if targets.dim() == 0:
            raise UsageError("regression targets need a sample dimension, got a single scalar")
        finite = torch.isfinite(targets).reshape(targets.shape[0], -1).all(1) if targets.numel() else None
        if finite is not None and not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()
            raise UsageError(
                f"regression targets must be finite: {bad.numel()} of {targets.shape[0]} samples hold NaN or "
                f"infinity, the first at index {int(bad[0])}"
            )
        return targets.float()

    def predict(self, output: Any) -> tuple[list[Any], list[float | None]]:
        """Each sample's predicted values as a list (``(B,)`` outputs give one-element lists); no confidence."""
        values = _as_2d(torch.as_tensor(output).detach().float().cpu())
        return [row.tolist() for row in values], [None] * int(values.shape[0])
