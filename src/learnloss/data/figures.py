"""Rendered stick figures with labeled keypoints: a pose-estimation dataset that needs no annotation files.

Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019, Sec. 4.3) evaluates human pose estimation on MPII: a
person's joints as keypoints, some occluded, some outside the picture. These figures keep those traits at a size
that trains on a CPU. Each image is a ``canvas × canvas`` grey canvas (default 64 × 64, one channel) holding one
stick figure of the :data:`KEYPOINTS` (head, neck, shoulders, elbows, hands, hips, knees, feet: 14), joined by the
edges of :data:`SKELETON`:

* pose: the torso leans up to 12°, the head tilts up to 20°, each arm swings from hanging down to raised above the
  head (-15° to 165° outward) with its elbow bent -30° to 135°, each leg swings -10° to 45° outward with its knee
  bent -40° to 25° (angles in the image plane, each limb on its own side drawn independently);
* placement: a figure of height drawn from ``height`` (a fraction of the canvas; 0.45 to 0.9 by default), turned by
  up to ``rotation`` degrees (30 by default) either way, its centre anywhere in the middle half of the canvas, so a
  hand or a foot now and then falls outside;
* drawing: thick limbs and a disc for the head, anti-aliased (coverage from the distance of each pixel centre to
  each limb), over a background of a random grey level with random clutter strokes, and with noise over all;
* occlusion: with probability ``occlusion`` (0.5 by default) one or two rectangles or ellipses of textured grey are
  drawn over the figure, each centred near one of its keypoints.

Targets (``task="keypoints"``) are float32 ``(N, K, 3)``, one row ``(x, y, v)`` per keypoint in :data:`KEYPOINTS`
order: ``x``, ``y`` are the keypoint's position normalised by the canvas side (continuous pixel coordinates, pixel
``i`` spanning ``[i, i + 1)``); ``v`` is COCO's visibility: 0 for a keypoint outside the canvas (then ``x = y =
0``), 1 for one under an occluder (the pixel it lies on is covered), 2 for a visible one.

Left and right are the figure's own: the figure faces the viewer, so upright and unturned its *left* shoulder, hip,
arm and leg are on the *right* of the image (larger ``x``). Turning never mirrors a figure, so for every figure the
vector from the right to the left shoulder points clockwise of the one from the hips' midpoint to the neck (in image
coordinates, ``y`` down: their cross product is negative). :data:`FLIP_PAIRS` lists the keypoints a horizontal flip
swaps. There is no augmentation in the dataset (a crop or a flip would move keypoints without moving targets).

Generation is seeded (a :class:`numpy.random.Generator` per split, spawned from ``seed``): one seed gives
byte-identical figures. A dataset is generated once and cached like the detection scenes
(:mod:`learnloss.data.scenes`): an ``.npz`` file named by a hash of every parameter, in the ``data_dir`` argument,
else ``$LEARNLOSS_CACHE/figures``, else ``~/.cache/learnloss/figures``; written atomically and generated again when
damaged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.limits import check_bytes
from learnloss.data.cache import cache_folder, cached_arrays, settings_key
from learnloss.errors import UsageError

__all__ = [
    "FLIP_PAIRS", "KEYPOINTS", "SKELETON", "Figure", "FigureSettings", "generate_figures", "keypoint_targets",
    "load_figures", "make_figures", "render_figure",
]  # fmt: skip

KEYPOINTS: list[str] = [
    "head", "neck", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_hand", "right_hand",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_foot", "right_foot",
]  # fmt: skip
"""The keypoint names, in target order (the dataset's ``classes``)."""

_K = {name: i for i, name in enumerate(KEYPOINTS)}

SKELETON: tuple[tuple[int, int], ...] = tuple(
    (_K[a], _K[b])
    for a, b in (
        ("head", "neck"),
        ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_hand"),
        ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_hand"),
        ("neck", "left_hip"), ("neck", "right_hip"), ("left_hip", "right_hip"),
        ("left_hip", "left_knee"), ("left_knee", "left_foot"),
        ("right_hip", "right_knee"), ("right_knee", "right_foot"),
    )
)  # fmt: skip
"""The figure's edges as pairs of keypoint indices (into :data:`KEYPOINTS`): what is drawn, and how to draw it."""

FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (_K[f"left_{part}"], _K[f"right_{part}"]) for part in ("shoulder", "elbow", "hand", "hip", "knee", "foot")
)
"""Pairs of keypoint indices a horizontal flip swaps (left and right)."""

FORMAT_VERSION = 1
"""Part of every cache key: raise it when generation changes, so old cache files are not taken for new ones."""

# Body proportions, in units of the figure's height, and each edge's line width (same units).
_TORSO, _NECK_TO_HEAD, _HEAD_RADIUS = 0.30, 0.10, 0.065
_SHOULDER, _SHOULDER_DROP, _HIP = 0.11, 0.02, 0.07
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.15, 0.14, 0.23, 0.22
_WIDTHS = np.array([0.05, 0.05, 0.04, 0.04, 0.05, 0.04, 0.04, 0.06, 0.06, 0.06, 0.05, 0.05, 0.05, 0.05])
_MIN_WIDTH = 2.0  # pixels
# Joint angle ranges, in degrees: 0 is straight down (along the torso), positive turns outward (the limb's side).
_LEAN, _TILT = 12.0, 20.0
_SHOULDER_ANGLE, _ELBOW_ANGLE = (-15.0, 165.0), (-30.0, 135.0)
_HIP_ANGLE, _KNEE_ANGLE = (-10.0, 45.0), (-40.0, 25.0)
_OCCLUDER_SIDE = (0.12, 0.3)  # fraction of the canvas
_NOISE = 6.0  # standard deviation of the pixel noise, in grey levels


def _fraction_pair(value: object, what: str, low: float, high: float) -> tuple[float, float]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) for v in value)
    ):
        raise UsageError(f"figures: {what} must be two numbers (low, high), got {value!r}")
    a, b = float(value[0]), float(value[1])
    if not low < a <= b <= high:
        raise UsageError(f"figures: {what} ({a}, {b}) must satisfy {low} < low <= high <= {high}")
    return a, b


def _number(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        low <= float(value) <= high
    ):
        raise UsageError(f"figures: {what} must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _whole(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise UsageError(f"figures: {what} must be a whole number of at least {least}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class FigureSettings:
    """Every parameter of a generated figures dataset (see the module docstring); validated when built.

    Attributes:
        n_train: training figures.
        n_test: test figures (0 for none).
        canvas: side of the square canvas in pixels.
        height: smallest and largest figure height, as fractions of the canvas side.
        rotation: the largest turn of a figure either way, in degrees (0 keeps every figure upright).
        occlusion: probability that a figure gets occluders.
        seed: seed of the generators.

    Raises:
        UsageError: a setting is out of range (one line naming it).
    """

    n_train: int = 4000
    n_test: int = 1000
    canvas: int = 64
    height: tuple[float, float] = (0.45, 0.9)
    rotation: float = 30.0
    occlusion: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the values once, here
        set_(self, "n_train", _whole(self.n_train, "n_train", 1))
        set_(self, "n_test", _whole(self.n_test, "n_test", 0))
        set_(self, "canvas", _whole(self.canvas, "canvas", 16))
        set_(self, "seed", _whole(self.seed, "seed", 0))
        set_(self, "height", _fraction_pair(self.height, "height", 0.0, 2.0))
        set_(self, "rotation", _number(self.rotation, "rotation", 0.0, 180.0))
        set_(self, "occlusion", _number(self.occlusion, "occlusion", 0.0, 1.0))

    def key(self) -> str:
        """16 hex digits identifying these settings (and :data:`FORMAT_VERSION`): part of the cache file's name."""
        return settings_key(self, FORMAT_VERSION)[1]

    def cache_file(self, data_dir: str | os.PathLike[str] | None = None) -> Path:
        """The cache file of these settings: ``<cache folder>/figures-<key>.npz``
        (:func:`~learnloss.data.scenes.cache_folder`)."""
        return cache_folder("figures", data_dir) / f"figures-{self.key()}.npz"


@dataclass(frozen=True)
class Figure:
    """One rendered figure: the ``uint8`` image ``(S, S)``, its keypoints in pixel coordinates ``(K, 2)`` (``x``,
    ``y``; possibly outside the canvas) and the pixels its occluders cover, ``bool`` ``(S, S)``."""

    image: np.ndarray
    points: np.ndarray
    occluded: np.ndarray


# --------------------------------------------------------------------------- geometry


def _direction(angle: float) -> np.ndarray:
    """The unit vector ``angle`` radians from straight down, turning toward ``+x`` (image coordinates, ``y`` down)."""
    return np.array([math.sin(angle), math.cos(angle)])


def _pose(rng: np.random.Generator) -> np.ndarray:
    """Keypoints ``(K, 2)`` of a random pose in body units (the figure's height), the hips' midpoint at the origin,
    upright before the torso's lean; the figure's left on ``+x``."""
    rad = math.radians
    lean = rad(rng.uniform(-_LEAN, _LEAN))
    up, left = _direction(math.pi + lean), _direction(lean + math.pi / 2)  # left: the figure's own left
    down = -up
    points = np.zeros((len(KEYPOINTS), 2))
    neck = _TORSO * up
    points[_K["neck"]] = neck
    points[_K["head"]] = neck + _NECK_TO_HEAD * _direction(math.pi + lean + rad(rng.uniform(-_TILT, _TILT)))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder = neck + sign * _SHOULDER * left + _SHOULDER_DROP * down
        arm, elbow_bend = rad(rng.uniform(*_SHOULDER_ANGLE)), rad(rng.uniform(*_ELBOW_ANGLE))
        elbow = shoulder + _UPPER_ARM * _direction(lean + sign * arm)
        hand = elbow + _FOREARM * _direction(lean + sign * (arm + elbow_bend))
        hip = sign * _HIP * left
        leg, knee_bend = rad(rng.uniform(*_HIP_ANGLE)), rad(rng.uniform(*_KNEE_ANGLE))
        knee = hip + _THIGH * _direction(lean + sign * leg)
        foot = knee + _SHIN * _direction(lean + sign * (leg + knee_bend))
        for part, point in (("shoulder", shoulder), ("elbow", elbow), ("hand", hand), ("hip", hip), ("knee", knee),
                            ("foot", foot)):  # fmt: skip
            points[_K[f"{side}_{part}"]] = point
    return points


def _place(rng: np.random.Generator, body: np.ndarray, settings: FigureSettings) -> tuple[np.ndarray, float]:
    """``body`` turned, scaled and moved onto the canvas: pixel coordinates ``(K, 2)`` and pixels per body unit."""
    canvas = settings.canvas
    turn = math.radians(rng.uniform(-settings.rotation, settings.rotation))
    scale = rng.uniform(*settings.height) * canvas
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])  # no mirroring
    points = body @ rotation.T * scale
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    target = rng.uniform(0.25 * canvas, 0.75 * canvas, size=2)
    return points - centre + target, scale


# --------------------------------------------------------------------------- drawing


def _segments(canvas: int, starts: np.ndarray, ends: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage ``(S, S)`` of thick segments ``starts[i] -> ends[i]`` (pixel coordinates): 1 within half
    a width of a segment, falling to 0 over one pixel beyond; computed only in the window the segments reach."""
    out = np.zeros((canvas, canvas))
    reach = float(widths.max()) / 2 + 1.0
    low = np.floor(np.minimum(starts, ends).min(axis=0) - reach).clip(0, canvas).astype(np.int64)
    high = np.ceil(np.maximum(starts, ends).max(axis=0) + reach).clip(0, canvas).astype(np.int64)
    if (high <= low).any():
        return out
    xs = np.arange(low[0], high[0]) + 0.5
    ys = np.arange(low[1], high[1]) + 0.5
    rx = xs[None, None, :] - starts[:, 0, None, None]  # (n, 1, w): from each segment's start to each pixel centre
    ry = ys[None, :, None] - starts[:, 1, None, None]  # (n, h, 1)
    dx, dy = (ends - starts)[:, 0, None, None], (ends - starts)[:, 1, None, None]
    t = np.clip((rx * dx + ry * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)  # nearest point's position
    ex, ey = rx - t * dx, ry - t * dy
    cover = np.clip(widths[:, None, None] / 2 + 0.5 - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)
    out[low[1] : high[1], low[0] : high[0]] = cover.max(axis=0)
    return out


def _over(image: np.ndarray, cover: np.ndarray, value: float | np.ndarray) -> None:
    """Paint ``value`` over ``image`` with coverage ``cover`` (same shapes, float) in place."""
    image *= 1.0 - cover
    image += cover * value


def _clutter(rng: np.random.Generator, canvas: int) -> np.ndarray:
    image = np.full((canvas, canvas), rng.uniform(0.0, 80.0))
    for _ in range(int(rng.integers(2, 6))):
        ends = rng.uniform(0.0, canvas, size=(2, 2))
        cover = _segments(canvas, ends[:1], ends[1:], np.array([rng.uniform(1.0, 3.0)]))
        _over(image, cover, rng.uniform(30.0, 150.0))
    return image


def _occluders(rng: np.random.Generator, points: np.ndarray, canvas: int) -> np.ndarray:
    """The pixels ``(S, S)`` covered by one or two rectangles or ellipses, each centred near a keypoint."""
    ys, xs = np.mgrid[0:canvas, 0:canvas] + 0.5
    covered = np.zeros((canvas, canvas), dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        half = rng.uniform(*_OCCLUDER_SIDE, size=2) * canvas / 2
        centre = points[int(rng.integers(len(points)))] + rng.uniform(-1.0, 1.0, size=2) * half
        u, v = np.abs(xs - centre[0]) / half[0], np.abs(ys - centre[1]) / half[1]
        covered |= ((u <= 1.0) & (v <= 1.0)) if rng.random() < 0.5 else (u * u + v * v <= 1.0)
    return covered


def keypoint_targets(points: np.ndarray, occluded: np.ndarray, canvas: int) -> np.ndarray:
    """Targets ``(K, 3)`` float32 of keypoints at pixel coordinates ``points`` ``(K, 2)``: ``(x / S, y / S, v)``,
    with ``v`` 0 (and ``x = y = 0``) for a keypoint outside the canvas (``[0, S)`` on both axes), 1 for one on a pixel
    that ``occluded`` (``bool`` ``(S, S)``) covers, else 2."""
    inside = ((points >= 0.0) & (points < canvas)).all(axis=1)
    out = np.zeros((len(points), 3), dtype=np.float32)
    out[inside, :2] = points[inside] / canvas
    cols, rows = points[inside, 0].astype(np.int64), points[inside, 1].astype(np.int64)
    out[inside, 2] = np.where(occluded[rows, cols], 1.0, 2.0)
    return out


def render_figure(rng: np.random.Generator, settings: FigureSettings) -> Figure:
    """One figure drawn with ``rng`` (see the module docstring for what is drawn, and in which order)."""
    canvas = settings.canvas
    points, scale = _place(rng, _pose(rng), settings)
    image = _clutter(rng, canvas)
    a, b = np.array(SKELETON).T
    body = _segments(canvas, points[a], points[b], np.maximum(_WIDTHS * scale, _MIN_WIDTH))
    head = points[_K["head"]]
    ys, xs = np.mgrid[0:canvas, 0:canvas] + 0.5
    disc = np.clip(_HEAD_RADIUS * scale + 0.5 - np.hypot(xs - head[0], ys - head[1]), 0.0, 1.0)
    _over(image, np.maximum(body, disc), rng.uniform(150.0, 255.0))
    occluded = np.zeros((canvas, canvas), dtype=bool)
    if rng.random() < settings.occlusion:
        occluded = _occluders(rng, points, canvas)
        texture = rng.uniform(40.0, 220.0) + rng.normal(0.0, 15.0, size=(canvas, canvas))
        _over(image, occluded.astype(np.float64), texture)
    image += rng.normal(0.0, _NOISE, size=(canvas, canvas))
    return Figure(np.rint(image).clip(0, 255).astype(np.uint8), points, occluded)


def _render_split(rng: np.random.Generator, count: int, settings: FigureSettings) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((count, 1, settings.canvas, settings.canvas), dtype=np.uint8)
    targets = np.zeros((count, len(KEYPOINTS), 3), dtype=np.float32)
    for i in range(count):
        figure = render_figure(rng, settings)
        images[i, 0] = figure.image
        targets[i] = keypoint_targets(figure.points, figure.occluded, settings.canvas)
    return images, targets


def generate_figures(settings: FigureSettings) -> dict[str, np.ndarray]:
    """The figures of ``settings``: ``x_train``/``x_test`` ``uint8`` ``(N, 1, S, S)`` and ``y_train``/``y_test``
    float32 ``(N, K, 3)``, each split drawn by its own generator spawned from ``settings.seed``.

    Raises:
        ResourceLimitError: the figures would exceed ``LEARNLOSS_MAX_BYTES``.
    """
    count = settings.n_train + settings.n_test
    check_bytes(count * (settings.canvas**2 + 12 * len(KEYPOINTS)),
                f"figures: {count} figures of {settings.canvas}x{settings.canvas} pixels")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(settings.seed).spawn(2))
    x_train, y_train = _render_split(train_rng, settings.n_train, settings)
    x_test, y_test = _render_split(test_rng, settings.n_test, settings)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _valid(settings: FigureSettings) -> Callable[[Mapping[str, np.ndarray]], bool]:
    def valid(arrays: Mapping[str, np.ndarray]) -> bool:
        side, k = settings.canvas, len(KEYPOINTS)
        shapes = {
            "x_train": ((settings.n_train, 1, side, side), np.uint8),
            "y_train": ((settings.n_train, k, 3), np.float32),
            "x_test": ((settings.n_test, 1, side, side), np.uint8),
            "y_test": ((settings.n_test, k, 3), np.float32),
        }
        return set(arrays) == set(shapes) and all(
            arrays[key].shape == shape and arrays[key].dtype == dtype for key, (shape, dtype) in shapes.items()
        )

    return valid


def load_figures(settings: FigureSettings, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """The figures of ``settings`` as a :class:`Dataset` (``task="keypoints"``, ``classes`` :data:`KEYPOINTS`, no
    augmentation), from the cache in ``data_dir`` (see the module docstring) when it holds them, else generated and
    cached.

    Raises:
        ResourceLimitError: the figures would exceed ``LEARNLOSS_MAX_BYTES``.
    """
    text, _ = settings_key(settings, FORMAT_VERSION)
    arrays = cached_arrays(settings.cache_file(data_dir), text, lambda: generate_figures(settings), _valid(settings))
    return Dataset(
        "figures",
        torch.from_numpy(arrays["x_train"]),
        torch.from_numpy(arrays["y_train"]),
        torch.from_numpy(arrays["x_test"]),
        torch.from_numpy(arrays["y_test"]),
        list(KEYPOINTS),
        AugmentSpec(),  # no crop, no flip: they would move keypoints without moving their targets
        task="keypoints",
    )


def make_figures(
    n_train: int = 4000,
    n_test: int = 1000,
    canvas: int = 64,
    height: tuple[float, float] = (0.45, 0.9),
    rotation: float = 30.0,
    occlusion: float = 0.5,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Stick figures with keypoint targets: :func:`load_figures` of the :class:`FigureSettings` these arguments
    give.

    Raises:
        UsageError: a setting is out of range.
    """
    settings = FigureSettings(n_train, n_test, canvas, height, rotation, occlusion, seed)
    return load_figures(settings, data_dir)
