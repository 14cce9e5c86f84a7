"""User arrays in ``.npz`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learnloss.data import load_dataset
from learnloss.errors import DatasetFormatError, DatasetNotFoundError


def _save(path: Path, x_train: np.ndarray, x_test: np.ndarray, **extra: np.ndarray) -> Path:
    y = {"y_train": np.arange(len(x_train)) % 3, "y_test": np.arange(len(x_test)) % 3}
    np.savez(path, x_train=x_train, x_test=x_test, **{**y, **extra})
    return path


@pytest.mark.parametrize(
    "shape,expected,channels_last",
    [
        ((6, 5), (6, 5), False),
        ((6, 8, 9), (6, 1, 8, 9), False),
        ((6, 8, 9, 1), (6, 1, 8, 9), True),
        ((6, 8, 9, 3), (6, 3, 8, 9), True),
        ((6, 8, 9, 4), (6, 4, 8, 9), True),
        ((6, 3, 8, 9), (6, 3, 8, 9), False),
        ((6, 1, 8, 9), (6, 1, 8, 9), False),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.int16])
def test_npz_layouts(
    tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...], channels_last: bool, dtype: type
) -> None:
    x = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    ds = load_dataset("npz", _save(tmp_path / "d.npz", x, x[:4]))
    assert tuple(ds.x_train.shape) == expected and tuple(ds.x_test.shape) == (4, *expected[1:])
    assert ds.x_train.dtype == (torch.uint8 if dtype is np.uint8 else torch.float32)
    back = ds.x_train.numpy()
    if channels_last:
        back = back.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(back.reshape(shape), x)
    assert ds.classes == ["0", "1", "2"] and ds.y_train.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.augment.pad == (1 if len(expected) == 4 else 0) and not ds.augment.flip


def test_npz_classes_and_folder(tmp_path: Path) -> None:
    x = np.zeros((6, 2), np.float32)
    _save(tmp_path / "only.npz", x, x, classes=np.array(["a", "b", "c", "d"]))
    (tmp_path / "readme.txt").write_text("")
    ds = load_dataset("NPZ", tmp_path)
    assert ds.classes == ["a", "b", "c", "d"] and ds.num_classes == 4


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), "integers"),
        (np.array([0, 1, 2, 0, 1, -1]), "0..K-1"),
        (np.array([0, 1, 2, 0, 1, 4]), r"0..K-1 \(there are 4 classes\)"),
        (np.zeros((6, 2), np.int64), "1-D"),
    ],
)
def test_npz_bad_labels(tmp_path: Path, labels: np.ndarray, match: str) -> None:
    x = np.zeros((6, 2), np.float32)
    classes = np.array(list("abcd"))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels, x_test=x, y_test=np.zeros(6, int), classes=classes)
    with pytest.raises(DatasetFormatError, match=match) as info:
        load_dataset("npz", tmp_path / "d.npz")
    assert "y_train" in str(info.value)


def test_npz_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="FILE.npz"):
        load_dataset("npz")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("npz", tmp_path / "nope.npz")
    with pytest.raises(DatasetNotFoundError, match="holds no .npz"):
        load_dataset("npz", tmp_path)
    x = np.zeros((3, 2), np.float32)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=np.zeros(3, int))
    with pytest.raises(DatasetFormatError, match="missing key.*x_test, y_test"):
        load_dataset("npz", tmp_path)
    _save(tmp_path / "b.npz", x, x)
    with pytest.raises(DatasetFormatError, match="several .npz files"):
        load_dataset("npz", tmp_path)
    np.savez(tmp_path / "obj.npz", x_train=np.array([{}, 1], dtype=object), y_train=x, x_test=x, y_test=x)
    with pytest.raises(DatasetFormatError, match="cannot read"):
        load_dataset("npz", tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetFormatError, match="cannot read"):
        load_dataset("npz", tmp_path / "junk.npz")
    _save(tmp_path / "c.npz", np.zeros((3, 2, 2, 2, 2)), np.zeros((3, 2, 2, 2, 2)))
    with pytest.raises(DatasetFormatError, match="inputs must have shape"):
        load_dataset("npz", tmp_path / "c.npz")
    _save(tmp_path / "s.npz", np.array([["a"]] * 3), np.array([["a"]] * 3))
    with pytest.raises(DatasetFormatError, match="numeric"):
        load_dataset("npz", tmp_path / "s.npz")


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f8", ">f8", ">i2", "|b1", "|u1"])
def test_npz_byte_orders_and_memory_orders(tmp_path: Path, order: str, dtype: str) -> None:
    """Members are streamed chunk by chunk: Fortran-ordered and big-endian arrays come back exactly."""
    x = (np.arange(6 * 8 * 9 * 3).reshape(6, 8, 9, 3) % 7).astype(dtype)
    x = np.asfortranarray(x) if order == "F" else x
    y = np.asfortranarray((np.arange(6) % 3).astype(">i4")[:, None])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=np.arange(2))
    ds = load_dataset("npz", tmp_path / "d.npz")
    assert ds.x_train.dtype == (torch.uint8 if dtype == "|u1" else torch.float32)
    np.testing.assert_array_equal(ds.x_train.numpy().transpose(0, 2, 3, 1), x.astype(ds.x_train.numpy().dtype))
    assert ds.y_train.tolist() == [0, 1, 2, 0, 1, 2]


def test_npz_byte_string_class_names(tmp_path: Path) -> None:
    x = np.zeros((6, 2), np.float32)
    _save(tmp_path / "d.npz", x, x, classes=np.array([b"cat", b"dog", "gn\u00fa".encode()]))
    assert load_dataset("npz", tmp_path / "d.npz").classes == ["cat", "dog", "gn\u00fa"]


def test_npz_counts_checked_from_headers(tmp_path: Path) -> None:
    x = np.zeros((6, 2), np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(5, int), x_test=x, y_test=np.zeros(6, int))
    with pytest.raises(DatasetFormatError, match="x_train holds 6 inputs but y_train 5 labels"):
        load_dataset("npz", tmp_path / "d.npz")
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(6, int), x_test=x[:, :1], y_test=np.zeros(6, int))
    with pytest.raises(DatasetFormatError, match=r"x_train inputs have shape \(2,\) but x_test inputs \(1,\)"):
        load_dataset("npz", tmp_path / "d.npz")
