"""Tests of the keypoint task: target heatmaps, the per-image heatmap MSE, decoding, PCK and mean error, target
checks, predictions and the heatmap-confidence uncertainty."""

from __future__ import annotations

import json
import math

import pytest
import torch

from learnloss.errors import UsageError
from learnloss.tasks.keypoints import (
    PCK, KeypointTask, MeanError, decode_heatmaps, render_heatmaps,
)


def _targets(rows: list[list[list[float]]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _one_hot(b: int, k: int, h: int, w: int, pixels: dict[tuple[int, int], tuple[int, int]]) -> torch.Tensor:
    """Heatmaps that decode exactly to pixel centres: 1 at ``pixels[(image, keypoint)] = (row, col)``, else 0."""
    maps = torch.zeros(b, k, h, w)
    for (i, j), (r, c) in pixels.items():
        maps[i, j, r, c] = 1.0
    return maps


TWO_IMAGES = _targets([
    [[0.20, 0.30, 2], [0.70, 0.60, 1], [0.0, 0.0, 0]],
    [[0.50, 0.50, 2], [0.0, 0.0, 0], [0.10, 0.90, 2]],
])


def test_names_and_metrics() -> None:
    task = KeypointTask()
    assert task.name == "keypoints" and task.metrics == ("pck", "mean_error") and task.primary_metric == "pck"
    metrics = task.new_metrics()
    assert set(metrics) == {"pck", "mean_error"} and isinstance(metrics["pck"], PCK)
    assert task.new_metric().name == "pck"


@pytest.mark.parametrize("kwargs", [{"sigma": 0.0}, {"sigma": -1.0}, {"sigma": math.nan}, {"pck_threshold": 0},
                                    {"pck_threshold": True}])
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError, match="positive number"):
        KeypointTask(**kwargs)


def test_render_puts_a_unit_gaussian_at_the_pixel_centre() -> None:
    # (x, y) = ((3 + 0.5) / 16, (5 + 0.5) / 8): the centre of pixel (row 5, col 3) of a 8x16 map
    target = _targets([[[3.5 / 16, 5.5 / 8, 2], [0.0, 0.0, 0]]])
    maps = render_heatmaps(target, 8, 16, sigma=1.0)
    assert maps.shape == (1, 2, 8, 16) and maps.dtype == torch.float32
    assert maps[0, 0, 5, 3] == pytest.approx(1.0) and int(maps[0, 0].argmax()) == 5 * 16 + 3
    assert maps[0, 0, 5, 4] == pytest.approx(math.exp(-0.5)) and maps[0, 0, 3, 3] == pytest.approx(math.exp(-2.0))
    assert not bool(maps[0, 1].any()), "an unlabeled keypoint has an empty map"
    wide = render_heatmaps(target, 8, 16, sigma=2.0)
    assert wide[0, 0, 5, 4] == pytest.approx(math.exp(-1 / 8))


def test_render_ignores_unknown_rows() -> None:
    maps = render_heatmaps(torch.full((2, 3, 3), math.nan), 4, 4)
    assert bool(torch.isfinite(maps).all()) and not bool(maps.any())


def test_loss_is_zero_at_the_target_and_grows_when_a_keypoint_moves() -> None:
    task = KeypointTask()
    exact = task.target_heatmaps(TWO_IMAGES, 16, 16)
    assert task.per_sample_loss(exact, TWO_IMAGES).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    losses = []
    for shift in (0.0, 0.05, 0.1, 0.3):
        moved = TWO_IMAGES.clone()
        moved[0, 0, 0] += shift
        losses.append(float(task.per_sample_loss(task.target_heatmaps(moved, 16, 16), TWO_IMAGES)[0]))
    assert losses[0] == pytest.approx(0.0, abs=1e-12) and losses[1] > 1e-4
    assert losses == sorted(losses) and losses[3] > 4 * losses[1]  # 2πσ²(1 - exp(-d² / 4σ²)) per map


def test_loss_hand_computed_for_empty_output() -> None:
    """Zero heatmaps: each labeled map costs mean(G²); the image's loss averages over its labeled maps only."""
    task = KeypointTask()
    target = TWO_IMAGES[:1]
    gaussians = task.target_heatmaps(target, 8, 8)
    per_map = (gaussians**2).mean(dim=(2, 3))[0]
    expected = float(per_map[:2].mean())  # keypoints 0 and 1 are labeled (v = 2 and v = 1), keypoint 2 is not
    assert float(task.per_sample_loss(torch.zeros(1, 3, 8, 8), target)[0]) == pytest.approx(expected, rel=1e-6)


def test_unlabeled_keypoints_contribute_nothing() -> None:
    task = KeypointTask()
    output = task.target_heatmaps(TWO_IMAGES, 16, 16)
    output[0, 2] = 5.0  # image 0, keypoint 2 is v = 0
    output[1, 1] = torch.randn(16, 16)  # image 1, keypoint 1 is v = 0
    assert task.per_sample_loss(output, TWO_IMAGES).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    nothing = torch.zeros(2, 3, 3)
    assert task.per_sample_loss(torch.randn(2, 3, 16, 16), nothing).tolist() == [0.0, 0.0]


def test_loss_is_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    output = torch.rand(2, 3, 12, 10, generator=g)
    task = KeypointTask()
    together = task.per_sample_loss(output, TWO_IMAGES)
    alone = [float(task.per_sample_loss(output[i : i + 1], TWO_IMAGES[i : i + 1])[0]) for i in range(2)]
    assert together.shape == (2,) and together.tolist() == pytest.approx(alone, rel=1e-6)
    changed = output.clone()
    changed[1] += 1.0
    assert float(task.per_sample_loss(changed, TWO_IMAGES)[0]) == pytest.approx(float(together[0]), rel=1e-6)


def test_gradient_reaches_labeled_maps_only() -> None:
    output = torch.rand(2, 3, 8, 8, requires_grad=True)
    KeypointTask().per_sample_loss(output, TWO_IMAGES).sum().backward()
    assert output.grad is not None
    norms = output.grad.abs().sum(dim=(2, 3))
    assert bool((norms[TWO_IMAGES[..., 2] > 0] > 0).all())
    assert bool((norms[TWO_IMAGES[..., 2] == 0] == 0).all())


def test_loss_runs_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 1)
    x = torch.rand(2, 3, 16, 16)
    task = KeypointTask()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = conv(x)
        losses = task.per_sample_loss(output, TWO_IMAGES)
    assert output.dtype == torch.bfloat16 and losses.dtype == torch.float32 and losses.shape == (2,)
    reference = task.per_sample_loss(output.detach().float(), TWO_IMAGES)
    assert losses.tolist() == pytest.approx(reference.tolist(), rel=1e-6)
    losses.sum().backward()
    assert conv.weight.grad is not None and bool(torch.isfinite(conv.weight.grad).all())
    assert float(conv.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("output,target", [((2, 3, 8), (2, 3, 3)), ((2, 4, 8, 8), (2, 3, 3)),
                                           ((3, 3, 8, 8), (2, 3, 3)), ((2, 3, 8, 8), (2, 3, 2))])
def test_loss_refuses_mismatched_shapes(output: tuple[int, ...], target: tuple[int, ...]) -> None:
    with pytest.raises(UsageError) as info:
        KeypointTask().per_sample_loss(torch.zeros(output), torch.zeros(target))
    assert str(output) in str(info.value) and str(target) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("x,y", [(0.3, 0.41), (0.5, 0.5), (0.62, 0.27), (0.4031, 0.7188), (0.52, 0.55),
                                 (0.715, 0.333)])
@pytest.mark.parametrize("h,w", [(16, 16), (8, 12)])
def test_decode_is_within_a_quarter_pixel(x: float, y: float, h: int, w: int) -> None:
    maps = render_heatmaps(_targets([[[x, y, 2]]]), h, w)
    decoded = KeypointTask().decode(maps)
    assert decoded.shape == (1, 1, 3)
    dx, dy = (float(decoded[0, 0, 0]) - x) * w, (float(decoded[0, 0, 1]) - y) * h
    assert abs(dx) <= 0.25 + 1e-5 and abs(dy) <= 0.25 + 1e-5
    assert float(decoded[0, 0, 2]) == pytest.approx(float(maps.max()))


def test_decode_refines_toward_the_higher_neighbour_and_not_at_the_border() -> None:
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 1, 2], maps[0, 0, 1, 3], maps[0, 0, 2, 2] = 1.0, 0.5, 0.25  # right and down are higher
    maps[0, 1, 0, 0], maps[0, 1, 0, 1] = 0.9, 0.5  # corner: no vertical neighbour above, none on the left
    maps[0, 2, 2, 1] = 0.7  # no neighbour is higher than the other: stays at the pixel centre
    decoded = decode_heatmaps(maps)[0]
    assert decoded[0].tolist() == pytest.approx([(2.25 + 0.5) / 4, (1.25 + 0.5) / 4, 1.0])
    assert decoded[1].tolist() == pytest.approx([0.5 / 4, 0.5 / 4, 0.9])
    assert decoded[2].tolist() == pytest.approx([1.5 / 4, 2.5 / 4, 0.7])


def test_decode_works_in_bf16_and_refuses_other_shapes() -> None:
    maps = render_heatmaps(_targets([[[0.3, 0.6, 2]]]), 16, 16)
    assert torch.allclose(decode_heatmaps(maps.bfloat16())[..., :2], decode_heatmaps(maps)[..., :2])
    with pytest.raises(UsageError, match="h, w"):
        decode_heatmaps(torch.zeros(2, 3, 16))


def test_pck_and_mean_error_hand_computed() -> None:
    """20x20 maps: predictions at pixel centres; one image, labeled keypoints A, B, C, D and an unlabeled E.

    Labeled box: x from 0.125 to 0.625, y from 0.125 to 0.325, larger side 0.5, threshold 0.2 * 0.5 = 0.1.
    """
    centre = [(c + 0.5) / 20 for c in range(20)]  # normalised coordinate of each pixel centre
    pixels = {(0, 0): (2, 2), (0, 1): (2, 12), (0, 2): (6, 2), (0, 3): (6, 12), (0, 4): (10, 10)}
    output = _one_hot(1, 5, 20, 20, pixels)
    target = _targets([[
        [centre[2], centre[2], 2],  # A: exact
        [centre[12], centre[2], 2],  # B: exact; A and B fix the box's x extent
        [centre[2] + 0.099, centre[6], 1],  # C: 0.099 off, just inside
        [centre[12] - 0.101, centre[6] + 0.0, 2],  # D: 0.101 off, just outside
        [0.0, 0.0, 0],  # E: unlabeled, ignored though its map has a peak
    ]])
    # C and D also set the y extent: 0.125 .. 0.325 < 0.5, so the larger side is x's 0.5
    metrics = KeypointTask().new_metrics()
    for metric in metrics.values():
        metric.update(output, target)
    assert metrics["pck"].compute() == pytest.approx(3 / 4)
    assert metrics["mean_error"].compute() == pytest.approx((0.099 + 0.101) / 4)
    tight = PCK(threshold=0.1)  # threshold 0.05: only the exact A and B
    tight.update(output, target)
    assert tight.compute() == pytest.approx(2 / 4)


@pytest.mark.parametrize("target_x,correct", [(0.625, 1.0), (0.625 + 2**-10, 1.0), (0.625 - 2**-10, 0.5)])
def test_pck_boundary_is_inclusive_and_scales_with_the_box(target_x: float, correct: float) -> None:
    """A 1x4 map: predictions at pixel centres 0.125 and 0.875; targets at 0.125 and ``target_x``; PCK@0.5.

    At 0.625 (exact in binary) the box is 0.5, the threshold 0.25 and the error 0.25: counted as correct. Moving the
    target right shrinks the error and grows the box (inside); moving it left does the opposite (outside).
    """
    output = _one_hot(1, 2, 1, 4, {(0, 0): (0, 0), (0, 1): (0, 3)})
    pck = PCK(threshold=0.5)
    pck.update(output, _targets([[[0.125, 0.5, 2], [target_x, 0.5, 2]]]))
    assert pck.compute() == correct


def test_metrics_accumulate_over_batches_and_skip_degenerate_boxes() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(7, 4, 3, generator=g)
    target[..., 2] = 2.0
    target[2, 1:] = 0.0  # a single labeled keypoint: no box, left out of PCK but counted by the mean error
    target[5] = 0.0  # nothing labeled
    output = render_heatmaps(target + 0.04 * torch.randn(7, 4, 3, generator=g) * torch.tensor([1.0, 1.0, 0.0]),
                             16, 16)
    whole, parts = KeypointTask().new_metrics(), KeypointTask().new_metrics()
    for metric in whole.values():
        metric.update(output, target)
    for lo, hi in ((0, 3), (3, 3), (3, 7)):
        for metric in parts.values():
            metric.update(output[lo:hi], target[lo:hi])
    for name in ("pck", "mean_error"):
        assert parts[name].compute() == pytest.approx(whole[name].compute(), rel=1e-12)
    pck = whole["pck"]
    assert isinstance(pck, PCK) and pck.total == 5 * 4 and 0.0 < pck.compute() <= 1.0
    mean_error = whole["mean_error"]
    assert isinstance(mean_error, MeanError) and mean_error.count == 5 * 4 + 1


def test_metrics_are_nan_when_nothing_was_added_or_labeled() -> None:
    for metric in KeypointTask().new_metrics().values():
        assert math.isnan(metric.compute())
        metric.update(torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 3))
        assert math.isnan(metric.compute())
    pck = PCK()
    pck.update(torch.rand(1, 1, 8, 8), _targets([[[0.5, 0.5, 2]]]))  # one keypoint: a zero-size box
    assert math.isnan(pck.compute())


def test_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(UsageError, match=r"\(2, 4, 8, 8\).*\(2, 3, 3\)"):
        PCK().update(torch.zeros(2, 4, 8, 8), torch.zeros(2, 3, 3))


def test_check_targets_accepts_and_converts() -> None:
    targets = TWO_IMAGES.double()
    targets[0, 0, 0] = 1.0 + 5e-7  # inside the tolerance: clamped to 1
    targets[1, 0, 1] = -5e-7
    checked = KeypointTask().check_targets(targets)
    assert checked.dtype == torch.float32 and checked.shape == (2, 3, 3)
    assert float(checked[0, 0, 0]) == 1.0 and float(checked[1, 0, 1]) == 0.0
    assert torch.equal(checked[0, 1:], TWO_IMAGES[0, 1:])
    assert KeypointTask().check_targets(torch.zeros(0, 5, 3)).shape == (0, 5, 3)


@pytest.mark.parametrize(
    "targets,match",
    [
        (torch.zeros(4, 3, 3, dtype=torch.int64), "floating point"),
        (torch.zeros(4, 3), r"\(N, K, 3\)"),
        (torch.zeros(4, 3, 2), r"\(N, K, 3\)"),
    ],
)
def test_check_targets_refuses_wrong_types_and_shapes(targets: torch.Tensor, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        KeypointTask().check_targets(targets)


@pytest.mark.parametrize(
    "row,match",
    [
        ([math.nan, 0.5, 2.0], "NaN or infinity"),
        ([0.5, math.inf, 2.0], "NaN or infinity"),
        ([math.nan, math.nan, math.nan], "NaN or infinity"),
        ([0.5, 0.5, 3.0], "visibility"),
        ([0.5, 0.5, 0.5], "visibility"),
        ([0.5, 0.5, -1.0], "visibility"),
        ([1.01, 0.5, 2.0], r"outside \[0, 1\]"),
        ([0.5, -2e-6, 1.0], r"outside \[0, 1\]"),
        ([0.3, 0.0, 0.0], "not labeled"),
        ([0.0, 1e-9, 0.0], "not labeled"),
    ],
)
def test_check_targets_names_the_first_bad_sample_and_keypoint(row: list[float], match: str) -> None:
    targets = torch.tensor([[[0.5, 0.5, 2.0]] * 4] * 5)
    targets[3, 2] = torch.tensor(row)
    targets[4, 0] = torch.tensor(row)  # a later bad sample: not the one named
    with pytest.raises(UsageError, match=match) as info:
        KeypointTask().check_targets(targets)
    message = str(info.value)
    assert "sample 3, keypoint 2" in message and "\n" not in message


def test_empty_targets_are_unknown() -> None:
    empty = KeypointTask().empty_targets(6, torch.zeros(10, 13, 3, dtype=torch.float64))
    assert empty.shape == (6, 13, 3) and empty.dtype == torch.float32 and bool(empty.isnan().all())
    assert KeypointTask().per_sample_loss(torch.rand(6, 13, 4, 4), empty).tolist() == [0.0] * 6


def test_predict_is_json_ready() -> None:
    task = KeypointTask()
    maps = task.target_heatmaps(TWO_IMAGES, 16, 16)
    values, confidence = task.predict(maps)
    assert len(values) == 2 and all(len(image) == 3 and all(len(kp) == 3 for kp in image) for image in values)
    json.dumps([values, confidence])
    decoded = decode_heatmaps(maps)
    assert values[0][1] == pytest.approx(decoded[0, 1].tolist())
    assert confidence == pytest.approx(decoded[..., 2].mean(dim=1).tolist())
    assert all(isinstance(c, float) for c in confidence)


def test_uncertainty_is_one_minus_the_mean_clamped_peak() -> None:
    maps = torch.zeros(4, 2, 8, 8)
    maps[0, :, 3, 3] = 1.0  # fully confident
    maps[1, 0, 2, 2], maps[1, 1, 5, 5] = 0.8, 0.4  # 1 - 0.6
    maps[2, :, 1, 1] = 3.0  # peaks above 1 count as 1
    maps[3] = -0.5  # negative maps count as 0
    task = KeypointTask()
    scores = task.uncertainty(maps)
    assert scores.shape == (4,) and scores.tolist() == pytest.approx([0.0, 0.4, 0.0, 1.0])
    assert torch.equal(task.uncertainty(maps), scores)
    with pytest.raises(UsageError, match=r"\(B, K, h, w\)"):
        task.uncertainty(torch.zeros(4, 2))


def test_no_class_probabilities() -> None:
    with pytest.raises(UsageError, match="no class probabilities"):
        KeypointTask().probabilities(torch.zeros(2, 3, 8, 8))
