"""Tiny ImageNet (the CS231n 200-class, 64x64 subset of ImageNet).

Layout of ``tiny-imagenet-200/``: ``wnids.txt`` (one WordNet id per class), ``train/<wnid>/images/*.JPEG`` and
``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (tab-separated file name and wnid). The unlabelled
``test/`` folder is ignored: the validation split serves as the test split. Classes are named by their wnids.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.images import list_images, read_images
from learnloss.data.limits import check_classes
from learnloss.errors import DatasetFormatError

__all__ = ["load_tiny_imagenet"]

SIZE = (64, 64)
AUGMENT = AugmentSpec(pad=8, flip=True)
_REFERENCE = "Tiny ImageNet images are"


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc})") from exc


def load_tiny_imagenet(paths: dict[str, Path]) -> Dataset:
    """Tiny ImageNet from its extracted folder (``paths`` keyed by ``wnids.txt``, ``train`` and
    ``val/val_annotations.txt``), as ``uint8`` RGB images ``(N, 3, 64, 64)``.

    Raises:
        DatasetFormatError: a list is unreadable or malformed, or an image is (see :func:`read_images`).
        ResourceLimitError: ``wnids.txt`` names more than ``LEARNLOSS_MAX_CLASSES`` classes, or the images exceed
            the limits :func:`read_images` checks before decoding.
    """
    wnids = _read_lines(paths["wnids.txt"])
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetFormatError(f"{paths['wnids.txt']}: expected one distinct class id per line")
    check_classes(len(wnids), str(paths["wnids.txt"]))
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_files: list[Path] = []
    train_labels: list[int] = []
    for wnid, label in index.items():
        files = list_images(paths["train"] / wnid / "images")
        if not files:
            raise DatasetFormatError(f"{paths['train'] / wnid / 'images'}: no training images for class {wnid}")
        train_files += files
        train_labels += [label] * len(files)
    annotations = paths["val/val_annotations.txt"]
    test_files: list[Path] = []
    test_labels: list[int] = []
    for number, line in enumerate(_read_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetFormatError(
                f"{annotations}, line {number}: expected '<file>\\t<wnid>...' with a wnid of wnids.txt, got {line!r}"
            )
        test_files.append(annotations.parent / "images" / fields[0])
        test_labels.append(index[fields[1]])
    return Dataset(
        "tiny-imagenet",
        torch.from_numpy(read_images(train_files, "RGB", SIZE, _REFERENCE)),
        torch.tensor(train_labels),
        torch.from_numpy(read_images(test_files, "RGB", SIZE, _REFERENCE)),
        torch.tensor(test_labels),
        wnids,
        AUGMENT,
    )
