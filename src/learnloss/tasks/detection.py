"""Object detection: CenterNet's training loss per image, peak decoding, COCO mAP and a detection uncertainty.

Yoo & Kweon, "Learning Loss for Active Learning" (CVPR 2019, Sec. 4.2), apply the loss prediction module to an
object detector: the loss it learns to rank is the detector's own training loss of each *image*, and the
learning curve is the mAP at IoU 0.5. Here the detector is CenterNet (Zhou, Wang & Krähenbühl, "Objects as
Points", arXiv:1904.07850, 2019), whose model outputs a plain dict (``learnloss.models.detector``; models and
tasks do not import each other) of maps at one output resolution ``h x w``:

* ``"heatmap"`` ``(B, K, h, w)``: logits of the class centre heatmaps ``Ŷ = sigmoid(logits)``;
* ``"size"`` ``(B, 2, h, w)``: box width and height as fractions of the image width and height;
* ``"offset"`` ``(B, 2, h, w)``: the centre's position inside its cell, in cells.

The image is divided into ``h x w`` equal cells, so no stride is needed: a normalised point ``(x, y)`` lies in
cell ``(floor(x w), floor(y h))``.

Targets are float32 ``(B, M, 5)``, one row ``(class, x0, y0, x1, y1)`` per object with coordinates normalised to
``[0, 1]`` by the image width (x) and height (y), and padding rows ``(-1, 0, 0, 0, 0)``; an unknown (unlabeled)
image of a pool has all-NaN targets (:meth:`DetectionTask.empty_targets`) and a NaN loss.

The per-image loss is CenterNet's (Zhou et al. 2019, Eq. 1-4): ``L = L_k + 0.1 L_size + L_off`` with

* ``L_k = -1/N Σ_xyc { (1 - Ŷ)^α log Ŷ  if Y = 1;  (1 - Y)^β Ŷ^α log(1 - Ŷ)  otherwise }`` with ``α = 2`` and
  ``β = 4`` (Eq. 1, the penalty-reduced focal loss of Law & Deng, "CornerNet", ECCV 2018), where the target
  ``Y`` splats a Gaussian around each object's centre cell with CenterNet's object-size-adaptive radius;
* ``L_off = 1/N Σ_objects |Ô_p̃ - (p/R - p̃)|`` (Eq. 2) and ``L_size = 1/N Σ_objects |Ŝ_p̃ - s|`` (Eq. 3), L1
  norms of the 2-vectors read at the object's centre cell ``p̃``,

and ``N = max(1, number of objects of the image)``: an image without objects has only the negative heatmap term.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from learnloss.errors import UsageError
from learnloss.tasks.base import Metric, Task

__all__ = [
    "AveragePrecision",
    "CenterTargets",
    "DetectionTask",
    "MeanAP",
    "MeanAP50",
    "centernet_loss",
    "decode",
    "encode_targets",
    "gaussian_radius",
]

#: Focal loss exponents of CenterNet's Eq. 1.
FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0
#: Weights of the size and offset terms (CenterNet's λ_size = 0.1, λ_off = 1).
SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0
#: Minimum IoU of a box at the Gaussian's radius with the object's box (CenterNet's 0.7).
MIN_OVERLAP = 0.7
#: Reductions of :meth:`DetectionTask.uncertainty` over an image's detections.
UNCERTAINTY_REDUCTIONS = ("max", "mean")

_OUTPUT_KEYS = ("heatmap", "size", "offset")


# --------------------------------------------------------------------------------------------- model outputs


def _maps(output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``heatmap``, ``size`` and ``offset`` maps of a detector output, after checking their shapes."""
    if not isinstance(output, Mapping) or any(not isinstance(output.get(key), torch.Tensor) for key in _OUTPUT_KEYS):
        found = sorted(output) if isinstance(output, Mapping) else type(output).__name__
        raise UsageError(
            f"a detection output must be a dict with tensors 'heatmap', 'size' and 'offset', got {found}; "
            "use a detection model such as CenterNetFPN"
        )
    heat, size, offset = (output[key] for key in _OUTPUT_KEYS)
    if heat.dim() != 4 or size.shape != (heat.shape[0], 2, *heat.shape[2:]) or offset.shape != size.shape:
        raise UsageError(
            f"detection maps must be heatmap (B, K, h, w), size and offset (B, 2, h, w), got heatmap "
            f"{tuple(heat.shape)}, size {tuple(size.shape)}, offset {tuple(offset.shape)}"
        )
    return heat, size, offset


# ---------------------------------------------------------------------------------------------------- targets


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = MIN_OVERLAP) -> torch.Tensor:
    """CenterNet's Gaussian radius of boxes ``height x width`` (in output cells), elementwise.

    The smallest of three radii by which a corner may move while the box keeps an IoU of at least
    ``min_overlap`` with the original (Law & Deng, "CornerNet", ECCV 2018, Sec. 3.2), exactly as the reference
    implementations of CornerNet and CenterNet compute it (``gaussian_radius`` in CenterNet's ``image.py``,
    including its ``(b + sqrt(b² - 4ac)) / 2`` roots), so target heatmaps match theirs; float64. CenterNet then
    uses ``max(0, int(radius))`` of the radius of the box size rounded up.
    """
    h, w = height.double(), width.double()
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1 * b1 - 4 * c1).clamp(min=0))) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt((b2 * b2 - 16 * c2).clamp(min=0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 * b3 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


@dataclass(frozen=True)
class CenterTargets:
    """The training targets of a batch at output resolution ``h x w`` (:func:`encode_targets`).

    Attributes:
        heatmap: ``(B, K, h, w)`` Gaussian splats, exactly 1 at each object's centre cell.
        cell: ``(B, M)`` flat index ``row * w + column`` of each object's centre cell (0 for padding).
        size: ``(B, M, 2)`` each object's width and height as fractions of the image.
        offset: ``(B, M, 2)`` each object's centre inside its cell, in cells, ``[0, 1)``.
        valid: ``(B, M)`` which rows are objects (not padding, not unknown).
        count: ``(B,)`` objects per image (float).
        unknown: ``(B,)`` images whose targets are unknown (any NaN).
    """

    heatmap: torch.Tensor
    cell: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    valid: torch.Tensor
    count: torch.Tensor
    unknown: torch.Tensor


def _check_target_shape(targets: torch.Tensor) -> None:
    if targets.dim() != 3 or targets.shape[2] != 5:
        raise UsageError(
            f"detection targets must be (N, M, 5) rows (class, x0, y0, x1, y1), got {tuple(targets.shape)}"
        )


def encode_targets(
    targets: torch.Tensor, num_classes: int, height: int, width: int, device: torch.device | str | None = None
) -> CenterTargets:
    """CenterNet's targets of ``targets`` ``(B, M, 5)`` for ``num_classes`` heatmaps of ``height x width`` cells.

    Each object's centre ``p = ((x0 + x1) / 2 · w, (y0 + y1) / 2 · h)`` (in cells) falls in cell ``p̃ = floor(p)``;
    its heatmap gets ``exp(-|q - p̃|² / (2σ²))`` for cells ``q`` within the radius ``r`` of :func:`gaussian_radius`
    (a square window, as CenterNet draws it) with ``σ = (2r + 1) / 6``, and a class's heatmap is the maximum over
    its objects (Zhou et al. 2019, Sec. 3). Built on ``device`` (default: the targets'), vectorised over objects.

    Raises:
        UsageError: the targets are not ``(B, M, 5)`` or name a class ``>= num_classes``.
    """
    _check_target_shape(targets)
    device = targets.device if device is None else torch.device(device)
    batch, rows = int(targets.shape[0]), int(targets.shape[1])
    if rows:  # checked on the targets' own device: no synchronisation when they are still on the CPU
        top = float(targets.detach()[..., 0].nan_to_num(-1.0).max())
        if top >= num_classes:
            raise UsageError(
                f"detection targets name class {int(top)}, but the model predicts {num_classes} classes; "
                "build the model with num_classes covering every class index"
            )
    t = targets.detach().to(device=device, dtype=torch.float32)
    unknown = t.isnan().flatten(1).any(1) if rows else torch.zeros(batch, dtype=torch.bool, device=device)
    padding = torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.0], device=device)
    t = torch.where(unknown[:, None, None], padding, t)
    classes = t[..., 0]
    valid = classes >= 0
    x0, y0, x1, y1 = t[..., 1].clamp(0, 1), t[..., 2].clamp(0, 1), t[..., 3].clamp(0, 1), t[..., 4].clamp(0, 1)
    cx, cy = (x0 + x1) * (0.5 * width), (y0 + y1) * (0.5 * height)
    ix, iy = cx.floor().clamp(0, width - 1), cy.floor().clamp(0, height - 1)
    offset = torch.stack((cx - ix, cy - iy), dim=-1)
    size = torch.stack((x1 - x0, y1 - y0), dim=-1)
    radius = gaussian_radius(((y1 - y0) * height).ceil(), ((x1 - x0) * width).ceil()).floor().clamp(min=0).float()
    sigma = (2 * radius + 1) / 6
    dy = torch.arange(height, device=device, dtype=torch.float32) - iy[..., None]  # (B, M, h)
    dx = torch.arange(width, device=device, dtype=torch.float32) - ix[..., None]  # (B, M, w)
    two_var = (2 * sigma * sigma)[..., None]
    gy = torch.exp(-dy * dy / two_var) * (dy.abs() <= radius[..., None])
    gx = torch.exp(-dx * dx / two_var) * (dx.abs() <= radius[..., None])
    splats = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # (B, M, h, w), separable Gaussian
    heatmap = torch.zeros(batch * num_classes, height * width, device=device)
    if rows:
        channel = torch.arange(batch, device=device)[:, None] * num_classes + classes.clamp(0, num_classes - 1).long()
        index = channel.reshape(-1, 1).expand(-1, height * width)
        heatmap.scatter_reduce_(0, index, splats.reshape(batch * rows, height * width), reduce="amax")
    return CenterTargets(
        heatmap=heatmap.view(batch, num_classes, height, width),
        cell=(iy * width + ix).long() * valid,
        size=size,
        offset=offset,
        valid=valid,
        count=valid.sum(1).float(),
        unknown=unknown,
    )


def centernet_loss(output: Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """CenterNet's training loss of each image, ``(B,)``, in float32 (see the module docstring for the equations).

    Raises:
        UsageError: the output is not a detector's dict of maps, or the targets are not ``(B, M, 5)`` for the
            same batch, or name a class the heatmap lacks.
    """
    heat, size, offset = _maps(output)
    _check_target_shape(targets)
    if targets.shape[0] != heat.shape[0]:
        raise UsageError(
            f"detection output has {heat.shape[0]} images but the targets {targets.shape[0]}; pass one target "
            "(M, 5) per image"
        )
    batch, classes, height, width = heat.shape
    enc = encode_targets(targets, classes, height, width, device=heat.device)
    with torch.autocast(device_type=heat.device.type, enabled=False):
        logits = heat.float()
        prob = torch.sigmoid(logits)
        positive = enc.heatmap == 1
        pos_term = (1 - prob) ** FOCAL_ALPHA * F.logsigmoid(logits)
        neg_term = (1 - enc.heatmap) ** FOCAL_BETA * prob**FOCAL_ALPHA * F.logsigmoid(-logits)
        focal = -torch.where(positive, pos_term, neg_term).flatten(1).sum(1)
        index = enc.cell[:, None, :].expand(-1, 2, -1)  # (B, 2, M)
        size_at = size.float().flatten(2).gather(2, index).transpose(1, 2)  # (B, M, 2)
        offset_at = offset.float().flatten(2).gather(2, index).transpose(1, 2)
        mask = enc.valid.float()
        size_l1 = ((size_at - enc.size).abs().sum(2) * mask).sum(1)
        offset_l1 = ((offset_at - enc.offset).abs().sum(2) * mask).sum(1)
        loss = (focal + SIZE_WEIGHT * size_l1 + OFFSET_WEIGHT * offset_l1) / enc.count.clamp(min=1)
        return loss.masked_fill(enc.unknown, float("nan"))


# ---------------------------------------------------------------------------------------------------- decoding


def _peaks(heat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` local maxima of ``sigmoid(heat)`` over classes and cells: scores, flat ``class · h·w + cell``
    indices ``(B, k')`` and whether each is a 3x3 peak (``k' = min(k, K·h·w)``; CenterNet, Sec. 4)."""
    scores = torch.sigmoid(heat.float())
    is_peak = F.max_pool2d(scores, kernel_size=3, stride=1, padding=1) == scores
    kept = (scores * is_peak).flatten(1)
    top, index = kept.topk(min(k, kept.shape[1]), dim=1)
    return top, index, is_peak.flatten(1).gather(1, index)


def decode(output: Mapping[str, torch.Tensor], k: int = 100, threshold: float = 0.0) -> list[torch.Tensor]:
    """Detections of each image as a float32 CPU tensor ``(n, 6)`` of rows ``(class, score, x0, y0, x1, y1)``,
    coordinates normalised to ``[0, 1]``, highest score first.

    CenterNet's decoding (Zhou et al. 2019, Sec. 4): a 3x3 max-pool keeps the cells that are local maxima of
    their class heatmap (a cheap non-maximum suppression), the ``k`` highest over all classes are the
    detections, and each box is centred at its cell plus the predicted offset with the predicted size (clamped at
    0; boxes are clipped to the image). Detections scoring below ``threshold`` are dropped.

    Raises:
        UsageError: the output is not a detector's dict of maps, or ``k`` is not a positive integer.
    """
    _check_k(k)
    heat, size, offset = _maps(output)
    batch, _, height, width = heat.shape
    with torch.no_grad():
        scores, index, is_peak = _peaks(heat.detach(), k)
        cell = index % (height * width)
        classes = torch.div(index, height * width, rounding_mode="floor")
        cells2 = cell[:, None, :].expand(-1, 2, -1)
        off = offset.detach().float().flatten(2).gather(2, cells2)  # (B, 2, k)
        wh = size.detach().float().flatten(2).gather(2, cells2).clamp(min=0)
        cx = ((cell % width).float() + off[:, 0]) / width
        cy = (torch.div(cell, width, rounding_mode="floor").float() + off[:, 1]) / height
        boxes = torch.stack(
            (cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2), dim=-1
        ).clamp(0, 1)
        rows = torch.cat((classes.float()[..., None], scores[..., None], boxes), dim=-1).cpu()
        keep = (is_peak & (scores >= threshold)).cpu()
    return [rows[i][keep[i]] for i in range(batch)]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k (detections per image) must be a positive integer, got {k!r}; CenterNet uses 100")


# ----------------------------------------------------------------------------------------------------- metrics


def _boxes_xywh(rows: np.ndarray, scale: float) -> np.ndarray:
    """``(x0, y0, x1, y1)`` normalised rows as COCO ``[x, y, width, height]`` in pixels of a ``scale`` image."""
    xywh = np.empty((rows.shape[0], 4), dtype=np.float64)
    xywh[:, :2] = rows[:, :2] * scale
    xywh[:, 2:] = (rows[:, 2:] - rows[:, :2]) * scale
    return xywh


class AveragePrecision(Metric):
    """Mean average precision of detections against ground-truth boxes, computed by pycocotools' ``COCOeval``.

    Each image's detections (:func:`decode`) and ground truth are kept; :meth:`compute` builds COCO-format
    datasets in memory (every image ``nominal_size`` pixels square so that box areas are on a familiar scale;
    ``iscrowd = 0``; class ``c`` is category ``c + 1``) and runs the COCO protocol (Lin et al., "Microsoft COCO:
    Common Objects in Context", ECCV 2014): for each class and IoU threshold, detections are matched greedily by
    score, precision is interpolated at 101 recall points, and the result is averaged over the IoU thresholds and
    the classes that have ground truth (a class with no ground-truth box is ignored, as ``COCOeval`` does). At
    most ``k`` detections per image count; the area range is "all".

    Args:
        iou_thresholds: the IoU thresholds averaged over (COCO's 0.5, 0.55, ..., 0.95 by default).
        k: detections decoded and kept per image.
        threshold: minimum score of a kept detection.
        nominal_size: the side in pixels that normalised boxes are scaled to.
    """

    name: ClassVar[str] = "ap"
    default_thresholds: ClassVar[tuple[float, ...]] = tuple(np.linspace(0.5, 0.95, 10).tolist())

    def __init__(
        self,
        iou_thresholds: Sequence[float] | None = None,
        k: int = 100,
        threshold: float = 0.0,
        nominal_size: float = 512.0,
    ) -> None:
        _check_k(k)
        thresholds = self.default_thresholds if iou_thresholds is None else tuple(float(t) for t in iou_thresholds)
        if not thresholds or any(not 0 < t <= 1 for t in thresholds):
            raise UsageError(f"IoU thresholds must be in (0, 1], got {list(thresholds)!r}")
        if not nominal_size > 0:
            raise UsageError(f"nominal_size must be a positive number of pixels, got {nominal_size!r}")
        self.iou_thresholds = thresholds
        self.k, self.threshold, self.nominal_size = k, float(threshold), float(nominal_size)
        self._detections: list[np.ndarray] = []
        self._truths: list[np.ndarray] = []

    def update(self, output: Any, target: Any) -> None:
        """Add one batch: the detector's output dict and the targets ``(B, M, 5)``."""
        self.add(decode(output, k=self.k, threshold=self.threshold), target)

    def add(self, detections: Sequence[torch.Tensor | np.ndarray], target: Any) -> None:
        """Add decoded detections (per image ``(n, 6)`` rows ``(class, score, x0, y0, x1, y1)``) and their targets.

        Raises:
            UsageError: the numbers of images differ, or a detection array is not ``(n, 6)``.
        """
        target = torch.as_tensor(target)
        _check_target_shape(target)
        if len(detections) != target.shape[0]:
            raise UsageError(f"{len(detections)} images of detections but {target.shape[0]} of targets")
        truths = target.detach().to("cpu", torch.float64).numpy()
        for found, truth in zip(detections, truths):
            rows = torch.as_tensor(found).detach().to("cpu", torch.float64).numpy()
            if rows.size == 0:
                rows = np.zeros((0, 6))
            if rows.ndim != 2 or rows.shape[1] != 6:
                raise UsageError(f"detections must be (n, 6) rows (class, score, x0, y0, x1, y1), got {rows.shape}")
            order = np.argsort(-rows[:, 1], kind="stable")[: self.k]
            self._detections.append(rows[order])
            self._truths.append(truth[truth[:, 0] >= 0])

    def compute(self) -> float:
        """The mean AP over every image added so far (NaN when nothing was added or no image has an object)."""
        if not self._truths or not any(len(t) for t in self._truths):
            return float("nan")
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images = [{"id": i + 1, "width": self.nominal_size, "height": self.nominal_size}
                  for i in range(len(self._truths))]
        gt_anns: list[dict[str, Any]] = []
        dt_anns: list[dict[str, Any]] = []
        categories: set[int] = set()
        for image_id, (truth, found) in enumerate(zip(self._truths, self._detections), start=1):
            for row, box in zip(truth, _boxes_xywh(truth[:, 1:5], self.nominal_size)):
                category = int(row[0]) + 1
                categories.add(category)
                gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": category,
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
            for row, box in zip(found, _boxes_xywh(found[:, 2:6], self.nominal_size)):
                category = int(row[0]) + 1
                categories.add(category)
                dt_anns.append({"id": len(dt_anns) + 1, "image_id": image_id, "category_id": category,
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "score": float(row[1]),
                                "iscrowd": 0})
        cats = [{"id": c, "name": str(c - 1)} for c in sorted(categories)]
        with contextlib.redirect_stdout(io.StringIO()):
            gt, dt = COCO(), COCO()
            gt.dataset = {"images": images, "annotations": gt_anns, "categories": cats}
            dt.dataset = {"images": images, "annotations": dt_anns, "categories": cats}
            gt.createIndex()
            dt.createIndex()
            evaluator = COCOeval(gt, dt, iouType="bbox")
            evaluator.params.iouThrs = np.asarray(self.iou_thresholds, dtype=np.float64)
            evaluator.params.maxDets = [self.k]
            evaluator.params.areaRng = [[0.0, 1e10]]
            evaluator.params.areaRngLbl = ["all"]
            evaluator.evaluate()
            evaluator.accumulate()
        precision = evaluator.eval["precision"]  # (T, R, K, A, M); -1 where a class has no ground truth
        defined = precision[precision > -1]
        return float(defined.mean()) if defined.size else float("nan")


class MeanAP50(AveragePrecision):
    """mAP at IoU 0.5, the PASCAL VOC criterion under which Yoo & Kweon (CVPR 2019, Sec. 4.2) report SSD's
    detection results, computed with COCO's 101-point interpolation."""

    name = "map50"

    def __init__(self, k: int = 100, threshold: float = 0.0, nominal_size: float = 512.0) -> None:
        super().__init__((0.5,), k=k, threshold=threshold, nominal_size=nominal_size)


class MeanAP(AveragePrecision):
    """COCO's mAP averaged over IoU thresholds 0.5, 0.55, ..., 0.95 (``AP`` of ``COCOeval.summarize``)."""

    name = "map"

    def __init__(self, k: int = 100, threshold: float = 0.0, nominal_size: float = 512.0) -> None:
        super().__init__(None, k=k, threshold=threshold, nominal_size=nominal_size)


# -------------------------------------------------------------------------------------------------------- task


class DetectionTask(Task):
    """Object detection with a CenterNet-style model (Zhou et al. 2019): one training loss per image.

    Args:
        k: detections decoded per image for the metrics and predictions (CenterNet's 100).
        score_threshold: minimum score of a detection in :meth:`predict` (CenterNet's demo shows 0.3 and above;
            the metrics keep every one of the ``k`` detections, as the COCO protocol expects).
        nominal_size: side in pixels that normalised boxes are scaled to for ``COCOeval``.

    Metrics: ``map50`` (primary, mAP at IoU 0.5, the paper's detection metric) and ``map`` (COCO's mAP
    @[.5:.95]). Targets and outputs are described in the module docstring.
    """

    name = "detection"
    metrics = ("map50", "map")
    primary_metric = "map50"

    def __init__(self, k: int = 100, score_threshold: float = 0.3, nominal_size: float = 512.0) -> None:
        _check_k(k)
        if isinstance(score_threshold, bool) or not 0 <= score_threshold <= 1:
            raise UsageError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if isinstance(nominal_size, bool) or not nominal_size > 0:
            raise UsageError(f"nominal_size must be a positive number of pixels, got {nominal_size!r}")
        self.k, self.score_threshold, self.nominal_size = k, float(score_threshold), float(nominal_size)

    def per_sample_loss(self, output: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """CenterNet's loss of each image ``(B,)`` in float32 (even under autocast), with gradient into all three
        maps; NaN for an image whose targets are unknown. Equations in the module docstring.

        Raises:
            UsageError: the output is not a detector's dict of maps, or the targets are not ``(B, M, 5)`` for the
                same batch, or name a class the heatmap lacks.
        """
        return centernet_loss(output, target)

    def decode(self, output: Mapping[str, torch.Tensor], k: int | None = None,
               threshold: float | None = None) -> list[torch.Tensor]:
        """:func:`decode` with the task's ``k`` and a score ``threshold`` of 0 unless given."""
        return decode(output, k=self.k if k is None else k, threshold=0.0 if threshold is None else threshold)

    def new_metrics(self) -> dict[str, Metric]:
        """Fresh ``map50`` and ``map`` accumulators."""
        return {
            "map50": MeanAP50(k=self.k, nominal_size=self.nominal_size),
            "map": MeanAP(k=self.k, nominal_size=self.nominal_size),
        }

    def empty_targets(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """A float32 NaN tensor ``(size, *like.shape[1:])``: every image's objects unknown."""
        return torch.full((size, *like.shape[1:]), float("nan"), dtype=torch.float32)

    def check_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """``targets`` as float32 ``(N, M, 5)`` with coordinates clipped to ``[0, 1]``, after checking them.

        Raises:
            UsageError: the targets are not floating point ``(N, M, 5)``, or, naming the first bad sample and
                row, a value is not finite, a class is not an integer ``>= -1``, a padding row (class -1) has a
                non-zero coordinate, or a box leaves ``[0, 1]`` (beyond 1e-6) or has ``x0 >= x1`` or ``y0 >= y1``.
        """
        targets = torch.as_tensor(targets)
        if not targets.dtype.is_floating_point:
            raise UsageError(
                f"detection targets must be floating point (N, M, 5) rows (class, x0, y0, x1, y1), got "
                f"{targets.dtype} {tuple(targets.shape)}; convert them to float32"
            )
        _check_target_shape(targets)
        t = targets.detach().cpu().double()
        cls, x0, y0, x1, y1 = t.unbind(-1)
        padding = cls == -1
        tol = 1e-6
        inside = ((t[..., 1:] >= -tol) & (t[..., 1:] <= 1 + tol)).all(-1)
        problems = [
            (~torch.isfinite(t).all(-1), "holds NaN or infinity (unknown targets cannot be checked)"),
            ((cls != cls.round()) | (cls < -1), "has a class that is not an integer >= 0 (or -1 for padding)"),
            (padding & (t[..., 1:] != 0).any(-1), "is padding (class -1) but its coordinates are not all 0"),
            (~padding & ~inside, "has a coordinate outside [0, 1]; normalise boxes by the image width and height"),
            (~padding & ((x0 >= x1) | (y0 >= y1)), "is not a box with x0 < x1 and y0 < y1"),
        ]
        any_bad = torch.stack([bad for bad, _ in problems]).any(0)
        if bool(any_bad.any()):
            sample, row = (int(v) for v in torch.nonzero(any_bad)[0])
            why = next(why for bad, why in problems if bool(bad[sample, row]))
            raise UsageError(f"detection target of sample {sample}, row {row} {why}: {t[sample, row].tolist()}")
        return torch.cat((targets[..., :1], targets[..., 1:].clamp(0, 1)), dim=-1).float()

    def predict(self, output: Any) -> tuple[list[Any], list[float | None]]:
        """Each image's detections scoring at least ``score_threshold``, as JSON-ready
        ``{"class": int, "score": float, "box": [x0, y0, x1, y1]}`` (normalised), best first, and the highest
        score of the image as its confidence (None without a detection)."""
        values: list[Any] = []
        confidence: list[float | None] = []
        for rows in decode(output, k=self.k, threshold=self.score_threshold):
            found = [{"class": int(r[0]), "score": float(r[1]), "box": [float(v) for v in r[2:6]]}
                     for r in rows.tolist()]
            values.append(found)
            confidence.append(float(rows[0, 1]) if len(rows) else None)
        return values, confidence

    def uncertainty(self, output: Mapping[str, torch.Tensor], k: int = 10, reduction: str = "max") -> torch.Tensor:
        """Detection uncertainty of each image ``(B,)`` in nats, float32 on the output's device; higher is more
        uncertain.

        Each of the image's top-``k`` detections (3x3 peaks of the heatmaps, as :func:`decode` finds them) scores
        the Bernoulli entropy ``H(p) = -p log p - (1 - p) log(1 - p)`` of its peak probability ``p``, and the image
        takes the maximum (``reduction="max"``) or the mean (``"mean"``) over its detections. The detector's class
        scores are independent sigmoids (one-vs-all, CenterNet), so ``p`` is the model's own probability that an
        object of that class is centred there: the entropy is largest at ``p = 0.5``, a detection it can neither
        confirm nor reject, and it is defined for a single class, where the entropy of class scores normalised over
        classes would always be 0. Scoring each detection's entropy and aggregating over the image by its maximum
        (or average) follows Roy et al., "Deep Active Learning for Object Detection" (BMVC 2018), who compare
        max, sum and average aggregation of per-detection uncertainty, and Haussmann et al., "Scalable Active
        Learning for Object Detection" (IEEE IV 2020), who score an image by the maximum entropy of its
        one-vs-all detection scores. Deterministic (no sampling).

        Raises:
            UsageError: the output is not a detector's dict of maps, ``k`` is not a positive integer or
                ``reduction`` is not one of ``max``, ``mean``.
        """
        _check_k(k)
        if reduction not in UNCERTAINTY_REDUCTIONS:
            raise UsageError(f"unknown uncertainty reduction {reduction!r}; choose one of: max, mean")
        heat, _, _ = _maps(output)
        with torch.no_grad(), torch.autocast(device_type=heat.device.type, enabled=False):
            logits = heat.detach().float()
            _, index, is_peak = _peaks(logits, k)
            x = logits.flatten(1).gather(1, index)
            # H(sigmoid(x)) = p softplus(-x) + (1 - p) softplus(x), stable for any logit
            p = torch.sigmoid(x)
            entropy = p * F.softplus(-x) + (1 - p) * F.softplus(x)
            if reduction == "max":
                return entropy.masked_fill(~is_peak, 0.0).amax(1)
            return (entropy * is_peak).sum(1) / is_peak.sum(1).clamp(min=1)
