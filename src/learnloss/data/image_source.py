"""Image files decoded a batch at a time, with a bounded cache and parallel decoding.

:class:`ImageSource` stands for the ``uint8`` tensor ``(N, C, H, W)`` of ``N`` image files without decoding them
up front: ``x[rows]`` decodes the rows that are not in its cache — in a thread pool, since Pillow releases the GIL
while it decodes, converts and resizes — and keeps the decoded images in a least-recently-used cache bounded in
bytes (:class:`ByteCache`). Memory is the cache's bound plus the batch being read, whatever the number of files;
training epochs over a labeled set that fits the cache decode each image once.

Each file is decoded by the one image decoder (:func:`~learnloss.data.images.decode_image`): its header checked
against ``LEARNLOSS_MAX_IMAGE_PIXELS`` first, only the accepted formats tried, more than 8 bits per sample scaled to
8; a file that is gone, truncated, of another format or no image fails the read with one line naming it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.data.images import decode_image, image_guard
from learnloss.data.limits import limits
from learnloss.data.source import ArraySource

__all__ = ["DECODE_CACHE_BYTES", "STATS_IMAGES", "ByteCache", "ImageSource", "decode_workers"]

DECODE_CACHE_BYTES = 256 * 1024 * 1024
"""Default bound of an :class:`ImageSource`'s cache of decoded images (at most a quarter of
``LEARNLOSS_MAX_BYTES``)."""

STATS_IMAGES = 10_000
"""Images channel statistics decode at most: a larger source's statistics are estimated from this many evenly
spaced images (a source of at most this many gives exactly the statistics of its decoded tensor)."""

_MODES = {"L": 1, "RGB": 3}


def decode_workers() -> int:
    """Threads that decode images by default: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class ByteCache:
    """A least-recently-used map of row -> decoded image, holding at most ``max_bytes`` bytes of arrays.

    An image larger than the bound is never cached. Safe to use from several threads.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.nbytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled empty (the bound only)."""
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: int) -> bool:
        return key in self._items

    def get(self, key: int) -> np.ndarray | None:
        """The cached array of ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: int, value: np.ndarray) -> None:
        """Cache ``value`` under ``key``, evicting the least recently used arrays until the bound holds."""
        size = int(value.nbytes)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= int(old.nbytes)
            while self._items and self.nbytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.nbytes -= int(evicted.nbytes)
            self._items[key] = value
            self.nbytes += size

    def clear(self) -> None:
        """Forget every cached array."""
        with self._lock:
            self._items.clear()
            self.nbytes = 0


class ImageSource(ArraySource):
    """Image files as a ``uint8`` ``(N, C, H, W)`` input array, decoded when their rows are read.

    Args:
        paths: one file per row.
        mode: ``'L'`` (one channel) or ``'RGB'`` (three).
        size: ``(width, height)`` every image is read at.
        resize: resize images of another size (bilinear) instead of refusing them.
        reference: says where ``size`` comes from in the message refusing an image of another size.
        cache_bytes: bound of the cache of decoded images (default :data:`DECODE_CACHE_BYTES`, at most a quarter
            of ``LEARNLOSS_MAX_BYTES``); 0 caches nothing.
        workers: decoding threads (default :func:`decode_workers`); 1 decodes in the calling thread.
        stats_rows: images channel statistics decode at most (default :data:`STATS_IMAGES`).

    Attributes:
        decoded: how many images were decoded so far (a cache hit decodes nothing).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], mode: str, size: tuple[int, int], *,
                 resize: bool = True, reference: str = "", cache_bytes: int | None = None,
                 workers: int | None = None, stats_rows: int | None = STATS_IMAGES) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        width, height = (int(n) for n in size)
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.paths = [Path(p) for p in paths]
        self.mode, self.size, self.resize, self.reference = mode, (width, height), resize, reference
        self.shape = torch.Size((len(self.paths), _MODES[mode], height, width))
        self.dtype = torch.uint8
        self.stats_rows = stats_rows
        if cache_bytes is None:
            cache_bytes = min(DECODE_CACHE_BYTES, limits().max_bytes // 4)
        self.cache = ByteCache(cache_bytes)
        self.workers = max(1, int(workers)) if workers is not None else decode_workers()
        self.decoded = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its cache and threads (another process decodes again)."""
        state = dict(self.__dict__)
        state["_pool"] = None
        state.pop("_pool_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the decoding threads and empty the cache (reads still work: they start the threads again)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.cache.clear()

    def release(self) -> None:
        """Empty the cache of decoded images."""
        self.cache.clear()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="learnloss-decode")
            return self._pool

    def _decode_rows(self, rows: list[int]) -> list[np.ndarray]:
        decode = self._decode_one
        return [decode(row) for row in rows]

    def _decode_one(self, row: int) -> np.ndarray:
        return np.ascontiguousarray(decode_image(self.paths[row], self.mode, self.size, self.reference, self.resize))

    def _decode(self, rows: list[int]) -> list[np.ndarray]:
        """Decode ``rows`` (in the calling thread, or split among the pool's threads), in order."""
        with image_guard():
            if self.workers == 1 or len(rows) < 2:
                images = self._decode_rows(rows)
            else:
                parts = min(len(rows), 2 * self.workers)
                bounds = np.linspace(0, len(rows), parts + 1).astype(int)
                chunks = [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
                images = [image for part in self._executor().map(self._decode_rows, chunks) for image in part]
        with self._pool_lock:
            self.decoded += len(rows)
        return images

    def read(self, rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), *self.shape[1:]), dtype=np.uint8)
        missing: list[int] = []
        for i, row in enumerate(unique.tolist()):
            cached = self.cache.get(row)
            if cached is None:
                missing.append(i)
            else:
                out[i] = cached
        if missing:
            images = self._decode([int(unique[i]) for i in missing])
            for i, image in zip(missing, images):
                out[i] = image
                self.cache.put(int(unique[i]), image)
        if len(unique) != len(rows) or not bool((unique == rows).all()):
            out = out[inverse.reshape(-1)]
        return torch.from_numpy(out)
