"""Resource limits decided before anything is allocated.

A few hundred bytes of a crafted file can declare gigabytes: an ``.npz`` member's header states its shape, a
pickle can repeat one row a hundred thousand times, an image header can claim 15000 × 11000 pixels. Every loader
checks what a file *declares* against these limits before it decodes or allocates, and refuses with one line
that names the environment variable to raise.

=============================  ==============================================  ========================================
environment variable           what it bounds                                  default
=============================  ==============================================  ========================================
``LEARNLOSS_MAX_BYTES``        memory one dataset may take once decoded        half of the machine's physical memory
``LEARNLOSS_MAX_IMAGE_PIXELS`` width × height of one image                     89,478,485 (Pillow's bomb threshold)
``LEARNLOSS_MAX_CLASSES``      number of classes a dataset may declare         100,000
=============================  ==============================================  ========================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from learnloss.errors import UsageError

__all__ = ["Limits", "ResourceLimitError", "check_bytes", "check_classes", "check_image_pixels", "limits"]

_PILLOW_MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's own default (89,478,485)
_DEFAULT_MAX_CLASSES = 100_000


class ResourceLimitError(UsageError):
    """What a file declares exceeds a resource limit; the message names the environment variable to raise."""


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - platforms without sysconf
        return 8 * 1024**3


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
        max_bytes=_setting("LEARNLOSS_MAX_BYTES", _physical_memory() // 2),
        max_image_pixels=_setting("LEARNLOSS_MAX_IMAGE_PIXELS", _PILLOW_MAX_IMAGE_PIXELS),
        max_classes=_setting("LEARNLOSS_MAX_CLASSES", _DEFAULT_MAX_CLASSES),
    )


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def check_bytes(n_bytes: int, where: str) -> None:
    """Refuse ``n_bytes`` of decoded data (what ``where`` declares) above ``LEARNLOSS_MAX_BYTES``.

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
