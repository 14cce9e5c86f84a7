"""Keypoint estimation from heatmaps: per-image heatmap MSE, PCK@0.2 (primary) and mean error.

Learning loss needs nothing of a task but one loss per sample (Yoo & Kweon, "Learning Loss for Active Learning",
CVPR 2019, Sec. 3); their pose experiment (Sec. 4.3) trains a stacked hourglass on MPII and the loss prediction
module learns to rank each image's heatmap loss. This module supplies that loss and the rest of the task.

Targets are float32 ``(B, K, 3)`` rows ``(x, y, v)``: ``x`` and ``y`` normalised to ``[0, 1]`` by the image's
width and height, ``v`` the COCO visibility (0: not labeled, with ``x = y = 0``; 1: labeled but occluded;
2: visible). A keypoint is *labeled* when ``v > 0``; occluded and visible keypoints count alike. An unknown target
(a pool sample not labeled yet) is all NaN (:meth:`KeypointTask.empty_targets`).

Model outputs are heatmaps ``(B, K, h, w)`` of any resolution. Normalised and heatmap coordinates are related by
pixel centres: heatmap pixel ``j`` covers ``[j / w, (j + 1) / w]`` of the image, so ``u = x * w - 0.5`` and
``x = (u + 0.5) / w`` (likewise for ``y`` and ``h``); the same targets serve any output resolution.

References:
    Newell, Yang & Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016 (target
    heatmaps: a 2-D Gaussian with a standard deviation of 1 pixel of the 64x64 heatmaps at each joint; the MSE
    loss; decoding by the maximum of each heatmap, which the authors' released evaluation code moves a quarter
    pixel toward the higher neighbour).
    Andriluka et al., "2D Human Pose Estimation: New Benchmark and State of the Art Analysis", CVPR 2014 (PCK).
    Liu & Ferrari, "Active Learning for Human Pose Estimation", ICCV 2017 (uncertainty read off the heatmaps).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from learnloss.errors import UsageError
from learnloss.tasks.base import Metric, Task

__all__ = [
    "DEFAULT_PCK_THRESHOLD",
    "DEFAULT_SIGMA",
    "KeypointTask",
    "MeanError",
    "PCK",
    "decode_heatmaps",
    "render_heatmaps",
]

#: Standard deviation of the target Gaussians, in heatmap pixels (Newell et al. 2016).
DEFAULT_SIGMA = 1.0
#: PCK's fraction of the larger side of the labeled keypoints' bounding box.
DEFAULT_PCK_THRESHOLD = 0.2
#: Tolerance on the ``[0, 1]`` range of labeled normalised coordinates.
COORDINATE_TOLERANCE = 1e-6


def _check_positive_float(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _labeled(target: torch.Tensor) -> torch.Tensor:
    """Mask ``(B, K)`` of labeled keypoints (``v > 0``; NaN rows of unknown targets are not labeled)."""
    return target[..., 2] > 0


def _check_pair(output: torch.Tensor, target: torch.Tensor) -> None:
    """Refuse heatmaps that are not ``(B, K, h, w)`` or do not match targets ``(B, K, 3)``."""
    if (
        output.dim() != 4
        or target.dim() != 3
        or target.shape[2] != 3
        or output.shape[:2] != target.shape[:2]
    ):
        raise UsageError(
            f"keypoint outputs must be heatmaps (B, K, h, w) matching targets (B, K, 3), got output "
            f"{tuple(output.shape)} and target {tuple(target.shape)}; the model needs one heatmap per keypoint"
        )


def render_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """Target heatmaps ``(B, K, height, width)`` in float32 on ``keypoints``' device, computed in one pass.

    Each labeled keypoint (``v > 0``) gets an unnormalised Gaussian ``exp(-d² / (2 σ²))`` centred at its
    sub-pixel heatmap position ``(x * width - 0.5, y * height - 0.5)``, ``d`` and ``σ`` in heatmap pixels (peak 1
    when the keypoint sits on a pixel centre; Newell et al. 2016). Unlabeled keypoints get zero maps.

    Args:
        keypoints: ``(B, K, 3)`` rows ``(x, y, v)`` with normalised ``x``, ``y``.
        height, width: the heatmap resolution.
        sigma: the Gaussians' standard deviation in heatmap pixels.
    """
    keypoints = keypoints.detach().float()
    labeled = _labeled(keypoints)
    xy = torch.where(labeled[..., None], keypoints[..., :2], torch.zeros_like(keypoints[..., :2]))
    u = xy[..., 0] * width - 0.5
    v = xy[..., 1] * height - 0.5
    cols = torch.arange(width, device=keypoints.device, dtype=torch.float32)
    rows = torch.arange(height, device=keypoints.device, dtype=torch.float32)
    dx2 = (cols[None, None, None, :] - u[..., None, None]) ** 2
    dy2 = (rows[None, None, :, None] - v[..., None, None]) ** 2
    maps = torch.exp(-(dx2 + dy2) / (2.0 * sigma * sigma))
    return maps * labeled[..., None, None].float()


def decode_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Keypoints ``(B, K, 3)`` rows ``(x, y, confidence)`` read off heatmaps ``(B, K, h, w)``.

    The maximum of each map, moved a quarter pixel toward its higher horizontal and vertical neighbour (as in the
    released evaluation code of Newell et al. 2016; no move at the map's border or between equal neighbours),
    converted to normalised coordinates ``((u + 0.5) / w, (v + 0.5) / h)``. The confidence is the map's maximum
    value. Deterministic: ties go to the first maximum in row-major order.
    """
    if heatmaps.dim() != 4 or heatmaps.shape[2] < 1 or heatmaps.shape[3] < 1:
        raise UsageError(f"keypoint heatmaps must be (B, K, h, w) with h, w >= 1, got {tuple(heatmaps.shape)}")
    maps = heatmaps.detach().float()
    b, k, h, w = maps.shape
    flat = maps.reshape(b, k, h * w)
    peak, index = flat.max(dim=2)
    row, col = torch.div(index, w, rounding_mode="floor"), index % w

    def value(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (r.clamp(0, h - 1) * w + c.clamp(0, w - 1))[..., None])[..., 0]

    dx = torch.sign(value(row, col + 1) - value(row, col - 1)) * ((col > 0) & (col < w - 1))
    dy = torch.sign(value(row + 1, col) - value(row - 1, col)) * ((row > 0) & (row < h - 1))
    x = (col.float() + 0.25 * dx + 0.5) / w
    y = (row.float() + 0.25 * dy + 0.5) / h
    return torch.stack([x, y, peak], dim=2)


class _Errors:
    """Distances between decoded and true keypoints of one batch, with the masks that PCK and the mean error need."""

    def __init__(self, output: Any, target: Any) -> None:
        output, target = torch.as_tensor(output), torch.as_tensor(target)
        _check_pair(output, target)
        target = target.detach().to("cpu", torch.float64)
        predicted = decode_heatmaps(output).to("cpu", torch.float64)[..., :2]
        self.labeled = _labeled(target)
        true = torch.where(self.labeled[..., None], target[..., :2], torch.zeros_like(target[..., :2]))
        self.distance = torch.linalg.vector_norm(predicted - true, dim=2)  # (B, K), normalised units
        big = torch.full_like(true, math.inf)
        low = torch.where(self.labeled[..., None], true, big).amin(dim=1)
        high = torch.where(self.labeled[..., None], true, -big).amax(dim=1)
        extent = (high - low).amax(dim=1)  # (B,), -inf for an image without labeled keypoints
        self.box_size = torch.where(torch.isfinite(extent), extent, torch.zeros_like(extent))


class PCK(Metric):
    """Percentage of correct keypoints: the fraction of labeled keypoints (``v > 0``) whose decoded position lies
    within ``threshold`` × the larger side of the bounding box of the image's labeled keypoints (distance ``<=``
    threshold), over every batch added.

    The synthetic figures have no head box, so MPII's PCKh (Andriluka et al., CVPR 2014) does not apply; a
    threshold relative to the keypoints' bounding box is the common alternative. Distances and box are measured in
    normalised coordinates (each axis by its own image side; the same as pixels for square images). Images whose
    box has zero size (a single labeled keypoint) are left out: their threshold would be zero. NaN when no
    keypoint was counted.
    """

    name = "pck"

    def __init__(self, threshold: float = DEFAULT_PCK_THRESHOLD) -> None:
        self.threshold = _check_positive_float("the PCK threshold", threshold)
        self.correct = 0
        self.total = 0

    def update(self, output: Any, target: Any) -> None:
        """Add heatmaps ``(B, K, h, w)`` and their targets ``(B, K, 3)``."""
        errors = _Errors(output, target)
        counted = errors.labeled & (errors.box_size > 0)[:, None]
        within = errors.distance <= self.threshold * errors.box_size[:, None]
        self.correct += int((within & counted).sum())
        self.total += int(counted.sum())

    def compute(self) -> float:
        """The fraction of counted keypoints that were correct (NaN when none was counted)."""
        return self.correct / self.total if self.total else float("nan")


class MeanError(Metric):
    """Mean Euclidean distance between decoded and true labeled keypoints (``v > 0``), in normalised image
    coordinates (a fraction of the image side); lower is better. NaN when nothing was added."""

    name = "mean_error"

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, output: Any, target: Any) -> None:
        """Add heatmaps ``(B, K, h, w)`` and their targets ``(B, K, 3)``."""
        errors = _Errors(output, target)
        self.sum += float(errors.distance[errors.labeled].sum())
        self.count += int(errors.labeled.sum())

    def compute(self) -> float:
        """The mean distance over every labeled keypoint added (NaN when none was)."""
        return self.sum / self.count if self.count else float("nan")


class KeypointTask(Task):
    """Keypoint estimation from heatmaps ``(B, K, h, w)`` and targets ``(B, K, 3)`` rows ``(x, y, v)``.

    The per-sample loss is the heatmap MSE of Newell et al. (ECCV 2016) per image, the loss the pose
    experiment of Yoo & Kweon (CVPR 2019, Sec. 4.3) has the loss prediction module rank. Metrics: ``pck``
    (PCK@``pck_threshold``, primary, higher is better) and ``mean_error``.

    Args:
        sigma: standard deviation of the target Gaussians in heatmap pixels. Newell et al. use 1 at 64x64
            heatmaps; 1 is kept at the bundled hourglass's 16x16 heatmaps of 64x64 images (a Gaussian as wide as
            4 image pixels, as in the paper, which suits small figures) and the quarter-pixel decoding assumes a
            peak a few pixels wide.
        pck_threshold: PCK's fraction of the larger side of the labeled keypoints' bounding box.
    """

    name = "keypoints"
    metrics = ("pck", "mean_error")
    primary_metric = "pck"

    def __init__(self, sigma: float = DEFAULT_SIGMA, pck_threshold: float = DEFAULT_PCK_THRESHOLD) -> None:
        self.sigma = _check_positive_float("the heatmap sigma", sigma)
        self.pck_threshold = _check_positive_float("the PCK threshold", pck_threshold)

    def target_heatmaps(self, target: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The target heatmaps ``(B, K, height, width)`` of ``target`` (:func:`render_heatmaps` with this sigma)."""
        return render_heatmaps(target, height, width, self.sigma)

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image heatmap MSE ``(B,)``, with gradient into ``output``.

        For image ``i``: the mean over its labeled keypoints ``k`` (``v > 0``) of the mean squared difference
        between the output map ``k`` and the target Gaussian (Newell et al. 2016). Unlabeled keypoints' maps
        contribute nothing (Newell et al. train an invisible joint's map toward zero instead; here ``v = 0`` means
        "not annotated", which says nothing about the image); an image with no labeled keypoint has loss 0.
        Computed in float32 even under autocast, so that bf16 heatmaps do not round the small squared differences
        away.

        Raises:
            UsageError: the output is not ``(B, K, h, w)`` with the targets' ``B`` and ``K``.
        """
        _check_pair(output, target)
        with torch.autocast(device_type=output.device.type, enabled=False):
            out = output.float()
            target = target.to(device=output.device)
            wanted = render_heatmaps(target, int(out.shape[2]), int(out.shape[3]), self.sigma)
            per_map = ((out - wanted) ** 2).flatten(2).mean(dim=2)  # (B, K)
            labeled = _labeled(target).float()
            return (per_map * labeled).sum(dim=1) / labeled.sum(dim=1).clamp_min(1.0)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Decoded keypoints ``(B, K, 3)`` rows ``(x, y, confidence)`` (:func:`decode_heatmaps`)."""
        return decode_heatmaps(output)

    def new_metrics(self) -> dict[str, Metric]:
        """Fresh ``pck`` and ``mean_error`` accumulators."""
        return {"pck": PCK(self.pck_threshold), "mean_error": MeanError()}

    def empty_targets(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """A float32 NaN tensor ``(size, K, 3)`` (``K`` from ``like``): every target unknown."""
        return torch.full((size, *like.shape[1:]), float("nan"), dtype=torch.float32)

    def check_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """``targets`` as float32 ``(N, K, 3)``, labeled coordinates clamped to ``[0, 1]``, after checking them.

        Raises:
            UsageError: the targets are not floating point ``(N, K, 3)``, or a row is not finite, has a visibility
                other than 0, 1 or 2, is labeled with ``x`` or ``y`` outside ``[0, 1]`` (beyond a tolerance of
                1e-6), or is unlabeled (``v = 0``) with non-zero coordinates; the message names the first such
                sample and keypoint.
        """
        targets = torch.as_tensor(targets)
        if not targets.dtype.is_floating_point or targets.dim() != 3 or targets.shape[2] != 3:
            raise UsageError(
                f"keypoint targets must be floating point (N, K, 3) rows (x, y, v), got {targets.dtype} "
                f"{tuple(targets.shape)}; store normalised x, y and the COCO visibility v per keypoint"
            )
        targets = targets.float()
        x, y, v = targets[..., 0], targets[..., 1], targets[..., 2]
        low, high = -COORDINATE_TOLERANCE, 1.0 + COORDINATE_TOLERANCE
        labeled = v > 0
        problems = [
            (~torch.isfinite(targets).all(dim=2), "holds NaN or infinity; every labeled target must be finite"),
            ((v != 0) & (v != 1) & (v != 2), "has a visibility v other than 0, 1 or 2 (COCO: 0 not labeled, "
             "1 occluded, 2 visible)"),
            (labeled & ((x < low) | (x > high) | (y < low) | (y > high)), "is labeled with x or y outside [0, 1]; "
             "normalise coordinates by the image width and height"),
            ((v == 0) & ((x != 0) | (y != 0)), "is not labeled (v = 0) but has non-zero x or y; set them to 0"),
        ]
        for bad, what in problems:
            if bool(bad.any()):
                sample, keypoint = (int(i) for i in torch.nonzero(bad)[0])
                row = [round(float(c), 6) for c in targets[sample, keypoint]]
                raise UsageError(f"keypoint target of sample {sample}, keypoint {keypoint} {row} {what}")
        coords = torch.where(labeled[..., None], targets[..., :2].clamp(0.0, 1.0), targets[..., :2])
        return torch.cat([coords, targets[..., 2:]], dim=2)

    def predict(self, output: Any) -> tuple[list[Any], list[float | None]]:
        """Each image's keypoints as a list of ``[x, y, confidence]`` (normalised coordinates, the map's peak),
        and the image's confidence, the mean peak over its keypoints."""
        decoded = decode_heatmaps(torch.as_tensor(output)).cpu()
        confidence = decoded[..., 2].mean(dim=1)
        return [image.tolist() for image in decoded], [float(c) for c in confidence]

    def uncertainty(self, output: Any) -> torch.Tensor:
        """Heatmap-confidence uncertainty ``(B,)`` in ``[0, 1]``: ``1 - mean_k clamp(max(heatmap_k), 0, 1)``;
        higher is less certain. Deterministic.

        The least-confidence idea (Settles 2009, Sec. 3.1) read off heatmaps, whose peak approximates the
        confidence in a keypoint (target peaks are 1). Liu & Ferrari (ICCV 2017) score pose uncertainty from
        heatmaps too (their Multiple Peak Entropy looks at every local maximum); this baseline uses the highest.
        """
        output = torch.as_tensor(output)
        if output.dim() != 4:
            raise UsageError(f"keypoint heatmaps must be (B, K, h, w), got {tuple(output.shape)}")
        peaks = output.detach().float().flatten(2).amax(dim=2).clamp(0.0, 1.0)
        return 1.0 - peaks.mean(dim=1)
