"""Tiny ImageNet and image folders read with Pillow."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import TINY_COLORS, TINY_WNIDS, write_image, write_tiny_imagenet
from PIL import Image

from learnloss.data import load_dataset
from learnloss.data.images import probe_images, read_header, read_images
from learnloss.data.limits import ResourceLimitError
from learnloss.errors import DatasetFormatError, DatasetNotFoundError


def _close(x: torch.Tensor, color: tuple[int, ...]) -> bool:
    return bool((x.int() - torch.tensor(color).view(-1, 1, 1)).abs().max() <= 3)  # JPEG is lossy


def test_tiny_imagenet(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path)
    ds = load_dataset("Tiny_ImageNet", tmp_path, download=False)
    assert ds.x_train.shape == (5, 3, 64, 64) and ds.x_test.shape == (2, 3, 64, 64)
    assert ds.x_train.dtype == torch.uint8 and ds.classes == list(TINY_WNIDS)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1] and ds.y_test.tolist() == [0, 1]
    assert _close(ds.x_train[0], (128, 128, 128))  # grey.JPEG sorts first; greyscale converted to RGB
    assert _close(ds.x_train[1], TINY_COLORS[TINY_WNIDS[0]]) and _close(ds.x_train[4], TINY_COLORS[TINY_WNIDS[1]])
    assert _close(ds.x_test[1], TINY_COLORS[TINY_WNIDS[1]])
    assert (ds.augment.pad, ds.augment.flip) == (8, True)


def test_tiny_imagenet_rejects_wrong_size_and_bad_annotations(tmp_path: Path) -> None:
    root = write_tiny_imagenet(tmp_path)
    bad = root / "val" / "images" / "val_1.JPEG"
    write_image(bad, (1, 2, 3), size=(32, 64))
    with pytest.raises(DatasetFormatError, match=r"val_1.JPEG: image is 32x64 pixels but Tiny ImageNet images are"):
        load_dataset("tiny-imagenet", tmp_path, download=False)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetFormatError, match="line 1"):
        load_dataset("tiny-imagenet", tmp_path, download=False)


def _folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    for k, (name, count) in enumerate(classes.items()):
        for i in range(count):
            color = 20 * k + i if mode == "L" else (20 * k + i, 100, 200)
            write_image(root / name / f"img{i:02d}.png", color, size=size, mode=mode)


def test_imagefolder_train_test(tmp_path: Path) -> None:
    _folder(tmp_path / "train", {"cat": 3, "dog": 2})
    _folder(tmp_path / "test", {"cat": 1, "dog": 1})
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert ds.x_train.shape == (5, 3, 10, 12) and ds.x_test.shape == (2, 3, 10, 12)
    assert ds.x_train.dtype == torch.uint8
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1] and ds.y_test.tolist() == [0, 1]
    assert ds.x_train[4, :, 0, 0].tolist() == [21, 100, 200]  # PNG round trip is exact
    assert ds.augment.pad == 1 and not ds.augment.flip


def test_imagefolder_split_is_stratified_and_deterministic(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 10, "b": 5, "c": 1}, mode="L")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    first = load_dataset("image_folder", tmp_path)
    second = load_dataset("imagefolder", tmp_path)
    assert first.x_train.shape[1:] == (1, 10, 12)  # all greyscale: one channel
    assert first.y_test.bincount(minlength=3).tolist() == [2, 1, 0]
    assert first.y_train.bincount(minlength=3).tolist() == [8, 4, 1]
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.x_test, second.x_test)
    pixels = set(first.x_train[:, 0, 0, 0].tolist()) | set(first.x_test[:, 0, 0, 0].tolist())
    assert pixels == {*range(10), *range(20, 25), 40}


def test_imagefolder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 2, "b": 2}, mode="L")
    Image.fromarray(np.full((10, 12, 4), 7, np.uint8), "RGBA").save(tmp_path / "b" / "rgba.png")
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.in_channels == 3 and ds.x_train.shape[0] + ds.x_test.shape[0] == 5


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        load_dataset("imagefolder", tmp_path / "missing")
    _folder(tmp_path / "train", {"a": 2})
    with pytest.raises(DatasetFormatError, match="only one of train/ and test/"):
        load_dataset("imagefolder", tmp_path)
    _folder(tmp_path / "test", {"a": 1, "z": 1})
    with pytest.raises(DatasetFormatError, match="classes missing from .*: z"):
        load_dataset("imagefolder", tmp_path / "")
    (tmp_path / "flat" / "empty").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="holds no images"):
        load_dataset("imagefolder", tmp_path / "flat")


def test_imagefolder_size_mismatch_names_first_offender(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 3, "b": 3})
    write_image(tmp_path / "b" / "img01.png", 0, size=(11, 10))
    write_image(tmp_path / "b" / "img02.png", 0, size=(9, 10))
    with pytest.raises(DatasetFormatError) as info:
        load_dataset("imagefolder", tmp_path)
    message = str(info.value)
    assert "img01.png: image is 11x10 pixels but" in message and "12x10" in message and "resize" in message


def test_imagefolder_unreadable_image(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match=r"broken.png: cannot read the image"):
        load_dataset("imagefolder", tmp_path)


# ------------------------------------------------------------------------------------ hostile image files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` RGB pixels in a few dozen bytes (its pixel data is missing)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def test_a_huge_declared_size_is_refused_from_the_header(tmp_path: Path) -> None:
    """The issue's 15000 × 11000 header: refused before any decoding or allocation, naming the setting."""
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(15000, 11000))
    for call in (lambda: read_header(path), lambda: probe_images([path]),
                 lambda: read_images([path], "RGB", (8, 8), resize=True)):
        with pytest.raises(ResourceLimitError) as info:
            call()
        message = str(info.value)
        assert "big.png" in message and "LEARNLOSS_MAX_IMAGE_PIXELS" in message and "\n" not in message


@pytest.mark.parametrize("limit", ["50", "20"])  # 64 pixels: Pillow's warning (over the limit), its error (2×)
def test_pillows_bomb_guard_follows_the_setting_and_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 limit: str) -> None:
    write_image(tmp_path / "a.png", 7, size=(8, 8), mode="L")
    monkeypatch.setenv("LEARNLOSS_MAX_IMAGE_PIXELS", limit)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ResourceLimitError, match=r"a.png: .*LEARNLOSS_MAX_IMAGE_PIXELS"):
        read_images([tmp_path / "a.png"], "L", (8, 8))
    assert Image.MAX_IMAGE_PIXELS == before, "Pillow's global limit must be restored"
    monkeypatch.setenv("LEARNLOSS_MAX_IMAGE_PIXELS", "64")
    assert read_images([tmp_path / "a.png"], "L", (8, 8))[0, 0, 0, 0] == 7


def test_the_decoded_size_is_checked_before_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "a.png", 7, size=(8, 8), mode="L")
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", "1000")
    with pytest.raises(ResourceLimitError, match=r"1000 images of 32x32 pixels with 3 channel\(s\).*LEARNLOSS_MAX_BYTES"):
        read_images([tmp_path / "a.png"] * 1000, "RGB", (32, 32), resize=True)
    _folder(tmp_path / "set", {"a": 3, "b": 3})
    with pytest.raises(ResourceLimitError, match="imagefolder: .*6 images of 12x10"):
        load_dataset("imagefolder", tmp_path / "set")


def test_a_truncated_image_is_one_line_naming_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert read_header(tmp_path / "cut.png").size == (64, 64)  # the header is intact
    for resize in (False, True):
        with pytest.raises(DatasetFormatError) as info:
            read_images([tmp_path / "full.png", tmp_path / "cut.png"], "RGB", (64, 64) if not resize else (8, 8),
                        resize=resize)
        message = str(info.value)
        assert "cut.png: the image file is truncated" in message and "replace it" in message


@pytest.mark.parametrize("content", [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"BM" + b"\xff" * 60,
                                     png_header_only(0, 5)])
def test_garbage_images_are_dataset_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises((DatasetFormatError, ResourceLimitError), match="x.png: "):
        read_images([path], "L", (4, 4), resize=True)


def test_headers_say_which_images_are_grey(tmp_path: Path) -> None:
    modes = ("1", "L", "LA", "I;16", "RGB", "RGBA", "P")
    for mode in modes:
        Image.new(mode, (4, 3)).save(tmp_path / f"{mode.replace(';', '_')}.png")
    grey = {mode: read_header(tmp_path / f"{mode.replace(';', '_')}.png").grey for mode in modes}
    assert grey == {"1": True, "L": True, "LA": True, "I;16": True, "RGB": False, "RGBA": False, "P": False}
    assert read_header(tmp_path / "L.png").size == (4, 3)
    with pytest.raises(DatasetFormatError, match=r"^nowhere: cannot read the file"):
        read_header(tmp_path / "missing.png", where="nowhere")
