"""Resource limits decided before anything is allocated.

A few hundred bytes of a crafted file can declare gigabytes: an ``.npz`` member's header states its shape, a
pickle can repeat one row a hundred thousand times, an image header can claim 15000 × 11000 pixels. Every loader
checks what a file *declares* against these limits before it decodes or allocates, and refuses with one line
that names the environment variable to raise.

=============================  ==============================================  ========================================
environment variable           what it bounds                                  default
=============================  ==============================================  ========================================
``LEARNLOSS_MAX_BYTES``        memory one dataset may take while it is loaded  half of the memory available to this
                               (what the loader holds at its peak)             process (physical memory, or the
                                                                               cgroup's limit when that is lower)
``LEARNLOSS_MAX_IMAGE_PIXELS`` width × height of one image                     89,478,485 (Pillow's bomb threshold)
``LEARNLOSS_MAX_CLASSES``      number of classes a dataset may declare         100,000
=============================  ==============================================  ========================================

A setting accepts a positive whole number, also written as ``2e9``; anything else is refused with one line.
Loaders that convert data do it in chunks of about :data:`CHUNK_BYTES` (:func:`rows_per_chunk`), so what they hold
beyond the data itself stays small whatever the file declares.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from learnloss.errors import UsageError

__all__ = [
    "CHUNK_BYTES", "Limits", "ResourceLimitError", "check_bytes", "check_classes", "check_image_pixels", "limits",
    "out_of_memory", "rows_per_chunk",
]  # fmt: skip

_PILLOW_MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's own default (89,478,485)
_DEFAULT_MAX_CLASSES = 100_000
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")

CHUNK_BYTES = 16 * 1024 * 1024
"""About how many bytes a loader converts at a time (a chunk holds at least one sample)."""


class ResourceLimitError(UsageError):
    """What a file declares exceeds a resource limit; the message names the environment variable to raise."""


@functools.lru_cache(maxsize=1)
def _available_memory() -> int:
    """Physical memory, or the cgroup's memory limit when that is lower (a container's)."""
    try:
        memory = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - platforms without sysconf
        memory = 8 * 1024**3
    for name in _CGROUP_FILES:
        try:
            text = Path(name).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit() and 0 < int(text) < memory:
            memory = int(text)
    return memory


def _setting(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        number = float(text)  # 2e9 is accepted as well as 2000000000
        value = int(number) if number.is_integer() else -1
    except (ValueError, OverflowError):
        value = -1
    if value <= 0:
        raise UsageError(f"{name}={text!r} is not a positive whole number; set it to one (bytes, pixels or classes) "
                         "or unset it")
    return value


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module docstring)."""

    max_bytes: int
    max_image_pixels: int
    max_classes: int


def limits() -> Limits:
    """The limits in force now: the environment's settings, else the defaults.

    Raises:
        UsageError: a setting is not a positive whole number.
    """
    return Limits(
        max_bytes=_setting("LEARNLOSS_MAX_BYTES", _available_memory() // 2),
        max_image_pixels=_setting("LEARNLOSS_MAX_IMAGE_PIXELS", _PILLOW_MAX_IMAGE_PIXELS),
        max_classes=_setting("LEARNLOSS_MAX_CLASSES", _DEFAULT_MAX_CLASSES),
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def check_bytes(n_bytes: int, where: str) -> None:
    """Refuse ``n_bytes`` of decoded data (what ``where`` declares) above ``LEARNLOSS_MAX_BYTES``.

    ``n_bytes`` may be any Python integer (a declared shape's product is not bounded); nothing is allocated here.

    Raises:
        ResourceLimitError: over the limit.
    """
    limit = limits().max_bytes
    if n_bytes > limit:
        raise ResourceLimitError(
            f"{where}: would take {_size(n_bytes)} in memory, more than the limit of {_size(limit)}; if the file is "
            "genuine, raise LEARNLOSS_MAX_BYTES (bytes) on a machine with that much memory"
        )


def check_image_pixels(width: int, height: int, where: str) -> None:
    """Refuse an image whose header declares more than ``LEARNLOSS_MAX_IMAGE_PIXELS`` pixels.

    The one pixel limit that applies: every image is opened by :mod:`learnloss.data.images`, which calls this on
    the header before anything is decoded and keeps Pillow's own decompression-bomb check (which would refuse at
    twice its limit, citing that) off meanwhile, so init, add, query, serve, evaluate and predict all refuse at the
    documented limit with this message.

    Raises:
        ResourceLimitError: over the limit (or a non-positive size).
    """
    limit = limits().max_image_pixels
    if width <= 0 or height <= 0:
        raise ResourceLimitError(f"{where}: declares an empty image ({width} × {height})")
    if width * height > limit:
        raise ResourceLimitError(
            f"{where}: declares {width} × {height} = {width * height:,} pixels, more than the limit of {limit:,}; "
            "if the image is genuine, raise LEARNLOSS_MAX_IMAGE_PIXELS"
        )


def check_classes(n_classes: int, where: str) -> None:
    """Refuse a dataset that declares more than ``LEARNLOSS_MAX_CLASSES`` classes.

    Raises:
        ResourceLimitError: over the limit.
    """
    limit = limits().max_classes
    if n_classes > limit:
        raise ResourceLimitError(
            f"{where}: declares {n_classes:,} classes, more than the limit of {limit:,} (a label value that large is "
            "usually a mistake; give the class names with 'classes'); if it is genuine, raise LEARNLOSS_MAX_CLASSES"
        )


def out_of_memory(where: str) -> ResourceLimitError:
    """The one-line error for a ``MemoryError`` raised while ``where`` was decoded (raise it ``from None``)."""
    return ResourceLimitError(
        f"{where}: ran out of memory while decoding it; the file declares more data than this machine can hold: "
        "check that it is genuine, free memory, or lower LEARNLOSS_MAX_BYTES (bytes) so that such files are refused "
        "before they are read"
    )


def rows_per_chunk(row_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many rows of ``row_bytes`` bytes to convert at a time: about ``chunk_bytes`` worth, at least one."""
    return max(1, chunk_bytes // max(1, row_bytes))
