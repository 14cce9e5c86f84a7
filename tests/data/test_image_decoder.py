"""The one image decoder (data/images.py): an allow-list of formats, bit depths scaled to 8 bits, truncated files
refused, the documented pixel limit the one that applies, and the one listing of a folder's images.

Every file here is a real one, written by Pillow or NumPy (or by hand, chunk by chunk, where Pillow cannot write
the damage), and read through the functions every command uses.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin, features

from learnloss.data.image_source import ImageSource
from learnloss.data.images import FORMATS, decode_image, list_images, read_header, read_images, scan_images
from learnloss.data.limits import ResourceLimitError
from learnloss.errors import DatasetFormatError

#: What an EPS file holds: PostScript, which Pillow's EPS plugin hands to Ghostscript when the image is loaded.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
       b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n")
ACCEPTED = "PNG, JPEG, BMP, GIF, TIFF, WebP"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, raw: bytes, interlace: int = 0) -> bytes:
    """An 8-bit greyscale PNG of ``width`` × ``height`` whose image data are ``raw`` (filtered scanlines)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def _adam7(pixels: np.ndarray) -> list[bytes]:
    """The scanlines of each of Adam7's seven passes over the 8-bit grey ``pixels`` (filter type 0), written from
    the PNG specification (8.2) independently of the code under test."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    out = []
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        out.append(b"".join(b"\x00" + row.tobytes() for row in sub) if sub.size else b"")
    return out


# ----------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA", "SGI", "DDS"])
def test_an_image_of_another_format_is_refused_whatever_its_name(tmp_path: Path, fmt: str) -> None:
    """Pillow reads every one of these; the decoder tries only the accepted formats."""
    path = tmp_path / "odd.png"
    Image.new("L", (16, 16), 90).save(path, format=fmt)
    assert Image.open(path).format == fmt  # Pillow, unrestricted, would read it
    for call in (lambda: read_header(path), lambda: decode_image(path, "L", (16, 16))):
        with pytest.raises(DatasetFormatError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"{path}: cannot read the image (")  # the format named when its signature says
        assert "not one of the accepted image formats" in message and ACCEPTED in message
        assert "convert it" in message and "\n" not in message


def test_postscript_named_png_is_refused_naming_the_accepted_formats(tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    path = tmp_path / "odd" / "eps.png"
    path.write_bytes(EPS)
    with pytest.raises(DatasetFormatError) as info:
        read_header(path, "'odd/eps.png'")
    assert str(info.value) == ("'odd/eps.png': cannot read the image (a EPS file, not one of the accepted image "
                               "formats: PNG, JPEG, BMP, GIF, TIFF, WebP, PBM/PGM/PPM); convert it to one of them or "
                               "remove it")
    with pytest.raises(DatasetFormatError, match="a EPS file"):
        read_images([path], "L", (16, 16), resize=True)


def _fake_gs(folder: Path) -> Path:
    """A ``gs`` executable in ``folder`` that records that it ran (and fails, as Ghostscript would on no output)."""
    folder.mkdir()
    marker = folder / "gs-ran"
    script = folder / "gs"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    script.chmod(0o755)
    return marker


def _python(code: str, path_first: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` run by a real Python process whose PATH starts with ``path_first``."""
    env = dict(os.environ, PATH=f"{path_first}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_decoding_postscript_starts_no_process(tmp_path: Path) -> None:
    """A fake ``gs`` first on PATH: the decoder never runs it (real process, real PATH lookup); plain Pillow does,
    which shows that the check would see it."""
    marker = _fake_gs(tmp_path / "bin")
    (tmp_path / "eps.png").write_bytes(EPS)
    ours = _python("""
        import shutil
        from pathlib import Path
        from learnloss.data.image_source import ImageSource
        from learnloss.data.images import decode_image, read_header
        from learnloss.errors import DatasetFormatError
        assert shutil.which("gs") is not None and shutil.which("gs").startswith(%r)
        eps = Path("eps.png")
        for call in (lambda: read_header(eps), lambda: decode_image(eps, "L", (8, 8), resize=True),
                     lambda: ImageSource([eps] * 2, "L", (8, 8), workers=2)[[0, 1]]):
            try:
                call()
            except DatasetFormatError as error:
                print(error)
            else:
                raise SystemExit("decoded")
    """ % str(tmp_path / "bin"), tmp_path / "bin", tmp_path)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.count("a EPS file, not one of the accepted image formats") == 3
    assert not marker.exists(), "the decoder started Ghostscript"
    plain = _python("""
        from PIL import Image
        try:
            Image.open("eps.png").load()
        except Exception:  # the fake Ghostscript fails
            pass
    """, tmp_path / "bin", tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert marker.exists(), "the control failed: unrestricted Pillow should have looked for Ghostscript"


def _accepted(fmt: str) -> bool:
    return fmt != "WEBP" or bool(features.check("webp"))


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("GIF", ".gif"),
                                        ("TIFF", ".tif"), ("WEBP", ".webp"), ("PPM", ".ppm")])
def test_every_accepted_format_decodes(tmp_path: Path, fmt: str, suffix: str) -> None:
    if not _accepted(fmt):
        pytest.skip("this Pillow was built without WebP")
    assert fmt in FORMATS
    path = tmp_path / f"a{suffix}"
    Image.new("RGB", (12, 10), (200, 100, 50)).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    pixels = decode_image(path, "RGB", (12, 10)).astype(int)
    assert pixels.shape == (3, 10, 12)
    assert np.abs(pixels - np.array([200, 100, 50]).reshape(3, 1, 1)).max() <= 6  # JPEG, WebP and GIF are lossy


# --------------------------------------------------------------------------------------------- bit depths


def _png16(path: Path, values: np.ndarray, significant_bits: int | None = None) -> None:
    info = None
    if significant_bits is not None:
        info = PngImagePlugin.PngInfo()
        info.add(b"sBIT", bytes([significant_bits]))
    Image.fromarray(values.astype(np.uint16)).save(path, pnginfo=info)


def _scaled(values: np.ndarray, top: int) -> np.ndarray:
    """``values`` in [0, top] scaled to [0, 255], rounded half up (integers: no float rounding)."""
    return ((values.astype(np.int64) * 255 + top // 2) // top).astype(np.uint8)


def test_a_12_bit_png_that_declares_sbit_is_scaled_by_its_depth(tmp_path: Path) -> None:
    values = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 12-bit data, as a camera stores them
    _png16(tmp_path / "a.png", values, significant_bits=12)
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    assert np.unique(np.asarray(Image.open(tmp_path / "a.png").convert("L"))).size == 256  # Pillow clips at 255
    pixels = decode_image(tmp_path / "a.png", "L", (64, 64))[0]
    assert np.array_equal(pixels, _scaled(values, 4095))
    assert pixels.min() == 0 and pixels.max() == 255 and np.unique(pixels).size == 256
    rgb = decode_image(tmp_path / "a.png", "RGB", (64, 64))
    assert rgb.shape == (3, 64, 64) and all(np.array_equal(channel, pixels) for channel in rgb)


def test_16_bit_without_sbit_uses_the_full_range(tmp_path: Path) -> None:
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # exactly 0, 1, …, 255 once scaled
    _png16(tmp_path / "a.png", values)
    assert np.array_equal(decode_image(tmp_path / "a.png", "L", (16, 16))[0], np.arange(256).reshape(16, 16))
    low = (np.arange(256) * 16).reshape(16, 16)  # 12-bit data without sBIT: the PNG specification's full range
    _png16(tmp_path / "b.png", low)
    assert np.array_equal(decode_image(tmp_path / "b.png", "L", (16, 16))[0], _scaled(low, 65535))


def test_sbit_with_samples_scaled_to_16_bits_uses_the_full_range(tmp_path: Path) -> None:
    """An encoder that follows the PNG specification scales 12-bit samples to 16 bits and records sBIT = 12."""
    values = (np.arange(256) * 16 * 16).reshape(16, 16)  # 12-bit data shifted left by 4
    _png16(tmp_path / "a.png", values, significant_bits=12)
    assert np.array_equal(decode_image(tmp_path / "a.png", "L", (16, 16))[0], _scaled(values, 65535))


def test_a_16_bit_tiff_is_scaled_by_its_bits_per_sample(tmp_path: Path) -> None:
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").mode.startswith("I;16")
    assert np.array_equal(decode_image(tmp_path / "a.tif", "L", (16, 16))[0], np.arange(256).reshape(16, 16))


def test_a_float_tiff_in_0_1_is_scaled_to_255(tmp_path: Path) -> None:
    values = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    assert set(np.unique(np.asarray(Image.open(tmp_path / "f.tif").convert("L")))) == {0, 1}  # Pillow's way
    pixels = decode_image(tmp_path / "f.tif", "L", (32, 32))[0]
    assert np.abs(pixels.astype(int) - values * 255).max() <= 0.5 + 1e-3  # rounded to the nearest step
    assert pixels.min() == 0 and pixels.max() == 255 and np.unique(pixels).size == 256


@pytest.mark.parametrize("bad,found", [(1.5, "values from 0 to 1.5"), (-0.25, "values from -0.25 to 1"),
                                       (float("nan"), "values that are not finite")])
def test_a_float_image_outside_0_1_is_refused_in_one_line(tmp_path: Path, bad: float, found: str) -> None:
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    values[3, 3] = bad
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(DatasetFormatError) as info:
        decode_image(tmp_path / "f.tif", "L", (8, 8))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'f.tif'}: a floating-point image with {found};") and "\n" not in message
    assert "rescale it to [0, 1]" in message


def test_a_32_bit_integer_tiff_is_scaled_and_negative_values_refused(tmp_path: Path) -> None:
    values = np.array([[0, 2**31 - 1], [2**16, 2**24]], dtype=np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i.tif")
    assert np.array_equal(decode_image(tmp_path / "i.tif", "L", (2, 2))[0],
                          _scaled(values.astype(np.int64), 2**32 - 1))
    values[0, 0] = -5
    Image.fromarray(values, mode="I").save(tmp_path / "n.tif")
    with pytest.raises(DatasetFormatError, match=r"n.tif: an integer image with negative values \(down to -5\)"):
        decode_image(tmp_path / "n.tif", "L", (2, 2))


# ------------------------------------------------------------------------------------------ truncated files


def test_a_png_whose_complete_stream_holds_64_of_9000_rows_is_refused(tmp_path: Path) -> None:
    """The zlib stream is complete, so Pillow decodes it without a word and leaves the other rows black."""
    path = tmp_path / "short.png"
    path.write_bytes(_png(9000, 9000, b"".join(b"\x00" + bytes([200]) * 9000 for _ in range(64))))
    pillow = Image.open(path)
    pillow.load()  # no error from Pillow: that is the attack
    assert np.asarray(pillow)[63, 0] == 200 and np.asarray(pillow)[64, 0] == 0
    for call in (lambda: decode_image(path, "L", (8, 8), resize=True), lambda: ImageSource([path], "L", (8, 8))[[0]]):
        with pytest.raises(DatasetFormatError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"{path}: the image file is truncated (its data hold 576,064 of the 81,009,000 "
                                  "bytes its 9000x9000 header declares")
        assert "replace it with a complete copy" in message and "\n" not in message


def test_interlaced_pngs_are_counted_pass_by_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (13, 11), dtype=np.uint8)  # sizes that leave passes partly empty
    passes = _adam7(pixels)
    (tmp_path / "full.png").write_bytes(_png(11, 13, b"".join(passes), interlace=1))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "full.png")), pixels)  # the file is right
    assert np.array_equal(decode_image(tmp_path / "full.png", "L", (11, 13))[0], pixels)
    (tmp_path / "short.png").write_bytes(_png(11, 13, b"".join(passes[:-1]), interlace=1))
    with pytest.raises(DatasetFormatError, match="short.png: the image file is truncated"):
        decode_image(tmp_path / "short.png", "L", (11, 13))


def test_truncated_images_stay_refused_when_the_process_allows_them(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's ``LOAD_TRUNCATED_IMAGES`` is process-wide; another library may have turned it on."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L").save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="cut.jpg: the image file is truncated"):
        decode_image(tmp_path / "cut.jpg", "L", (64, 64))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the process's setting must be restored"


# ---------------------------------------------------------------------------------------------- pixel limit


def _png_header(width: int, height: int) -> bytes:
    return _png(width, height, b"\x00" * 64)


def test_30000_square_cites_the_documented_limit_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(30000, 30000))
    messages = set()
    for call in (lambda: read_header(path), lambda: decode_image(path, "L", (8, 8), resize=True),
                 lambda: ImageSource([path], "L", (8, 8))[[0]]):
        with pytest.raises(ResourceLimitError) as info:
            call()
        messages.add(str(info.value))
    assert messages == {f"{path}: declares 30000 × 30000 = 900,000,000 pixels, more than the limit of 89,478,485; "
                        "if the image is genuine, raise LEARNLOSS_MAX_IMAGE_PIXELS"}
    assert Image.MAX_IMAGE_PIXELS == 89_478_485, "Pillow's setting must be restored"


@pytest.mark.parametrize("side", [40, 100])  # 1600 pixels: over the limit; 10000: over twice the limit
def test_the_setting_is_the_limit_with_its_own_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      side: int) -> None:
    monkeypatch.setenv("LEARNLOSS_MAX_IMAGE_PIXELS", "1000")
    Image.new("L", (side, side), 9).save(tmp_path / "a.png")
    for call in (lambda: read_images([tmp_path / "a.png"], "L", (8, 8), resize=True),
                 lambda: ImageSource([tmp_path / "a.png"], "L", (8, 8))[[0]]):
        with pytest.raises(ResourceLimitError, match=rf"a.png: declares {side} × {side} = {side * side:,} pixels, "
                                                     r"more than the limit of 1,000;"):
            call()
    monkeypatch.setenv("LEARNLOSS_MAX_IMAGE_PIXELS", str(side * side))
    assert decode_image(tmp_path / "a.png", "L", (side, side))[0, 0, 0] == 9


# ------------------------------------------------------------------------------------------------- listing


def test_links_leading_out_of_the_folder_are_listed_apart_and_refused(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    Image.new("L", (4, 4)).save(folder / "in.png")
    Image.new("L", (4, 4)).save(tmp_path / "secret.png")
    (folder / "inside-link.png").symlink_to(folder / "in.png")
    (folder / "out.png").symlink_to(tmp_path / "secret.png")
    listing = scan_images(tmp_path / "images")
    assert listing.files == [folder / "in.png", folder / "inside-link.png"] and listing.outside == [folder / "out.png"]
    assert scan_images(tmp_path / "images", inside=tmp_path).outside == []
    with pytest.raises(DatasetFormatError) as info:
        list_images(tmp_path / "images")
    assert str(info.value) == (f"{tmp_path / 'images'}: 1 image(s) are symbolic links leading outside the folder "
                               "('a/out.png'); copy the images into the folder or remove the links")
    (folder / "out.png").unlink()
    assert list_images(tmp_path / "images") == [folder / "in.png", folder / "inside-link.png"]
