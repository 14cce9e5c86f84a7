"""FixMatch's strong augmentation as batched tensor operations on the batch's device (no torchvision, no PIL).

The *strong* view of FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency
and Confidence", NeurIPS 2020) is RandAugment (Cubuk et al., CVPR Workshops 2020) with ``n = 2`` ops of
magnitude up to ``m = 10`` followed by Cutout (DeVries & Taylor, 2017). The op pool, magnitudes and sampling
follow FixMatch's ``RandAugmentMC``, the variant the reference code of the semi-supervised loss prediction
module uses (Hwang, Choi & Choi, "Enhancing Active Learning with Semi-Supervised Loss Prediction Modules",
IEEE Access 2024): for each of ``n`` slots every sample draws one of :data:`RANDAUGMENT_OPS` uniformly, a
level ``v`` uniform in ``1 .. m-1`` and applies the op with probability 0.5.

Images are float ``(B, C, H, W)`` batches with values in [0, 1] and ``C`` = 1 or 3. Each op runs once per
slot on the subset of the batch that drew it, with per-sample magnitudes as tensors; the geometric ops
(rotate, shear, translate) share one batched ``affine_grid`` / ``grid_sample`` (nearest, zero fill, as PIL's
default resampling). Random numbers come from ``generator`` on the CPU and are moved to the batch's device,
so a seeded run is reproducible on any device.
"""

from __future__ import annotations

__all__ = ["RANDAUGMENT_OPS", "apply_op", "cutout", "rand_augment", "strong_augment"]

import torch
import torch.nn.functional as F

from learnloss.errors import UnknownNameError, UsageError

RANDAUGMENT_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Brightness",
    "Color",
    "Contrast",
    "Equalize",
    "Identity",
    "Posterize",
    "Rotate",
    "Sharpness",
    "ShearX",
    "ShearY",
    "Solarize",
    "TranslateX",
    "TranslateY",
)
"""The op pool of FixMatch's ``RandAugmentMC``, in its order."""

_GEOMETRIC: tuple[str, ...] = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_GEOMETRIC_IDS = torch.tensor([RANDAUGMENT_OPS.index(name) for name in _GEOMETRIC])
_PARAMETER_MAX = 10
_MAX_M = 30
_GREY = 0.5  # Cutout fill; FixMatch paints (127, 127, 127)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's "L" conversion
_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0  # PIL ImageFilter.SMOOTH


def _check_images(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UsageError(f"{what} needs a 4-D float image batch (B, C, H, W), got {shape}")
    if x.shape[1] not in (1, 3):
        raise UsageError(f"{what} needs images with 1 or 3 channels, got {x.shape[1]}")


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise UsageError(f"the augmentation generator must live on the CPU, not on {generator.device}")


def _check_count(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise UsageError(f"strong augmentation: {name} must be an integer {bound}, got {value!r}")
    return value


def _working_copy(x: torch.Tensor) -> torch.Tensor:
    """A fresh tensor to write into; half precision is computed in float32 (CPU kernels lack some ops)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x.clone()


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """CPU float64 per-sample values as a ``(k, 1, 1, 1)`` tensor on ``like``'s device and dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def _float_param(level: torch.Tensor, max_v: float) -> torch.Tensor:
    """FixMatch's ``_float_parameter``: ``v * max_v / PARAMETER_MAX`` (float64, same rounding as Python)."""
    return level.double() * max_v / _PARAMETER_MAX


def _int_param(level: torch.Tensor, max_v: int) -> torch.Tensor:
    """FixMatch's ``_int_parameter``: ``int(v * max_v / PARAMETER_MAX)`` for non-negative levels."""
    return torch.div(level.long() * max_v, _PARAMETER_MAX, rounding_mode="floor")


def _blend(image: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, f)``: ``degenerate + f * (image - degenerate)``, clipped."""
    return (degenerate + factor * (image - degenerate)).clamp_(0.0, 1.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Greyscale ``(k, 1, H, W)`` of a batch: ITU-R 601-2 luma for RGB, the channel itself otherwise."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _levels_255(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit level (0..255, ``int64``) of each value, as PIL sees a ``uint8`` image."""
    return (x * 255.0).round_().clamp_(0, 255).long()


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    span = high - low
    stretched = (x - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, stretched, x).clamp_(0.0, 1.0)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` per sample and channel, on 256 levels, batched."""
    batch, channels, height, width = x.shape
    flat = x.reshape(batch * channels, height * width)
    levels = _levels_255(flat)
    hist = torch.zeros(flat.shape[0], 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    last = 255 - (hist > 0).flip(1).int().argmax(dim=1, keepdim=True)  # last non-empty bin
    step = torch.div(height * width - hist.gather(1, last), 255, rounding_mode="floor")
    before = hist.cumsum(dim=1) - hist  # pixels below each level
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    equalized = lut.clamp_max_(255).gather(1, levels).to(x.dtype) / 255.0
    return torch.where(step > 0, equalized, flat).reshape(x.shape)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    shift = (8 - bits.long()).clamp(0, 8).to(x.device).view(-1, 1, 1, 1)
    kept = torch.bitwise_left_shift(torch.bitwise_right_shift(_levels_255(x), shift), shift)
    return kept.to(x.dtype) / 255.0


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    smooth = x.clone()
    if height >= 3 and width >= 3:  # PIL keeps the border pixels of a filtered image
        kernel = _SMOOTH.to(device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
        inner = F.conv2d(x.reshape(batch * channels, 1, height, width), kernel)
        smooth[:, :, 1:-1, 1:-1] = inner.view(batch, channels, height - 2, width - 2)
    return _blend(x, smooth, factor)


def _pointwise(x: torch.Tensor, op: str, level: torch.Tensor) -> torch.Tensor:
    """Apply one non-geometric op to every sample of ``x``; ``level`` holds the CPU per-sample levels."""
    if op == "Identity":
        return x.clone()
    if op == "AutoContrast":
        return _autocontrast(x)
    if op == "Equalize":
        return _equalize(x)
    if op == "Posterize":
        return _posterize(x, _int_param(level, 4) + 4)
    if op == "Solarize":
        threshold = 256 - _int_param(level, 256)
        return torch.where(_levels_255(x) >= _per_sample(threshold, x), 1.0 - x, x)
    factor = _per_sample(_float_param(level, 0.9) + 0.05, x)
    if op == "Brightness":
        return (x * factor).clamp_(0.0, 1.0)
    if op == "Color":
        return x.clone() if x.shape[1] == 1 else _blend(x, _grey(x), factor)
    if op == "Contrast":
        return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), factor)
    if op == "Sharpness":
        return _sharpness(x, factor)
    raise AssertionError(f"unhandled op {op!r}")  # pragma: no cover - names are checked by callers


def _theta(kinds: torch.Tensor, level: torch.Tensor, sign: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-sample ``(k, 2, 3)`` float64 ``affine_grid`` matrices for the geometric ops named by ``kinds``.

    Each matrix maps output to input in normalised coordinates (``align_corners=False``) and reproduces PIL:
    ``img.rotate(angle)`` turns counter-clockwise about the centre; ``transform(AFFINE, (1, s, 0, 0, 1, 0))``
    samples input ``(x + s * y, y)`` in pixel coordinates (shear about the top-left corner); translations
    shift by ``int(float_param * size)`` whole pixels. With nearest sampling the result equals PIL's except
    where a source coordinate falls exactly halfway between two pixels (PIL's rounding there follows its own
    floating-point error; ``grid_sample`` rounds half to even).
    """
    count = kinds.shape[0]
    sign = torch.where(sign < 0, -1.0, 1.0).double()
    ratio = height / width
    theta = torch.zeros(len(_GEOMETRIC), count, 2, 3, dtype=torch.float64)
    theta[:, :, 0, 0] = 1.0
    theta[:, :, 1, 1] = 1.0
    angle = torch.deg2rad(_int_param(level, 30).double() * sign)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta[0, :, 0, 0], theta[0, :, 0, 1] = cos, -sin * ratio
    theta[0, :, 1, 0], theta[0, :, 1, 1] = sin / ratio, cos
    shear = _float_param(level, 0.3) * sign
    theta[1, :, 0, 1] = theta[1, :, 0, 2] = shear * ratio
    theta[2, :, 1, 0] = theta[2, :, 1, 2] = shear / ratio
    theta[3, :, 0, 2] = 2.0 * torch.trunc(_float_param(level, 0.3) * width) * sign / width
    theta[4, :, 1, 2] = 2.0 * torch.trunc(_float_param(level, 0.3) * height) * sign / height
    position = torch.searchsorted(_GEOMETRIC_IDS, kinds)  # _GEOMETRIC_IDS is sorted
    return theta[position, torch.arange(count)]


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _cpu_levels(level: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if not isinstance(level, torch.Tensor) or level.dim() > 1 or (level.dim() == 1 and level.shape[0] != batch):
        shape = tuple(level.shape) if isinstance(level, torch.Tensor) else type(level).__name__
        raise UsageError(f"apply_op: {what} must be a scalar or a ({batch},) tensor, got {shape}")
    return level.detach().to("cpu").expand(batch)


def apply_op(x: torch.Tensor, op: str, level: torch.Tensor, sign: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the RandAugment op ``op`` (one of :data:`RANDAUGMENT_OPS`) to every sample of ``x``.

    ``level`` holds each sample's integer level ``v >= 0`` (a ``(B,)`` or scalar tensor), turned into a
    magnitude as FixMatch's ``RandAugmentMC`` does (``float_param(v, max) = v * max / 10``, ``int_param`` its
    integer part); ``sign`` (``(B,)`` or scalar, default +1) flips the direction of rotations, shears and
    translations where negative. Returns a new tensor; ``x`` is not modified.
    """
    _check_images(x, "apply_op")
    if op not in RANDAUGMENT_OPS:
        raise UnknownNameError("augmentation op", op, RANDAUGMENT_OPS)
    batch, _, height, width = x.shape
    levels = _cpu_levels(level, batch, "level")
    if levels.is_floating_point() or levels.dtype == torch.bool or levels.is_complex():
        raise UsageError(f"apply_op: level must be an integer tensor, got {levels.dtype}")
    if batch and int(levels.min()) < 0:
        raise UsageError(f"apply_op: levels must be >= 0, got {int(levels.min())}")
    signs = torch.ones(batch) if sign is None else _cpu_levels(sign, batch, "sign")
    out = _working_copy(x)
    if batch == 0:
        return out.to(x.dtype)
    if op in _GEOMETRIC:
        kinds = torch.full((batch,), RANDAUGMENT_OPS.index(op), dtype=torch.long)
        out = _warp(out, _theta(kinds, levels, signs, height, width))
    else:
        out = _pointwise(out, op, levels)
    return out.clamp_(0.0, 1.0).to(x.dtype)


def rand_augment(x: torch.Tensor, n: int = 2, m: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """FixMatch's ``RandAugmentMC(n, m)`` on a float batch ``(B, C, H, W)`` in [0, 1], without its Cutout.

    For each of ``n`` slots every sample draws an op of :data:`RANDAUGMENT_OPS` uniformly, a level uniform in
    ``1 .. m-1`` and a coin (apply with probability 0.5); rotations, shears and translations also draw a sign.
    Returns a new tensor of ``x``'s shape, dtype and device with values in [0, 1].
    """
    _check_images(x, "rand_augment")
    _check_count(n, "n", 1)
    _check_count(m, "m", 2, _MAX_M)
    _check_generator(generator)
    batch, _, height, width = x.shape
    ops = torch.randint(0, len(RANDAUGMENT_OPS), (n, batch), generator=generator)
    levels = torch.randint(1, m, (n, batch), generator=generator)
    applied = torch.rand(n, batch, generator=generator) < 0.5
    signs = torch.where(torch.rand(n, batch, generator=generator) < 0.5, -1.0, 1.0)
    out = _working_copy(x)
    geometric = torch.isin(ops, _GEOMETRIC_IDS)
    for slot in range(n):
        chosen = applied[slot] & geometric[slot]
        if bool(chosen.any()):
            rows = chosen.nonzero().squeeze(1)
            theta = _theta(ops[slot, rows], levels[slot, rows], signs[slot, rows], height, width)
            on_device = rows.to(x.device)
            out[on_device] = _warp(out[on_device], theta)
        for kind, op in enumerate(RANDAUGMENT_OPS):
            if op in _GEOMETRIC or op == "Identity":
                continue
            rows = (applied[slot] & (ops[slot] == kind)).nonzero().squeeze(1)
            if rows.numel():
                on_device = rows.to(x.device)
                out[on_device] = _pointwise(out[on_device], op, levels[slot, rows])
    return out.clamp_(0.0, 1.0).to(x.dtype)


def cutout(x: torch.Tensor, size: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017) as FixMatch's ``CutoutAbs``: one grey (0.5) square per image.

    The square has side ``size`` (default: half the smaller image side, 16 for 32x32 images), is centred at a
    uniform random point of the image and is clipped at the borders. (FixMatch's PIL code paints an inclusive
    rectangle, one pixel wider, with grey 127/255, and shifts rather than clips it at the top-left borders.)
    Returns a new tensor; ``x`` is not modified.
    """
    _check_images(x, "cutout")
    _check_generator(generator)
    batch, _, height, width = x.shape
    side = max(1, min(height, width) // 2) if size is None else _check_count(size, "cutout size", 0)
    centres = torch.rand(2, batch, generator=generator, dtype=torch.float64)
    top = torch.floor(centres[0] * height - side / 2).long().to(x.device)
    left = torch.floor(centres[1] * width - side / 2).long().to(x.device)
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
    return torch.where(mask, torch.full((), _GREY, dtype=x.dtype, device=x.device), x)


def strong_augment(
    x: torch.Tensor,
    n: int = 2,
    m: int = 10,
    cutout_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FixMatch's strong view (Sohn et al., NeurIPS 2020): :func:`rand_augment` then :func:`cutout`.

    This is the strong augmentation of the semi-supervised training stage of Hwang, Choi & Choi (IEEE Access
    2024). ``x`` is a float batch ``(B, C, H, W)`` in [0, 1]; the result has its shape, dtype and device.
    """
    _check_images(x, "strong_augment")
    _check_count(n, "n", 1)
    _check_count(m, "m", 2, _MAX_M)
    if cutout_size is not None:
        _check_count(cutout_size, "cutout size", 0)
    _check_generator(generator)
    return cutout(rand_augment(x, n, m, generator), cutout_size, generator)
