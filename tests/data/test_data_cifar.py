"""CIFAR-10 / CIFAR-100 pickles and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import pickletools
import struct
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


def _as_python2(data: bytes) -> bytes:
    """A protocol-3 pickle rewritten as Python 2's cPickle and numpy 1.x wrote the official files: protocol 2, every
    string a ``BINSTRING`` / ``SHORT_BINSTRING`` (bytes once loaded with ``encoding='bytes'``), booleans as the
    integers 0 and 1 (``numpy.dtype('u1', 0, 1)``)."""
    ops = list(pickletools.genops(data))
    out = bytearray(b"\x80\x02")
    for i, (op, arg, pos) in enumerate(ops):
        chunk = data[pos : ops[i + 1][2] if i + 1 < len(ops) else len(data)]
        if op.name in ("SHORT_BINBYTES", "BINBYTES", "SHORT_BINUNICODE", "BINUNICODE"):
            text = arg if isinstance(arg, bytes) else arg.encode("ascii")
            chunk = (b"U" + bytes([len(text)]) if len(text) < 256 else b"T" + struct.pack("<i", len(text))) + text
        elif op.name in ("NEWFALSE", "NEWTRUE"):
            chunk = b"K\x01" if op.name == "NEWTRUE" else b"K\x00"
        if op.name != "PROTO":
            out += chunk
    return bytes(out)


def test_python2_style_batches(tmp_path: Path) -> None:
    arrays = write_cifar10(tmp_path, per_batch=200)  # 600 KiB of images: byte strings too large to copy
    for path in (tmp_path / "cifar-10-batches-py").iterdir():
        path.write_bytes(_as_python2(path.read_bytes()))
    assert b"\x80\x02" == (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()[:2]
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert torch.equal(ds.x_train, torch.from_numpy(arrays["x_train"]))
    assert ds.classes[3] == "class3"
