"""Hostile inputs: files that declare more than they hold, inflate, or carry values no dataset has.

Each is refused with one line (a :class:`~learnloss.errors.LearnLossError`) *before* the memory it declares is
allocated: the peak of traced allocations (``tracemalloc``, which sees numpy's buffers and Python's objects) stays
far below what the file declares. No test measures time or RSS.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import cifar_pickle, idx_bytes, write_cifar10, write_idx_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnloss.data import load_dataset
from learnloss.data import npz as npz_module
from learnloss.data.dataset import Dataset
from learnloss.data.idx import read_idx
from learnloss.data.labels import to_labels
from learnloss.data.limits import ResourceLimitError, check_bytes, limits
from learnloss.data.safe_pickle import RestrictedUnpickler, load_pickle
from learnloss.errors import DatasetFormatError, LearnLossError, UsageError

MiB = 1024 * 1024


@contextmanager
def peak_below(n_bytes: int) -> Iterator[None]:
    """Fail unless the traced allocations within stay below ``n_bytes`` at their peak."""
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < n_bytes, f"peak of traced allocations {peak:,} bytes, expected below {n_bytes:,}"


def refused(error: type[LearnLossError], match: str, load: Callable[[], object], peak: int = MiB) -> str:
    """The one-line message with which ``load()`` is refused (before allocating ``peak`` bytes)."""
    with peak_below(peak), pytest.raises(error, match=match) as info:
        load()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------------------------------------- the limits


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", "2e6")
    monkeypatch.setenv("LEARNLOSS_MAX_CLASSES", "7")
    assert (limits().max_bytes, limits().max_classes) == (2_000_000, 7)
    with pytest.raises(ResourceLimitError, match=r"thing: would take 1\.9 MiB.*LEARNLOSS_MAX_BYTES"):
        check_bytes(2_000_001, "thing")
    check_bytes(2_000_000, "thing")
    for bad in ("-1", "0", "1.5", "lots"):
        monkeypatch.setenv("LEARNLOSS_MAX_BYTES", bad)
        with pytest.raises(UsageError, match="LEARNLOSS_MAX_BYTES=.*positive whole number"):
            limits()


def test_default_byte_limit_is_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEARNLOSS_MAX_BYTES", raising=False)
    assert 256 * MiB <= limits().max_bytes < 2**50


# ------------------------------------------------------------------------------------------------------------- npz


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _plain_members(n: int = 6) -> dict[str, bytes]:
    return {"y_train.npy": _npy(np.arange(n) % 3), "x_test.npy": _npy(np.zeros((2, 5), np.float32)),
            "y_test.npy": _npy(np.arange(2))}  # fmt: skip


def _declaring_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A version 1.0 ``.npy`` header declaring ``shape`` (and no data)."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _with_zip64_size(data: bytes, member: str, file_size: int) -> bytes:
    """The zip ``data`` with the central-directory entry of ``member`` claiming ``file_size`` uncompressed bytes."""
    eocd = data.rindex(b"PK\x05\x06")
    (_, _, _, n_this, n_total, cd_size, cd_offset, _) = struct.unpack("<4s4H2LH", data[eocd : eocd + 22])
    entries, pos = [], cd_offset
    for _ in range(n_total):
        fixed = list(struct.unpack("<4s4B4HL2L5H2L", data[pos : pos + 46]))
        name_len, extra_len, comment_len = fixed[12:15]
        name = data[pos + 46 : pos + 46 + name_len]
        extra = data[pos + 46 + name_len : pos + 46 + name_len + extra_len]
        comment = data[pos + 46 + name_len + extra_len : pos + 46 + name_len + extra_len + comment_len]
        pos += 46 + name_len + extra_len + comment_len
        if name.decode() == member:
            fixed[11] = 0xFFFFFFFF  # the uncompressed size lives in the zip64 extra field
            extra = struct.pack("<HHQ", 1, 8, file_size) + extra
            fixed[13] = len(extra)
        entries.append(struct.pack("<4s4B4HL2L5H2L", *fixed) + name + extra + comment)
    directory = b"".join(entries)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n_this, n_total, len(directory), cd_offset, 0)
    return data[:cd_offset] + directory + end


def _npz_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return out.getvalue()


def test_npz_header_declaring_terabytes_is_refused_before_allocation(tmp_path: Path) -> None:
    n = 200_000_000_000
    x, y = _declaring_header((n, 5)), _declaring_header((n,), "<i8")  # 4 TB of float32, 1.6 TB of labels
    data = _npz_bytes({**_plain_members(), "x_train.npy": x, "y_train.npy": y})
    data = _with_zip64_size(data, "x_train.npy", len(x) + 4 * 5 * n)  # and the archive agrees
    data = _with_zip64_size(data, "y_train.npy", len(y) + 8 * n)
    path = tmp_path / "huge.npz"
    path.write_bytes(data)
    assert len(data) < 2000
    message = refused(ResourceLimitError, "LEARNLOSS_MAX_BYTES", lambda: load_dataset("npz", path))
    assert str(path) in message and "x_train (200000000000, 5) float32" in message and "TiB" in message


def test_npz_header_that_the_archive_contradicts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.npz"
    path.write_bytes(_npz_bytes({**_plain_members(), "x_train.npy": _declaring_header((1_000_000, 1_000_000))}))
    message = refused(DatasetFormatError, "corrupt or crafted", lambda: load_dataset("npz", path))
    assert "x_train declares shape (1000000, 1000000)" in message


def test_npz_zip_bomb_is_refused_under_a_small_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x_train=np.zeros((64, 256, 256), np.uint8), y_train=np.zeros(64, np.int64),
                        x_test=np.zeros((1, 256, 256), np.uint8), y_test=np.zeros(1, np.int64))
    assert path.stat().st_size < 64 * 1024  # 4 MiB of pixels
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(MiB))
    message = refused(ResourceLimitError, r"LEARNLOSS_MAX_BYTES", lambda: load_dataset("npz", path), peak=MiB // 2)
    assert "more than the limit of 1.0 MiB" in message and "x_train (64, 256, 256) uint8" in message
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(64 * MiB))  # the setting is what decides
    assert load_dataset("npz", path).x_train.shape == (64, 1, 256, 256)


def test_npz_is_streamed_into_its_tensors(tmp_path: Path) -> None:
    """A float64 channels-last file is held once, as float32 channels-first: no stored copy, no transposed copy."""
    path = tmp_path / "f64.npz"
    x = np.arange(2048 * 32 * 32 * 3, dtype=np.float64).reshape(2048, 32, 32, 3) % 251  # 48 MiB stored
    np.savez(path, x_train=x, y_train=np.arange(2048) % 10, x_test=x[:8], y_test=np.arange(8))
    with peak_below(24 * MiB + 2 * 16 * MiB + 4 * MiB):  # 24 MiB of float32 plus a chunk: never the 48 MiB
        ds = load_dataset("npz", path)
    np.testing.assert_array_equal(ds.x_train.numpy().transpose(0, 2, 3, 1), x.astype(np.float32))


@pytest.mark.parametrize(
    "x,error,match",
    [
        (np.zeros((6, 5), np.complex64), DatasetFormatError, "complex numbers"),
        (np.array([[np.nan] * 5] * 6), DatasetFormatError, "not finite"),
        (np.full((6, 5), 1e300), DatasetFormatError, "not finite"),
        (np.zeros((6, 5), "datetime64[s]"), DatasetFormatError, "numeric"),
        (np.zeros(6, [("a", "f4"), ("b", "i4")]), DatasetFormatError, "structured"),
        (np.zeros((6, 0), np.float32), DatasetFormatError, "holds no value"),
    ],
)
def test_npz_inputs_no_dataset_has(tmp_path: Path, x: np.ndarray, error: type[Exception], match: str) -> None:
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.arange(2))
    refused(error, match, lambda: load_dataset("npz", tmp_path / "d.npz"))


def test_npz_bool_inputs_become_float_zero_and_one(tmp_path: Path) -> None:
    x = np.arange(30).reshape(6, 5) % 3 == 0
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.arange(2))
    ds = load_dataset("npz", tmp_path / "d.npz")
    assert ds.x_train.dtype == torch.float32 and torch.equal(ds.x_train, torch.from_numpy(x.astype(np.float32)))


def test_npz_million_class_label_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.zeros((6, 2), np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.array([0, 1, 2, 0, 1, 10**6]), x_test=x[:2], y_test=np.arange(2))
    message = refused(ResourceLimitError, "LEARNLOSS_MAX_CLASSES", lambda: load_dataset("npz", path))
    assert "y_train" in message and "1,000,001 classes" in message and "'classes'" in message
    monkeypatch.setenv("LEARNLOSS_MAX_CLASSES", "3")
    np.savez(path, x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.arange(2), classes=np.array(list("abcd")))
    refused(ResourceLimitError, "4 classes.*limit of 3", lambda: load_dataset("npz", path))


def test_npz_memory_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.zeros((6, 2), np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.arange(2))

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(npz_module, "_fill", exhausted)
    refused(ResourceLimitError, "ran out of memory while decoding", lambda: load_dataset("npz", tmp_path / "d.npz"))


# ----------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "values,error,match",
    [
        ([0, 1, True], DatasetFormatError, "type bool"),
        (np.array([True, False]), DatasetFormatError, "booleans"),
        ([0, 1.0], DatasetFormatError, "type float"),
        ([0, -1], DatasetFormatError, "0..K-1"),
        ([0, [1]], DatasetFormatError, "type list"),
        ([0, 2**70], DatasetFormatError, "0..K-1"),
        ("012", DatasetFormatError, "got str"),
        (np.array([0, 200_000]), ResourceLimitError, "200,001 classes"),
        (np.array([0, 2**64 - 1], np.uint64), DatasetFormatError, "0..K-1"),
    ],
)
def test_to_labels_refuses(values: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        to_labels(values, None, "here")


# --------------------------------------------------------------------------------------------------- pickles


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tiny_inflating_batch(n: int = 100_000) -> bytes:
    """A CIFAR batch of ``n`` images in a few hundred bytes: numpy's own array reconstruction, with the raw data
    made by calling ``bytes(n * 3072)`` and the labels by ``list(bytes(n))`` (only allowed globals)."""
    int4 = b"J" + struct.pack("<i", n * 3072)
    data = (
        _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R"
        + b"(K\x01J" + struct.pack("<i", n) + b"M\x00\x0c\x86" + _global("numpy", "dtype") + b"X\x02\x00\x00\x00u1"
        + b"\x89\x88\x87R\x89" + _global("__builtin__", "bytes") + int4 + b"\x85Rtb"
    )  # fmt: skip
    labels = _global("__builtin__", "list") + _global("__builtin__", "bytes") + b"J" + struct.pack("<i", n) + b"\x85R\x85R"
    return b"\x80\x03}(C\x04data" + data + b"C\x06labels" + labels + b"u."


def _cifar(tmp_path: Path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path / "cifar-10-batches-py"


def test_tiny_pickle_that_calls_its_way_to_100000_images_is_refused(tmp_path: Path) -> None:
    batch = _cifar(tmp_path) / "data_batch_1"
    content = _tiny_inflating_batch()
    assert len(content) < 300
    batch.write_bytes(content)
    message = refused(DatasetFormatError, r"refusing to unpickle, it calls __builtin__\.bytes with arguments",
                      lambda: load_dataset("cifar10", tmp_path, download=False))
    assert str(batch) in message


def test_repeated_row_pickle_is_refused_before_images_are_built(tmp_path: Path) -> None:
    row = np.zeros(3072, np.uint8).tobytes()
    content = cifar_pickle({b"data": [row] * 100_000, b"labels": [0] * 100_000})  # one row, memoised
    assert len(content) < 500_000  # 307 MB of images if the rows were materialised
    batch = _cifar(tmp_path) / "data_batch_1"
    batch.write_bytes(content)
    refused(DatasetFormatError, r"expected 'data' to be a uint8 array of shape \(N, 3072\), got list",
            lambda: load_dataset("cifar10", tmp_path, download=False), peak=8 * MiB)


def test_pickle_that_rebuilds_one_array_many_times_is_refused(tmp_path: Path) -> None:
    one = pickle.dumps(np.zeros(50_000, ">f8"), protocol=3)  # byteswapped: numpy copies it at each rebuild
    body = one[: one.rindex(b"b")]  # up to the BUILD of the state; the state is memoised under the last BINPUT
    state_memo = body[-1:]
    rebuild = b"h\x00h\x01h\x02h\x03\x87Rh" + state_memo + b"b"  # _reconstruct(ndarray, (0,), 'b') + the state
    content = body + b"b]q\xff(" + rebuild * 1000 + b"e."
    path = tmp_path / "p"
    path.write_bytes(content)
    refused(DatasetFormatError, "repeats data to inflate it", lambda: load_pickle(path), peak=2 * MiB)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"\x80\x02Nr" + struct.pack("<I", 400_000_000) + b".", "memo index 400,000,000"),  # a 6 GB memo table
        (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "frame of 1,099,511,627,776 bytes"),
        (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.", "not a valid pickle"),
        (b"\x80\x02" + _global("numpy", "ndarray") + b"J\x00\xca\x9a\x3b\x85R.", "calls numpy.ndarray directly"),
        (b"\x80\x02" + _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
         + b"J\x00\xca\x9a\x3b\x85C\x01b\x87R.", "_reconstruct with other arguments"),
        (b"\x80\x02I" + b"9" * 5000 + b"\n.", "not a valid pickle"),
        (b"\x80\x02" + _global("__builtin__", "str") + b"X\x01\x00\x00\x009\x85R.", "calls __builtin__.str"),
        (b"\x80\x02" + _global("os", "system") + b".", "references os.system"),
    ],
)
def test_hostile_pickles_are_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "p"
    path.write_bytes(content)
    refused(DatasetFormatError, match, lambda: load_pickle(path))


def test_pickle_within_the_byte_limit_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p"
    path.write_bytes(cifar_pickle({b"data": np.zeros((200, 3072), np.uint8), b"labels": [0] * 200}))
    assert load_pickle(path)[b"data"].shape == (200, 3072)
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(200 * 3072))
    refused(ResourceLimitError, "LEARNLOSS_MAX_BYTES", lambda: load_pickle(path))


def test_memory_error_while_unpickling_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p"
    path.write_bytes(cifar_pickle({b"data": np.zeros((2, 3072), np.uint8)}))

    def exhausted(self: object) -> None:
        raise MemoryError

    monkeypatch.setattr(RestrictedUnpickler, "load", exhausted)
    refused(ResourceLimitError, "ran out of memory", lambda: load_pickle(path))


@pytest.mark.parametrize(
    "obj,error,match",
    [
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, True]}, DatasetFormatError, "type bool"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": {0: 1}}, DatasetFormatError, "list of integers"),
        ({b"data": np.zeros((2, 3072), np.int64), b"labels": [0, 1]}, DatasetFormatError, "int64"),
        ({b"data": b"\0" * 6144, b"labels": [0, 1]}, DatasetFormatError, "got bytes"),
        ({10**600: 1}, DatasetFormatError, "text keys"),
    ],
)
def test_cifar_batches_of_the_wrong_kind(tmp_path: Path, obj: object, error: type[Exception], match: str) -> None:
    (_cifar(tmp_path) / "data_batch_4").write_bytes(cifar_pickle(obj))
    refused(error, match, lambda: load_dataset("cifar10", tmp_path, download=False))


def test_cifar_class_names_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = _cifar(tmp_path) / "batches.meta"
    monkeypatch.setenv("LEARNLOSS_MAX_CLASSES", "9")
    refused(ResourceLimitError, "10 classes", lambda: load_dataset("cifar10", tmp_path, download=False))
    monkeypatch.delenv("LEARNLOSS_MAX_CLASSES")
    meta.write_bytes(cifar_pickle({b"label_names": [b"\xff"] * 10}))
    refused(DatasetFormatError, "not UTF-8", lambda: load_dataset("cifar10", tmp_path, download=False))


# ----------------------------------------------------------------------------------------------------------- IDX


def test_idx_declaring_more_than_a_gzip_can_hold(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 10000, 10000)))
    message = refused(DatasetFormatError, "more than a gzip file of", lambda: read_idx(path))
    assert "(60000, 10000, 10000)" in message


def test_idx_declaring_more_than_a_raw_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 10000, 10000) + b"\x00" * 100)
    refused(DatasetFormatError, "truncated or corrupt", lambda: read_idx(path))


def test_idx_gzip_bomb_under_a_small_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "zeros.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((64, 256, 256), np.uint8))))
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(MiB))
    refused(ResourceLimitError, "LEARNLOSS_MAX_BYTES", lambda: read_idx(path), peak=MiB // 2)
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(64 * MiB))
    with peak_below(4 * MiB + 2 * 16 * MiB):  # the array and a chunk, not the whole decompressed file twice
        assert read_idx(path).shape == (64, 256, 256)


def test_idx_dataset_checks_declared_sizes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_set(tmp_path, gz=False)
    monkeypatch.setenv("LEARNLOSS_MAX_IMAGE_PIXELS", "700")
    refused(ResourceLimitError, "28 × 28.*LEARNLOSS_MAX_IMAGE_PIXELS",
            lambda: load_dataset("mnist", tmp_path, download=False))
    monkeypatch.delenv("LEARNLOSS_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", "10000")
    refused(ResourceLimitError, "IDX files in", lambda: load_dataset("mnist", tmp_path, download=False))


# ------------------------------------------------------------------------------------------- random damage

_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _damaged(data: bytes) -> st.SearchStrategy[bytes]:
    def flip(flips: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for position, bit in flips:
            out[position % len(out)] ^= 1 << bit
        return bytes(out)

    flips = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)), min_size=1, max_size=8)
    return st.one_of(
        flips.map(flip),
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.binary(max_size=400),
    )


def _either_dataset_or_one_line(load: Callable[[], object]) -> None:
    try:
        result = load()
    except LearnLossError as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(result, (Dataset, np.ndarray))


def _valid_npz() -> bytes:
    out = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(out, x_train=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), y_train=np.arange(6) % 3,
                        x_test=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), y_test=np.arange(2),
                        classes=np.array(list("abc")))
    return out.getvalue()


@_FUZZ
@given(content=_damaged(_valid_npz()))
def test_damaged_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    _either_dataset_or_one_line(lambda: load_dataset("npz", path))


def _valid_batch() -> bytes:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    return cifar_pickle({b"batch_label": b"b", b"labels": [1, 2], b"data": data, b"filenames": [b"a", b"b"]})


@_FUZZ
@given(content=_damaged(_valid_batch()))
def test_damaged_cifar_batch(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "c" / "cifar-10-batches-py"
    if not root.is_dir():
        _cifar(tmp_path / "c")
    (root / "data_batch_2").write_bytes(content)
    _either_dataset_or_one_line(lambda: load_dataset("cifar10", tmp_path / "c", download=False))


@_FUZZ
@given(content=_damaged(gzip.compress(idx_bytes(np.arange(40, dtype=np.uint8).reshape(2, 5, 4)))))
def test_damaged_gzipped_idx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(content)
    _either_dataset_or_one_line(lambda: read_idx(path))


@_FUZZ
@given(content=_damaged(idx_bytes(np.arange(12, dtype=">f4").reshape(3, 4))))
def test_damaged_raw_idx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "values"
    path.write_bytes(content)
    _either_dataset_or_one_line(lambda: read_idx(path))
