"""The one image decoder: image files read with Pillow into ``uint8`` arrays of one common size.

Every image learnloss reads — registered by ``init`` and ``add``, decoded by ``query``, ``serve``, ``evaluate`` and
``predict`` — is opened here (:func:`_opened`), so these rules hold everywhere:

* **Formats.** Only the raster formats people label are tried (:data:`FORMATS`: PNG, JPEG, BMP, GIF, TIFF, WebP
  and PBM/PGM/PPM), through ``PIL.Image.open(..., formats=...)``, whatever a file's name says. Pillow's other
  plugins never see a file: its EPS plugin, for one, runs Ghostscript on the file's PostScript when the image is
  loaded (Pillow's documentation of ``EpsImagePlugin``). A file of another format is refused with one line naming
  it, the format its first bytes suggest and the accepted formats.
* **Pixels.** The width × height a header declares is checked against ``LEARNLOSS_MAX_IMAGE_PIXELS``
  (:func:`~learnloss.data.limits.check_image_pixels`) before anything is decoded; this is the one limit that
  applies, with the same message wherever an image is opened. Pillow's own decompression-bomb check, which would
  refuse at twice its limit with its own numbers before the header is seen, is off while an image is opened
  (:func:`image_guard`); the memory a whole set takes once decoded is checked against ``LEARNLOSS_MAX_BYTES``.
* **Complete files.** Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is off while an image is opened, so a file cut
  short is refused rather than padded; and a PNG whose compressed data end early but cleanly (a complete zlib
  stream holding fewer rows than the header declares, which Pillow decodes without a word, leaving the missing
  rows black) is refused too: its data are counted against its header (:func:`_png_facts`).
* **Bit depth.** An image of more than 8 bits per sample is *scaled* to 8 bits, never clipped
  (:func:`_eight_bit`): 16-bit integers by their declared depth, floating-point intensities from [0, 1].

A file that cannot be read gives one line naming it and what to do, never a traceback.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from learnloss.data.limits import check_bytes, check_image_pixels, limits
from learnloss.errors import DatasetFormatError, LearnLossError

__all__ = [
    "FORMATS", "GREY_MODES", "IMAGE_SUFFIXES", "ImageHeader", "ImageListing", "decode_image", "image_guard",
    "list_images", "probe_images", "read_header", "read_images", "scan_images",
]

IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})
"""The names of files a folder scan takes for images (what a file holds is decided by :data:`FORMATS`)."""

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
"""The Pillow formats an image may be decoded from, whatever its name: the raster formats of
:data:`IMAGE_SUFFIXES` (Pillow's JPEG plugin also reads a camera's multi-picture JPEG, MPO; its PPM plugin reads
PBM, PGM and PPM). No other plugin is ever tried."""

_FORMAT_NAMES = "PNG, JPEG, BMP, GIF, TIFF, WebP, PBM/PGM/PPM"

#: Pillow modes that hold one grey channel (with or without alpha); every other mode is read as colour.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass(frozen=True)
class ImageListing:
    """The image files of a folder (:func:`scan_images`): ``files``, and the ``outside`` ones, whose symbolic links
    lead out of the folder they must stay in (neither list holds the other's files)."""

    files: list[Path]
    outside: list[Path]


def scan_images(folder: Path, inside: Path | None = None) -> ImageListing:
    """The image files under ``folder`` (recursively, by suffix, hidden entries skipped), sorted, split into those
    inside ``inside`` (default: ``folder``) and those a symbolic link leads outside it.

    A linked folder is not entered (as :meth:`pathlib.Path.rglob` does); a linked file is followed only to decide
    where it leads. This is the one listing of "the images of a folder": ``init`` and ``add`` report the outside
    ones as problems, :func:`list_images` refuses them.
    """
    base = (inside if inside is not None else folder).resolve()
    files: list[Path] = []
    outside: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if (path.suffix.lower() not in IMAGE_SUFFIXES
                or any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file()):
            continue
        resolved = path.resolve()
        (files if base in resolved.parents else outside).append(path)
    return ImageListing(files, outside)


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (:func:`scan_images`), refused when a symbolic link leads one outside it.

    Raises:
        DatasetFormatError: a file's link leads outside ``folder`` (the message names up to five of them).
    """
    listing = scan_images(folder)
    if listing.outside:
        names = ", ".join(repr(path.relative_to(folder).as_posix()) for path in listing.outside[:5])
        more = f" and {len(listing.outside) - 5} more" if len(listing.outside) > 5 else ""
        raise DatasetFormatError(
            f"{folder}: {len(listing.outside)} image(s) are symbolic links leading outside the folder ({names}{more}); "
            "copy the images into the folder or remove the links"
        )
    return listing.files


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
_guard_saved: tuple[int | None, bool] | None = None


@contextmanager
def image_guard() -> Iterator[None]:
    """Within it, Pillow's process-wide settings are the ones this module relies on: its decompression-bomb check
    off (``Image.MAX_IMAGE_PIXELS = None``: :func:`_opened` checks every header against
    ``LEARNLOSS_MAX_IMAGE_PIXELS`` itself, before anything is decoded, so that the documented limit is the one
    that applies) and ``ImageFile.LOAD_TRUNCATED_IMAGES`` off (a file cut short is an error, not an image padded
    with black).

    Every image is opened within one (:func:`_opened` enters it); a caller decoding many images enters it once
    around them. Safe from several threads at once (decoding threads, a batch read ahead): the settings are
    process-wide, so the first guard to enter sets them and the last to leave restores them.

    Raises:
        UsageError: ``LEARNLOSS_MAX_IMAGE_PIXELS`` is not a positive whole number.
    """
    global _guard_depth, _guard_saved
    limits()  # a malformed setting is refused before anything is opened
    with _GUARD_LOCK:
        if _guard_depth == 0:
            _guard_saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        Image.MAX_IMAGE_PIXELS = None
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        _guard_depth += 1
    try:
        yield
    finally:
        with _GUARD_LOCK:
            _guard_depth -= 1
            if _guard_depth == 0 and _guard_saved is not None:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _guard_saved
                _guard_saved = None


def _decode_error(name: str, error: Exception) -> DatasetFormatError:
    text = str(error) or type(error).__name__
    if "truncated" in text:
        return DatasetFormatError(f"{name}: the image file is truncated (an incomplete download or copy?); "
                                  "replace it with a complete copy")
    return DatasetFormatError(f"{name}: cannot decode the image ({text}); replace the file with a readable image")


def _suggested_format(handle: BinaryIO) -> str | None:
    """The Pillow format whose signature the first bytes of ``handle`` match, if any: only each plugin's signature
    test runs (a comparison of bytes), never a plugin's reader."""
    handle.seek(0)
    prefix = handle.read(16)
    Image.init()
    for format_id in Image.ID:
        accept = Image.OPEN[format_id][1]
        try:
            if accept is not None and accept(prefix) is True:
                return format_id
        except Exception:  # noqa: BLE001 - a signature test that fails says nothing about the file
            continue
    return None


def _not_accepted(name: str, handle: BinaryIO) -> DatasetFormatError:
    suggested = _suggested_format(handle)
    what = (f"a {suggested} file, not one of the accepted image formats" if suggested
            else "not a format Pillow knows, or not one of the accepted image formats")
    return DatasetFormatError(f"{name}: cannot read the image ({what}: {_FORMAT_NAMES}); convert it to one of them "
                              "or remove it")


@contextmanager
def _opened(path: Path, name: str) -> Iterator[tuple[Image.Image, BinaryIO]]:
    """``path`` opened by Pillow (header only) as one of :data:`FORMATS`, after its declared size passed the pixel
    limit, with its file; within :func:`image_guard`. The file is closed afterwards whatever happens.

    Raises:
        DatasetFormatError: the file cannot be read, is of another format, or its header is broken.
        ResourceLimitError: it declares more pixels than ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    with image_guard():
        try:
            handle = open(path, "rb")
        except OSError as error:
            raise DatasetFormatError(f"{name}: cannot read the file ({error.strerror or error}); replace it with an "
                                     "image or remove it") from None
        with handle:
            try:
                image = Image.open(handle, formats=FORMATS)
            except UnidentifiedImageError:
                raise _not_accepted(name, handle) from None
            except Exception as error:  # a hostile header can break a format plugin in other ways
                raise DatasetFormatError(f"{name}: cannot read the image header ({type(error).__name__}: {error}); "
                                         "replace it with an image or remove it") from None
            with image:
                check_image_pixels(*image.size, name)
                yield image, handle


def read_header(path: Path, where: str | None = None) -> ImageHeader:
    """The header of the image ``path`` (nothing is decoded); ``where`` names it in messages (default: the path).

    Raises:
        DatasetFormatError: the file cannot be read or is not an image of an accepted format (:data:`FORMATS`).
        ResourceLimitError: it declares more pixels than ``LEARNLOSS_MAX_IMAGE_PIXELS``.
    """
    name = where or str(path)
    with _opened(path, name) as (image, _):
        return ImageHeader(image.size, image.mode, image.format)


# ------------------------------------------------------------------------------------------------ PNG data

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Samples per pixel of each PNG colour type (PNG specification, 11.2.2 IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: The seven passes of Adam7 interlacing: first column, first row, column step, row step (PNG spec., 8.2).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20


@dataclass(frozen=True)
class _PngFacts:
    """What the chunks of a PNG say beyond Pillow's header: the bytes its image data inflate to and the bytes its
    header requires, and the significant bits of its first channel (``sBIT``; None without that chunk)."""

    data_bytes: int
    needed_bytes: int
    significant_bits: int | None


def _png_needed_bytes(width: int, height: int, depth: int, colour: int, interlaced: bool) -> int:
    """The bytes the filtered scanlines of a ``width`` × ``height`` PNG take (one filter byte per row)."""
    bits = _PNG_CHANNELS.get(colour, 1) * depth
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns = (width - x0 + dx - 1) // dx if width > x0 else 0
        rows = (height - y0 + dy - 1) // dy if height > y0 else 0
        if columns and rows:
            total += rows * (1 + (columns * bits + 7) // 8)
    return total


def _png_facts(handle: BinaryIO) -> _PngFacts:
    """Walk the chunks of the PNG ``handle`` up to its image data and inflate those (counting, keeping at most
    :data:`_INFLATE_STEP` bytes at a time, and stopping once the header's rows are there).

    Pillow decodes a complete zlib stream that holds fewer rows than the header declares without a word; the count
    tells. Pillow does not expose ``sBIT`` (PNG spec., 11.3.4.4), read here for :func:`_eight_bit`."""
    handle.seek(0)
    if handle.read(8) != _PNG_SIGNATURE:
        return _PngFacts(0, 0, None)
    needed, bits, inflated = 0, None, 0
    inflater = zlib.decompressobj()
    seen_data = False
    while True:
        head = handle.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IDAT":
            seen_data = True
            left = length
            while left > 0 and inflated < needed and not inflater.eof:
                piece = handle.read(min(left, _INFLATE_STEP))
                if not piece:
                    break
                left -= len(piece)
                data = inflater.decompress(piece, _INFLATE_STEP)
                inflated += len(data)
                while inflater.unconsumed_tail and inflated < needed:
                    inflated += len(inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP))
            if inflated >= needed or inflater.eof:
                break
            handle.seek(left + 4, os.SEEK_CUR)  # the rest of the chunk, and its CRC
            continue
        if seen_data:  # the image data ended before the header's rows were there
            break
        body = handle.read(min(length, 16)) if kind in (b"IHDR", b"sBIT") else b""
        if kind == b"IHDR" and len(body) >= 13:
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            needed = _png_needed_bytes(width, height, depth, colour, interlace == 1)
        elif kind == b"sBIT" and body:
            bits = body[0]
        handle.seek(length - len(body) + 4, os.SEEK_CUR)
    return _PngFacts(inflated, needed, bits)


def _check_png_complete(image: Image.Image, handle: BinaryIO, name: str) -> _PngFacts | None:
    """The facts of a PNG ``image`` (None for another format), refused when its data end before its last row."""
    if image.format != "PNG":
        return None
    position = handle.tell()
    try:
        facts = _png_facts(handle)
    except zlib.error as error:
        raise DatasetFormatError(f"{name}: cannot decode the image (corrupt compressed data: {error}); replace the "
                                 "file with a readable image") from None
    finally:
        handle.seek(position)
    if facts.data_bytes < facts.needed_bytes:
        width, height = image.size
        raise DatasetFormatError(
            f"{name}: the image file is truncated (its data hold {facts.data_bytes:,} of the {facts.needed_bytes:,} "
            f"bytes its {width}x{height} header declares: an incomplete download or copy?); replace it with a "
            "complete copy"
        )
    return facts


# ---------------------------------------------------------------------------------------------- bit depths


def _declared_bits(image: Image.Image, facts: _PngFacts | None, values: np.ndarray) -> int:
    """The bits per sample of an integer image of more than 8 bits.

    PNG: 16, or the ``sBIT`` it declares when every sample fits in it — the specification asks encoders to scale
    samples to the full 16 bits and record the original depth in ``sBIT``, but cameras and NumPy users often store
    12-bit data as they are, in the low bits; a sample above ``2**sBIT - 1`` shows the data were scaled. TIFF: its
    ``BitsPerSample``. Otherwise 16 (Pillow reads 16-bit PGM and PPM scaled to 16 bits)."""
    if facts is not None:
        bits = facts.significant_bits
        if bits is not None and 8 < bits < 16 and int(values.max(initial=0)) < 1 << bits:
            return bits
        return 16
    tags = getattr(image, "tag_v2", None)
    declared = tags.get(258) if tags is not None else None
    if isinstance(declared, tuple):
        declared = declared[0] if declared else None
    if isinstance(declared, int) and 8 < declared <= 32:
        return declared
    return 16


def _eight_bit(image: Image.Image, facts: _PngFacts | None, name: str) -> Image.Image:
    """``image`` (loaded) with 8 bits per sample: integer images of more than 8 bits (modes ``I``, ``I;16…``)
    scaled from ``[0, 2**bits - 1]`` (:func:`_declared_bits`) to ``[0, 255]`` and rounded, floating-point images
    (mode ``F``) from ``[0, 1]`` to ``[0, 255]``; other modes as they are (Pillow reads 16-bit colour as 8 bits).

    Pillow's own conversion to ``L`` clips such images at 255 instead (a 12-bit image keeps only its darkest
    values, a float image in [0, 1] becomes 0 and 1). A float image with values outside [0, 1] has no agreed
    meaning (a depth map, a radiance) and is refused rather than guessed at, as are negative integers.

    Raises:
        DatasetFormatError: negative integer samples; float samples that are not finite or lie outside [0, 1].
    """
    mode = image.mode
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = bool(np.isfinite(values).all())
        low, high = (float(values.min()), float(values.max())) if finite else (0.0, 0.0)  # never empty
        if not finite or low < 0.0 or high > 1.0:
            found = "values that are not finite" if not finite else f"values from {low:g} to {high:g}"
            raise DatasetFormatError(
                f"{name}: a floating-point image with {found}; floating-point images are read as intensities in "
                "[0, 1]: rescale it to [0, 1] or save it as 8- or 16-bit integers"
            )
        return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), mode="L")
    if mode == "I" or mode.startswith("I;"):
        values = np.asarray(image).astype(np.int64)
        if values.size and int(values.min()) < 0:
            raise DatasetFormatError(f"{name}: an integer image with negative values (down to {int(values.min())}); "
                                     "save it with unsigned samples (8 or 16 bits)")
        top = (1 << _declared_bits(image, facts, values)) - 1
        scaled = (np.minimum(values, top) * 255 + top // 2) // top
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    return image


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
    """Decode the image ``path`` in ``mode`` (``'L'`` or ``'RGB'``) as a ``uint8`` array ``(C, H, W)``: the one
    decoder every command's images go through (see the module docstring).

    ``size`` is the required ``(width, height)``; ``reference`` says where it comes from in error messages. With
    ``resize``, an image of another size is resized to it (bilinear) instead of refused. The header is checked
    against ``LEARNLOSS_MAX_IMAGE_PIXELS`` before anything is decoded; the image is then decoded in full (a
    truncated file is refused), scaled to 8 bits per sample (:func:`_eight_bit`) and converted. Pillow releases the
    GIL while it decodes, so threads decode images in parallel; a caller decoding many enters :func:`image_guard`
    once around them.

    Raises:
        DatasetFormatError: the file is not a readable image of an accepted format, is truncated, has samples
            :func:`_eight_bit` refuses, or (without ``resize``) has another size.
        ResourceLimitError: it declares too many pixels.
    """
    name = str(path)
    with _opened(path, name) as (image, handle):
        if image.size != size and not resize:
            raise _size_error(path, image.size, size, reference or "the images must be")
        try:
            facts = _check_png_complete(image, handle, name)
            image.load()
            converted = _eight_bit(image, facts, name).convert(mode)
            if converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(converted)
        except LearnLossError:
            raise
        except Exception as error:  # Pillow's decoders raise OSError, ValueError, SyntaxError, …
            raise _decode_error(name, error) from None
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
