"""CIFAR-10 / CIFAR-100 pickles and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import cifar_pickle, write_cifar10, write_cifar100

from learnloss.data import load_dataset
from learnloss.data.safe_pickle import load_pickle
from learnloss.errors import DatasetFormatError


def test_cifar10_round_trip(tmp_path: Path) -> None:
    arrays = write_cifar10(tmp_path)
    ds = load_dataset("CIFAR10", tmp_path, download=False)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8
    assert torch.equal(ds.x_train, torch.from_numpy(arrays["x_train"]))
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["y_train"]).long())
    assert torch.equal(ds.x_test, torch.from_numpy(arrays["x_test"]))
    assert ds.classes == [f"class{i}" for i in range(10)]
    assert (ds.augment.pad, ds.augment.flip) == (4, True)


def test_cifar10_folder_given_directly(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    assert len(load_dataset("cifar-10", tmp_path / "cifar-10-batches-py", download=False).x_test) == 3


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    arrays = write_cifar100(tmp_path / "cifar100")
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert ds.num_classes == 100 and ds.classes[7] == "fine7"
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["y_train"]).long())
    assert torch.equal(ds.x_test, torch.from_numpy(arrays["x_test"]))


def test_current_numpy_module_path_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_bytes(pickle.dumps({b"data": np.arange(4, dtype=np.uint8)}, protocol=4))
    np.testing.assert_array_equal(load_pickle(path)[b"data"], np.arange(4))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_is_rejected_without_running(tmp_path: Path, protocol: int) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": _Evil(marker), "labels": [1]}, protocol=protocol))
    with pytest.raises(DatasetFormatError, match=r"refusing to unpickle.*system") as info:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(batch) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj,match",
    [
        ([1, 2], "expected a pickled dict"),
        ({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, r"shape \(N, 3072\)"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, "3 images but 2 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..K-1"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "no 'labels' entry"),
    ],
)
def test_malformed_batches(tmp_path: Path, obj: object, match: str) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(cifar_pickle(obj))
    with pytest.raises(DatasetFormatError, match=match):
        load_dataset("cifar10", tmp_path, download=False)


def test_truncated_pickle(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(meta.read_bytes()[:20])
    with pytest.raises(DatasetFormatError, match="not a valid pickle"):
        load_dataset("cifar10", tmp_path, download=False)
