"""Reading image files with Pillow into ``uint8`` arrays of one common size.

Nothing is decoded before its header is checked: the width × height an image declares against
``LEARNLOSS_MAX_IMAGE_PIXELS`` and the memory a whole set takes once decoded against ``LEARNLOSS_MAX_BYTES``
(:mod:`learnloss.data.limits`). Pillow's own decompression-bomb guard stays on, set to the same limit; a bomb, a
truncated file or a file that is not an image gives one line naming the file and what to do.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from learnloss.data.limits import ResourceLimitError, check_bytes, check_image_pixels, limits
from learnloss.errors import DatasetFormatError, LearnLossError

__all__ = [
    "GREY_MODES", "IMAGE_SUFFIXES", "ImageHeader", "decode_image", "image_guard", "list_images", "probe_images",
    "read_header", "read_images",
]

IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})
#: Pillow modes that hold one grey channel (with or without alpha); every other mode is read as colour.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, by suffix, hidden entries skipped), sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares: ``(width, height)``, its Pillow mode and format."""

    size: tuple[int, int]
    mode: str
    format: str | None

    @property
    def grey(self) -> bool:
        """Whether the image has one grey channel (:data:`GREY_MODES`)."""
        return self.mode in GREY_MODES


_GUARD_LOCK = threading.Lock()
_guard_depth = 0
_guard_saved: tuple[int | None, warnings.catch_warnings[None]] | None = None


@contextmanager
def image_guard() -> Iterator[None]:
    """Within it, Pillow's decompression-bomb guard uses ``LEARNLOSS_MAX_IMAGE_PIXELS`` and its warning is an error
    (which :func:`read_header` and :func:`read_images` turn into :class:`ResourceLimitError`).

    Safe from several threads at once (decoding threads, a batch read ahead): Pillow's limit and the warning filter
    are process-wide, so the first guard to enter sets them and the last to leave restores them."""
    global _guard_depth, _guard_saved
    limit = limits().max_image_pixels
    with _GUARD_LOCK:
        if _guard_depth == 0:
            catcher: warnings.catch_warnings[None] = warnings.catch_warnings(record=False)
            catcher.__enter__()
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _guard_saved = (Image.MAX_IMAGE_PIXELS, catcher)
        Image.MAX_IMAGE_PIXELS = limit
        _guard_depth += 1
    try:
        yield
    finally:
        with _GUARD_LOCK:
            _guard_depth -= 1
            if _guard_depth == 0 and _guard_saved is not None:
                Image.MAX_IMAGE_PIXELS, catcher = _guard_saved
                catcher.__exit__(None, None, None)
                _guard_saved = None


def _bomb(name: str, error: Exception) -> ResourceLimitError:
    return ResourceLimitError(
        f"{name}: refused as a possible decompression bomb ({error}); if the image is genuine, raise "
        "LEARNLOSS_MAX_IMAGE_PIXELS"
    )


def _decode_error(name: str, error: Exception) -> DatasetFormatError:
    text = str(error) or type(error).__name__
    if "truncated" in text:
        return DatasetFormatError(f"{name}: the image file is truncated (an incomplete download or copy?); "
                                  "replace it with a complete copy")
    return DatasetFormatError(f"{name}: cannot decode the image ({text}); replace the file with a readable image")


@contextmanager
def _opened(path: Path, name: str) -> Iterator[Image.Image]:
    """``path`` opened by Pillow (header only) after its declared size passed the pixel limit; call within
    :func:`image_guard`. The file is closed afterwards whatever happens."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise DatasetFormatError(f"{name}: cannot read the file ({error.strerror or error}); replace it with an "
                                 "image or remove it") from None
    with handle:
        try:
            image = Image.open(handle)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _bomb(name, error) from None
        except UnidentifiedImageError:
            raise DatasetFormatError(f"{name}: cannot read the image (not a format Pillow knows); replace it with an "
                                     "image or remove it") from None
        except Exception as error:  # a hostile header can break a format plugin in other ways
            raise DatasetFormatError(f"{name}: cannot read the image header ({type(error).__name__}: {error}); "
                                     "replace it with an image or remove it") from None
        with image:
            check_image_pixels(*image.size, name)
            yield image


def read_header(path: Path, where: str | None = None) -> ImageHeader:
    """The header of the image ``path`` (nothing is decoded); ``where`` names it in messages (default: the path).

    Raises:
        DatasetFormatError: the file cannot be read or is not an image Pillow knows.
        ResourceLimitError: it declares more pixels than ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    name = where or str(path)
    with image_guard(), _opened(path, name) as image:
        return ImageHeader(image.size, image.mode, image.format)


def _size_error(path: Path, size: tuple[int, int], expected: tuple[int, int], reference: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"{path}: image is {size[0]}x{size[1]} pixels but {reference} {expected[0]}x{expected[1]}; all images must "
        f"share one size: resize them first"
    )


def probe_images(paths: Sequence[Path]) -> tuple[tuple[int, int], str]:
    """Check from the headers alone that all images share one size; return it and the mode to load them in.

    The mode is ``'L'`` if every image is greyscale (:data:`GREY_MODES`), else ``'RGB'``.

    Raises:
        DatasetFormatError: a file is not a readable image, or its size differs from the first image's
            (the message names the first offending file).
        ResourceLimitError: an image declares more pixels than ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    size: tuple[int, int] | None = None
    all_grey = True
    for path in paths:
        header = read_header(path)
        if size is None:
            size = header.size
        elif header.size != size:
            raise _size_error(path, header.size, size, f"{paths[0]} is")
        all_grey = all_grey and header.grey
    if size is None:
        raise DatasetFormatError("no images to read")
    return size, "L" if all_grey else "RGB"


def decode_image(path: Path, mode: str, size: tuple[int, int], reference: str = "", resize: bool = False
                 ) -> np.ndarray:
    """Decode the image ``path`` in ``mode`` (``'L'`` or ``'RGB'``) as a ``uint8`` array ``(C, H, W)``; call within
    :func:`image_guard`.

    ``size`` is the required ``(width, height)``; ``reference`` says where it comes from in error messages. With
    ``resize``, an image of another size is resized to it (bilinear) instead of refused. The header is checked
    against ``LEARNLOSS_MAX_IMAGE_PIXELS`` before anything is decoded. Pillow releases the GIL while it decodes, so
    threads decode images in parallel.

    Raises:
        DatasetFormatError: the file is not a readable image, is truncated, or (without ``resize``) has another size.
        ResourceLimitError: it declares too many pixels.
    """
    with _opened(path, str(path)) as image:
        if image.size != size and not resize:
            raise _size_error(path, image.size, size, reference or "the images must be")
        try:
            converted = image.convert(mode)
            if converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(converted)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _bomb(str(path), error) from None
        except LearnLossError:
            raise
        except Exception as error:  # Pillow's decoders raise OSError, ValueError, SyntaxError, …
            raise _decode_error(str(path), error) from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_images(
    paths: Sequence[Path], mode: str, size: tuple[int, int], reference: str = "", resize: bool = False
) -> np.ndarray:
    """Decode ``paths`` in ``mode`` (``'L'`` or ``'RGB'``) into a ``uint8`` array ``(N, C, H, W)``.

    ``size`` is the required ``(width, height)``; ``reference`` says where it comes from in error messages.
    With ``resize``, images of another size are resized to it (bilinear) instead of refused. The array's size is
    checked against ``LEARNLOSS_MAX_BYTES`` before it is allocated, and each image's header against
    ``LEARNLOSS_MAX_IMAGE_PIXELS`` before it is decoded (:func:`decode_image`). To read images a batch at a time
    instead, see :class:`~learnloss.data.image_source.ImageSource`.

    Raises:
        DatasetFormatError: a file is not a readable image, is truncated, or (without ``resize``) has another size.
        ResourceLimitError: the images would take more memory than allowed, or one declares too many pixels.
    """
    width, height = size
    channels = 1 if mode == "L" else 3
    check_bytes(len(paths) * channels * height * width,
                f"{len(paths)} images of {width}x{height} pixels with {channels} channel(s)")
    out = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    with image_guard():
        for i, path in enumerate(paths):
            out[i] = decode_image(path, mode, size, reference, resize)
    return out
