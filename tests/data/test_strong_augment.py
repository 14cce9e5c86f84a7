"""FixMatch's strong augmentation (RandAugmentMC then Cutout) as batched tensor ops, seeded, per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnloss.data.strong_augment import RANDAUGMENT_OPS, apply_op, cutout, rand_augment, strong_augment
from learnloss.errors import UsageError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random images on the 8-bit grid, as a uint8 dataset converted to float gives them."""
    return (torch.randint(0, 256, shape, generator=_gen(seed)).to(dtype) / 255).to(dtype)


def _level(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def _factor(v: int) -> float:
    return v * 0.9 / 10 + 0.05


# --------------------------------------------------------------------------------------------------- contract


def test_op_pool_is_fixmatch_randaugment_mc():
    assert RANDAUGMENT_OPS == (
        "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
        "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
    )  # fmt: skip


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (5, 3, 32, 32), (4, 3, 7, 9), (3, 1, 9, 7), (1, 3, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_range_are_kept(shape: tuple[int, ...], dtype: torch.dtype):
    x = _images(*shape, dtype=dtype)
    for out in (
        strong_augment(x, generator=_gen(1)),
        rand_augment(x, n=3, m=30, generator=_gen(2)),
        cutout(x, generator=_gen(3)),
    ):
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    for op in RANDAUGMENT_OPS:
        levels = torch.arange(shape[0]) * 7 % 31
        out = apply_op(x, op, levels, sign=torch.where(levels % 2 == 0, 1, -1))
        assert out.shape == x.shape and out.dtype == dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, op


def test_half_precision_is_computed_and_returned():
    x = _images(4, 3, 8, 8).half()
    out = strong_augment(x, generator=_gen(0))
    assert out.dtype == torch.float16 and out.shape == x.shape


def test_same_seed_same_output_other_seed_other_output_and_input_untouched():
    x = _images(32, 3, 16, 16)
    before = x.clone()
    a = strong_augment(x, generator=_gen(5))
    b = strong_augment(x, generator=_gen(5))
    c = strong_augment(x, generator=_gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(x, before)
    for op in RANDAUGMENT_OPS:
        apply_op(x, op, torch.full((32,), 9))
        assert torch.equal(x, before), op


# ------------------------------------------------------------------------------------------ photometric ops


def test_identity_is_an_exact_copy():
    x = _images(3, 3, 5, 6)
    out = apply_op(x, "Identity", _level(1, 5, 9))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_brightness_scales_by_the_per_sample_factor():
    x = torch.full((3, 3, 2, 2), 0.8)
    out = apply_op(x, "Brightness", _level(0, 5, 9))
    for i, v in enumerate((0, 5, 9)):
        torch.testing.assert_close(out[i], torch.full((3, 2, 2), 0.8 * _factor(v)))


def test_contrast_blends_with_the_mean_grey_level():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2)
    f = _factor(3)
    torch.testing.assert_close(apply_op(x, "Contrast", _level(3)), 0.5 + f * (x - 0.5))
    rgb = torch.zeros(1, 3, 1, 2)
    rgb[0, 0] = 1.0  # two red pixels: grey 0.299 everywhere
    expected = 0.299 + f * (rgb - 0.299)
    torch.testing.assert_close(apply_op(rgb, "Contrast", _level(3)), expected)


def test_color_blends_with_the_luma_and_leaves_grey_images_alone():
    x = torch.tensor([0.9, 0.3, 0.1]).view(1, 3, 1, 1)
    grey = 0.299 * 0.9 + 0.587 * 0.3 + 0.114 * 0.1
    f = _factor(7)
    torch.testing.assert_close(apply_op(x, "Color", _level(7)), grey + f * (x - grey))
    one = _images(2, 1, 4, 4)
    assert torch.equal(apply_op(one, "Color", _level(9, 9)), one)


def test_sharpness_blends_with_the_pil_smooth_filter_keeping_the_border():
    x = _images(1, 1, 4, 5, seed=3)
    kernel = [[1, 1, 1], [1, 5, 1], [1, 1, 1]]
    smooth = x.clone()
    for r in range(1, 3):
        for c in range(1, 4):
            smooth[0, 0, r, c] = sum(
                kernel[i][j] * x[0, 0, r - 1 + i, c - 1 + j] for i in range(3) for j in range(3)
            ) / 13  # fmt: skip
    f = _factor(4)
    expected = (smooth + f * (x - smooth)).clamp(0, 1)
    out = apply_op(x, "Sharpness", _level(4))
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[..., 0, :], x[..., 0, :]) and torch.equal(out[..., :, -1], x[..., :, -1])


def test_posterize_keeps_the_top_bits():
    x = torch.tensor([183 / 255, 1.0, 15 / 255]).view(3, 1, 1, 1)  # 183 = 0b10110111
    out = apply_op(x, "Posterize", _level(0, 5, 9)) * 255  # bits 4, 6, 7
    torch.testing.assert_close(out.flatten(), torch.tensor([0b10110000, 0b11111100, 0b00001110]).float())


def test_solarize_inverts_from_the_threshold_up():
    x = torch.tensor([127, 128, 200, 255]).float().div(255).view(1, 1, 1, 4)
    out = apply_op(x, "Solarize", _level(5))  # threshold 256 - int(5 * 25.6) = 128
    torch.testing.assert_close(out.flatten() * 255, torch.tensor([127.0, 127.0, 55.0, 0.0]))
    assert torch.equal(apply_op(x, "Solarize", _level(0)), x)  # threshold 256: nothing inverted


def test_autocontrast_stretches_each_channel_and_keeps_constant_ones():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[0.2, 0.3], [0.5, 0.6]])
    x[0, 1] = 0.7
    x[0, 2] = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    out = apply_op(x, "AutoContrast", _level(0))
    torch.testing.assert_close(out[0, 0], (x[0, 0] - 0.2) / 0.4)
    assert torch.equal(out[0, 1], x[0, 1]) and torch.equal(out[0, 2], x[0, 2])


def _pil_equalize(channel: np.ndarray) -> np.ndarray:
    """PIL's ``ImageOps.equalize`` on one uint8 channel, transcribed."""
    hist = np.bincount(channel.ravel(), minlength=256)
    nonzero = hist[hist > 0]
    step = (nonzero.sum() - nonzero[-1]) // 255 if len(nonzero) > 1 else 0
    if step == 0:
        return channel
    lut, n = [], step // 2
    for i in range(256):
        lut.append(min(n // step, 255))
        n += hist[i]
    return np.asarray(lut, dtype=np.uint8)[channel]


def test_equalize_matches_pil_on_a_hand_checked_image():
    x = torch.full((1, 1, 16, 32), 10 / 255)
    x[..., 8:, :] = 200 / 255  # 256 pixels at 10, 256 at 200: step 1, lut[10] = 0, lut[200] = min(256, 255)
    out = apply_op(x, "Equalize", _level(0))
    assert torch.equal(out[..., :8, :], torch.zeros(1, 1, 8, 32))
    assert torch.equal(out[..., 8:, :], torch.ones(1, 1, 8, 32))


def test_equalize_matches_pil_per_sample_and_channel():
    levels = torch.randint(0, 256, (3, 3, 20, 24), generator=_gen(4))
    levels[0] = levels[0] // 4 + 60  # a narrow histogram
    levels[1, 1] = 77  # a constant channel stays
    levels[2, 0] = torch.where(levels[2, 0] < 250, 3, 9)  # too few pixels below the last level: step 0
    out = apply_op(levels.float() / 255, "Equalize", _level(0, 0, 0))
    expected = np.stack([[_pil_equalize(c.numpy().astype(np.uint8)) for c in sample] for sample in levels])
    assert np.array_equal((out * 255).round().numpy().astype(np.uint8), expected)
    assert torch.equal(out[1, 1] * 255, torch.full((20, 24), 77.0))


# -------------------------------------------------------------------------------------------- geometric ops


def test_translate_shifts_whole_pixels_with_zero_fill():
    x = _images(2, 3, 20, 10) * 0.5 + 0.5  # no zeros
    shift_x = int(10 * 0.3 / 10 * 10)  # level 10 on width 10: 3 pixels
    out = apply_op(x, "TranslateX", _level(10, 10), sign=_level(1, -1))
    assert torch.equal(out[0, :, :, : 10 - shift_x], x[0, :, :, shift_x:])  # PIL samples input x + 3
    assert torch.equal(out[0, :, :, 10 - shift_x :], torch.zeros(3, 20, shift_x))
    assert torch.equal(out[1, :, :, shift_x:], x[1, :, :, : 10 - shift_x])
    assert torch.equal(out[1, :, :, :shift_x], torch.zeros(3, 20, shift_x))
    shift_y = int(5 * 0.3 / 10 * 20)  # level 5 on height 20: 3 pixels
    out = apply_op(x, "TranslateY", _level(5, 5), sign=_level(1, -1))
    assert torch.equal(out[0, :, : 20 - shift_y], x[0, :, shift_y:])
    assert torch.equal(out[1, :, shift_y:], x[1, :, : 20 - shift_y])
    assert torch.equal(out[1, :, :shift_y], torch.zeros(3, shift_y, 10))


@pytest.mark.parametrize("side", [5, 6])
def test_rotate_by_zero_is_identity_and_by_ninety_is_rot90_counter_clockwise(side: int):
    x = _images(2, 3, side, side)
    assert torch.equal(apply_op(x, "Rotate", _level(0, 0)), x)
    out = apply_op(x, "Rotate", _level(30, 30), sign=_level(1, -1))  # int_param(30, 30) = 90 degrees
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(1, 2)))  # PIL: positive angles counter-clockwise
    assert torch.equal(out[1], torch.rot90(x[1], -1, dims=(1, 2)))


def test_rotate_fills_the_uncovered_corners_with_zero():
    x = torch.ones(1, 1, 16, 16)
    out = apply_op(x, "Rotate", _level(10))  # 30 degrees
    assert float(out[0, 0, 0, 0]) == 0.0 and float(out[0, 0, -1, -1]) == 0.0 and float(out[0, 0, 8, 8]) == 1.0


def test_shear_by_zero_is_identity_and_shears_about_the_top_left_corner():
    x = _images(1, 1, 8, 8) * 0.5 + 0.5
    assert torch.equal(apply_op(x, "ShearX", _level(0)), x)
    assert torch.equal(apply_op(x, "ShearY", _level(0)), x)
    out = apply_op(x, "ShearX", _level(10))  # s = 0.3: output (x, y) samples input (x + 0.3 y, y)
    for y in range(8):
        shift = int(np.floor(0.5 + 0.3 * (y + 0.5)))  # nearest source column of PIL's pixel centres
        assert torch.equal(out[0, 0, y, : 8 - shift], x[0, 0, y, shift:]), y
        assert torch.equal(out[0, 0, y, 8 - shift :], torch.zeros(shift)), y
    transposed = apply_op(x.transpose(2, 3), "ShearY", _level(10)).transpose(2, 3)
    assert torch.equal(transposed, out)


# ------------------------------------------------------------------------------------------ RandAugmentMC


def test_each_sample_gets_one_of_the_ops_with_its_own_level_and_coin():
    x = _images(96, 3, 8, 8, seed=7)
    out = rand_augment(x, n=1, m=10, generator=_gen(8))
    keys = [(op, v, s) for op in RANDAUGMENT_OPS for v in range(1, 10) for s in (1, -1)]
    candidates = torch.stack([apply_op(x, op, torch.full((96,), v), sign=torch.full((96,), s)) for op, v, s in keys])
    matches = (candidates - out).abs().flatten(2).amax(dim=2) <= 1e-6  # (candidates, samples)
    assert bool(matches.any(dim=0).all()), "some sample matches no op"
    seen = {keys[int(matches[:, i].nonzero()[0])][0] for i in range(96)}
    unchanged = sum(torch.equal(out[i], x[i]) for i in range(96))
    assert 0 < unchanged < 96  # the 0.5 coin and Identity leave some samples as they were
    assert len(seen) >= 10  # a mixture of ops, not one for the whole batch


def test_two_slots_change_more_samples_than_one():
    x = _images(256, 1, 10, 10, seed=9)
    one = rand_augment(x, n=1, generator=_gen(10))
    two = rand_augment(x, n=2, generator=_gen(10))
    changed = [sum(not torch.equal(y[i], x[i]) for i in range(256)) for y in (one, two)]
    assert 80 < changed[0] < changed[1] < 256


# ------------------------------------------------------------------------------------------------- Cutout


def _grey_box(diff: torch.Tensor) -> tuple[int, int, int, int]:
    rows = diff.any(dim=1).nonzero().flatten()
    cols = diff.any(dim=0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def test_cutout_paints_one_grey_square_clipped_at_the_borders():
    x = _images(300, 3, 16, 20) * 0.4  # below 0.5: every painted pixel differs
    out = cutout(x, size=6, generator=_gen(11))
    inside = clipped = 0
    for i in range(300):
        diff = (out[i] != x[i]).any(dim=0)
        top, bottom, left, right = _grey_box(diff)
        assert diff[top:bottom, left:right].all()  # one solid rectangle ...
        assert int(diff.sum()) == (bottom - top) * (right - left)
        assert torch.equal(out[i][:, top:bottom, left:right], torch.full((3, bottom - top, right - left), 0.5))
        assert bottom - top <= 6 and right - left <= 6  # ... no larger than the square
        if 0 < top and bottom < 16 and 0 < left and right < 20:
            assert (bottom - top, right - left) == (6, 6)
            inside += 1
        else:
            assert (bottom - top == 6 or top == 0 or bottom == 16) and (right - left == 6 or left == 0 or right == 20)
            clipped += 1
    assert inside > 50 and clipped > 50


@pytest.mark.parametrize(("side", "expected"), [(32, 16), (28, 14), (7, 3)])
def test_cutout_default_side_is_half_the_smaller_image_side(side: int, expected: int):
    x = torch.zeros(200, 1, side, side + 2)
    out = cutout(x, generator=_gen(12))
    heights = [(out[i, 0] == 0.5).any(dim=1).sum() for i in range(200)]
    assert max(int(h) for h in heights) == expected


def test_cutout_of_size_zero_changes_nothing_and_strong_augment_always_cuts():
    x = _images(8, 3, 12, 12) * 0.4
    assert torch.equal(cutout(x, size=0, generator=_gen(0)), x)
    out = strong_augment(x, cutout_size=4, generator=_gen(13))
    assert all(bool((out[i] == 0.5).all(dim=0).any()) for i in range(8))


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda x: rand_augment(x, n=0),
        lambda x: rand_augment(x, m=1),
        lambda x: rand_augment(x, m=31),
        lambda x: rand_augment(x, n=True),
        lambda x: strong_augment(x, m=2.5),
        lambda x: strong_augment(x, cutout_size=-1),
        lambda x: cutout(x, size=-2),
        lambda x: rand_augment(x[0]),
        lambda x: rand_augment((x * 255).byte()),
        lambda x: strong_augment(torch.zeros(2, 2, 4, 4)),
        lambda x: apply_op(x, "Invert", _level(1, 1)),
        lambda x: apply_op(x, "Rotate", _level(1, -1)),
        lambda x: apply_op(x, "Rotate", torch.tensor([1.5, 2.0])),
        lambda x: apply_op(x, "Rotate", _level(1, 2, 3)),
        lambda x: apply_op(x, "Rotate", _level(1, 2), sign=_level(1, 1, 1)),
    ],
)
def test_invalid_arguments_raise_usage_error(call):
    with pytest.raises(UsageError):
        call(_images(2, 3, 4, 4))
