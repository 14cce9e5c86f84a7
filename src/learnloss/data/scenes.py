"""Object-detection scenes composed from installed glyphs: a detection dataset that needs no annotation files.

Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019, Sec. 4.2) evaluates object detection on PASCAL VOC;
that needs tens of thousands of annotated photographs and a GPU. These scenes keep what matters to the method
(several objects of several classes per image, one loss per image summed over its objects) at a size that trains
on a CPU: each image is a ``canvas × canvas`` grey canvas (default 64 × 64, one channel) on which 1 to 4
(uniformly, by default) glyphs of the source dataset are placed at random positions and random sizes:

* ``fashion-mnist``: 28 × 28 Fashion-MNIST garments (the IDX files, found like the ``fashion-mnist`` dataset's:
  :mod:`learnloss.data.locate`), ten classes;
* ``digits``: scikit-learn's bundled 8 × 8 digits (offline, no files at all), ten classes.

Each glyph is resized to a square of side drawn uniformly from ``scale`` (default 12 to 32 pixels; bilinear,
antialiased when it shrinks, by :func:`torch.nn.functional.interpolate`) and composited by the per-pixel maximum,
so objects may overlap. When the glyph fits the canvas it lies wholly inside it; a glyph larger than the canvas is
cropped by it. The box of an object is the *tight* box of the glyph's non-zero pixels after resizing, placement and
clipping to the canvas; an object whose visible box is narrower or lower than :data:`MIN_BOX_PIXELS` is not drawn
and another glyph is tried (at most :data:`ATTEMPTS` times). Training scenes use only the source's training glyphs
and test scenes only its test glyphs, so no glyph of a test scene was ever seen in training.

Targets (``task="detection"``) are float32 ``(N, M, 5)``, one row ``(class, x0, y0, x1, y1)`` per object: ``class``
is the class index (a float), and the corners are pixel *edges* normalised by the canvas side (pixel ``i`` spans
``[i, i + 1)``, so a box over columns 10..19 of a 64-pixel canvas has ``x0 = 10/64``, ``x1 = 20/64``); ``M`` is the
most objects any scene of the dataset holds, and a scene with fewer has padding rows :data:`PAD_ROW`
``(-1, 0, 0, 0, 0)`` after its objects. There is no augmentation: a crop or a flip would move the objects without
moving their boxes.

Generation is seeded (a :class:`numpy.random.Generator` per split, spawned from ``seed``), so one seed gives
byte-identical scenes. A dataset is generated once and cached as an ``.npz`` file in the cache folder (the
``data_dir`` argument, else ``$LEARNLOSS_CACHE/scenes``, else ``~/.cache/learnloss/scenes``) whose name holds a
hash of every generation parameter (:meth:`SceneSettings.key`); it is written atomically and generated again when
it is damaged or does not hold what its name promises. The helpers of that cache (:func:`cache_folder`,
:func:`cached_arrays`) serve the keypoint figures (:mod:`learnloss.data.figures`) as well.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from learnloss.data.cache import cache_folder, cached_arrays, settings_key
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.digits import load_digits
from learnloss.data.idx import FASHION_MNIST_CLASSES, read_idx
from learnloss.data.labels import to_labels
from learnloss.data.limits import check_bytes
from learnloss.data.locate import require_files
from learnloss.data.sources import SOURCES
from learnloss.errors import DatasetFormatError, UsageError

__all__ = [
    "ATTEMPTS", "GLYPH_SOURCES", "MIN_BOX_PIXELS", "PAD_ROW", "SceneSettings", "generate_scenes", "load_scenes",
    "make_scenes", "pad_objects", "place_glyph", "render_scene",
]  # fmt: skip

GLYPH_SOURCES: dict[str, list[str]] = {
    "fashion-mnist": list(FASHION_MNIST_CLASSES),
    "digits": [str(d) for d in range(10)],
}
"""The glyph sources and their class names."""

MIN_BOX_PIXELS = 2
"""An object whose visible box is narrower or lower than this many pixels is not drawn."""

ATTEMPTS = 10
"""Glyphs tried per object before the scene is left with one object fewer."""

PAD_ROW = (-1.0, 0.0, 0.0, 0.0, 0.0)
"""The target row of no object (padding after a scene's objects)."""

FORMAT_VERSION = 1
"""Part of every cache key: raise it when generation changes, so old cache files are not taken for new ones."""

_NAMES = {"fashion-mnist": "scenes", "digits": "digit-scenes"}
_SPLITS = ("x_train", "y_train", "x_test", "y_test")


# --------------------------------------------------------------------------- the settings


def _pair(value: object, what: str) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value)
    ):
        raise UsageError(f"scenes: {what} must be two whole numbers (low, high), got {value!r}")
    low, high = int(value[0]), int(value[1])
    if low > high:
        raise UsageError(f"scenes: {what} ({low}, {high}) has its low end above its high end; give (low, high)")
    return low, high


def _whole(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise UsageError(f"scenes: {what} must be a whole number of at least {least}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SceneSettings:
    """Every parameter of a generated scenes dataset (see the module docstring); validated when built.

    Attributes:
        source: where the glyphs come from, one of :data:`GLYPH_SOURCES`.
        n_train: training scenes.
        n_test: test scenes (0 for none).
        canvas: side of the square canvas in pixels.
        objects: fewest and most objects per scene (inclusive, drawn uniformly).
        scale: smallest and largest side of a resized glyph in pixels (inclusive, drawn uniformly).
        seed: seed of the generators.

    Raises:
        UsageError: a setting is out of range (one line naming it).
    """

    source: str = "fashion-mnist"
    n_train: int = 4000
    n_test: int = 1000
    canvas: int = 64
    objects: tuple[int, int] = (1, 4)
    scale: tuple[int, int] = (12, 32)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in GLYPH_SOURCES:
            raise UsageError(f"scenes: unknown glyph source {self.source!r}; choose one of: "
                             f"{', '.join(sorted(GLYPH_SOURCES))}")
        set_ = object.__setattr__  # frozen: normalise the values once, here
        set_(self, "n_train", _whole(self.n_train, "n_train", 1))
        set_(self, "n_test", _whole(self.n_test, "n_test", 0))
        set_(self, "canvas", _whole(self.canvas, "canvas", 8))
        set_(self, "seed", _whole(self.seed, "seed", 0))
        objects, scale = _pair(self.objects, "objects"), _pair(self.scale, "scale")
        if objects[0] < 0 or objects[1] < 1:
            raise UsageError(f"scenes: objects {objects} must allow at least one object per scene, e.g. (1, 4)")
        if scale[0] < MIN_BOX_PIXELS:
            raise UsageError(f"scenes: scale {scale} must draw glyphs of at least {MIN_BOX_PIXELS} pixels")
        set_(self, "objects", objects)
        set_(self, "scale", scale)

    @property
    def name(self) -> str:
        """The dataset's name: ``scenes`` (Fashion-MNIST glyphs) or ``digit-scenes``."""
        return _NAMES[self.source]

    @property
    def classes(self) -> list[str]:
        """The object class names: the source's classes."""
        return list(GLYPH_SOURCES[self.source])

    def key(self) -> str:
        """16 hex digits identifying these settings (and :data:`FORMAT_VERSION`): part of the cache file's name."""
        return settings_key(self, FORMAT_VERSION)[1]

    def cache_file(self, data_dir: str | os.PathLike[str] | None = None) -> Path:
        """The cache file of these settings: ``<cache folder>/<name>-<key>.npz`` (:func:`cache_folder`)."""
        return cache_folder("scenes", data_dir) / f"{self.name}-{self.key()}.npz"


# --------------------------------------------------------------------------- drawing


def place_glyph(canvas: np.ndarray, glyph: np.ndarray, top: int, left: int) -> tuple[int, int, int, int] | None:
    """Composite ``glyph`` (``uint8`` ``(h, w)``) onto ``canvas`` (``uint8`` ``(H, W)``, changed in place) by the
    per-pixel maximum with its top-left pixel at row ``top``, column ``left`` (either may be negative: the canvas
    crops the glyph), and return the tight box of its visible non-zero pixels as pixel edges ``(x0, y0, x1, y1)``
    (columns ``x0 .. x1 - 1``, rows ``y0 .. y1 - 1``).

    Nothing is drawn and None is returned when that box is narrower or lower than :data:`MIN_BOX_PIXELS`.
    """
    height, width = canvas.shape
    r0, r1 = max(top, 0), min(top + glyph.shape[0], height)
    c0, c1 = max(left, 0), min(left + glyph.shape[1], width)
    if r0 >= r1 or c0 >= c1:
        return None
    part = glyph[r0 - top : r1 - top, c0 - left : c1 - left]
    rows, cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
    if rows.size == 0:
        return None
    box = (c0 + int(cols[0]), r0 + int(rows[0]), c0 + int(cols[-1]) + 1, r0 + int(rows[-1]) + 1)
    if box[2] - box[0] < MIN_BOX_PIXELS or box[3] - box[1] < MIN_BOX_PIXELS:
        return None
    np.maximum(canvas[r0:r1, c0:c1], part, out=canvas[r0:r1, c0:c1])
    return box


def _resize(glyph: np.ndarray, side: int) -> np.ndarray:
    """``glyph`` resized to ``side × side`` (bilinear, antialiased when shrinking), as ``uint8``."""
    if glyph.shape == (side, side):
        return glyph
    t = torch.from_numpy(np.ascontiguousarray(glyph, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()


def _offset(rng: np.random.Generator, side: int, canvas: int) -> int:
    """A uniform top (or left) position: the glyph lies wholly inside when it fits, else the canvas crops it."""
    low, high = min(0, canvas - side), max(0, canvas - side)
    return int(rng.integers(low, high + 1))


def render_scene(
    rng: np.random.Generator, glyphs: np.ndarray, labels: np.ndarray, settings: SceneSettings
) -> tuple[np.ndarray, np.ndarray]:
    """One scene drawn with ``rng``: a ``uint8`` canvas ``(canvas, canvas)`` and its objects as float32 rows
    ``(class, x0, y0, x1, y1)`` normalised by the canvas side, ``(n, 5)``.

    ``glyphs`` are ``uint8`` ``(G, h, w)`` with class indices ``labels`` ``(G,)``; the number of objects, each
    glyph, its side and its position are drawn in that order (see the module docstring).
    """
    side_px = settings.canvas
    image = np.zeros((side_px, side_px), dtype=np.uint8)
    rows: list[tuple[float, float, float, float, float]] = []
    for _ in range(int(rng.integers(settings.objects[0], settings.objects[1] + 1))):
        for _ in range(ATTEMPTS):
            index = int(rng.integers(len(glyphs)))
            side = int(rng.integers(settings.scale[0], settings.scale[1] + 1))
            top, left = _offset(rng, side, side_px), _offset(rng, side, side_px)
            box = place_glyph(image, _resize(glyphs[index], side), top, left)
            if box is not None:
                x0, y0, x1, y1 = box
                rows.append((float(labels[index]), x0 / side_px, y0 / side_px, x1 / side_px, y1 / side_px))
                break
    return image, np.array(rows, dtype=np.float32).reshape(-1, 5)


def _render_split(
    rng: np.random.Generator, glyphs: np.ndarray, labels: np.ndarray, count: int, settings: SceneSettings
) -> tuple[np.ndarray, list[np.ndarray]]:
    images = np.zeros((count, 1, settings.canvas, settings.canvas), dtype=np.uint8)
    objects = []
    for i in range(count):
        images[i, 0], rows = render_scene(rng, glyphs, labels, settings)
        objects.append(rows)
    return images, objects


def pad_objects(objects: list[np.ndarray], most: int | None = None) -> np.ndarray:
    """Detection targets float32 ``(N, M, 5)`` from each image's object rows ``(n_i, 5)``: the rows first, then
    :data:`PAD_ROW` up to ``M`` (``most``, by default the largest ``n_i``, at least 1).

    Raises:
        ValueError: an image has more than ``most`` objects.
    """
    most = max([1, *(len(rows) for rows in objects)]) if most is None else most
    out = np.tile(np.array(PAD_ROW, dtype=np.float32), (len(objects), most, 1))
    for i, rows in enumerate(objects):
        if len(rows) > most:
            raise ValueError(f"image {i} has {len(rows)} objects, more than the {most} rows of the targets")
        out[i, : len(rows)] = rows
    return out


def _check_glyphs(glyphs: np.ndarray, labels: np.ndarray, classes: int, split: str) -> None:
    if glyphs.ndim != 3 or glyphs.dtype != np.uint8 or len(glyphs) == 0 or labels.shape != (len(glyphs),):
        raise DatasetFormatError(
            f"scenes: {split} glyphs must be a non-empty uint8 array (G, h, w) with one label each, got "
            f"{glyphs.dtype} {glyphs.shape} and labels {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= classes:
        raise DatasetFormatError(f"scenes: {split} glyph labels must lie in 0..{classes - 1}, found "
                                 f"{labels.min()}..{labels.max()}")


def generate_scenes(
    settings: SceneSettings,
    train_glyphs: np.ndarray,
    train_labels: np.ndarray,
    test_glyphs: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, np.ndarray]:
    """Scenes of ``settings`` drawn from the given glyphs: ``x_train``/``x_test`` ``uint8`` ``(N, 1, S, S)`` and
    ``y_train``/``y_test`` float32 ``(N, M, 5)`` (the module docstring's format; ``M`` at least 1).

    Training scenes use only ``train_glyphs``, test scenes only ``test_glyphs`` (``uint8`` ``(G, h, w)``, labels
    ``(G,)`` in ``0 .. len(settings.classes) - 1``), each split with its own generator spawned from
    ``settings.seed``, so the training scenes do not depend on ``n_test``.

    Raises:
        DatasetFormatError: the glyphs or labels are not shaped as above.
        ResourceLimitError: the scenes would exceed ``LEARNLOSS_MAX_BYTES``.
    """
    n_classes = len(settings.classes)
    _check_glyphs(train_glyphs, train_labels, n_classes, "training")
    if settings.n_test:
        _check_glyphs(test_glyphs, test_labels, n_classes, "test")
    count = settings.n_train + settings.n_test
    check_bytes(count * (settings.canvas**2 + 2 * 20 * settings.objects[1]),
                f"scenes: {count} scenes of {settings.canvas}x{settings.canvas} pixels")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(settings.seed).spawn(2))
    x_train, train_objects = _render_split(train_rng, train_glyphs, train_labels, settings.n_train, settings)
    x_test, test_objects = _render_split(test_rng, test_glyphs, test_labels, settings.n_test, settings)
    most = max([1, *(len(rows) for rows in train_objects + test_objects)])
    return {"x_train": x_train, "y_train": pad_objects(train_objects, most),
            "x_test": x_test, "y_test": pad_objects(test_objects, most)}  # fmt: skip


# --------------------------------------------------------------------------- the glyph sources


def _fashion_glyphs(
    data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    files = require_files(SOURCES["fashion-mnist"], data_dir, download)
    out: list[np.ndarray] = []
    for images, labels in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                           ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):  # fmt: skip
        x = read_idx(files[images])
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DatasetFormatError(f"{files[images]}: expected uint8 images of shape (N, H, W), got {x.dtype} of "
                                     f"shape {x.shape}; replace it with the Fashion-MNIST images file")
        y = to_labels(read_idx(files[labels]), 10, str(files[labels])).numpy()
        if len(y) != len(x):
            raise DatasetFormatError(f"{files[images]} holds {len(x)} images but {files[labels]} holds {len(y)} "
                                     "labels; replace them with matching Fashion-MNIST files")
        out += [x, y]
    return out[0], out[1], out[2], out[3]


def _digit_glyphs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()  # its fixed stratified split: test scenes use only the test digits
    return (digits.x_train[:, 0].numpy(), digits.y_train.numpy(), digits.x_test[:, 0].numpy(),
            digits.y_test.numpy())  # fmt: skip


def _valid(settings: SceneSettings) -> Callable[[Mapping[str, np.ndarray]], bool]:
    def valid(arrays: Mapping[str, np.ndarray]) -> bool:
        if set(arrays) != set(_SPLITS):
            return False
        side = settings.canvas
        x_train, y_train, x_test, y_test = (arrays[key] for key in _SPLITS)
        return (
            x_train.dtype == x_test.dtype == np.uint8
            and y_train.dtype == y_test.dtype == np.float32
            and x_train.shape == (settings.n_train, 1, side, side)
            and x_test.shape == (settings.n_test, 1, side, side)
            and y_train.ndim == 3 and y_train.shape[0] == settings.n_train and y_train.shape[2] == 5
            and y_test.shape == (settings.n_test, *y_train.shape[1:])
        )  # fmt: skip

    return valid


def load_scenes(
    settings: SceneSettings, data_dir: str | os.PathLike[str] | None = None, download: bool = False
) -> Dataset:
    """The scenes of ``settings`` as a :class:`Dataset` (``task="detection"``, no augmentation), from the cache
    when it holds them, else generated and cached (see the module docstring).

    ``data_dir`` is the cache folder; the Fashion-MNIST files are searched there first too (then where the
    ``fashion-mnist`` dataset's are), and downloaded into it when ``download`` is true. They are read only when the
    scenes are not cached.

    Raises:
        DatasetNotFoundError: the Fashion-MNIST files are needed but missing (and not downloaded).
        DatasetFormatError: those files are malformed.
        ResourceLimitError: the scenes would exceed ``LEARNLOSS_MAX_BYTES``.
    """

    def generate() -> dict[str, np.ndarray]:
        glyphs = _fashion_glyphs(data_dir, download) if settings.source == "fashion-mnist" else _digit_glyphs()
        return generate_scenes(settings, *glyphs)

    text, _ = settings_key(settings, FORMAT_VERSION)
    arrays = cached_arrays(settings.cache_file(data_dir), text, generate, _valid(settings))
    return Dataset(
        settings.name,
        torch.from_numpy(arrays["x_train"]),
        torch.from_numpy(arrays["y_train"]),
        torch.from_numpy(arrays["x_test"]),
        torch.from_numpy(arrays["y_test"]),
        settings.classes,
        AugmentSpec(),  # no crop, no flip: they would move objects without moving their boxes
        task="detection",
    )


def make_scenes(
    source: str = "fashion-mnist",
    n_train: int = 4000,
    n_test: int = 1000,
    canvas: int = 64,
    objects: tuple[int, int] = (1, 4),
    scale: tuple[int, int] = (12, 32),
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Detection scenes of ``source`` glyphs (``"fashion-mnist"`` or ``"digits"``): :func:`load_scenes` of the
    :class:`SceneSettings` these arguments give.

    Raises:
        UsageError: a setting is out of range.
        DatasetNotFoundError: the Fashion-MNIST files are needed but missing (and not downloaded).
        DatasetFormatError: those files are malformed.
    """
    settings = SceneSettings(source, n_train, n_test, canvas, objects, scale, seed)
    return load_scenes(settings, data_dir, download)
