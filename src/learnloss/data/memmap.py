"""A ``.npy`` file read through a memory map, a batch of rows at a time.

:class:`MemmapSource` maps the file read-only (``mmap``, the way ``np.load(path, mmap_mode="r")`` does, after the
header was checked by the caller) and answers ``x[rows]`` by copying just those rows out of the map — sorted, so
the pages are touched in file order — converting them to the input tensor's layout and dtype on the way. Before
it copies scattered rows (a query's random subset) it asks the kernel for all their pages at once
(``madvise(MADV_WILLNEED)``), so a pool that is not in the page cache is read with many requests in flight
instead of one page fault — and its read-around of pages no row needs — at a time.

Pages a read touches count towards the process's resident memory until the kernel reclaims them. So that scoring a
pool of millions keeps resident memory flat rather than growing towards the file's size, the source gives the pages
back (``madvise(MADV_DONTNEED)``: they stay in the page cache, and a later read maps them again from there) each
time its reads have touched about ``resident_bytes`` since the last time. On systems without ``madvise`` the kernel
is left to do it.

The file must not shrink while it is mapped (reading a page beyond its new end kills the process with ``SIGBUS``);
its size is checked against the header when it is opened.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.data.source import ArraySource
from learnloss.errors import DatasetFormatError

__all__ = ["RESIDENT_BYTES", "MemmapSource"]

RESIDENT_BYTES = 64 * 1024 * 1024
"""About how many bytes of mapped pages a :class:`MemmapSource` lets reads touch before it gives them back."""

_FAULT_AROUND = 64 * 1024  # what one page fault may map around the page it needs (Linux's fault_around_bytes)
_LAYOUTS = ("same", "grey", "hwc")


class MemmapSource(ArraySource):
    """The inputs of a ``.npy`` file, read through a read-only memory map.

    Args:
        path: the ``.npy`` file.
        stored_shape: the shape its header declares (rows first; C order).
        stored_dtype: the dtype its header declares (bool, integer or float; any byte order).
        offset: where the data starts in the file.
        layout: how the stored array maps onto the inputs: ``'same'``, ``'grey'`` (``(N, H, W)`` gets a channel)
            or ``'hwc'`` (``(N, H, W, C)`` becomes channels first), as
            :func:`~learnloss.data.npyformat.input_layout` decides.
        where: names the file in messages.
        resident_bytes: about how many bytes of mapped pages reads may touch before they are given back.
        stats_rows: rows channel statistics read at most (see :class:`ArraySource`); by default as many as hold
            256 MiB of stored data.

    Inputs stay ``uint8`` when stored as ``uint8``; every other dtype becomes ``float32`` (``bool`` as 0.0 / 1.0)
    when read, and float rows that are not finite in ``float32`` are refused then, naming the rows.

    Raises:
        DatasetFormatError: the file is not as large as its header says, or cannot be mapped.
    """

    def __init__(self, path: str | os.PathLike[str], stored_shape: tuple[int, ...], stored_dtype: np.dtype,
                 offset: int, layout: str = "same", where: str | None = None,
                 resident_bytes: int = RESIDENT_BYTES, stats_rows: int | None = None) -> None:
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
        self.path, self.where = Path(path), where or str(path)
        self.stored_shape, self.stored_dtype = tuple(int(n) for n in stored_shape), np.dtype(stored_dtype)
        self.offset, self.layout, self.resident_bytes = int(offset), layout, max(1, int(resident_bytes))
        final = self.stored_shape
        if layout == "grey":
            final = (final[0], 1, *final[1:])
        elif layout == "hwc":
            final = (final[0], final[3], final[1], final[2])
        self.shape = torch.Size(final)
        self.out_dtype = np.dtype(np.uint8) if self.stored_dtype == np.uint8 else np.dtype(np.float32)
        self.dtype = torch.uint8 if self.out_dtype == np.uint8 else torch.float32
        stored_row = int(np.prod(self.stored_shape[1:], dtype=np.int64)) * self.stored_dtype.itemsize
        self.stored_row_bytes = stored_row
        self.stats_rows = stats_rows if stats_rows is not None else max(1, (256 << 20) // max(1, stored_row))
        self._open()

    # ---------------------------------------------------------------------------------------------- the map

    def _open(self) -> None:
        nbytes = int(np.prod(self.stored_shape, dtype=np.int64)) * self.stored_dtype.itemsize
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()  # a batch read ahead in another thread accounts for its pages too
        self._touched, self._high = 0, 0
        self._low: int | None = None
        try:
            size = self.path.stat().st_size
            if size != self.offset + nbytes:
                raise DatasetFormatError(
                    f"{self.where}: declares shape {self.stored_shape} of {self.stored_dtype} ({nbytes:,} bytes of "
                    f"data) but holds {max(0, size - self.offset):,}: the file is truncated, corrupt or crafted"
                )
            if nbytes == 0:
                self._array = np.empty(self.stored_shape, dtype=self.stored_dtype)
                return
            with open(self.path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as error:
            raise DatasetFormatError(f"{self.where}: cannot map the file ({error.strerror or error})") from None
        self._array = np.ndarray(self.stored_shape, dtype=self.stored_dtype, buffer=self._map, offset=self.offset)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the map (another process maps the file again)."""
        state = dict(self.__dict__)
        for name in ("_map", "_array", "_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def close(self) -> None:
        """Unmap the file; reads fail afterwards."""
        self._array = np.empty((0, *self.stored_shape[1:]), dtype=self.stored_dtype)
        if self._map is not None:
            self._map.close()
            self._map = None

    def release(self) -> None:
        """Give back the mapped pages reads touched since the last release (they stay in the page cache)."""
        with self._lock:
            low, high = self._low, self._high
            self._touched, self._low, self._high = 0, None, 0
        if self._map is None or low is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = max(0, (low - _FAULT_AROUND) // page * page)
        stop = min(len(self._map), high + _FAULT_AROUND)
        if stop > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def _note(self, low_row: int, high_row: int, rows: int) -> None:
        """Account for a read of ``rows`` rows between ``low_row`` and ``high_row`` (inclusive)."""
        row = self.stored_row_bytes
        start, stop = self.offset + low_row * row, self.offset + (high_row + 1) * row
        contiguous = (high_row - low_row + 1) == rows
        with self._lock:
            self._low = start if self._low is None else min(self._low, start)
            self._high = max(self._high, stop)
            self._touched += (stop - start) if contiguous else rows * (row + _FAULT_AROUND)
            full = self._touched >= self.resident_bytes
        if full:
            self.release()

    def _will_need(self, rows: np.ndarray) -> None:
        """Ask the kernel to read the pages of scattered ``rows`` (sorted) now, all at once: a page fault reads
        one page at a time, with a read-around of many pages per row that a scattered read never uses."""
        if self._map is None or not hasattr(mmap, "MADV_WILLNEED"):
            return
        page = mmap.PAGESIZE
        starts = (self.offset + rows * self.stored_row_bytes) // page * page
        stops = self.offset + (rows + 1) * self.stored_row_bytes
        merged = np.flatnonzero(starts[1:] > stops[:-1])  # where a gap separates two runs of pages
        firsts = np.concatenate(([0], merged + 1))
        lasts = np.concatenate((merged, [len(rows) - 1]))
        size = len(self._map)
        for start, stop in zip(starts[firsts].tolist(), stops[lasts].tolist()):
            self._map.madvise(mmap.MADV_WILLNEED, start, min(stop, size) - start)

    # ---------------------------------------------------------------------------------------------- reads

    def _convert(self, part: np.ndarray, rows: np.ndarray, fresh: bool) -> torch.Tensor:
        """Stored rows ``part`` (of pool rows ``rows``) in the input layout and dtype; ``fresh``: ``part`` is a
        copy already (else a view of the map, which is copied)."""
        if fresh and self.layout == "same" and part.dtype == self.out_dtype:
            out = part
        else:
            out = np.empty((part.shape[0], *self.shape[1:]), dtype=self.out_dtype)
            dest = out[:, 0] if self.layout == "grey" else out.transpose(0, 2, 3, 1) if self.layout == "hwc" else out
            with np.errstate(over="ignore", invalid="ignore"):
                dest[...] = part
        if self.out_dtype == np.float32 and self.stored_dtype.kind == "f":
            finite = np.isfinite(out.reshape(out.shape[0], -1)).all(axis=1)
            if not finite.all():
                raise DatasetFormatError(
                    f"{self.where}: holds values that are not finite as float32 (NaN, infinity, or beyond ±3.4e38) "
                    f"in sample {int(rows[int(np.argmin(finite))])}; clean or rescale the data"
                )
        return torch.from_numpy(out)

    def read_range(self, start: int, stop: int) -> torch.Tensor:
        if stop <= start:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        out = self._convert(self._array[start:stop], np.arange(start, stop), fresh=False)
        self._note(start, stop - 1, stop - start)
        return out

    def read(self, rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        low, high = int(rows.min()), int(rows.max())
        if high - low + 1 == len(rows) and (len(rows) == 1 or bool((np.diff(rows) == 1).all())):
            return self.read_range(low, high + 1)
        order = np.argsort(rows, kind="stable")
        self._will_need(rows[order])
        gathered = self._array[rows[order]]  # in file order: pages are touched front to back
        stored = np.empty_like(gathered)
        stored[order] = gathered
        out = self._convert(stored, rows, fresh=True)
        self._note(low, high, len(rows))
        return out
