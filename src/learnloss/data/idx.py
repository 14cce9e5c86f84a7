"""The IDX format of MNIST and Fashion-MNIST (raw or gzipped), and the loader built on it.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values in C order, big-endian.

The header is read and checked before any data: the bytes it declares must be what a raw file holds (or what a
gzip file of its size can hold at all: deflate expands at most 1032-fold) and fit ``LEARNLOSS_MAX_BYTES``, and
image dimensions must fit ``LEARNLOSS_MAX_IMAGE_PIXELS`` (:mod:`learnloss.data.limits`). The data is then read (and
decompressed) straight into the array it declares, a chunk at a time, so a file never takes more than that.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset, channel_stats
from learnloss.data.labels import to_labels
from learnloss.data.limits import CHUNK_BYTES, check_bytes, check_image_pixels, out_of_memory, rows_per_chunk
from learnloss.errors import DatasetFormatError, LearnLossError

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "load_idx_dataset", "read_idx"]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_ADVICE = "delete the file (it is downloaded again) or replace it with an intact copy"
_MAX_DEFLATE_RATIO = 1032  # the most a deflate stream can expand (258 bytes from a quarter of a byte)
_MAX_DIMS = 16  # numpy takes at most 64; IDX datasets have 1 to 4
_STATS_BYTES_PER_VALUE = 20  # channel_stats holds float32, float64 and its square of each value of a chunk


@dataclass(frozen=True)
class _Header:
    dims: tuple[int, ...]
    dtype: np.dtype
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * self.dtype.itemsize


def _open(path: Path, raw: IO[bytes]) -> tuple[IO[bytes], bool]:
    """``raw`` itself, or a gzip reader over it when the content starts with the gzip magic number."""
    gz = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    return (cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if gz else raw), gz


def _header(path: Path, f: IO[bytes], size: int, gz: bool) -> _Header:
    start = f.read(4)
    if len(start) < 4 or start[:2] != b"\0\0" or start[2] not in _TYPES:
        raise DatasetFormatError(
            f"{path}: not an IDX file (magic number 0x{start.hex() or 'empty'}, expected 0x0000 followed by a "
            f"type code in {{08, 09, 0b, 0c, 0d, 0e}} and the number of dimensions); {_ADVICE}"
        )
    ndim = start[3]
    if ndim > _MAX_DIMS:
        raise DatasetFormatError(f"{path}: IDX header announces {ndim} dimensions (IDX datasets have 1 to 4): it is "
                                 f"corrupt; {_ADVICE}")
    packed = f.read(4 * ndim)
    if len(packed) < 4 * ndim:
        raise DatasetFormatError(f"{path}: IDX header truncated ({4 + len(packed)} bytes); {_ADVICE}")
    header = _Header(struct.unpack(f">{ndim}I", packed), np.dtype(_TYPES[start[2]]), 4 + 4 * ndim)
    if not gz and size - header.offset != header.nbytes:
        raise DatasetFormatError(
            f"{path}: IDX header announces shape {header.dims} ({header.nbytes} bytes of data) but the file holds "
            f"{size - header.offset} bytes: it is truncated or corrupt; {_ADVICE}"
        )
    if gz and header.offset + header.nbytes > _MAX_DEFLATE_RATIO * size:
        raise DatasetFormatError(
            f"{path}: IDX header announces shape {header.dims} ({header.nbytes:,} bytes of data), more than a gzip "
            f"file of {size:,} bytes can hold: it is truncated or corrupt; {_ADVICE}"
        )
    return header


def _read_into(path: Path, f: IO[bytes], out: np.ndarray, header: _Header) -> None:
    """Fill ``out`` from ``f`` a chunk at a time; refuse a short or a long data part."""
    flat = out.reshape(-1).view(np.uint8)
    done = 0
    while done < len(flat):
        chunk = f.read(min(CHUNK_BYTES, len(flat) - done))
        if not chunk:
            break
        flat[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    extra = f.read(1)
    if done != len(flat) or extra:
        held = f"{done} bytes" if not extra else "more"
        raise DatasetFormatError(
            f"{path}: IDX header announces shape {header.dims} ({header.nbytes} bytes of data) but the file holds "
            f"{held}: it is truncated or corrupt; {_ADVICE}"
        )


def _declared(path: Path) -> _Header:
    """The checked header of ``path``, reading (decompressing) nothing beyond it."""
    try:
        with open(path, "rb") as raw:
            f, gz = _open(path, raw)
            return _header(path, f, os.fstat(raw.fileno()).st_size, gz)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: cannot read or decompress ({exc}); {_ADVICE}") from None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (detected from its content), into a native-endian array.

    The header is checked before any data is read (see the module docstring); the array is the only large
    allocation.

    Raises:
        DatasetFormatError: the file cannot be decompressed, has a bad magic number, or is truncated, or its header
            declares another size than the data has.
        ResourceLimitError: the declared array exceeds ``LEARNLOSS_MAX_BYTES`` (or memory ran out).
    """
    try:
        with open(path, "rb") as raw:
            f, gz = _open(path, raw)
            header = _header(path, f, os.fstat(raw.fileno()).st_size, gz)
            check_bytes(header.nbytes + CHUNK_BYTES, f"{path} (IDX array of shape {header.dims}, {header.dtype})")
            out = np.empty(header.dims, dtype=header.dtype)
            _read_into(path, f, out, header)
    except LearnLossError:
        raise
    except MemoryError:
        raise out_of_memory(str(path)) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: cannot read or decompress ({exc}); {_ADVICE}") from None
    if not out.dtype.isnative:
        out = out.byteswap(inplace=True).view(out.dtype.newbyteorder("="))
    return out


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


def _check_declared(paths: dict[str, Path]) -> None:
    """From the headers alone: image dimensions and what the four files take once loaded, against the limits."""
    held = 0
    for name, path in paths.items():
        header = _declared(path)
        if "images" in name:
            if len(header.dims) == 3:
                check_image_pixels(header.dims[2], header.dims[1], str(path))
            held += header.nbytes
        else:
            held += header.nbytes + 8 * math.prod(header.dims)  # the file's array, then int64 labels
    check_bytes(held + 2 * CHUNK_BYTES, f"the IDX files in {next(iter(paths.values())).parent}")


def load_idx_dataset(name: str, classes: list[str], augment: AugmentSpec, paths: dict[str, Path]) -> Dataset:
    """Build a :class:`Dataset` from the four MNIST-style IDX files (``paths`` keyed by their base names).

    Raises:
        DatasetFormatError: a file is not a valid IDX file, or images and labels do not match.
        ResourceLimitError: the files declare more than ``LEARNLOSS_MAX_BYTES`` or images beyond
            ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    _check_declared(paths)
    x_train, y_train = _split(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"], len(classes))
    x_test, y_test = _split(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"], len(classes))
    mean, std = None, None
    if len(x_train):  # an empty split is refused by Dataset
        chunk = rows_per_chunk(_STATS_BYTES_PER_VALUE * math.prod(x_train.shape[1:]))
        mean, std = channel_stats(x_train, chunk=chunk)
    return Dataset(name, x_train, y_train, x_test, y_test, list(classes), augment, mean, std)
