"""IDX reading and the MNIST / Fashion-MNIST loaders, including where their files are found."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import IDX_NAMES, idx_bytes, write_idx_set

from learnloss.data import load_dataset
from learnloss.data.idx import FASHION_MNIST_CLASSES, read_idx
from learnloss.data.sources import SOURCES
from learnloss.errors import DatasetFormatError, DatasetNotFoundError

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, gz: bool) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype != "u1" else np.arange(24, dtype="u1")
    data = idx_bytes(array)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype.isnative and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"\x00\x00\x08", "not an IDX file"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "not an IDX file"),
        (b"\x00\x00\x42\x01\x00\x00\x00\x01\x07", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header truncated"),
        (b"\x00\x00\x08\x43" + b"\x00\x00\x00\x01" * 67, "67 dimensions"),
        (idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5], "truncated or corrupt"),
        (idx_bytes(np.zeros(3, np.uint8)) + b"\x00", "truncated or corrupt"),
        (gzip.compress(idx_bytes(np.zeros(30, np.uint8)))[:-12], "cannot read or decompress"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name,flip", [("mnist", False), ("fashion-mnist", True)])
@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_datasets(tmp_path: Path, name: str, flip: bool, gz: bool) -> None:
    arrays = write_idx_set(tmp_path / "data", gz=gz)
    ds = load_dataset(name, tmp_path / "data", download=False)
    assert ds.name == name
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays[IDX_NAMES[0]]))
    assert torch.equal(ds.y_test, torch.from_numpy(arrays[IDX_NAMES[3]]).long())
    assert ds.num_classes == 10 and ds.augment.pad == 2 and ds.augment.flip is flip
    if name == "fashion-mnist":
        assert ds.classes == FASHION_MNIST_CLASSES


def test_idx_mismatched_counts_and_labels(tmp_path: Path) -> None:
    write_idx_set(tmp_path, gz=False)
    (tmp_path / IDX_NAMES[1]).write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DatasetFormatError, match="12 images but .* 11 labels"):
        load_dataset("mnist", tmp_path, download=False)
    (tmp_path / IDX_NAMES[1]).write_bytes(idx_bytes(np.full(12, 10, np.uint8)))
    with pytest.raises(DatasetFormatError, match="0..K-1"):
        load_dataset("mnist", tmp_path, download=False)
    (tmp_path / IDX_NAMES[0]).write_bytes(idx_bytes(np.zeros(12, np.uint8)))
    with pytest.raises(DatasetFormatError, match=r"shape \(N, H, W\)"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("subdir", ["mnist", "MNIST/raw"])
def test_files_in_named_subfolder(tmp_path: Path, subdir: str) -> None:
    write_idx_set(tmp_path / subdir)
    assert len(load_dataset("MNIST", tmp_path, download=False).x_train) == 12


def test_search_order_env_cache_and_system(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system"
    write_idx_set(system, n_train=7)
    monkeypatch.setitem(SOURCES, "mnist", dataclasses.replace(SOURCES["mnist"], system_dirs=(str(system),)))
    assert len(load_dataset("mnist", download=False).x_train) == 7
    write_idx_set(isolated / ".cache" / "learnloss" / "mnist", n_train=8)
    assert len(load_dataset("mnist", download=False).x_train) == 8
    write_idx_set(tmp_path / "env" / "mnist", n_train=9)
    monkeypatch.setenv("LEARNLOSS_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", download=False).x_train) == 9
    write_idx_set(tmp_path / "explicit", n_train=10)
    assert len(load_dataset("mnist", tmp_path / "explicit", download=False).x_train) == 10
    # a data_dir without the files falls through to the other folders
    assert len(load_dataset("mnist", tmp_path / "empty", download=False).x_train) == 9


def test_incomplete_folder_is_not_used(tmp_path: Path, isolated: Path) -> None:
    write_idx_set(tmp_path)
    (tmp_path / (IDX_NAMES[2] + ".gz")).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", tmp_path, download=False)
    message = str(info.value)
    for name in IDX_NAMES:
        assert f"{name}.gz" in message
    assert str(tmp_path) in message and str(isolated / ".cache" / "learnloss" / "fashion-mnist") in message
    assert "--data-dir" in message and "download is off" in message


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(DatasetNotFoundError, match="is a file"):
        load_dataset("mnist", tmp_path / "x")


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    ds = load_dataset("fmnist", FASHION_SYSTEM_DIR, download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.equal(ds.y_train.bincount(), torch.full((10,), 6000))
    assert torch.equal(ds.y_test.bincount(), torch.full((10,), 1000))
    assert 0.25 < float(ds.mean) < 0.32
