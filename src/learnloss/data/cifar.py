"""The official python-pickle batches of CIFAR-10 and CIFAR-100 (Krizhevsky 2009).

Each batch is a dict with ``data``, an ``(N, 3072)`` uint8 array of 32x32 RGB images stored channel by channel,
and the labels (``labels`` in CIFAR-10, ``fine_labels`` in CIFAR-100); the meta file holds the class names.
Files are read with :func:`~learnloss.data.safe_pickle.load_pickle`, which refuses to run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.labels import to_labels
from learnloss.data.safe_pickle import load_pickle
from learnloss.errors import DatasetFormatError

__all__ = ["load_cifar10", "load_cifar100"]

AUGMENT = AugmentSpec(pad=4, flip=True)


def _read_dict(path: Path) -> dict[str, Any]:
    obj = load_pickle(path)
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _class_names(path: Path, key: str) -> list[str]:
    names = _read_dict(path).get(key)
    if not isinstance(names, list) or not names:
        raise DatasetFormatError(f"{path}: expected a non-empty list of class names under key {key!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _read_batches(paths: list[Path], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for path in paths:
        batch = _read_dict(path)
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DatasetFormatError(f"{path}: expected 'data' to be a uint8 array of shape (N, 3072), got {found}")
        if label_key not in batch:
            raise DatasetFormatError(f"{path}: no {label_key!r} entry; keys are {sorted(batch)}")
        labels = to_labels(batch[label_key], num_classes, str(path))
        if len(labels) != len(data):
            raise DatasetFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(labels)
    return torch.cat(xs), torch.cat(ys)


def _load(name: str, paths: dict[str, Path], train: list[str], test: str, keys: tuple[str, str, str]) -> Dataset:
    meta, names_key, label_key = keys
    classes = _class_names(paths[meta], names_key)
    x_train, y_train = _read_batches([paths[f] for f in train], label_key, len(classes))
    x_test, y_test = _read_batches([paths[test]], label_key, len(classes))
    return Dataset(name, x_train, y_train, x_test, y_test, classes, AUGMENT)


def load_cifar10(paths: dict[str, Path]) -> Dataset:
    """CIFAR-10 from ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` (``paths`` keyed by file name)."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _load("cifar10", paths, train, "test_batch", ("batches.meta", "label_names", "labels"))


def load_cifar100(paths: dict[str, Path]) -> Dataset:
    """CIFAR-100 with its 100 fine labels, from ``train``, ``test`` and ``meta`` (``paths`` keyed by file name)."""
    return _load("cifar100", paths, ["train"], "test", ("meta", "fine_label_names", "fine_labels"))
