"""The IDX format of MNIST and Fashion-MNIST (raw or gzipped), and the loader built on it.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.labels import to_labels
from learnloss.errors import DatasetFormatError

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "load_idx_dataset", "read_idx"]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_ADVICE = "delete the file (it is downloaded again) or replace it with an intact copy"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (detected from its content), into a native-endian array.

    Raises:
        DatasetFormatError: the file cannot be decompressed, has a bad magic number, or is truncated.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: cannot read or decompress ({exc}); {_ADVICE}") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _TYPES:
        raise DatasetFormatError(
            f"{path}: not an IDX file (magic number 0x{raw[:4].hex() or 'empty'}, expected 0x0000 followed by a "
            f"type code in {{08, 09, 0b, 0c, 0d, 0e}} and the number of dimensions); {_ADVICE}"
        )
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: IDX header truncated ({len(raw)} bytes); {_ADVICE}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX header announces shape {dims} ({expected} bytes of data) but the file holds "
            f"{len(raw) - header} bytes: it is truncated or corrupt; {_ADVICE}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _split(images: Path, labels: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(images)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DatasetFormatError(
            f"{images}: expected uint8 images of shape (N, H, W), got {x.dtype} of shape {x.shape}; is this a "
            f"labels file?"
        )
    y = to_labels(read_idx(labels), num_classes, str(labels))
    if len(y) != len(x):
        raise DatasetFormatError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return torch.from_numpy(x[:, None]), y


def load_idx_dataset(name: str, classes: list[str], augment: AugmentSpec, paths: dict[str, Path]) -> Dataset:
    """Build a :class:`Dataset` from the four MNIST-style IDX files (``paths`` keyed by their base names)."""
    x_train, y_train = _split(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"], len(classes))
    x_test, y_test = _split(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"], len(classes))
    return Dataset(name, x_train, y_train, x_test, y_test, list(classes), augment)
