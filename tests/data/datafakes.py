"""Writers of tiny fake dataset files in every supported format, for the dataset tests."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learnloss.data.sources import SOURCES, RemoteFile

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
              np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}  # fmt: skip


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as an IDX file (big-endian)."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, _IDX_CODES[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_idx_set(
    folder: Path, gz: bool = True, n_train: int = 12, n_test: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four MNIST files of random 28x28 images and labels 0..9 in ``folder``; returns the arrays by name."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def cifar_pickle(obj: object) -> bytes:
    """Pickle like the official files: protocol without frames, text GLOBAL opcodes, numpy.core module path."""
    return pickle.dumps(obj, protocol=3).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(folder: Path, per_batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A fake ``cifar-10-batches-py`` in ``folder``; returns x_train, y_train, x_test, y_test."""
    rng = np.random.default_rng(seed)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 7):
        x, y = _images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": b"b", b"labels": y, b"data": x.reshape(per_batch, -1), b"filenames": [b"a"] * len(y)}
        (root / (f"data_batch_{i}" if i < 6 else "test_batch")).write_bytes(cifar_pickle(batch))
        xs.append(x)
        ys.append(y)
    names = [f"class{i}".encode() for i in range(10)]
    (root / "batches.meta").write_bytes(cifar_pickle({b"label_names": names, b"num_vis": 3072}))
    train = {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5])}
    return {**train, "x_test": xs[5], "y_test": np.array(ys[5])}


def write_cifar100(folder: Path, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A fake ``cifar-100-python`` in ``folder`` (fine and coarse labels); returns the arrays."""
    rng = np.random.default_rng(seed)
    root = folder / "cifar-100-python"
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        x, fine = _images(rng, n), rng.integers(0, 100, n).tolist()
        batch = {b"data": x.reshape(n, -1), b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}
        (root / split).write_bytes(cifar_pickle(batch))
        out[f"x_{split}"], out[f"y_{split}"] = x, np.array(fine)
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20}
    (root / "meta").write_bytes(cifar_pickle(meta))
    return out


def write_image(
    path: Path, color: int | tuple[int, int, int], size: tuple[int, int] = (64, 64), mode: str = "RGB"
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


TINY_WNIDS = ("n01443537", "n01629819")
TINY_COLORS = {TINY_WNIDS[0]: (200, 30, 30), TINY_WNIDS[1]: (30, 30, 200)}


def write_tiny_imagenet(folder: Path) -> Path:
    """A fake ``tiny-imagenet-200`` (2 classes, 2 train + 1 val JPEG each, one of them greyscale) in ``folder``."""
    root = folder / "tiny-imagenet-200"
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))
    lines = []
    for k, wnid in enumerate(TINY_WNIDS):
        for j in range(2):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", TINY_COLORS[wnid])
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        write_image(root / "val" / "images" / f"val_{k}.JPEG", TINY_COLORS[wnid])
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    write_image(root / "train" / TINY_WNIDS[0] / "images" / "grey.JPEG", 128, mode="L")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


def tar_gz(source: Path, archive: Path) -> Path:
    """Pack the folder ``source`` (as its own top-level entry) into the ``.tar.gz`` file ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def zip_dir(source: Path, archive: Path) -> Path:
    """Pack the folder ``source`` (as its own top-level entry) into the ``.zip`` file ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, path.relative_to(source.parent).as_posix())
    return archive


def tar_with_member(archive: Path, name: str, data: bytes = b"evil") -> Path:
    """A ``.tar.gz`` holding one regular file under the (possibly unsafe) member ``name``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return archive


def set_md5s(monkeypatch: pytest.MonkeyPatch, name: str, md5s: dict[str, str]) -> None:
    """Replace the published checksums of dataset ``name`` by ``md5s`` (by remote file name) for one test."""
    spec = SOURCES[name]
    remote = tuple(RemoteFile(r.name, md5s.get(r.name, r.md5), r.extract) for r in spec.remote)
    monkeypatch.setitem(SOURCES, name, dataclasses.replace(spec, remote=remote))
