"""Arrays saved with ``numpy.savez``: keys ``x_train, y_train, x_test, y_test`` and optionally ``classes``.

Inputs may be vectors ``(N, D)``, greyscale images ``(N, H, W)``, or images ``(N, C, H, W)`` or ``(N, H, W, C)``:
the latter is recognised when its last dimension is 1, 3 or 4 and the second one is larger than 4, and is
transposed to channels first. ``uint8`` inputs stay ``uint8`` (pixels 0..255); every other dtype becomes ``float32``.
Labels must be integers ``0..K-1``; ``K`` is the length of ``classes`` when given, else the largest label plus one.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.labels import to_labels
from learnloss.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["find_npz", "load_npz"]

KEYS = ("x_train", "y_train", "x_test", "y_test")


def find_npz(data_dir: str | os.PathLike[str] | None) -> Path:
    """The ``.npz`` file given by ``data_dir``: the file itself, or the only ``.npz`` in that folder.

    Raises:
        DatasetNotFoundError: nothing given, the path does not exist, or the folder holds no ``.npz``.
        DatasetFormatError: the folder holds several ``.npz`` files.
    """
    usage = f"pass --data-dir FILE.npz (or a folder holding exactly one .npz) with keys {', '.join(KEYS)}"
    if data_dir is None:
        raise DatasetNotFoundError(f"npz: no file given; {usage}")
    path = Path(data_dir).expanduser()
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.suffix.lower() == ".npz" and p.is_file())
        if len(candidates) > 1:
            raise DatasetFormatError(
                f"npz: {path} holds several .npz files ({', '.join(p.name for p in candidates)}); pass the one to use"
            )
        if not candidates:
            raise DatasetNotFoundError(f"npz: {path} holds no .npz file; {usage}")
        return candidates[0]
    if not path.is_file():
        raise DatasetNotFoundError(f"npz: {path} does not exist; {usage}")
    return path


def _inputs(x: np.ndarray, where: str) -> torch.Tensor:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetFormatError(f"{where}: inputs must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] > 4:
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim not in (2, 4):
        raise DatasetFormatError(
            f"{where}: inputs must have shape (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C), got {x.shape}"
        )
    x = np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)
    return torch.from_numpy(x)


def load_npz(data_dir: str | os.PathLike[str] | None) -> Dataset:
    """Load the arrays of the ``.npz`` file found by :func:`find_npz` (with ``allow_pickle=False``).

    Image inputs are augmented by padding an eighth of the smaller side, without flips; vectors are not augmented.

    Raises:
        DatasetNotFoundError: see :func:`find_npz`.
        DatasetFormatError: the file is unreadable, lacks a key, or holds arrays of unsupported shape or dtype.
    """
    path = find_npz(data_dir)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in KEYS if k not in archive.files]
            if missing:
                raise DatasetFormatError(
                    f"{path}: missing key(s) {', '.join(missing)}; found {', '.join(archive.files) or 'none'}; "
                    f"save with numpy.savez(file, x_train=..., y_train=..., x_test=..., y_test=..., [classes=...])"
                )
            arrays = {k: archive[k] for k in (*KEYS, "classes") if k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetFormatError(f"{path}: cannot read as a .npz file of plain arrays ({exc})") from exc
    names = arrays.get("classes")
    if names is not None and names.ndim != 1:
        raise DatasetFormatError(f"{path}: 'classes' must be a 1-D array of names, got shape {names.shape}")
    y_train = to_labels(arrays["y_train"], None if names is None else len(names), f"{path}: y_train")
    y_test = to_labels(arrays["y_test"], None if names is None else len(names), f"{path}: y_test")
    if names is not None:
        classes = [str(n) for n in names.tolist()]
    else:
        labels = torch.cat([y_train, y_test])
        classes = [str(k) for k in range(int(labels.max()) + 1 if len(labels) else 0)]
    x_train, x_test = _inputs(arrays["x_train"], f"{path}: x_train"), _inputs(arrays["x_test"], f"{path}: x_test")
    augment = AugmentSpec.for_unknown_images(*x_train.shape[2:]) if x_train.dim() == 4 else AugmentSpec()
    return Dataset("npz", x_train, y_train, x_test, y_test, classes, augment)
