"""Pascal VOC detection annotations (one XML file per image) as a detection :class:`Dataset`.

The paper's detection experiments (Yoo & Kweon, CVPR 2019, Sec. 4.2) use PASCAL VOC 2007 and 2012. A VOC folder
(``VOCdevkit/VOC2007``, or a labeling tool's export such as LabelImg's) holds ``Annotations/<id>.xml`` and
``JPEGImages/<file>``, and optionally the split lists ``ImageSets/Main/<split>.txt`` (one id per line):

============================================ =================== ===================
``ImageSets/Main`` holds                      training split      test split
============================================ =================== ===================
``test.txt`` (VOC 2007 with its test set)     ``trainval.txt``    ``test.txt``
                                              (else ``train.txt``)
no ``test.txt`` (VOC 2012)                    ``train.txt``       ``val.txt``
no ``ImageSets/Main`` folder                  80% of the ids      the other 20%, a fixed seeded split
============================================ =================== ===================

``train=``/``test=`` name other lists. Class names are the sorted names found in the annotations of both splits
(for VOC itself: its 20 classes in their usual alphabetical order, :data:`VOC_CLASSES`), or the ``classes`` given.

Targets are float32 ``(N, M, 5)`` rows ``(class, x0, y0, x1, y1)`` padded with ``(-1, 0, 0, 0, 0)`` (the format of
:mod:`learnloss.data.scenes`). VOC's corners are 1-based pixel indices, both inclusive: ``xmin = 1`` is the first
column and ``xmax = width`` the last, so the box's pixel edges are ``xmin - 1`` and ``xmax``, normalised by the
width the annotation declares (``<size>``): ``x0 = (xmin - 1) / width``, ``x1 = xmax / width`` (rows alike).
Images are decoded and resized to ``image_size × image_size`` (bilinear; greyscale if every image is, else RGB);
normalised boxes survive the resize. Objects marked ``<difficult>1</difficult>`` are kept; the returned
:class:`AnnotatedDataset` flags them in ``difficult_train``/``difficult_test``, ``bool`` ``(N, M)`` parallel to the
targets (VOC's evaluation neither rewards nor penalises detections of them). There is no augmentation.

Annotation files are parsed with Python's expat parser, refusing any ``<!DOCTYPE>`` or ``<!ENTITY>`` declaration
(entities can expand to gigabytes or read other files): VOC files have none. Every flaw is one
:class:`~learnloss.errors.DatasetFormatError` line naming the file and, where it applies, the object (numbered from
1 in file order): malformed XML, a missing ``<size>``, an unknown class, a box outside the image or empty, a
missing image, or an image of another size than declared.

:func:`build_annotated` (shared with :mod:`learnloss.data.coco`) turns parsed annotations into the dataset.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.image_source import ImageSource
from learnloss.data.images import read_header, read_images
from learnloss.data.limits import check_bytes
from learnloss.data.scenes import pad_objects
from learnloss.data.source import Inputs
from learnloss.errors import DatasetFormatError, DatasetNotFoundError, UsageError

__all__ = [
    "VOC_CLASSES", "AnnotatedDataset", "AnnotatedImage", "build_annotated", "load_voc", "parse_xml", "random_split",
]  # fmt: skip

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
"""The 20 classes of PASCAL VOC, in the order sorted names give."""

TEST_FRACTION = 0.2
SEED = 0
_XML_EXPANSION = 20  # an element tree takes about this many times the bytes of its XML text
_LAYOUT = "a folder holding Annotations/<id>.xml and JPEGImages/ (e.g. VOCdevkit/VOC2007)"


# --------------------------------------------------------------------------- shared with the COCO loader


@dataclass(frozen=True)
class AnnotatedImage:
    """One image of an annotation file, parsed and checked.

    Attributes:
        id: the image's id in its annotation format (VOC: the file stem; COCO: the image id).
        path: the image file.
        size: ``(width, height)`` the annotation declares (the file must have it).
        rows: its targets, normalised: detection ``(n, 5)`` object rows, keypoints ``(K, 3)``.
        where: what names it in messages (its annotation file, and for COCO the image id).
        difficult: detection only: ``bool`` ``(n,)``, the objects marked difficult (None: none are).
    """

    id: str
    path: Path
    size: tuple[int, int]
    rows: np.ndarray
    where: str
    difficult: np.ndarray | None = None


@dataclass
class AnnotatedDataset(Dataset):
    """A :class:`Dataset` read from annotation files, with what ties its rows back to them.

    Attributes:
        ids_train: the image id of each training row (VOC: the file stem; COCO: the image id, as text).
        ids_test: the image id of each test row.
        difficult_train: detection: ``bool`` ``(N, M)`` parallel to ``y_train``, true for objects marked difficult
            (VOC's ``<difficult>``; padding rows are false); None for keypoints.
        difficult_test: the same for ``y_test``.
        skipped: annotations left out, counted by reason (e.g. COCO's ``crowd`` regions).
    """

    ids_train: list[str] = field(default_factory=list)
    ids_test: list[str] = field(default_factory=list)
    difficult_train: torch.Tensor | None = None
    difficult_test: torch.Tensor | None = None
    skipped: dict[str, int] = field(default_factory=dict)


def random_split(count: int, fraction: float = TEST_FRACTION, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of ``count`` items, each sorted: ``round(fraction * count)`` of them (at least one
    when there are two or more) drawn by a generator seeded with ``seed`` are the test split."""
    order = np.random.default_rng(seed).permutation(count)
    n_test = 0 if count < 2 else min(max(round(fraction * count), 1), count - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _check_sizes(images: Sequence[AnnotatedImage]) -> str:
    """Check from the headers that each image has the size its annotation declares; the mode to read them in."""
    grey = True
    for image in images:
        header = read_header(image.path)
        if header.size != image.size:
            raise DatasetFormatError(
                f"{image.where}: declares {image.path} as {image.size[0]}x{image.size[1]} pixels but the image is "
                f"{header.size[0]}x{header.size[1]}; correct the declared size or replace the image"
            )
        grey = grey and header.grey
    return "L" if grey else "RGB"


def _inputs(images: Sequence[AnnotatedImage], mode: str, side: int, lazy: bool) -> Inputs:
    channels = 1 if mode == "L" else 3
    if not images:
        return torch.zeros((0, channels, side, side), dtype=torch.uint8)
    paths = [image.path for image in images]
    if lazy:
        return ImageSource(paths, mode, (side, side), resize=True)
    return torch.from_numpy(read_images(paths, mode, (side, side), resize=True))


def build_annotated(
    name: str,
    task: str,
    classes: list[str],
    train: Sequence[AnnotatedImage],
    test: Sequence[AnnotatedImage],
    image_size: int,
    lazy: bool = False,
    skipped: dict[str, int] | None = None,
) -> AnnotatedDataset:
    """The :class:`AnnotatedDataset` of parsed images: every header is checked against its declared size first,
    then the images are decoded (``lazy``: when their rows are read, :class:`ImageSource`) at ``image_size`` square;
    ``task`` ``"detection"`` pads the object rows (:func:`~learnloss.data.scenes.pad_objects`, ``M`` the most objects
    of any image of both splits), ``"keypoints"`` stacks the ``(K, 3)`` rows.

    Raises:
        DatasetFormatError: an image is unreadable or has another size than declared.
        ResourceLimitError: an image declares too many pixels, or the images would take too much memory.
    """
    mode = _check_sizes([*train, *test])
    channels = 1 if mode == "L" else 3
    count = len(train) + len(test)
    if not lazy:
        check_bytes(count * channels * image_size * image_size,
                    f"{name}: {count} images of {image_size}x{image_size} pixels with {channels} channel(s)")
    flags: list[torch.Tensor | None] = [None, None]
    if task == "detection":
        most = max([1, *(len(image.rows) for image in [*train, *test])])
        targets = [torch.from_numpy(pad_objects([image.rows for image in split], most)) for split in (train, test)]
        for i, split in enumerate((train, test)):
            difficult = np.zeros((len(split), most), dtype=bool)
            for row, image in enumerate(split):
                if image.difficult is not None:
                    difficult[row, : len(image.difficult)] = image.difficult
            flags[i] = torch.from_numpy(difficult)
    else:
        width = len(classes)
        targets = [torch.from_numpy(np.stack([image.rows for image in split]).astype(np.float32, copy=False))
                   if split else torch.zeros((0, width, 3)) for split in (train, test)]  # fmt: skip
    return AnnotatedDataset(
        name,
        _inputs(train, mode, image_size, lazy),
        targets[0],
        _inputs(test, mode, image_size, lazy),
        targets[1],
        list(classes),
        AugmentSpec(),  # no crop, no flip: they would move objects without moving their targets
        task=task,
        ids_train=[image.id for image in train],
        ids_test=[image.id for image in test],
        difficult_train=flags[0],
        difficult_test=flags[1],
        skipped=dict(skipped or {}),
    )


# --------------------------------------------------------------------------- safe XML


class _Declaration(Exception):
    """A DOCTYPE or ENTITY declaration was met."""


def _refuse(*_: object) -> None:
    raise _Declaration


def parse_xml(path: Path) -> ET.Element:
    """The root element of the XML file ``path``, parsed by expat with every ``<!DOCTYPE>`` and ``<!ENTITY>``
    refused (so no entity is expanded and nothing outside the file is read).

    Raises:
        DatasetFormatError: the file is unreadable, is malformed XML, or declares a DOCTYPE or an entity.
        ResourceLimitError: its element tree would exceed ``LEARNLOSS_MAX_BYTES``.
    """
    try:
        check_bytes(_XML_EXPANSION * path.stat().st_size, f"{path} (XML annotation)")
        data = path.read_bytes()
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read the file ({error.strerror or error}); replace or remove "
                                 "it") from None
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        return builder.close()
    except _Declaration:
        raise DatasetFormatError(
            f"{path}: declares a <!DOCTYPE> or <!ENTITY> (line {parser.CurrentLineNumber}), refused because entities "
            "can expand without bound or read other files; remove the declaration (annotation files need none)"
        ) from None
    except expat.ExpatError as error:
        raise DatasetFormatError(f"{path}: malformed XML ({expat.ErrorString(error.code)}, line {error.lineno}, "
                                 f"column {error.offset}); fix or replace the file") from None


# --------------------------------------------------------------------------- VOC files


@dataclass(frozen=True)
class _VocObject:
    name: str
    corners: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax: 1-based, inclusive
    difficult: bool


@dataclass(frozen=True)
class _VocFile:
    id: str
    path: Path  # the XML file
    image: Path
    size: tuple[int, int]
    objects: list[_VocObject]


def _child_text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _size(root: ET.Element, path: Path) -> tuple[int, int]:
    size = root.find("size")
    texts = [None, None] if size is None else [_child_text(size, "width"), _child_text(size, "height")]
    if None in texts:
        raise DatasetFormatError(f"{path}: no <size> with <width> and <height>; add the image's size in pixels")
    values = []
    for tag, text in zip(("width", "height"), texts):
        try:
            value = float(str(text))
        except ValueError:
            value = math.nan
        if not (value.is_integer() and value > 0):
            raise DatasetFormatError(f"{path}: <size><{tag}> is {text!r}, not a positive whole number of pixels; "
                                     "write the image's size")
        values.append(int(value))
    return values[0], values[1]


def _object(element: ET.Element, number: int, path: Path, size: tuple[int, int]) -> _VocObject:
    name = _child_text(element, "name")
    what = f"{path}: object {number}" + (f" ({name!r})" if name else "")
    if not name:
        raise DatasetFormatError(f"{what}: no <name>; give the object's class name")
    difficult_text = _child_text(element, "difficult") or "0"
    if difficult_text not in ("0", "1"):
        raise DatasetFormatError(f"{what}: <difficult> is {difficult_text!r}; write 0 or 1")
    box = element.find("bndbox")
    if box is None:
        raise DatasetFormatError(f"{what}: no <bndbox>; give xmin, ymin, xmax, ymax")
    corners = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = _child_text(box, tag)
        try:
            value = float(str(text))
        except ValueError:
            value = math.nan
        if text is None or not math.isfinite(value):
            raise DatasetFormatError(f"{what}: <bndbox><{tag}> is {text!r}, not a number; give the corner in pixels")
        corners.append(value)
    xmin, ymin, xmax, ymax = corners
    width, height = size
    if xmin > xmax or ymin > ymax:
        raise DatasetFormatError(f"{what}: empty box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}); "
                                 "the corners need xmin <= xmax and ymin <= ymax: fix or remove the object")
    if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
        raise DatasetFormatError(
            f"{what}: box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}) reaches outside the "
            f"{width}x{height} image (VOC corners run from 1 to the width and height); fix or remove the object"
        )
    return _VocObject(name, (xmin, ymin, xmax, ymax), difficult_text == "1")


def _safe_name(name: str) -> bool:
    return bool(name) and Path(name).name == name and name not in (".", "..") and "\\" not in name


def _read_file(folder: Path, image_id: str, where: str) -> _VocFile:
    path = folder / "Annotations" / f"{image_id}.xml"
    if not path.is_file():
        raise DatasetFormatError(f"{where}: lists {image_id!r} but {path} does not exist; add the annotation or "
                                 "remove the id from the list")
    root = parse_xml(path)
    if root.tag != "annotation":
        raise DatasetFormatError(f"{path}: the root element is <{root.tag}>, not <annotation>; is this a VOC "
                                 "annotation file?")
    filename = _child_text(root, "filename") or f"{image_id}.jpg"
    if not _safe_name(filename):
        raise DatasetFormatError(f"{path}: <filename> {filename!r} is not a plain file name in JPEGImages/; write "
                                 "the image's file name only")
    image = folder / "JPEGImages" / filename
    if not image.is_file():
        raise DatasetFormatError(f"{path}: its image {image} does not exist; put the image there or remove the "
                                 "annotation")
    size = _size(root, path)
    objects = [_object(element, i, path, size) for i, element in enumerate(root.findall("object"), start=1)]
    return _VocFile(image_id, path, image, size, objects)


def _find_root(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is None:
        raise DatasetNotFoundError(f"voc: no folder given; pass --data-dir DIR, {_LAYOUT}")
    given = Path(data_dir).expanduser()
    if not given.is_dir():
        raise DatasetNotFoundError(f"voc: {given} is not a folder; pass --data-dir DIR, {_LAYOUT}")
    if (given / "Annotations").is_dir():
        return given
    found = sorted({p.parent for p in (*given.glob("*/Annotations"), *given.glob("*/*/Annotations")) if p.is_dir()})
    if len(found) > 1:
        raise DatasetFormatError(f"voc: {given} holds several VOC folders ({', '.join(map(str, found))}); pass the "
                                 "one to use")
    if not found:
        raise DatasetNotFoundError(f"voc: {given} holds no Annotations/ folder; pass --data-dir DIR, {_LAYOUT}")
    return found[0]


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{path}: cannot read the split list ({error}); replace it with one image id per "
                                 "line") from None
    ids = [line.split()[0] for line in lines if line.strip()]
    bad = next((i for i in ids if not _safe_name(i)), None)
    if bad is not None:
        raise DatasetFormatError(f"{path}: {bad!r} is not an image id (a file stem in Annotations/); write one id per "
                                 "line")
    return list(dict.fromkeys(ids))


def _splits(root: Path, train: str | None, test: str | None) -> tuple[list[str], list[str], str, str]:
    """The ids of the training and test splits, and what names each list in messages."""
    lists = root / "ImageSets" / "Main"
    if train is None and test is None and not lists.is_dir():
        stems = sorted(p.stem for p in (root / "Annotations").glob("*.xml") if p.is_file())
        if not stems:
            raise DatasetFormatError(f"voc: {root / 'Annotations'} holds no .xml files; expected {_LAYOUT}")
        train_idx, test_idx = random_split(len(stems))
        where = f"voc: {root / 'Annotations'}"
        return [stems[i] for i in train_idx], [stems[i] for i in test_idx], where, where
    if test is None:
        test = "test" if (lists / "test.txt").is_file() else "val"
    if train is None:
        train = "trainval" if test == "test" and (lists / "trainval.txt").is_file() else "train"
    paths = [lists / f"{train}.txt", lists / f"{test}.txt"]
    for path in paths:
        if not path.is_file():
            raise DatasetFormatError(f"voc: split list {path} does not exist; add it (one image id per line) or name "
                                     "existing lists with train=/test=")
    train_ids, test_ids = (_read_list(path) for path in paths)
    both = sorted(set(train_ids) & set(test_ids))
    if both:
        raise DatasetFormatError(f"voc: {len(both)} ids are in both {paths[0]} and {paths[1]} (e.g. {both[0]!r}); a "
                                 "test image must not be trained on: choose disjoint lists")
    return train_ids, test_ids, str(paths[0]), str(paths[1])


def _annotated(file: _VocFile, classes: dict[str, int]) -> AnnotatedImage:
    width, height = file.size
    rows = np.zeros((len(file.objects), 5), dtype=np.float32)
    for i, obj in enumerate(file.objects):
        if obj.name not in classes:
            raise DatasetFormatError(f"{file.path}: object {i + 1} ({obj.name!r}): unknown class; give it one of "
                                     f"the classes ({', '.join(classes)}) or add it to them")
        xmin, ymin, xmax, ymax = obj.corners
        rows[i] = (classes[obj.name], (xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height)
    difficult = np.array([obj.difficult for obj in file.objects], dtype=bool)
    return AnnotatedImage(file.id, file.image, file.size, rows, str(file.path), difficult)


def load_voc(
    data_dir: str | os.PathLike[str] | None,
    image_size: int = 128,
    classes: Sequence[str] | None = None,
    train: str | None = None,
    test: str | None = None,
    lazy: bool = False,
) -> AnnotatedDataset:
    """The VOC folder ``data_dir`` (or the one VOC folder within it, e.g. ``VOCdevkit``'s ``VOC2007``) as a
    detection dataset of ``image_size × image_size`` images (see the module docstring).

    ``classes`` fixes the class names and their order (an object of another class is refused); ``train``/``test``
    name split lists in ``ImageSets/Main`` (without ``.txt``); ``lazy`` decodes images when their rows are read
    (:class:`~learnloss.data.image_source.ImageSource`) rather than all at once.

    Raises:
        DatasetNotFoundError: no folder given, or it holds no ``Annotations/``.
        DatasetFormatError: a split list, annotation or image is missing or malformed (one line naming the file and
            the object).
        ResourceLimitError: an image declares too many pixels, or the images would take too much memory.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"voc: image_size must be a positive whole number of pixels, got {image_size!r}")
    root = _find_root(data_dir)
    train_ids, test_ids, train_where, test_where = _splits(root, train, test)
    train_files = [_read_file(root, image_id, train_where) for image_id in train_ids]
    test_files = [_read_file(root, image_id, test_where) for image_id in test_ids]
    if not train_files:
        raise DatasetFormatError(f"voc: the training split ({train_where}) lists no images; list some ids")
    names = sorted({obj.name for file in [*train_files, *test_files] for obj in file.objects})
    class_names = list(classes) if classes is not None else names
    if not class_names:
        raise DatasetFormatError(f"voc: the annotations in {root} hold no objects, so no classes; annotate objects or "
                                 "give the class names with classes=")
    if len(set(class_names)) != len(class_names):
        raise UsageError(f"voc: the classes {class_names} name a class twice; give each class once")
    index = {name: i for i, name in enumerate(class_names)}
    return build_annotated(
        "voc",
        "detection",
        class_names,
        [_annotated(file, index) for file in train_files],
        [_annotated(file, index) for file in test_files],
        image_size,
        lazy,
    )
