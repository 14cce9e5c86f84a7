"""COCO JSON's structure, read and checked in one place: the ``--dataset coco`` loader (:mod:`learnloss.data.coco`)
and a project's label import (:mod:`learnloss.project.importer`) both read a COCO file through :func:`read_coco`.

A COCO document is an object with ``images`` (``id``, ``file_name``, ``width``, ``height``), ``categories``
(``id``, ``name``, optionally ``keypoints``) and ``annotations`` (``image_id``, ``category_id``, ``iscrowd``, and
the ``bbox`` or ``keypoints`` each reader interprets). One set of rules holds for both readers
(https://cocodataset.org/#format-data): ids are integers (never booleans) and unique within their list; category
names are non-empty and unique (compared in Unicode NFC); an image's ``file_name`` is a relative path without
``..`` or backslashes, its ``width`` and ``height`` positive numbers of pixels (whole once rounded); an annotation
names an image and a category that the file lists (crowd regions too), and ``iscrowd`` is 0 or 1. The first flaw
is one :class:`~learnloss.errors.DatasetFormatError` line naming the image, category or annotation; nothing else is
interpreted here (boxes and keypoints are each reader's).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from learnloss.errors import DatasetFormatError

__all__ = ["CocoAnnotation", "CocoCategory", "CocoDocument", "CocoImage", "is_coco", "read_coco"]


@dataclass(frozen=True)
class CocoCategory:
    """One entry of ``categories``: its id, its name (stripped) and its keypoint names (empty for boxes)."""

    id: int
    name: str
    keypoints: tuple[str, ...]


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images``; ``raw`` is the entry as written (for fields a reader adds, e.g. ``no_objects``).
    ``width`` and ``height`` are as declared: tools that write fractional sizes are read in whole pixels (they
    round to at least 1); a loader that decodes by the declared size asks for integers itself."""

    id: int
    file_name: str
    width: float
    height: float
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class CocoAnnotation:
    """One entry of ``annotations``: what names it in messages (``annotation 7 (image 1)``), the image and category
    it refers to (both listed in the file), whether it is a crowd region, and the entry as written."""

    label: str
    image_id: int
    category_id: int
    crowd: bool
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class CocoDocument:
    """A checked COCO document: categories sorted by id, images and annotations in file order."""

    categories: list[CocoCategory]
    images: list[CocoImage]
    annotations: list[CocoAnnotation]


def is_coco(document: Any) -> bool:
    """Whether ``document`` is meant as COCO JSON: an object with ``images`` and ``annotations``."""
    return isinstance(document, dict) and "images" in document and "annotations" in document


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _safe_relative(name: object) -> bool:
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and path.name not in ("", ".")


def _list(at: str, data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise DatasetFormatError(f"{at}no {key!r} list at the top level; is this a COCO annotation file?")
    return value


def _categories(at: str, entries: list[Any]) -> list[CocoCategory]:
    found: dict[int, CocoCategory] = {}
    names: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise DatasetFormatError(f"{at}category {number}: needs an integer 'id'; give each category one")
        where = f"{at}category {entry['id']}"
        name, keypoints = entry.get("name"), entry.get("keypoints", [])
        if not isinstance(name, str) or not name.strip():
            raise DatasetFormatError(f"{where}: needs a non-empty 'name'; name the category")
        if not isinstance(keypoints, list) or not all(isinstance(k, str) and k for k in keypoints):
            raise DatasetFormatError(f"{where}: 'keypoints' must be a list of keypoint names")
        if len(set(keypoints)) != len(keypoints):
            raise DatasetFormatError(f"{where}: 'keypoints' names a keypoint twice; give each keypoint once")
        if entry["id"] in found:
            raise DatasetFormatError(f"{where}: the id appears twice in 'categories'; give each category its own id")
        key = unicodedata.normalize("NFC", name.strip())
        if key in names:
            raise DatasetFormatError(f"{at}two categories are named {name.strip()!r}; give each category its own "
                                     "name")
        names[key] = entry["id"]
        found[entry["id"]] = CocoCategory(entry["id"], name.strip(), tuple(keypoints))
    return [found[i] for i in sorted(found)]


def _images(at: str, entries: list[Any]) -> list[CocoImage]:
    out: list[CocoImage] = []
    seen: set[int] = set()
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise DatasetFormatError(f"{at}image {number} of 'images': needs an integer 'id'; give each image one")
        where = f"{at}image {entry['id']}"
        if entry["id"] in seen:
            raise DatasetFormatError(f"{where}: the id appears twice in 'images'; give each image its own id")
        seen.add(entry["id"])
        if not _safe_relative(entry.get("file_name")):
            raise DatasetFormatError(f"{where}: 'file_name' {entry.get('file_name')!r} is not a relative path inside "
                                     "the images folder; write the file's name")
        for key in ("width", "height"):
            value = entry.get(key)
            if not _is_number(value) or round(value or 0) < 1:
                raise DatasetFormatError(f"{where}: '{key}' is {value!r}, not a positive whole number of pixels; "
                                         "write the image's size")
        out.append(CocoImage(entry["id"], entry["file_name"], entry["width"], entry["height"], entry))
    return out


def _annotations(at: str, entries: list[Any], images: set[int], categories: set[int]) -> list[CocoAnnotation]:
    out: list[CocoAnnotation] = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{at}annotation {number} of 'annotations' is not an object; fix the file")
        label = f"annotation {entry['id']}" if _is_int(entry.get("id")) else f"annotation {number} of 'annotations'"
        where = f"{at}{label}"
        image_id, category_id, crowd = entry.get("image_id"), entry.get("category_id"), entry.get("iscrowd", 0)
        if not _is_int(image_id) or image_id not in images:
            raise DatasetFormatError(f"{where}: 'image_id' {image_id!r} is not among the images; fix the id or add "
                                     "the image")
        if not _is_int(category_id) or category_id not in categories:
            raise DatasetFormatError(f"{where}: 'category_id' {category_id!r} is not among the categories; fix the "
                                     "id or add the category")
        if crowd not in (0, 1) or isinstance(crowd, (float, bool)):
            raise DatasetFormatError(f"{where}: 'iscrowd' is {crowd!r}; write 0 or 1")
        out.append(CocoAnnotation(f"{label} (image {image_id})", image_id, category_id, bool(crowd), entry))
    return out


def read_coco(document: Any, where: str = "") -> CocoDocument:
    """``document`` (parsed JSON) checked as COCO (see the module docstring); ``where`` (a file's path) starts
    every message.

    Raises:
        DatasetFormatError: the first flaw, in one line naming the image, category or annotation.
    """
    at = f"{where}: " if where else ""
    if not isinstance(document, dict):
        raise DatasetFormatError(f"{at}the top level is not a JSON object; is this a COCO annotation file?")
    categories = _categories(at, _list(at, document, "categories"))
    images = _images(at, _list(at, document, "images"))
    annotations = _annotations(at, _list(at, document, "annotations"), {i.id for i in images},
                               {c.id for c in categories})  # fmt: skip
    return CocoDocument(categories, images, annotations)
