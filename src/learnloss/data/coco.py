"""COCO JSON annotations as a detection or keypoint :class:`Dataset`.

One COCO file describes a split: ``images`` (``id``, ``file_name``, ``width``, ``height``), ``categories`` (``id``,
``name``, and for keypoints the ``keypoints`` names) and ``annotations`` (``image_id``, ``category_id``,
``iscrowd``, ``bbox`` ``[x, y, w, h]`` in pixels, ``keypoints`` ``[x1, y1, v1, x2, …]``).

* **Detection** (``instances_*.json``): the classes are the category names in increasing ``category_id`` order,
  mapped to contiguous indices 0..C-1. Each image's objects become float32 rows ``(class, x0, y0, x1, y1)`` with
  ``x0 = x / width``, ``x1 = (x + w) / width`` (rows alike), padded to ``(N, M, 5)`` with ``(-1, 0, 0, 0, 0)`` (the
  format of :mod:`learnloss.data.scenes`). Crowd regions (``iscrowd: 1``) and boxes of no width or height are left
  out and counted in the dataset's ``skipped``. Images without objects are kept (all rows padding).
* **Keypoints** (``person_keypoints_*.json``; any file whose categories name ``keypoints``): the keypoint names of
  the one keypoint category become the classes, ``K`` of them, and the targets are float32 ``(N, K, 3)`` rows ``(x
  / width, y / height, v)`` with COCO's visibility ``v`` (0 not labeled, then ``x = y = 0``; 1 labeled but
  occluded; 2 visible). The model sees one figure per image: of an image's annotations, the one with the most
  labeled keypoints (the first in the file on a tie); the others are counted in ``skipped`` (``other figures``), and
  so are images with no labeled keypoint at all, which are left out.

``task=`` picks the kind (default: keypoints when a category names keypoints, else detection). Positions may lie
up to one pixel outside the image (rounding in real files) and are clipped to it; anything further is refused.

The test split comes from ``test_annotations``, else from the file beside the given one that names ``val`` where it
names ``train`` (``instances_train2017.json`` → ``instances_val2017.json``), else from a fixed seeded 80/20 split of
the given file's images. A file's images are searched in ``images`` (the argument; only for the given file), else in
the folder named after the file's last ``_`` part (``train2017``) beside the file or beside its folder (COCO's
``annotations/`` layout), else in ``images/`` beside the file, else beside the file itself: the first folder that
holds the first image is used. Images are decoded and resized to ``image_size × image_size`` (bilinear; greyscale
if every image is, else RGB); normalised targets survive the resize. There is no augmentation.

Before a file is parsed, ten times its size (what Python's objects take once it is loaded) is checked against
``LEARNLOSS_MAX_BYTES`` (:func:`~learnloss.data.limits.check_bytes`). Every flaw is one
:class:`~learnloss.errors.DatasetFormatError` line naming the file and the image or annotation: malformed JSON, a
missing or mistyped field, a duplicate id, a reference to an unknown image or category, a non-positive size, a box
or keypoint outside its image, a missing image file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.cocojson import CocoAnnotation, CocoCategory, read_coco
from learnloss.data.limits import check_bytes
from learnloss.data.voc import AnnotatedDataset, AnnotatedImage, build_annotated, random_split
from learnloss.errors import DatasetFormatError, DatasetNotFoundError, UsageError

__all__ = ["TASKS", "load_coco"]

TASKS = ("detection", "keypoints")
"""The kinds of target a COCO file can give."""

_JSON_EXPANSION = 10  # Python's objects of a parsed JSON file take about this many times its bytes
_TOLERANCE = 1.0  # pixels a position may lie outside its image before it is refused (it is clipped)
_USAGE = "pass the COCO annotation file (e.g. annotations/instances_train2017.json) as --data-dir"


# --------------------------------------------------------------------------- reading and checking the JSON


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _read_json(path: Path) -> Any:
    try:
        check_bytes(_JSON_EXPANSION * path.stat().st_size, f"{path} (COCO annotations, parsed)")
        text = path.read_bytes()
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read the file ({error.strerror or error}); replace it") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise DatasetFormatError(f"{path}: malformed JSON ({error.msg}, line {error.lineno}, column {error.colno}); "
                                 "fix or replace the file") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise DatasetFormatError(f"{path}: not valid JSON ({error}); fix or replace the file") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# the structure of the file is read and checked by the one COCO reader (learnloss.cocojson), shared with the label
# import of labeling projects; this module interprets its boxes and keypoints
_Category = CocoCategory
_Annotation = CocoAnnotation


@dataclass(frozen=True)
class _Image:
    """An image of the file, its size in whole pixels (what its decoded image must have)."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class _CocoFile:
    path: Path
    categories: list[_Category]  # sorted by id
    images: list[_Image]  # file order
    annotations: list[_Annotation]  # file order


def _parse(path: Path) -> _CocoFile:
    document = read_coco(_read_json(path), str(path))
    images = []
    for image in document.images:  # images are decoded and checked by their declared size: whole pixels only
        for key in ("width", "height"):
            value = getattr(image, key)
            if not isinstance(value, int):
                raise DatasetFormatError(f"{path}: image {image.id}: '{key}' is {value!r}, not a positive whole "
                                         "number of pixels; write the image's size")
        images.append(_Image(image.id, image.file_name, int(image.width), int(image.height)))
    return _CocoFile(path, document.categories, images, document.annotations)


# --------------------------------------------------------------------------- targets


def _clip(value: float, limit: int, what: str) -> float:
    if value < -_TOLERANCE or value > limit + _TOLERANCE:
        raise DatasetFormatError(what)
    return min(max(value, 0.0), float(limit))


def _box(path: Path, annotation: _Annotation, image: _Image) -> tuple[float, float, float, float] | None:
    """The box's pixel edges ``(x0, y0, x1, y1)`` clipped to the image, or None for a box of no width or height."""
    where = f"{path}: {annotation.label}"
    bbox = annotation.raw.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise DatasetFormatError(f"{where}: 'bbox' is {bbox!r}, not four numbers [x, y, width, height]; fix it")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise DatasetFormatError(f"{where}: 'bbox' {bbox} has a negative width or height; fix it")
    if w == 0 or h == 0:
        return None
    outside = (f"{where}: 'bbox' {bbox} reaches outside the {image.width}x{image.height} image; fix or remove the "
               "annotation")  # fmt: skip
    x0, x1 = _clip(x, image.width, outside), _clip(x + w, image.width, outside)
    y0, y1 = _clip(y, image.height, outside), _clip(y + h, image.height, outside)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _keypoints(path: Path, annotation: _Annotation, image: _Image, count: int) -> np.ndarray:
    """The annotation's keypoints as ``(K, 3)`` rows ``(x / width, y / height, v)``; unlabeled ones all zero."""
    where = f"{path}: {annotation.label}"
    values = annotation.raw.get("keypoints", [0] * (3 * count))
    if not isinstance(values, list) or len(values) != 3 * count or not all(_is_number(v) for v in values):
        raise DatasetFormatError(f"{where}: 'keypoints' must be {3 * count} numbers (x, y, v for each of the "
                                 f"{count} keypoints); fix it")
    out = np.zeros((count, 3), dtype=np.float32)
    for k in range(count):
        x, y, v = (float(values[3 * k + i]) for i in range(3))
        if v not in (0.0, 1.0, 2.0):
            raise DatasetFormatError(f"{where}: keypoint {k + 1} has visibility {values[3 * k + 2]!r}; write 0 (not "
                                     "labeled), 1 (occluded) or 2 (visible)")
        if v == 0:
            continue
        outside = (f"{where}: keypoint {k + 1} at ({x:g}, {y:g}) lies outside the {image.width}x{image.height} image; "
                   "fix it or mark it not labeled (v = 0)")  # fmt: skip
        out[k] = (_clip(x, image.width, outside) / image.width, _clip(y, image.height, outside) / image.height, v)
    return out


def _detection(coco: _CocoFile, skipped: dict[str, int]) -> list[tuple[_Image, np.ndarray]]:
    index = {category.id: i for i, category in enumerate(coco.categories)}
    objects: dict[int, list[tuple[float, ...]]] = {image.id: [] for image in coco.images}
    by_id = {image.id: image for image in coco.images}
    for annotation in coco.annotations:
        if annotation.crowd:
            skipped["crowd"] = skipped.get("crowd", 0) + 1
            continue
        image = by_id[annotation.image_id]
        box = _box(coco.path, annotation, image)
        if box is None:
            skipped["empty box"] = skipped.get("empty box", 0) + 1
            continue
        x0, y0, x1, y1 = box
        objects[image.id].append((index[annotation.category_id], x0 / image.width, y0 / image.height,
                                  x1 / image.width, y1 / image.height))  # fmt: skip
    return [(image, np.array(objects[image.id], dtype=np.float32).reshape(-1, 5)) for image in coco.images]


def _keypoint_category(coco: _CocoFile) -> _Category:
    found = [category for category in coco.categories if category.keypoints]
    if len(found) != 1:
        names = ", ".join(repr(c.name) for c in found) or "none"
        raise DatasetFormatError(f"{coco.path}: keypoint targets need exactly one category with 'keypoints', found "
                                 f"{names}; keep one, or load the file with task='detection'")
    return found[0]


def _figures(coco: _CocoFile, category: _Category, skipped: dict[str, int]) -> list[tuple[_Image, np.ndarray]]:
    best: dict[int, tuple[int, np.ndarray]] = {}
    by_id = {image.id: image for image in coco.images}
    for annotation in coco.annotations:
        if annotation.category_id != category.id:
            continue
        if annotation.crowd:
            skipped["crowd"] = skipped.get("crowd", 0) + 1
            continue
        rows = _keypoints(coco.path, annotation, by_id[annotation.image_id], len(category.keypoints))
        labeled = int((rows[:, 2] > 0).sum())
        if labeled == 0:
            skipped["figures without labeled keypoints"] = skipped.get("figures without labeled keypoints", 0) + 1
            continue
        if annotation.image_id in best:
            skipped["other figures"] = skipped.get("other figures", 0) + 1
            if labeled <= best[annotation.image_id][0]:
                continue
        best[annotation.image_id] = (labeled, rows)
    left_out = sum(1 for image in coco.images if image.id not in best)
    if left_out:
        skipped["images without labeled keypoints"] = left_out
    return [(image, best[image.id][1]) for image in coco.images if image.id in best]


# --------------------------------------------------------------------------- files and folders


def _find_file(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is None:
        raise DatasetNotFoundError(f"coco: no annotation file given; {_USAGE}")
    path = Path(data_dir).expanduser()
    if path.is_dir():
        found = sorted(p for folder in (path, path / "annotations") if folder.is_dir()
                       for p in folder.glob("*.json") if p.is_file())  # fmt: skip
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) if found else "no .json file"
            raise DatasetNotFoundError(f"coco: {path} holds {listed}; {_USAGE}")
        return found[0]
    if not path.is_file():
        raise DatasetNotFoundError(f"coco: {path} does not exist; {_USAGE}")
    return path


def _sibling(path: Path) -> Path | None:
    """The file that names ``val`` where ``path`` names ``train`` in its last ``_`` part, if it exists."""
    prefix, underscore, last = path.stem.rpartition("_")
    if "train" not in last:
        return None
    sibling = path.with_name(f"{prefix}{underscore}{last.replace('train', 'val')}{path.suffix}")
    return sibling if sibling.is_file() else None


def _image_folder(coco: _CocoFile, given: Path | None, images: Sequence[_Image]) -> Path:
    path = coco.path
    tag = path.stem.rpartition("_")[2] if "_" in path.stem else ""
    candidates: list[Path] = [given] if given is not None else []
    if tag:
        candidates += [path.parent / tag, path.parent.parent / tag, path.parent / "images" / tag]
    candidates += [path.parent / "images", path.parent]
    if not images:
        return candidates[0]
    for folder in dict.fromkeys(candidates):
        if (folder / images[0].file_name).is_file():
            return folder
    tried = ", ".join(str(folder) for folder in dict.fromkeys(candidates))
    raise DatasetNotFoundError(f"coco: image {images[0].file_name!r} of {path} is in none of: {tried}; pass the "
                               "folder holding the images (images=)")


def _annotated(coco: _CocoFile, targets: list[tuple[_Image, np.ndarray]], folder: Path) -> list[AnnotatedImage]:
    out = []
    for image, rows in targets:
        file = folder / image.file_name
        if not file.is_file():
            raise DatasetFormatError(f"{coco.path}: image {image.id}: {file} does not exist; put the image there or "
                                     "remove it from the file")
        out.append(AnnotatedImage(str(image.id), file, (image.width, image.height), rows,
                                  f"{coco.path}: image {image.id}"))  # fmt: skip
    return out


def _targets(coco: _CocoFile, task: str, skipped: dict[str, int]) -> tuple[list[str], list[tuple[_Image, np.ndarray]]]:
    if task == "detection":
        return [c.name for c in coco.categories], _detection(coco, skipped)
    category = _keypoint_category(coco)
    return list(category.keypoints), _figures(coco, category, skipped)


def load_coco(
    annotations: str | os.PathLike[str] | None,
    images: str | os.PathLike[str] | None = None,
    test_annotations: str | os.PathLike[str] | None = None,
    test_images: str | os.PathLike[str] | None = None,
    image_size: int = 128,
    task: str | None = None,
    lazy: bool = False,
) -> AnnotatedDataset:
    """The COCO annotation file ``annotations`` (or the one ``.json`` in that folder or its ``annotations/``) as a
    detection or keypoint dataset of ``image_size × image_size`` images (see the module docstring).

    ``images``/``test_images`` are the folders of each file's images (found beside the files when not given);
    ``test_annotations`` the test split's file (default: the ``val`` file beside a ``train`` one, else a fixed 80/20
    split); ``task`` ``"detection"`` or ``"keypoints"`` (default: from the categories); ``lazy`` decodes images when
    their rows are read (:class:`~learnloss.data.image_source.ImageSource`) rather than all at once. The dataset's
    ``skipped`` counts what was left out, by reason; ``ids_train``/``ids_test`` give each row's image id.

    Raises:
        UsageError: ``task`` or ``image_size`` is invalid.
        DatasetNotFoundError: the file or the images folder cannot be found.
        DatasetFormatError: a file is malformed, inconsistent, or names a missing image (one line naming the file
            and the image or annotation).
        ResourceLimitError: a file is too large to parse, an image declares too many pixels, or the images would
            take too much memory.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"coco: image_size must be a positive whole number of pixels, got {image_size!r}")
    if task is not None and task not in TASKS:
        raise UsageError(f"coco: unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    path = _find_file(annotations)
    coco = _parse(path)
    task = task or ("keypoints" if any(c.keypoints for c in coco.categories) else "detection")
    skipped: dict[str, int] = {}
    classes, targets = _targets(coco, task, skipped)
    test_path = Path(test_annotations).expanduser() if test_annotations is not None else _sibling(path)
    given = Path(images).expanduser() if images is not None else None
    if test_path is None:
        folder = _image_folder(coco, given, [image for image, _ in targets])
        train_idx, test_idx = random_split(len(targets))
        train = _annotated(coco, [targets[i] for i in train_idx], folder)
        test = _annotated(coco, [targets[i] for i in test_idx], folder)
    else:
        if not test_path.is_file():
            raise DatasetNotFoundError(f"coco: test annotation file {test_path} does not exist; pass an existing "
                                       "file")
        test_coco = _parse(test_path)
        test_classes, test_targets = _targets(test_coco, task, skipped)
        if test_classes != classes or [c.id for c in test_coco.categories] != [c.id for c in coco.categories]:
            raise DatasetFormatError(f"{test_path}: its categories differ from those of {path} (ids, names or "
                                     "keypoints); use files of one dataset")
        test_given = Path(test_images).expanduser() if test_images is not None else None
        if test_given is None and given is not None:
            tag = test_path.stem.rpartition("_")[2]
            test_given = given.parent / tag if tag and (given.parent / tag).is_dir() else None
        train = _annotated(coco, targets, _image_folder(coco, given, [image for image, _ in targets]))
        test = _annotated(test_coco, test_targets,
                          _image_folder(test_coco, test_given, [image for image, _ in test_targets]))  # fmt: skip
    if not train:
        raise DatasetFormatError(f"{path}: no image to train on is left (left out: {skipped or 'none'}); check the "
                                 "file")
    return build_annotated("coco", task, classes, train, test, image_size, lazy, skipped)
