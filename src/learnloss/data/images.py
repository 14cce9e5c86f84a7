"""Reading image files with Pillow into ``uint8`` arrays of one common size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from learnloss.errors import DatasetFormatError

__all__ = ["IMAGE_SUFFIXES", "list_images", "probe_images", "read_images"]

IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, by suffix, hidden entries skipped), sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetFormatError(f"{path}: cannot read the image ({exc}); delete or replace the file") from exc


def _size_error(path: Path, size: tuple[int, int], expected: tuple[int, int], reference: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"{path}: image is {size[0]}x{size[1]} pixels but {reference} {expected[0]}x{expected[1]}; all images must "
        f"share one size: resize them first"
    )


def probe_images(paths: Sequence[Path]) -> tuple[tuple[int, int], str]:
    """Check from the headers alone that all images share one size; return it and the mode to load them in.

    The mode is ``'L'`` if every image is greyscale (mode ``'L'``), else ``'RGB'``.

    Raises:
        DatasetFormatError: a file is not a readable image, or its size differs from the first image's
            (the message names the first offending file).
    """
    size: tuple[int, int] | None = None
    all_grey = True
    for path in paths:
        with _open(path) as image:
            if size is None:
                size = image.size
            elif image.size != size:
                raise _size_error(path, image.size, size, f"{paths[0]} is")
            all_grey = all_grey and image.mode == "L"
    if size is None:
        raise DatasetFormatError("no images to read")
    return size, "L" if all_grey else "RGB"


def read_images(
    paths: Sequence[Path], mode: str, size: tuple[int, int], reference: str = "", resize: bool = False
) -> np.ndarray:
    """Decode ``paths`` in ``mode`` (``'L'`` or ``'RGB'``) into a ``uint8`` array ``(N, C, H, W)``.

    ``size`` is the required ``(width, height)``; ``reference`` says where it comes from in error messages.
    With ``resize``, images of another size are resized to it (bilinear) instead of refused.

    Raises:
        DatasetFormatError: a file is not a readable image or (without ``resize``) has another size.
    """
    width, height = size
    out = np.empty((len(paths), 1 if mode == "L" else 3, height, width), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _open(path) as image:
            if image.size != size and resize:
                image = image.convert(mode).resize(size, Image.Resampling.BILINEAR)
            elif image.size != size:
                raise _size_error(path, image.size, size, reference or "the images must be")
            try:
                pixels = np.asarray(image.convert(mode))
            except (OSError, ValueError) as exc:
                raise DatasetFormatError(f"{path}: cannot decode the image ({exc}); delete or replace it") from exc
        out[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return out
