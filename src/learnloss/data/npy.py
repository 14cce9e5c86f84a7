"""A folder of ``.npy`` files read through memory maps: pools larger than memory.

``--dataset npy --data-dir FOLDER`` reads ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy`` and
optionally ``classes.npy`` (as written by ``numpy.save``). The inputs are never loaded: each is a
:class:`~learnloss.data.memmap.MemmapSource` that reads the rows a batch needs, so scoring a pool of millions
keeps resident memory flat. Labels and class names are loaded (they are small).

What the files may hold is what the ``.npz`` loader accepts (:mod:`learnloss.data.npz`): inputs ``(N, D)``,
``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` of bool, integers or floats (``uint8`` stays ``uint8``,
everything else becomes ``float32`` as rows are read; float rows that are not finite are refused when read), labels
integers ``0..K-1``. Every header is read and checked before anything is mapped or loaded: dtype, shape, that the
file is exactly as large as the header says (a truncated file is refused instead of crashing the process when a
missing page is read), and that what is loaded — the labels, the class names, the chunk channel statistics read
at a time — fits ``LEARNLOSS_MAX_BYTES`` (:mod:`learnloss.data.limits`). Inputs must be stored in C order (rows
contiguous), which ``numpy.save`` writes unless given a Fortran-ordered array.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.labels import to_labels
from learnloss.data.limits import check_bytes, check_classes, out_of_memory, rows_per_chunk
from learnloss.data.memmap import RESIDENT_BYTES, MemmapSource
from learnloss.data.npyformat import NpyHeader, check_dtype, check_splits, class_names, read_npy_header
from learnloss.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["find_npy", "load_npy"]

KEYS = ("x_train", "y_train", "x_test", "y_test")
_SAVE = ("save each array with numpy.save(FOLDER/x_train.npy, ...) — x_train, y_train, x_test, y_test and optionally "
         "classes")
_STATS_BYTES_PER_VALUE = 20  # channel_stats holds float32, float64 and its square of each value of a chunk


def find_npy(data_dir: str | os.PathLike[str] | None) -> dict[str, Path]:
    """The ``.npy`` files of the folder ``data_dir``, by key (``classes`` only when present).

    Raises:
        DatasetNotFoundError: nothing given, the folder does not exist, or it lacks one of the four arrays.
    """
    usage = f"pass --data-dir FOLDER holding {', '.join(k + '.npy' for k in KEYS)} (and optionally classes.npy)"
    if data_dir is None:
        raise DatasetNotFoundError(f"npy: no folder given; {usage}")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"npy: {folder} is not a folder; {usage}")
    missing = [f"{k}.npy" for k in KEYS if not (folder / f"{k}.npy").is_file()]
    if missing:
        raise DatasetNotFoundError(f"npy: {folder} lacks {', '.join(missing)}; {usage}")
    keys = (*KEYS, "classes") if (folder / "classes.npy").is_file() else KEYS
    return {key: folder / f"{key}.npy" for key in keys}


def _header(path: Path, key: str) -> NpyHeader:
    where = str(path)
    try:
        with open(path, "rb") as handle:
            header = read_npy_header(handle, key, where, _SAVE)
        size = path.stat().st_size
    except OSError as error:
        raise DatasetFormatError(f"{where}: cannot read the file ({error.strerror or error})") from None
    check_dtype(key, header.dtype, header.shape, where, _SAVE)
    if size != header.offset + header.nbytes:
        raise DatasetFormatError(
            f"{where}: declares shape {header.shape} of {header.dtype} ({header.nbytes:,} bytes of data) but holds "
            f"{max(0, size - header.offset):,}: the file is truncated, corrupt or crafted; {_SAVE}"
        )
    if key.startswith("x_") and header.fortran and len(header.shape) > 1:
        raise DatasetFormatError(f"{where}: {key} is stored in Fortran order, so its rows are scattered through the "
                                 "file; save numpy.ascontiguousarray(x) instead")
    return header


def _load(path: Path) -> np.ndarray:
    """A small array (labels, class names) loaded whole, never with pickle."""
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except MemoryError:
        raise out_of_memory(str(path)) from None
    except (OSError, ValueError, EOFError) as error:
        raise DatasetFormatError(f"{path}: cannot read the array ({error}); {_SAVE}") from None


def load_npy(data_dir: str | os.PathLike[str] | None, resident_bytes: int = RESIDENT_BYTES) -> Dataset:
    """The arrays of the folder ``data_dir`` (:func:`find_npy`), inputs memory-mapped (see the module docstring).

    ``resident_bytes`` bounds the mapped pages reads keep resident (:class:`MemmapSource`). Image inputs are
    augmented by padding an eighth of the smaller side, without flips; vectors are not augmented. Channel
    statistics are exact up to 256 MiB of stored training inputs, estimated from evenly spaced rows beyond.

    Raises:
        DatasetNotFoundError: see :func:`find_npy`.
        DatasetFormatError: a file is unreadable, truncated, in Fortran order, or holds arrays of unsupported
            shape or dtype, or labels that are not integers ``0..K-1``.
        ResourceLimitError: the labels and class names would take more than ``LEARNLOSS_MAX_BYTES``, the classes
            exceed ``LEARNLOSS_MAX_CLASSES``, or an image exceeds ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    paths = find_npy(data_dir)
    folder = next(iter(paths.values())).parent
    headers = {key: _header(path, key) for key, path in paths.items()}
    layouts = check_splits(headers, str(folder), ".npy")
    train = layouts["x_train"][0][1:]
    if "classes" in headers:
        check_classes(headers["classes"].count, f"{paths['classes']}: classes")
    held = sum(headers[k].nbytes + 8 * headers[k].count for k in ("y_train", "y_test"))
    if "classes" in headers:
        held += 2 * headers["classes"].nbytes + 64 * headers["classes"].count  # the array, then Python strings
    stats_row = _STATS_BYTES_PER_VALUE * math.prod(train)
    held += min(headers["x_train"].shape[0], rows_per_chunk(stats_row)) * stats_row
    held += sum(min(resident_bytes, headers[k].nbytes) for k in ("x_train", "x_test"))  # mapped pages kept
    check_bytes(held, f"{folder} ({', '.join(f'{k} {headers[k].shape} {headers[k].dtype}' for k in KEYS)}; "
                      "inputs memory-mapped)")
    names = _load(paths["classes"]) if "classes" in paths else None
    num_classes = None if names is None else len(names)
    y_train = to_labels(_load(paths["y_train"]), num_classes, str(paths["y_train"]))
    y_test = to_labels(_load(paths["y_test"]), num_classes, str(paths["y_test"]))
    x_train, x_test = (
        MemmapSource(paths[k], headers[k].shape, headers[k].dtype, headers[k].offset, layouts[k][1],
                     where=str(paths[k]), resident_bytes=resident_bytes)
        for k in ("x_train", "x_test")
    )
    if names is not None:
        classes = class_names(names, str(paths["classes"]))
    else:
        top = max((int(y.max()) for y in (y_train, y_test) if len(y)), default=-1)
        classes = [str(k) for k in range(top + 1)]
    augment = AugmentSpec.for_unknown_images(*x_train.shape[2:]) if x_train.dim() == 4 else AugmentSpec()
    return Dataset("npy", x_train, y_train, x_test, y_test, classes, augment)
