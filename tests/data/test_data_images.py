"""Tiny ImageNet and image folders read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import TINY_COLORS, TINY_WNIDS, write_image, write_tiny_imagenet
from PIL import Image

from learnloss.data import load_dataset
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
