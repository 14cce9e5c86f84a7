"""Inputs read on demand: an :class:`ArraySource` stands in for a tensor too large to hold.

A :class:`~learnloss.data.dataset.Dataset` holds each split's inputs either as a tensor or as an array source: an
object with a tensor's ``shape``, ``dtype``, ``device``, ``dim()``, ``numel()`` and ``len()`` whose indexing
(``x[rows]`` with an integer tensor, array or list, ``x[i]``, ``x[a:b]``) reads only those rows and returns them
as a new CPU tensor. Everything that reads inputs by rows — batches, channel statistics, the data fingerprint,
the semi-supervised stage — therefore works on both; what needs every input at once calls :func:`materialize`,
which checks the memory it takes first.

Two sources ship: :class:`~learnloss.data.memmap.MemmapSource` (a memory-mapped ``.npy`` file, ``--dataset npy``)
and :class:`~learnloss.data.image_source.ImageSource` (image files decoded per batch, with a bounded cache and a
thread pool; a labeling project's images).
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from learnloss.data.limits import check_bytes

__all__ = ["ArraySource", "Inputs", "materialize", "row_index"]

_INT_KINDS = "iu"


def row_index(index: object, length: int) -> np.ndarray | slice:
    """``index`` (an int, a slice, or a 1-D integer or boolean tensor, array or list) as rows of an array of
    ``length`` rows: a ``slice`` with non-negative bounds, or an ``int64`` array of rows in ``0 .. length - 1``.

    Raises:
        IndexError: a row is out of range, or the index has another type or shape.
    """
    if isinstance(index, slice):
        return slice(*index.indices(length))
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        row = operator.index(index)
        if not -length <= row < length:
            raise IndexError(f"row {row} is out of range for {length} rows")
        return np.array([row % length], dtype=np.int64)
    if isinstance(index, torch.Tensor):
        array = index.detach().cpu().numpy()
    elif isinstance(index, (np.ndarray, Sequence)):
        array = np.asarray(index)
    else:
        raise IndexError(f"cannot index rows with a {type(index).__name__}; use an int, a slice or integer rows")
    if array.dtype == np.bool_:
        if array.shape != (length,):
            raise IndexError(f"a boolean mask of shape {array.shape} does not fit {length} rows")
        return np.flatnonzero(array).astype(np.int64)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype.kind not in _INT_KINDS:
        raise IndexError(f"rows must be a 1-D integer index, got {array.dtype} of shape {array.shape}")
    rows = array.astype(np.int64, copy=False)
    low, high = int(rows.min()), int(rows.max())
    if low < -length or high >= length:
        raise IndexError(f"rows {low}..{high} are out of range for {length} rows")
    return np.where(rows < 0, rows + length, rows) if low < 0 else rows


class ArraySource(ABC):
    """Rows of an array that stays where it is (a file, a folder of images) and is read on demand.

    Subclasses set :attr:`shape` (rows first, then the shape of one input, as the tensor the source stands for)
    and :attr:`dtype` (``torch.uint8`` or ``torch.float32``), and implement :meth:`read`. Indexing returns a new
    CPU tensor of the rows asked for, in the order asked for; nothing else is held but what a subclass caches.

    Attributes:
        stats_rows: how many rows :func:`~learnloss.data.dataset.channel_stats` reads at most: a source with more
            rows has its per-channel statistics estimated from that many evenly spaced rows (None: all rows).
    """

    shape: torch.Size
    dtype: torch.dtype
    stats_rows: int | None = None

    @abstractmethod
    def read(self, rows: np.ndarray) -> torch.Tensor:
        """The inputs of ``rows`` (an ``int64`` array of valid rows, possibly repeated or unsorted), as a CPU
        tensor of shape ``(len(rows), *shape[1:])`` in :attr:`dtype`."""

    def read_range(self, start: int, stop: int) -> torch.Tensor:
        """The inputs of rows ``start .. stop - 1`` (a subclass may read a range faster than a list of rows)."""
        return self.read(np.arange(start, stop, dtype=np.int64))

    def release(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Give back what the source holds between reads (resident pages, cached rows); reads still work after."""

    @property
    def device(self) -> torch.device:
        """Where the rows come out: always the CPU."""
        return torch.device("cpu")

    def dim(self) -> int:
        """Number of dimensions, rows included (as :meth:`torch.Tensor.dim`)."""
        return len(self.shape)

    def numel(self) -> int:
        """Number of values of all rows (as :meth:`torch.Tensor.numel`)."""
        return math.prod(self.shape)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row once read (in :attr:`dtype`)."""
        return math.prod(self.shape[1:]) * torch.empty(0, dtype=self.dtype).element_size()

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: object) -> torch.Tensor:
        rows = row_index(index, len(self))
        if isinstance(rows, slice):
            if rows.step == 1:
                return self.read_range(rows.start, max(rows.start, rows.stop))
            rows = np.arange(rows.start, rows.stop, rows.step, dtype=np.int64)
        return self.read(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"


Inputs = Union[torch.Tensor, ArraySource]
"""A split's inputs: a tensor in memory, or an :class:`ArraySource` read by rows."""


def materialize(x: Inputs, where: str) -> torch.Tensor:
    """``x`` as one tensor in memory: itself if it is one, else every row read, after checking against
    ``LEARNLOSS_MAX_BYTES`` that it fits (``where`` names it in the refusal).

    Raises:
        ResourceLimitError: the rows would take more memory than allowed.
    """
    if isinstance(x, torch.Tensor):
        return x
    check_bytes(len(x) * x.row_bytes, f"{where} ({len(x):,} inputs of shape {tuple(x.shape[1:])})")
    return x.read_range(0, len(x))
