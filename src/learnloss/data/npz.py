"""Arrays saved with ``numpy.savez``: keys ``x_train, y_train, x_test, y_test`` and optionally ``classes``.

Inputs may be vectors ``(N, D)``, greyscale images ``(N, H, W)``, or images ``(N, C, H, W)`` or ``(N, H, W, C)``:
the latter is recognised when its last dimension is 1, 3 or 4 and the second one is larger than 4, and is
transposed to channels first. ``uint8`` inputs stay ``uint8`` (pixels 0..255); every other dtype becomes ``float32``:
``bool`` as 0.0 / 1.0 (binary features and binarised images are genuine data, and the conversion is exact), integers
and floats by value. Complex, string, date, structured and object arrays are refused, and so are float inputs that
are not finite once in ``float32`` (NaN, infinities, magnitudes beyond 3.4e38).
Labels must be integers ``0..K-1``; ``K`` is the length of ``classes`` when given, else the largest label plus one.

Nothing is decompressed before every member's ``.npy`` header has been read from the archive and checked: its
dtype, its shape, that the archive's directory gives the member exactly the size the header declares, and that
what the loader will hold at its peak (the converted tensors, the labels, the chunks it converts at a time) fits
``LEARNLOSS_MAX_BYTES`` and that the class count fits ``LEARNLOSS_MAX_CLASSES`` (:mod:`learnloss.data.limits`).
Members are then streamed chunk by chunk straight into the final tensors, so a file is never held twice.
"""

from __future__ import annotations

import lzma
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset, channel_stats
from learnloss.data.npyformat import (
    NpyHeader, check_dtype, check_splits, class_names, read_exact, read_npy_header,
)
from learnloss.data.labels import to_labels
from learnloss.data.limits import check_bytes, check_classes, out_of_memory
from learnloss.data.limits import rows_per_chunk
from learnloss.errors import DatasetFormatError, DatasetNotFoundError, LearnLossError

__all__ = ["find_npz", "load_npz"]

KEYS = ("x_train", "y_train", "x_test", "y_test")
_SAVE = "save with numpy.savez(file, x_train=..., y_train=..., x_test=..., y_test=..., [classes=...])"
_STATS_BYTES_PER_VALUE = 20  # channel_stats holds float32, float64 and its square of each value of a chunk
_ZIP_ERRORS = (
    OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zipfile.LargeZipFile,
    zlib.error, lzma.LZMAError, struct.error, UnicodeDecodeError, OverflowError,
)  # fmt: skip


def find_npz(data_dir: str | os.PathLike[str] | None) -> Path:
    """The ``.npz`` file given by ``data_dir``: the file itself, or the only ``.npz`` in that folder.

    Raises:
        DatasetNotFoundError: nothing given, the path does not exist, or the folder holds no ``.npz``.
        DatasetFormatError: the folder holds several ``.npz`` files.
    """
    usage = f"pass --data-dir FILE.npz (or a folder holding exactly one .npz) with keys {', '.join(KEYS)}"
    if data_dir is None:
        raise DatasetNotFoundError(f"npz: no file given; {usage}")
    path = Path(data_dir).expanduser()
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.suffix.lower() == ".npz" and p.is_file())
        if len(candidates) > 1:
            raise DatasetFormatError(
                f"npz: {path} holds several .npz files ({', '.join(p.name for p in candidates)}); pass the one to use"
            )
        if not candidates:
            raise DatasetNotFoundError(f"npz: {path} holds no .npz file; {usage}")
        return candidates[0]
    if not path.is_file():
        raise DatasetNotFoundError(f"npz: {path} does not exist; {usage}")
    return path


@dataclass(frozen=True)
class _Member(NpyHeader):
    """One ``.npy`` member of the archive, as its header declares it (``offset``: where the array data starts within
    the member)."""

    key: str
    info: zipfile.ZipInfo

    @property
    def along_last(self) -> bool:
        """Whether the data is read along the last axis (Fortran order, where that axis varies slowest)."""
        return self.fortran and len(self.shape) > 1

    @property
    def row_bytes(self) -> int:
        """Bytes of one step along the axis the data is read by (the first one, or the last in Fortran order)."""
        rest = self.shape[:-1] if self.along_last else self.shape[1:]
        return math.prod(rest) * self.dtype.itemsize

    @property
    def chunk_bytes(self) -> int:
        """Bytes read at a time (:func:`_fill`): about :data:`CHUNK_BYTES`, at least one step, at most all."""
        return min(self.nbytes, rows_per_chunk(self.row_bytes) * self.row_bytes)

    def describe(self) -> str:
        return f"{self.key} {self.shape} {self.dtype}"


def _read_exact(f: IO[bytes], n: int, what: str, where: str) -> bytes:
    return read_exact(f, n, what, where, _SAVE)


def _header(archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, where: str) -> _Member:
    """Read and check the header of member ``info`` (at most a few KiB are decompressed)."""
    with archive.open(info) as f:
        header = read_npy_header(f, key, where, _SAVE)
    member = _Member(header.shape, header.dtype, header.fortran, header.offset, key, info)
    check_dtype(key, member.dtype, member.shape, where, _SAVE)
    if info.file_size != member.offset + member.nbytes:
        raise DatasetFormatError(
            f"{where}: {key} declares shape {member.shape} of {member.dtype} ({member.nbytes:,} bytes of data) but "
            f"the archive gives it {max(0, info.file_size - member.offset):,}: the file is corrupt or crafted; {_SAVE}"
        )
    return member


def _fill(archive: zipfile.ZipFile, member: _Member, dest: np.ndarray, where: str, finite: bool) -> None:
    """Stream ``member``'s data into ``dest`` (the stored shape, any dtype), a chunk of about
    :data:`CHUNK_BYTES` at a time; with ``finite``, refuse values that are not finite once converted."""
    shape, dtype, along_last = member.shape, member.dtype, member.along_last
    if member.count == 0:
        return
    if not shape:
        shape, dest = (1,), dest.reshape(1)
    rest = shape[:-1] if along_last else shape[1:]
    total = shape[-1] if along_last else shape[0]
    row_bytes = member.row_bytes
    step = rows_per_chunk(row_bytes)
    with archive.open(member.info) as f:
        _read_exact(f, member.offset, f"{member.key} header", where)
        for i in range(0, total, step):
            m = min(step, total - i)
            raw = np.frombuffer(_read_exact(f, m * row_bytes, f"data of {member.key}", where), dtype=dtype)
            if along_last:
                part, target = raw.reshape((*rest, m), order="F"), dest[..., i : i + m]
            else:
                part, target = raw.reshape((m, *rest)), dest[i : i + m]
            with np.errstate(over="ignore", invalid="ignore"):
                target[...] = part
            if finite and not np.isfinite(target).all():
                raise DatasetFormatError(
                    f"{where}: {member.key} holds values that are not finite as float32 (NaN, infinity, or beyond "
                    f"±3.4e38) in samples {i}..{i + m - 1}; clean or rescale the data"
                )
        if f.read(1):  # reading past the end also checks the member's CRC
            raise DatasetFormatError(f"{where}: {member.key} holds more data than its header declares")


def _inputs(archive: zipfile.ZipFile, member: _Member, final: tuple[int, ...], how: str, where: str) -> torch.Tensor:
    out = np.empty(final, dtype=np.uint8 if member.dtype == np.uint8 else np.float32)
    dest = out[:, 0] if how == "grey" else out.transpose(0, 2, 3, 1) if how == "hwc" else out
    _fill(archive, member, dest, where, finite=out.dtype == np.float32 and member.dtype.kind == "f")
    return torch.from_numpy(out)


def _array(archive: zipfile.ZipFile, member: _Member, where: str) -> np.ndarray:
    out = np.empty(member.shape, dtype=member.dtype.newbyteorder("="))
    _fill(archive, member, out, where, finite=False)
    return out


def _members(archive: zipfile.ZipFile, where: str) -> dict[str, _Member]:
    infos = {info.filename: info for info in archive.infolist()}
    found = {name.removesuffix(".npy") for name in infos}
    missing = [k for k in KEYS if k not in found]
    if missing:
        raise DatasetFormatError(
            f"{where}: missing key(s) {', '.join(missing)}; found {', '.join(sorted(found)) or 'none'}; {_SAVE}"
        )
    members = {}
    for key in (*KEYS, "classes"):
        info = infos.get(f"{key}.npy", infos.get(key))
        if info is not None:
            members[key] = _header(archive, key, info, where)
    return members


def _check_members(members: dict[str, _Member], where: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Check shapes, counts and the memory the load will take, from the headers alone; return the input layouts."""
    layouts = check_splits(members, where)
    train = layouts["x_train"][0][1:]
    if "classes" in members:
        check_classes(members["classes"].count, f"{where}: classes")
    held = sum(math.prod(final) * (1 if members[k].dtype == np.uint8 else 4) for k, (final, _) in layouts.items())
    held += sum(members[k].nbytes + 8 * members[k].count for k in ("y_train", "y_test"))
    if "classes" in members:
        held += 2 * members["classes"].nbytes + 64 * members["classes"].count  # the array, then Python strings
    held += 2 * max(m.chunk_bytes for m in members.values())  # the raw chunk, its finiteness mask
    stats_row = _STATS_BYTES_PER_VALUE * math.prod(train)
    held += min(members["x_train"].shape[0], rows_per_chunk(stats_row)) * stats_row  # channel_stats' chunk
    check_bytes(held, f"{where} ({', '.join(members[k].describe() for k in KEYS)})")
    return layouts


def load_npz(data_dir: str | os.PathLike[str] | None) -> Dataset:
    """Load the arrays of the ``.npz`` file found by :func:`find_npz` (never with pickle).

    Every member's header is checked before any data is decompressed (see the module docstring), so a small file
    that declares gigabytes is refused without allocating them; the load then holds each array once, converted.
    Image inputs are augmented by padding an eighth of the smaller side, without flips; vectors are not augmented.

    Raises:
        DatasetNotFoundError: see :func:`find_npz`.
        DatasetFormatError: the file is unreadable, lacks a key, or holds arrays of unsupported shape, dtype or
            values, or a member whose header and archive entry disagree.
        ResourceLimitError: the arrays would take more than ``LEARNLOSS_MAX_BYTES``, the classes exceed
            ``LEARNLOSS_MAX_CLASSES``, or an image exceeds ``LEARNLOSS_MAX_IMAGE_PIXELS``; also when memory runs out.
    """
    path = find_npz(data_dir)
    where = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, where)
            layouts = _check_members(members, where)
            names = _array(archive, members["classes"], where) if "classes" in members else None
            num_classes = None if names is None else len(names)
            y_train = to_labels(_array(archive, members["y_train"], where), num_classes, f"{where}: y_train")
            y_test = to_labels(_array(archive, members["y_test"], where), num_classes, f"{where}: y_test")
            x_train = _inputs(archive, members["x_train"], *layouts["x_train"], where)
            x_test = _inputs(archive, members["x_test"], *layouts["x_test"], where)
    except LearnLossError:
        raise
    except MemoryError:
        raise out_of_memory(where) from None
    except _ZIP_ERRORS as exc:
        raise DatasetFormatError(
            f"{where}: cannot read as a .npz file of plain arrays ({type(exc).__name__}: {exc}); {_SAVE}"
        ) from None
    if names is not None:
        classes = class_names(names, where)
    else:
        top = max((int(y.max()) for y in (y_train, y_test) if len(y)), default=-1)
        classes = [str(k) for k in range(top + 1)]
    augment = AugmentSpec.for_unknown_images(*x_train.shape[2:]) if x_train.dim() == 4 else AugmentSpec()
    mean, std = None, None
    if len(x_train):  # an empty split is refused by Dataset
        chunk = rows_per_chunk(_STATS_BYTES_PER_VALUE * math.prod(x_train.shape[1:]))
        mean, std = channel_stats(x_train, chunk=chunk)
    return Dataset("npz", x_train, y_train, x_test, y_test, classes, augment, mean, std)
