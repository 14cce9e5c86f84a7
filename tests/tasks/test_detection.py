"""Tests of the detection task: CenterNet's per-image loss (against hand computations and CenterNet's reference
target drawing), peak decoding, COCO mAP through pycocotools, target checks, predictions and the uncertainty."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.tasks.base import Task
from learnloss.tasks.detection import (
    AveragePrecision,
    DetectionTask,
    MeanAP,
    MeanAP50,
    decode,
    encode_targets,
    gaussian_radius,
)

PAD = [-1.0, 0.0, 0.0, 0.0, 0.0]


def _targets(*images: list[list[float]], rows: int | None = None) -> torch.Tensor:
    """Targets ``(B, M, 5)`` from per-image lists of rows, padded to ``rows`` (default: the longest image)."""
    m = max([len(image) for image in images] + [rows or 0])
    return torch.tensor([image + [PAD] * (m - len(image)) for image in images], dtype=torch.float32).reshape(
        len(images), m, 5
    )


def _perfect(targets: torch.Tensor, classes: int, h: int, w: int, margin: float = 30.0) -> dict[str, torch.Tensor]:
    """The output that minimises the loss: +margin logits exactly at the centres, -margin elsewhere, and the
    true size and offset at each object's centre cell."""
    enc = encode_targets(targets, classes, h, w)
    heat = torch.where(enc.heatmap == 1, margin, -margin)
    size, offset = torch.zeros(targets.shape[0], 2, h * w), torch.zeros(targets.shape[0], 2, h * w)
    for b, m in torch.nonzero(enc.valid).tolist():
        size[b, :, enc.cell[b, m]] = enc.size[b, m]
        offset[b, :, enc.cell[b, m]] = enc.offset[b, m]
    return {"heatmap": heat, "size": size.view(-1, 2, h, w), "offset": offset.view(-1, 2, h, w)}


def _random_output(batch: int, classes: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "heatmap": torch.randn(batch, classes, h, w, generator=g) - 2.0,
        "size": torch.rand(batch, 2, h, w, generator=g) * 0.5,
        "offset": torch.rand(batch, 2, h, w, generator=g),
    }


TWO_IMAGES = _targets(
    [[0, 0.10, 0.20, 0.40, 0.60], [2, 0.55, 0.50, 0.95, 0.90]],
    [[1, 0.30, 0.30, 0.70, 0.55]],
)


def test_attributes_and_metrics() -> None:
    task = DetectionTask()
    assert isinstance(task, Task) and task.name == "detection"
    assert task.metrics == ("map50", "map") and task.primary_metric == "map50"
    assert set(task.new_metrics()) == {"map50", "map"}
    assert task.new_metric().name == "map50"
    assert all(math.isnan(metric.compute()) for metric in task.new_metrics().values())


# ------------------------------------------------------------------------------------------------- targets


def _centernet_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """``gaussian_radius`` of CenterNet's ``src/lib/utils/image.py``, verbatim in NumPy."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def _centernet_heatmap(targets: np.ndarray, classes: int, h: int, w: int) -> np.ndarray:
    """CenterNet's ``ctdet`` target drawing (``draw_umich_gaussian``), one object at a time, in float64."""
    out = np.zeros((targets.shape[0], classes, h, w))
    for b, image in enumerate(targets):
        for cls, x0, y0, x1, y1 in image:
            if cls < 0:
                continue
            bw, bh = (x1 - x0) * w, (y1 - y0) * h
            radius = max(0, int(_centernet_radius(math.ceil(bh), math.ceil(bw))))
            diameter = 2 * radius + 1
            yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
            gaussian = np.exp(-(xx * xx + yy * yy) / (2 * (diameter / 6) ** 2))
            x, y = int((x0 + x1) / 2 * w), int((y0 + y1) / 2 * h)
            left, right = min(x, radius), min(w - x, radius + 1)
            top, bottom = min(y, radius), min(h - y, radius + 1)
            window = out[b, int(cls), y - top:y + bottom, x - left:x + right]
            np.maximum(window, gaussian[radius - top:radius + bottom, radius - left:radius + right], out=window)
    return out


def test_gaussian_radius_matches_centernet() -> None:
    sizes = [(1, 1), (2, 3), (4, 4), (7, 2), (16, 16), (30, 11)]
    got = gaussian_radius(torch.tensor([float(h) for h, _ in sizes]), torch.tensor([float(w) for _, w in sizes]))
    assert got.tolist() == pytest.approx([_centernet_radius(h, w) for h, w in sizes], rel=1e-12)


def test_target_heatmap_matches_centernet_drawing() -> None:
    g = torch.Generator().manual_seed(1)
    corners = torch.rand(6, 5, 2, 2, generator=g).sort(dim=2).values  # (B, M, [low, high], [x, y])
    boxes = torch.cat((corners[:, :, 0], corners[:, :, 1]), dim=-1) * 0.9 + 0.05
    classes = torch.randint(0, 3, (6, 5, 1), generator=g).float()
    targets = torch.cat((classes, boxes), dim=-1)
    targets[1, 3:] = torch.tensor(PAD)  # padding rows draw nothing
    enc = encode_targets(targets, 3, 16, 12)
    expected = _centernet_heatmap(targets.double().numpy(), 3, 16, 12)
    assert np.allclose(enc.heatmap.numpy(), expected, atol=1e-6)
    assert enc.count.tolist() == [5, 3, 5, 5, 5, 5]
    assert int((enc.heatmap == 1).sum()) <= 28  # one exact 1 per object (two may share a cell)


def test_target_offsets_sizes_and_cells() -> None:
    enc = encode_targets(_targets([[1, 0.25, 0.5, 0.5, 1.0]]), 2, 4, 8)
    # centre (0.375, 0.75) -> (3.0, 3.0) cells of an 8 x 4 grid: cell (row 3, column 3), offset (0, 0)
    assert enc.cell.tolist() == [[3 * 8 + 3]]
    assert enc.offset[0, 0].tolist() == pytest.approx([0.0, 0.0])
    assert enc.size[0, 0].tolist() == pytest.approx([0.25, 0.5])
    enc = encode_targets(_targets([[0, 0.1, 0.1, 0.2, 0.3]]), 1, 4, 4)
    # centre (0.15, 0.2) -> (0.6, 0.8) cells: cell (0, 0), offset (0.6, 0.8)
    assert enc.cell.tolist() == [[0]] and enc.offset[0, 0].tolist() == pytest.approx([0.6, 0.8])


# ---------------------------------------------------------------------------------------------------- loss


def test_loss_matches_a_hand_computation() -> None:
    # one 1x1-cell object (radius 0: the target heatmap is a single 1) at cell (row 1, column 1) of a 4x4 grid
    targets = _targets([[0, 0.25, 0.25, 0.5, 0.5]])
    z = -1.0
    output = {"heatmap": torch.full((1, 1, 4, 4), z), "size": torch.zeros(1, 2, 4, 4),
              "offset": torch.zeros(1, 2, 4, 4)}
    p = 1 / (1 + math.exp(-z))
    focal = -(1 - p) ** 2 * math.log(p) - 15 * p**2 * math.log(1 - p)  # 1 positive, 15 negatives with Y = 0
    size = 0.1 * (0.25 + 0.25)  # predicted 0 for a 0.25 x 0.25 box
    offset = 1.0 * (0.5 + 0.5)  # centre (1.5, 1.5) cells, predicted offset 0
    loss = DetectionTask().per_sample_loss(output, targets)
    assert loss.dtype == torch.float32 and loss.tolist() == pytest.approx([focal + size + offset], rel=1e-5)


def test_loss_is_normalised_by_the_number_of_objects() -> None:
    one = _targets([[0, 0.0, 0.0, 0.25, 0.25]])
    two = _targets([[0, 0.0, 0.0, 0.25, 0.25], [0, 0.75, 0.75, 1.0, 1.0]])
    output = {"heatmap": torch.full((1, 1, 4, 4), -3.0), "size": torch.zeros(1, 2, 4, 4),
              "offset": torch.zeros(1, 2, 4, 4)}
    enc = encode_targets(two, 1, 4, 4)
    assert int((enc.heatmap == 1).sum()) == 2 and int((enc.heatmap > 0).sum()) == 2  # radius 0: no overlap
    p = 1 / (1 + math.exp(3.0))
    pos, neg = -(1 - p) ** 2 * math.log(p), -(p**2) * math.log(1 - p)
    reg = 0.1 * 0.5 + 1.0 * 1.0
    task = DetectionTask()
    assert task.per_sample_loss(output, one).item() == pytest.approx(pos + 15 * neg + reg, rel=1e-5)
    assert task.per_sample_loss(output, two).item() == pytest.approx((2 * pos + 14 * neg + 2 * reg) / 2, rel=1e-5)


def test_perfect_prediction_is_near_zero_and_a_wrong_one_large() -> None:
    task = DetectionTask()
    perfect = task.per_sample_loss(_perfect(TWO_IMAGES, 3, 16, 16), TWO_IMAGES)
    assert perfect.shape == (2,) and bool((perfect >= 0).all()) and float(perfect.max()) < 1e-6
    wrong = task.per_sample_loss(_random_output(2, 3, 16, 16), TWO_IMAGES)
    assert float(wrong.min()) > 1.0
    prior = {"heatmap": torch.full((2, 3, 16, 16), -2.19), "size": torch.zeros(2, 2, 16, 16),
             "offset": torch.zeros(2, 2, 16, 16)}
    assert float(task.per_sample_loss(prior, TWO_IMAGES).min()) > 1.0


def test_each_image_has_its_own_loss() -> None:
    task = DetectionTask()
    output = _random_output(3, 3, 8, 8)
    targets = _targets([[0, 0.1, 0.1, 0.5, 0.5]], [[1, 0.2, 0.2, 0.9, 0.6]], [[2, 0.4, 0.0, 0.6, 0.3]])
    before = task.per_sample_loss(output, targets)
    changed = targets.clone()
    changed[1] = torch.tensor([[2, 0.6, 0.6, 0.8, 0.9]])
    after = task.per_sample_loss(output, changed)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    alone = task.per_sample_loss({k: v[2:] for k, v in output.items()}, targets[2:])
    assert alone.item() == pytest.approx(before[2].item(), rel=1e-6)


def test_padding_rows_are_ignored() -> None:
    task = DetectionTask()
    output = _random_output(2, 3, 8, 8)
    padded = _targets(*[[row.tolist() for row in image] for image in TWO_IMAGES], rows=7)
    assert padded.shape == (2, 7, 5)
    assert torch.equal(task.per_sample_loss(output, padded), task.per_sample_loss(output, TWO_IMAGES))


def test_an_image_without_objects_has_only_the_negative_heatmap_term() -> None:
    task = DetectionTask()
    output = _random_output(2, 2, 4, 4)
    targets = _targets([], [[1, 0.2, 0.2, 0.6, 0.6]])
    loss = task.per_sample_loss(output, targets)
    p = torch.sigmoid(output["heatmap"][0].double())
    assert loss[0].item() == pytest.approx(float(-(p**2 * torch.log(1 - p)).sum()), rel=1e-5)
    empty = task.per_sample_loss(output, torch.zeros(2, 0, 5))  # no rows at all
    assert empty[0].item() == pytest.approx(loss[0].item(), rel=1e-6) and empty.shape == (2,)


def test_unknown_targets_give_nan_without_touching_the_others() -> None:
    task = DetectionTask()
    output = _random_output(2, 3, 8, 8)
    targets = TWO_IMAGES.clone()
    known = task.per_sample_loss(output, targets)
    targets[0] = float("nan")
    loss = task.per_sample_loss(output, targets)
    assert math.isnan(loss[0].item()) and loss[1] == known[1]


def test_gradients_reach_all_three_maps() -> None:
    output = {k: v.requires_grad_() for k, v in _random_output(2, 3, 8, 8).items()}
    DetectionTask().per_sample_loss(output, TWO_IMAGES).sum().backward()
    for key in ("heatmap", "size", "offset"):
        grad = output[key].grad
        assert grad is not None and bool(grad.isfinite().all()) and float(grad.abs().sum()) > 0, key
    # size and offset are supervised only at the 3 centre cells
    assert int((output["size"].grad.abs().sum(1) > 0).sum()) == 3  # type: ignore[union-attr]


def test_loss_is_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3 + 4, kernel_size=3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = net(torch.randn(2, 1, 8, 8))
        assert maps.dtype == torch.bfloat16
        output = {"heatmap": maps[:, :3], "size": maps[:, 3:5], "offset": maps[:, 5:]}
        loss = DetectionTask().per_sample_loss(output, TWO_IMAGES)
    assert loss.shape == (2,) and loss.dtype == torch.float32 and bool(loss.isfinite().all())
    loss.sum().backward()
    assert net.weight.grad is not None and bool(net.weight.grad.isfinite().all())


def test_loss_refuses_bad_outputs_and_classes() -> None:
    task = DetectionTask()
    with pytest.raises(UsageError, match="'heatmap', 'size' and 'offset'"):
        task.per_sample_loss(torch.zeros(2, 3, 8, 8), TWO_IMAGES)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="size and offset"):
        task.per_sample_loss({**_random_output(2, 3, 8, 8), "size": torch.zeros(2, 3, 8, 8)}, TWO_IMAGES)
    with pytest.raises(UsageError, match="class 2, but the model predicts 2 classes"):
        task.per_sample_loss(_random_output(2, 2, 8, 8), TWO_IMAGES)
    with pytest.raises(UsageError, match="3 images but the targets 2"):
        task.per_sample_loss(_random_output(3, 3, 8, 8), TWO_IMAGES)
    with pytest.raises(UsageError, match=r"\(N, M, 5\)"):
        task.per_sample_loss(_random_output(2, 3, 8, 8), torch.zeros(2, 5))


# ------------------------------------------------------------------------------------------------ decoding


def test_decode_finds_two_hand_made_peaks() -> None:
    heat = torch.full((1, 2, 8, 8), -8.0)
    heat[0, 0, 2, 3], heat[0, 0, 2, 4] = 3.0, 1.0  # a peak and its weaker neighbour (suppressed)
    heat[0, 1, 5, 6] = 2.0
    size, offset = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    size[0, :, 2, 3], offset[0, :, 2, 3] = torch.tensor([0.25, 0.5]), torch.tensor([0.5, 0.25])
    size[0, :, 5, 6], offset[0, :, 5, 6] = torch.tensor([0.125, 0.125]), torch.tensor([0.0, 1.0])
    [found] = decode({"heatmap": heat, "size": size, "offset": offset}, k=10, threshold=0.5)
    assert found.shape == (2, 6) and found.dtype == torch.float32
    s0, s1 = 1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-2.0))
    # class 0: centre ((3 + 0.5) / 8, (2 + 0.25) / 8) = (0.4375, 0.28125), size 0.25 x 0.5
    assert found[0].tolist() == pytest.approx([0, s0, 0.3125, 0.03125, 0.5625, 0.53125])
    # class 1: centre (6 / 8, 6 / 8), size 0.125 x 0.125
    assert found[1].tolist() == pytest.approx([1, s1, 0.6875, 0.6875, 0.8125, 0.8125])
    assert decode({"heatmap": heat, "size": size, "offset": offset}, k=1)[0].shape == (1, 6)


def test_decode_clips_boxes_and_keeps_k_per_image() -> None:
    output = _random_output(3, 2, 8, 8)
    output["size"] = torch.full((3, 2, 8, 8), 2.0)
    found = decode(output, k=5)
    assert [f.shape for f in found] == [(5, 6)] * 3
    assert all(bool((f[:, 2:] >= 0).all() and (f[:, 2:] <= 1).all()) for f in found)
    assert all(bool((f[1:, 1] <= f[:-1, 1]).all()) for f in found)  # best first
    with pytest.raises(UsageError, match="positive integer"):
        decode(output, k=0)


def test_decode_inverts_the_targets() -> None:
    found = DetectionTask().decode(_perfect(TWO_IMAGES, 3, 16, 16), threshold=0.5)
    assert found[0][:, 0].tolist() == [0, 2] or found[0][:, 0].tolist() == [2, 0]
    rows = sorted(found[0].tolist()) + found[1].tolist()
    truth = [r for image in TWO_IMAGES.tolist() for r in image if r[0] >= 0]
    assert [[r[0], *r[2:]] for r in rows] == [pytest.approx(t, abs=1e-6) for t in truth]


# ----------------------------------------------------------------------------------------------------- mAP


def _box(cls: float, score: float, x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [cls, score, x0, y0, x1, y1]


def _ap(metric: AveragePrecision, detections: list[list[list[float]]], targets: torch.Tensor) -> float:
    metric.add([torch.tensor(d, dtype=torch.float32).reshape(-1, 6) for d in detections], targets)
    return metric.compute()


def test_perfect_detections_score_one(capsys: pytest.CaptureFixture[str]) -> None:
    truth = [r for image in TWO_IMAGES.tolist() for r in image if r[0] >= 0]
    detections = [[_box(r[0], 0.9, *r[1:]) for r in truth[:2]], [_box(truth[2][0], 0.8, *truth[2][1:])]]
    assert _ap(MeanAP50(), detections, TWO_IMAGES) == pytest.approx(1.0)
    assert _ap(MeanAP(), detections, TWO_IMAGES) == pytest.approx(1.0)
    metrics = DetectionTask().new_metrics()  # through update(): decode the perfect output
    for metric in metrics.values():
        metric.update(_perfect(TWO_IMAGES, 3, 16, 16), TWO_IMAGES)
    assert metrics["map50"].compute() == pytest.approx(1.0) and metrics["map"].compute() == pytest.approx(1.0)
    assert capsys.readouterr().out == ""  # pycocotools' printing is silenced


GT_ONE = _targets([[0, 0.2, 0.2, 0.6, 0.6]])


def test_a_shifted_box_counts_at_low_iou_thresholds_only() -> None:
    # shifting a 0.4-wide box by d gives IoU (0.4 - d) / (0.4 + d): d = 0.1 -> 0.6, d = 0.08 -> 2/3
    iou_06 = [[_box(0, 0.9, 0.3, 0.2, 0.7, 0.6)]]
    assert _ap(MeanAP50(), iou_06, GT_ONE) == pytest.approx(1.0)
    assert _ap(AveragePrecision((0.75,)), iou_06, GT_ONE) == pytest.approx(0.0)
    assert _ap(AveragePrecision((0.55,)), iou_06, GT_ONE) == pytest.approx(1.0)
    # IoU 2/3 passes 0.5, 0.55, 0.6 and 0.65 of the ten COCO thresholds: AP 1 at those, 0 at the others
    iou_067 = [[_box(0, 0.9, 0.28, 0.2, 0.68, 0.6)]]
    assert _ap(MeanAP(), iou_067, GT_ONE) == pytest.approx(0.4)


def test_a_false_positive_ranked_first_halves_ap() -> None:
    # image 1 has no ground truth; its detection outranks the true positive of image 0. Ranked by score:
    # FP (precision 0, recall 0), TP (precision 1/2, recall 1); COCO's interpolated precision is 1/2 at all
    # 101 recall points, so AP = 0.5.
    targets = _targets([[0, 0.2, 0.2, 0.6, 0.6]], [])
    detections = [[_box(0, 0.5, 0.2, 0.2, 0.6, 0.6)], [_box(0, 0.9, 0.1, 0.1, 0.3, 0.3)]]
    assert _ap(MeanAP50(), detections, targets) == pytest.approx(0.5)
    # ranked below the true positive, it costs nothing: precision is 1 up to recall 1
    detections[1][0][1] = 0.3
    assert _ap(MeanAP50(), detections, targets) == pytest.approx(1.0)
    # a second false positive above it: precision 1/3 at recall 1
    detections[1].append(_box(0, 0.8, 0.7, 0.7, 0.9, 0.9))
    detections[1][0][1] = 0.95
    assert _ap(MeanAP50(), detections, targets) == pytest.approx(1 / 3)


def test_classes_without_ground_truth_are_ignored_and_missed_classes_count() -> None:
    targets = _targets([[0, 0.2, 0.2, 0.6, 0.6], [1, 0.1, 0.6, 0.3, 0.9]])
    hit = _box(0, 0.9, 0.2, 0.2, 0.6, 0.6)
    stray = _box(4, 0.99, 0.5, 0.5, 0.7, 0.7)  # class 4 has no ground truth anywhere
    assert _ap(MeanAP50(), [[hit, stray]], targets) == pytest.approx(0.5)  # class 1 missed: AP 0, class 0: AP 1
    assert _ap(MeanAP50(), [[hit, stray, _box(1, 0.2, 0.1, 0.6, 0.3, 0.9)]], targets) == pytest.approx(1.0)


def test_map_accumulates_over_batches_and_is_nan_without_ground_truth() -> None:
    metric = MeanAP50()
    metric.add([torch.zeros(0, 6)], _targets([]))
    assert math.isnan(metric.compute())  # images, but no object to find
    metric.add([torch.tensor([_box(0, 0.9, 0.2, 0.2, 0.6, 0.6)])], GT_ONE)
    metric.add([torch.zeros(0, 6)], GT_ONE)  # a missed object
    # recall 1/2 at precision 1: COCO's 101-point interpolation gives 1 at recall 0, 0.01, ..., 0.5 and 0 after
    assert metric.compute() == pytest.approx(51 / 101)
    with pytest.raises(UsageError, match=r"\(n, 6\)"):
        metric.add([torch.zeros(2, 4)], GT_ONE)
    with pytest.raises(UsageError, match="2 images of detections but 1"):
        metric.add([torch.zeros(0, 6)] * 2, GT_ONE)


# ------------------------------------------------------------------------------------------------- targets


def test_empty_targets_are_nan() -> None:
    empty = DetectionTask().empty_targets(4, torch.zeros(9, 3, 5, dtype=torch.float64))
    assert empty.shape == (4, 3, 5) and empty.dtype == torch.float32 and bool(empty.isnan().all())


def test_check_targets_returns_float32_and_clips_within_tolerance() -> None:
    targets = _targets([[0, 0.0, 0.1, 1.0 + 5e-7, 0.5]], []).double()
    checked = DetectionTask().check_targets(targets)
    assert checked.dtype == torch.float32 and checked.shape == (2, 1, 5)
    assert checked[0, 0].tolist() == pytest.approx([0, 0.0, 0.1, 1.0, 0.5]) and float(checked.max()) <= 1.0


@pytest.mark.parametrize(
    "row,message",
    [
        ([float("nan"), 0.1, 0.1, 0.2, 0.2], "NaN or infinity"),
        ([0, 0.1, float("inf"), 0.2, 0.2], "NaN or infinity"),
        ([1.5, 0.1, 0.1, 0.2, 0.2], "not an integer"),
        ([-2, 0.1, 0.1, 0.2, 0.2], "not an integer"),
        ([-1, 0.0, 0.0, 0.0, 0.1], "padding"),
        ([0, -0.01, 0.1, 0.2, 0.2], "outside"),
        ([0, 0.1, 0.1, 0.2, 1.01], "outside"),
        ([0, 0.3, 0.1, 0.2, 0.2], "x0 < x1"),
        ([0, 0.1, 0.2, 0.3, 0.2], "x0 < x1 and y0 < y1"),
    ],
)
def test_check_targets_names_the_first_bad_sample_and_row(row: list[float], message: str) -> None:
    good = [0, 0.1, 0.1, 0.2, 0.2]
    targets = _targets([good], [good, PAD, row], [row])
    with pytest.raises(UsageError, match=message) as info:
        DetectionTask().check_targets(targets)
    text = str(info.value)
    assert "sample 1, row 2" in text and "\n" not in text


@pytest.mark.parametrize(
    "targets,message",
    [(torch.zeros(2, 3, 5, dtype=torch.int64), "floating point"), (torch.zeros(2, 5), r"\(N, M, 5\)"),
     (torch.zeros(2, 3, 4), r"\(N, M, 5\)")],
)
def test_check_targets_refuses_types_and_shapes(targets: torch.Tensor, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        DetectionTask().check_targets(targets)


# --------------------------------------------------------------------------------- predictions, uncertainty


def test_predict_is_json_ready() -> None:
    output = _perfect(TWO_IMAGES, 3, 16, 16)
    output["heatmap"][1] = -30.0  # nothing found in image 1
    values, confidence = DetectionTask().predict(output)
    assert json.loads(json.dumps(values)) == values
    assert [d["class"] for d in values[0]] in ([0, 2], [2, 0]) and values[1] == []
    assert confidence[0] == pytest.approx(1.0) and confidence[1] is None
    assert values[0][0]["box"] in (pytest.approx([0.10, 0.20, 0.40, 0.60]), pytest.approx([0.55, 0.50, 0.95, 0.90]))


def test_uncertainty_prefers_undecided_peaks() -> None:
    heat = torch.full((3, 2, 8, 8), -6.0)
    heat[0, 0, 2, 2] = 6.0  # confident object
    heat[1, 1, 4, 4] = 0.0  # a coin flip: p = 0.5
    heat[2, 0, 1, 1], heat[2, 1, 6, 6] = 6.0, 0.5
    output = {"heatmap": heat, "size": torch.zeros(3, 2, 8, 8), "offset": torch.zeros(3, 2, 8, 8)}
    task = DetectionTask()
    scores = task.uncertainty(output)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    p = 1 / (1 + math.exp(-0.5))
    assert scores[1].item() == pytest.approx(math.log(2), rel=1e-6)  # the maximum of the Bernoulli entropy
    assert scores[2].item() == pytest.approx(-p * math.log(p) - (1 - p) * math.log(1 - p), rel=1e-5)
    assert scores[0] < scores[2] < scores[1]
    mean = task.uncertainty(output, k=2, reduction="mean")
    q = 1 / (1 + math.exp(-6.0))
    h6 = -q * math.log(q) - (1 - q) * math.log(1 - q)  # sigmoid(6) and sigmoid(-6) have the same entropy
    assert mean[2].item() == pytest.approx((h6 + scores[2].item()) / 2, rel=1e-5)
    assert bool((mean <= scores + 1e-7).all())
    assert torch.equal(task.uncertainty(output), scores)  # deterministic
    with pytest.raises(UsageError, match="max, mean"):
        task.uncertainty(output, reduction="sum")


def test_uncertainty_works_with_one_class() -> None:
    output = _random_output(4, 1, 8, 8, seed=3)
    scores = DetectionTask().uncertainty(output)
    assert scores.shape == (4,) and bool((scores > 0).all()) and bool((scores <= math.log(2) + 1e-6).all())


def test_no_class_probabilities() -> None:
    with pytest.raises(UsageError, match="no class probabilities"):
        DetectionTask().probabilities(_random_output(1, 2, 4, 4))


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"score_threshold": 1.5}, {"nominal_size": 0}])
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        DetectionTask(**kwargs)  # type: ignore[arg-type]
