"""Test helpers for labeling projects of boxes and keypoints: tiny image folders with known boxes and keypoints, and
the COCO files that label them."""

from __future__ import annotations

import json
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("cat", "dog")
KEYPOINTS = ("head", "hand", "foot")
SKELETON = [("head", "hand"), ("hand", "foot")]
#: Settings that keep a query to a few seconds on 2 CPU cores.
TINY = {"epochs": 1, "image_size": 32, "batch_size": 8}


def box_images(root: Path, n_train: int = 24, n_test: int = 8, size: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Grey ``size`` × ``size`` PNGs under ``root/train`` and ``root/test``, one bright rectangle each. Returns one
    record per image, in order: ``path`` (relative to ``root``), ``split`` (``train``/``test``), the rectangle's class
    ``cls`` and ``bbox`` (COCO pixels ``[x, y, w, h]``), and ``points``: ``head`` at its top-left corner (visible),
    ``hand`` at its bottom-right corner (occluded), ``foot`` not labeled."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    records = []
    for split, count in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            x, y = (int(v) for v in rng.integers(0, size // 2, 2))
            w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
            cls = CLASSES[i % 2]
            pixels = np.zeros((size, size), np.uint8)
            pixels[y:y + h, x:x + w] = 220 if cls == "cat" else 120
            path = f"{split}/{i:03d}.png"
            Image.fromarray(pixels, mode="L").save(root / path)
            records.append({"path": path, "split": split, "cls": cls, "bbox": [x, y, w, h],
                            "points": {"head": [x, y, 2], "hand": [x + w, y + h, 1]}})
    return records


def coco_document(records: Sequence[dict[str, Any]], task: str, labeled: Container[str],
                  size: tuple[int, int] = (64, 64), category: str = "figure") -> dict[str, Any]:
    """COCO JSON listing every record's image (``size`` = width, height) and annotating those whose path is in
    ``labeled``."""
    images, annotations = [], []
    for n, record in enumerate(records, start=1):
        images.append({"id": n, "file_name": record["path"], "width": size[0], "height": size[1]})
        if record["path"] not in labeled:
            continue
        if task == "detection":
            annotations.append({"id": len(annotations) + 1, "image_id": n,
                                "category_id": CLASSES.index(record["cls"]) + 1, "bbox": record["bbox"],
                                "iscrowd": 0})
        else:
            flat: list[int] = []
            for name in KEYPOINTS:
                flat += record["points"].get(name, [0, 0, 0])
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": 1, "keypoints": flat,
                                "num_keypoints": 2, "iscrowd": 0})
    if task == "detection":
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    else:
        categories = [{"id": 1, "name": category, "keypoints": list(KEYPOINTS)}]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(path: Path, records: Sequence[dict[str, Any]], task: str, labeled: Container[str],
               size: tuple[int, int] = (64, 64)) -> Path:
    path.write_text(json.dumps(coco_document(records, task, labeled, size)))
    return path


def seed_paths(records: Sequence[dict[str, Any]], pool: int = 8) -> set[str]:
    """The paths init labels: the first ``pool`` training images and every test image."""
    train = [r["path"] for r in records if r["split"] == "train"][:pool]
    return set(train) | {r["path"] for r in records if r["split"] == "test"}


def task_names(task: str) -> dict[str, Any]:
    """The names ``init_project`` needs for ``task``."""
    if task == "detection":
        return {"classes": list(CLASSES)}
    return {"keypoints": list(KEYPOINTS), "skeleton": SKELETON, "category": "figure"}


def ls_point(x: float, y: float, name: str, ident: str) -> dict:
    """A Label Studio keypoint region as the UI posts it (percent coordinates)."""
    return {"id": ident, "from_name": "label", "to_name": "image", "type": "keypointlabels",
            "value": {"x": x, "y": y, "width": 0.75, "keypointlabels": [name]}}


def ls_occluded(ident: str) -> dict:
    """The per-region ``occluded`` choice of the keypoint region ``ident``."""
    return {"id": ident, "from_name": "visibility", "to_name": "image", "type": "choices",
            "value": {"x": 0, "y": 0, "width": 0.75, "choices": ["occluded"]}}
