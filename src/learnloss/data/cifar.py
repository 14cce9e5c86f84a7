"""The official python-pickle batches of CIFAR-10 and CIFAR-100 (Krizhevsky 2009).

Each batch is a dict with ``data``, an ``(N, 3072)`` uint8 array of 32x32 RGB images stored channel by channel,
and the labels (``labels`` in CIFAR-10, ``fine_labels`` in CIFAR-100); the meta file holds the class names.
Files are read with :func:`~learnloss.data.safe_pickle.load_pickle`, which refuses to run code and to inflate: every
file is scanned first, and what unpickling them all and the final tensors take is checked against
``LEARNLOSS_MAX_BYTES`` before any is unpickled. ``data`` must be a real ``numpy.ndarray`` (a list of rows, how a
tiny pickle repeats one row into many images, is refused), the labels a list or array of ``int`` of the same length,
and the class names at most ``LEARNLOSS_MAX_CLASSES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset, channel_stats
from learnloss.data.labels import to_labels
from learnloss.data.limits import check_bytes, check_classes, out_of_memory, rows_per_chunk
from learnloss.data.safe_pickle import PickleScan, load_pickle, scan_pickle
from learnloss.errors import DatasetFormatError

__all__ = ["load_cifar10", "load_cifar100"]

AUGMENT = AugmentSpec(pad=4, flip=True)
_IMAGE = (3, 32, 32)
_VALUES = 3 * 32 * 32
_STATS_BYTES_PER_VALUE = 20  # channel_stats holds float32, float64 and its square of each value of a chunk


def _read_dict(path: Path, scan: PickleScan | None = None) -> dict[str, Any]:
    obj = load_pickle(path, scan)
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    if not all(isinstance(k, (bytes, str)) for k in obj):
        raise DatasetFormatError(f"{path}: expected a dict with text keys such as 'data'; it is not a dataset batch")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _class_names(path: Path, key: str, scan: PickleScan) -> list[str]:
    names = _read_dict(path, scan).get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DatasetFormatError(f"{path}: expected a non-empty list of class names under key {key!r}")
    check_classes(len(names), str(path))
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError:
        raise DatasetFormatError(f"{path}: the class names under {key!r} are not UTF-8 text") from None


def _read_batch(path: Path, scan: PickleScan, label_key: str, num_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    batch = _read_dict(path, scan)
    data = batch.get("data")
    if type(data) is not np.ndarray or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _VALUES:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(f"{path}: expected 'data' to be a uint8 array of shape (N, 3072), got {found}")
    if label_key not in batch:
        raise DatasetFormatError(f"{path}: no {label_key!r} entry; keys are {sorted(batch)}")
    labels = batch[label_key]
    if not isinstance(labels, (list, np.ndarray)):
        raise DatasetFormatError(
            f"{path}: expected {label_key!r} to be a list of integers, got {type(labels).__name__}"
        )
    y = to_labels(labels, num_classes, str(path))
    if len(y) != len(data):
        raise DatasetFormatError(f"{path}: {len(data)} images but {len(y)} labels")
    return data, y


def _stack(parts: list[np.ndarray]) -> torch.Tensor:
    """The ``(N, 3072)`` arrays of ``parts`` as one ``(N, 3, 32, 32)`` tensor; ``parts`` is emptied as they are
    copied, so each batch is released once it is in."""
    out = np.empty((sum(len(p) for p in parts), *_IMAGE), dtype=np.uint8)
    flat, start = out.reshape(len(out), _VALUES), 0
    while parts:
        part = parts.pop(0)
        flat[start : start + len(part)] = part
        start += len(part)
    return torch.from_numpy(out)


def _load(name: str, paths: dict[str, Path], train: list[str], test: str, keys: tuple[str, str, str]) -> Dataset:
    meta, names_key, label_key = keys
    scans = {f: scan_pickle(paths[f]) for f in (meta, *train, test)}
    # the unpickled files plus the final tensors, which hold no more than the files' byte strings
    held = sum(s.footprint for s in scans.values()) + sum(scans[f].string_bytes for f in (*train, test))
    check_bytes(held, f"{name} files in {paths[test].parent}")
    try:
        classes = _class_names(paths[meta], names_key, scans[meta])
        splits = []
        for files in (train, [test]):
            batches = [_read_batch(paths[f], scans[f], label_key, len(classes)) for f in files]
            y = torch.cat([labels for _, labels in batches])
            images = [data for data, _ in batches]
            del batches
            splits.append((_stack(images), y))
        (x_train, y_train), (x_test, y_test) = splits
        mean, std = channel_stats(x_train, chunk=rows_per_chunk(_STATS_BYTES_PER_VALUE * _VALUES))
    except MemoryError:
        raise out_of_memory(f"{name} files in {paths[test].parent}") from None
    return Dataset(name, x_train, y_train, x_test, y_test, classes, AUGMENT, mean, std)


def load_cifar10(paths: dict[str, Path]) -> Dataset:
    """CIFAR-10 from ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` (``paths`` keyed by file name).

    Raises:
        DatasetFormatError: a file is not a valid batch (see the module docstring).
        ResourceLimitError: the files would take more than ``LEARNLOSS_MAX_BYTES``, or declare too many classes.
    """
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _load("cifar10", paths, train, "test_batch", ("batches.meta", "label_names", "labels"))


def load_cifar100(paths: dict[str, Path]) -> Dataset:
    """CIFAR-100 with its 100 fine labels, from ``train``, ``test`` and ``meta`` (``paths`` keyed by file name).

    Raises:
        DatasetFormatError: a file is not a valid batch (see the module docstring).
        ResourceLimitError: the files would take more than ``LEARNLOSS_MAX_BYTES``, or declare too many classes.
    """
    return _load("cifar100", paths, ["train"], "test", ("meta", "fine_label_names", "fine_labels"))
