"""The ``.npy`` header, read and checked before any data: shared by the ``.npz`` and ``.npy`` loaders.

A header is a few hundred bytes of text that declares the array's dtype, shape and order. It is read without
pickle, bounded in length, and checked here: plain numeric dtypes only (no objects, no structured arrays), input
shapes the loaders understand (:func:`input_layout`), image sizes within ``LEARNLOSS_MAX_IMAGE_PIXELS``.
``save`` is the hint each message ends with (how to write a file the loader reads).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from learnloss.data.limits import check_image_pixels
from learnloss.errors import DatasetFormatError

__all__ = [
    "MAX_HEADER", "NpyHeader", "check_dtype",
    "check_splits", "class_names", "input_layout", "read_exact", "read_npy_header",
]

MAX_HEADER = 10_000  # numpy's own bound on the text of a .npy header
_INPUT_KINDS = "buif"  # bool, unsigned, signed, float
_LABEL_KINDS = "buif"  # read, then refused with to_labels' message unless integer
_CLASS_KINDS = "USui"


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, and where the data starts (bytes from the start of the ``.npy``)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def read_exact(f: IO[bytes], n: int, what: str, where: str, save: str) -> bytes:
    """Exactly ``n`` bytes of ``f``; refused as truncated when it ends before."""
    data = f.read(n)
    if len(data) != n:
        raise DatasetFormatError(f"{where}: the {what} ends after {len(data)} of {n} bytes: the file is truncated "
                                 f"or corrupt; {save}")
    return data


def read_npy_header(f: IO[bytes], key: str, where: str, save: str) -> NpyHeader:
    """Read and check the header of the ``.npy`` data ``f`` is positioned at the start of (``key`` names it).

    Raises:
        DatasetFormatError: no numpy magic number, a format version only named fields need, an over-long or
            unreadable header, or an impossible shape.
    """
    start = read_exact(f, 8, f"{key} header", where, save)
    if start[:6] != b"\x93NUMPY":
        raise DatasetFormatError(f"{where}: {key} is not a .npy array (no numpy magic number); {save}")
    if start[6:8] not in (b"\x01\x00", b"\x02\x00"):
        raise DatasetFormatError(
            f"{where}: {key} uses .npy format version {start[6]}.{start[7]}, which only arrays of named fields "
            f"need; {save} with plain numeric arrays"
        )
    width = 2 if start[6] == 1 else 4
    length_field = read_exact(f, width, f"{key} header", where, save)
    length = int.from_bytes(length_field, "little")
    if length > MAX_HEADER:
        raise DatasetFormatError(f"{where}: {key} declares a .npy header of {length:,} bytes (numpy writes at "
                                 f"most a few hundred); the file is corrupt or crafted; {save}")
    text = read_exact(f, length, f"{key} header", where, save)
    buffer = io.BytesIO(start + length_field + text)
    version = npy_format.read_magic(buffer)
    reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    try:
        shape, fortran, dtype = reader(buffer, max_header_size=MAX_HEADER)
    except (ValueError, TypeError, SyntaxError, RecursionError, KeyError, OverflowError) as exc:
        raise DatasetFormatError(f"{where}: cannot read the .npy header of {key} ({exc}); {save}") from None
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise DatasetFormatError(f"{where}: {key} declares the impossible shape {shape}; {save}")
    return NpyHeader(tuple(shape), dtype, bool(fortran), 8 + width + length)


def check_dtype(key: str, dtype: np.dtype, shape: tuple[int, ...], where: str, save: str) -> None:
    """Refuse a dtype the array ``key`` cannot have: objects and structured arrays always; for inputs
    (``x_*``) anything but bool, integers and floats; for ``classes`` anything but a 1-D array of strings or
    integers; for labels anything but numbers (:func:`~learnloss.data.labels.to_labels` refuses the rest)."""
    if dtype.hasobject:
        raise DatasetFormatError(f"{where}: cannot read {key}: it holds Python objects (dtype object), which would "
                                 f"need pickle, never allowed here; {save} with plain numeric arrays")
    if dtype.names is not None or dtype.subdtype is not None:
        raise DatasetFormatError(f"{where}: cannot read {key}: it is a structured array (dtype {dtype}); {save} "
                                 f"with plain numeric arrays")
    if key.startswith("x_"):
        if dtype.kind == "c":
            raise DatasetFormatError(f"{where}: {key} holds complex numbers ({dtype}); inputs must be real: save the "
                                     "real part, the magnitude, or both as separate features")
        if dtype.kind not in _INPUT_KINDS:
            raise DatasetFormatError(f"{where}: {key}: inputs must be numeric (bool, integer or float), got dtype "
                                     f"{dtype}")
    elif key == "classes":
        if dtype.kind not in _CLASS_KINDS or len(shape) != 1:
            raise DatasetFormatError(f"{where}: 'classes' must be a 1-D array of names (strings or integers), got "
                                     f"{dtype} of shape {shape}")
    elif dtype.kind not in _LABEL_KINDS:
        raise DatasetFormatError(f"{where}: {key}: labels must be a 1-D array of integers 0..K-1, got dtype {dtype}")


def input_layout(key: str, shape: tuple[int, ...], where: str) -> tuple[tuple[int, ...], str]:
    """The shape of the input tensor of a stored array of ``shape``, and how the stored array maps onto it:
    ``'same'``, ``'grey'`` (``(N, H, W)``, a channel is added) or ``'hwc'`` (``(N, H, W, C)`` with ``C`` in 1, 3,
    4 and ``H`` above 4, transposed to channels first).

    Raises:
        DatasetFormatError: another number of dimensions, or inputs that hold no value.
        ResourceLimitError: an image larger than ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    final: tuple[int, ...]
    if len(shape) == 3:
        final, how = (shape[0], 1, shape[1], shape[2]), "grey"
    elif len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] > 4:
        final, how = (shape[0], shape[3], shape[1], shape[2]), "hwc"
    elif len(shape) in (2, 4):
        final, how = shape, "same"
    else:
        raise DatasetFormatError(
            f"{where}: {key}: inputs must have shape (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C), got {shape}"
        )
    if math.prod(final[1:]) == 0:
        raise DatasetFormatError(f"{where}: {key}: each input of shape {final[1:]} holds no value")
    if len(final) == 4:
        check_image_pixels(final[3], final[2], f"{where}: {key}")
    return final, how


def check_splits(headers: Mapping[str, NpyHeader], where: str, suffix: str = ""
                 ) -> dict[str, tuple[tuple[int, ...], str]]:
    """Check that both splits' inputs share one shape and that each split has a label per input, from the headers
    alone (``x_train``, ``y_train``, ``x_test``, ``y_test``; messages name them with ``suffix``, e.g. ``.npy``);
    return the input layouts of :func:`input_layout`.

    Raises:
        DatasetFormatError: the shapes differ, or a split's label count differs from its input count.
    """
    layouts = {k: input_layout(k, headers[k].shape, where) for k in ("x_train", "x_test")}
    train, test = layouts["x_train"][0][1:], layouts["x_test"][0][1:]
    if train != test:
        raise DatasetFormatError(f"{where}: x_train inputs have shape {train} but x_test inputs {test}; both splits "
                                 "must share one shape")
    for split in ("train", "test"):
        x, y = headers[f"x_{split}"], headers[f"y_{split}"]
        if y.shape[:1] and y.shape[0] != x.shape[0]:
            raise DatasetFormatError(f"{where}: x_{split}{suffix} holds {x.shape[0]} inputs but y_{split}{suffix} "
                                     f"{y.shape[0]} labels")
    return layouts


def class_names(names: np.ndarray, where: str) -> list[str]:
    """The class names of a ``classes`` array (strings, UTF-8 bytes or integers) as text."""
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    except UnicodeDecodeError:
        raise DatasetFormatError(f"{where}: 'classes' holds byte strings that are not UTF-8; save them as str") \
            from None
