"""A user's images, one subfolder per class.

Two layouts are accepted: ``DIR/train/<class>/*`` with ``DIR/test/<class>/*``, or ``DIR/<class>/*`` alone, which
is split 80/20 per class by a fixed stratified split. Images are found recursively by suffix, must all have one
size, and are loaded as greyscale if every one is greyscale, else as RGB. Class names are the sorted folder names.
Each header is checked against ``LEARNLOSS_MAX_IMAGE_PIXELS`` before anything is decoded, and the memory the decoded
set takes against ``LEARNLOSS_MAX_BYTES`` before it is allocated (:mod:`learnloss.data.limits`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.images import IMAGE_SUFFIXES, list_images, probe_images, read_images
from learnloss.data.limits import check_bytes
from learnloss.data.split import stratified_split
from learnloss.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["load_imagefolder"]

TEST_FRACTION = 0.2
SEED = 0
_LAYOUT = "DIR/<class>/<image> (split 80/20) or DIR/train/<class>/<image> and DIR/test/<class>/<image>"


def _scan(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetFormatError(f"imagefolder: {root} has no class subfolders; expected {_LAYOUT}")
    found = {name: list_images(root / name) for name in classes}
    for name, files in found.items():
        if not files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DatasetFormatError(f"imagefolder: class folder {root / name} holds no images ({suffixes})")
    return found


def _flatten(found: dict[str, list[Path]], classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files = [f for name in found for f in found[name]]
    labels = np.array([classes.index(name) for name in found for _ in found[name]], dtype=np.int64)
    return files, labels


def load_imagefolder(data_dir: str | os.PathLike[str] | None) -> Dataset:
    """Load the class-per-folder images under ``data_dir`` as ``uint8`` ``(N, C, H, W)``.

    Augmentation pads by an eighth of the smaller image side, without flips (the content is unknown).

    Raises:
        DatasetNotFoundError: ``data_dir`` is not given or is not a folder.
        DatasetFormatError: the layout is wrong, a class has no images, an image is unreadable or sizes differ.
        ResourceLimitError: an image declares too many pixels, or the images would take too much memory.
    """
    if data_dir is None:
        raise DatasetNotFoundError(f"imagefolder: no folder given; pass --data-dir DIR laid out as {_LAYOUT}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"imagefolder: {root} is not a folder; pass --data-dir DIR laid out as {_LAYOUT}")
    if (root / "train").is_dir() != (root / "test").is_dir():
        raise DatasetFormatError(f"imagefolder: {root} has only one of train/ and test/; expected {_LAYOUT}")
    if (root / "train").is_dir():
        train_found, test_found = _scan(root / "train"), _scan(root / "test")
        classes = list(train_found)
        extra = sorted(set(test_found) - set(classes))
        if extra:
            raise DatasetFormatError(
                f"imagefolder: {root / 'test'} has classes missing from {root / 'train'}: {', '.join(extra)}"
            )
        train_files, y_train = _flatten(train_found, classes)
        test_files, y_test = _flatten(test_found, classes)
    else:
        found = _scan(root)
        classes = list(found)
        files, labels = _flatten(found, classes)
        train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SEED)
        train_files, y_train = [files[i] for i in train_idx], labels[train_idx]
        test_files, y_test = [files[i] for i in test_idx], labels[test_idx]
    size, mode = probe_images(train_files + test_files)  # every header, before anything is decoded
    channels = 1 if mode == "L" else 3
    check_bytes((len(train_files) + len(test_files)) * channels * size[0] * size[1],
                f"imagefolder: {root} ({len(train_files) + len(test_files)} images of {size[0]}x{size[1]} pixels, "
                f"{channels} channel(s))")
    reference = f"{(train_files + test_files)[0]} is"
    x_train = torch.from_numpy(read_images(train_files, mode, size, reference))
    x_test = torch.from_numpy(read_images(test_files, mode, size, reference))
    augment = AugmentSpec.for_unknown_images(size[1], size[0])
    return Dataset(
        "imagefolder", x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test), classes, augment
    )
