"""Pools larger than memory: a folder of ``.npy`` files read through memory maps (``--dataset npy``)."""

from __future__ import annotations

import mmap
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from learnloss.active.loop import ActiveLearningLoop, LoopConfig
from learnloss.data import ArraySource, MemmapSource, load_dataset, materialize
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import Dataset, channel_stats
from learnloss.data.limits import ResourceLimitError
from learnloss.data.npy import load_npy
from learnloss.errors import DatasetFormatError, DatasetNotFoundError
from learnloss.runs.journal import data_fingerprint
from learnloss.strategies import build_strategy
from learnloss.training import TrainConfig
from tests_support import TinyNet, make_dataset


def _save(folder: Path, x_train: np.ndarray, x_test: np.ndarray, y_train: np.ndarray | None = None,
          y_test: np.ndarray | None = None, **extra: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": x_train, "x_test": x_test,
              "y_train": np.arange(len(x_train)) % 3 if y_train is None else y_train,
              "y_test": np.arange(len(x_test)) % 3 if y_test is None else y_test, **extra}
    for key, array in arrays.items():
        np.save(folder / f"{key}.npy", array)
    return folder


@pytest.mark.parametrize(
    "shape,expected,channels_last",
    [((7, 5), (7, 5), False), ((7, 8, 9), (7, 1, 8, 9), False), ((7, 8, 9, 3), (7, 3, 8, 9), True),
     ((7, 3, 8, 9), (7, 3, 8, 9), False)],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.int16, ">f4", np.bool_])
def test_npy_reads_what_npz_reads(tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...],
                                  channels_last: bool, dtype: str) -> None:
    x = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    folder = _save(tmp_path / "npy", x, x[:4])
    np.savez(tmp_path / "d.npz", x_train=x, x_test=x[:4], y_train=np.arange(7) % 3, y_test=np.arange(4) % 3)
    mapped, loaded = load_dataset("npy", folder), load_dataset("npz", tmp_path / "d.npz")
    assert isinstance(mapped.x_train, MemmapSource) and isinstance(mapped.x_test, MemmapSource)
    assert mapped.x_train.shape == loaded.x_train.shape == expected and mapped.x_train.dtype == loaded.x_train.dtype
    assert torch.equal(materialize(mapped.x_train, "x"), loaded.x_train)
    assert torch.equal(mapped.x_test[:], loaded.x_test)
    assert torch.equal(mapped.mean, loaded.mean) and torch.equal(mapped.std, loaded.std)
    assert mapped.classes == loaded.classes and torch.equal(mapped.y_train, loaded.y_train)
    assert mapped.augment == loaded.augment and mapped.input_shape == loaded.input_shape
    back = mapped.x_train[:].numpy()
    np.testing.assert_array_equal((back.transpose(0, 2, 3, 1) if channels_last else back).reshape(shape),
                                  x.astype(np.uint8 if x.dtype == np.uint8 else np.float32))


def test_rows_are_read_as_asked(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(0, 256, (50, 1, 4, 4)).astype(np.uint8)
    source = load_npy(_save(tmp_path, x, x[:3])).x_train
    assert isinstance(source, ArraySource) and len(source) == 50 and source.dim() == 4 and source.numel() == x.size
    expected = torch.from_numpy(x)
    for index in (torch.tensor([7, 3, 3, 49, 0]), np.array([5, -1]), [2, 4], 9, -2, slice(10, 20, 3), slice(40, None),
                  torch.arange(50) % 2 == 0, torch.tensor([], dtype=torch.long)):
        got = source[index]
        want = expected[index if not isinstance(index, int) else [index]]
        assert got.dtype == torch.uint8 and torch.equal(got, want), index
    for bad in (torch.tensor([50]), [-51], torch.tensor([[1]]), torch.tensor([0.5]), "a", np.ones(3, bool)):
        with pytest.raises(IndexError):
            source[bad]
    # what every consumer of a dataset does: slices, a device, batches
    assert torch.equal(source[torch.tensor([1, 2]).to(source.device)], expected[1:3])
    batches = ArrayBatches(source, None, np.array([4, 1, 30]), 2, lambda b: b.float(), torch.device("cpu"))
    assert [index.tolist() for index, _, _ in batches] == [[4, 1], [30]]
    assert torch.equal(torch.cat([inputs for _, inputs, _ in batches]), expected[[4, 1, 30]].float())


def test_resident_pages_are_given_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.arange(4096 * 64, dtype=np.uint8).reshape(4096, 64)  # 256 KiB of rows
    folder = _save(tmp_path, x, x[:2])
    advised: list[tuple[int, int, int]] = []
    source = load_npy(folder, resident_bytes=32 * 1024).x_train
    assert isinstance(source, MemmapSource) and source._map is not None

    class Spy:
        def __init__(self, inner: mmap.mmap) -> None:
            self.inner = inner

        def madvise(self, option: int, start: int, length: int) -> None:
            advised.append((option, start, length))
            self.inner.madvise(option, start, length)

        def __len__(self) -> int:
            return len(self.inner)

    monkeypatch.setattr(source, "_map", Spy(source._map))
    for start in range(0, 4096, 256):  # 16 KiB per read: a release every second read
        assert torch.equal(source[start:start + 256], torch.from_numpy(x[start:start + 256]))
    assert len(advised) == 8 and all(option == mmap.MADV_DONTNEED for option, _, _ in advised)
    assert all(start % mmap.PAGESIZE == 0 for _, start, _ in advised)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 4096, 64)
    assert torch.equal(source[rows], torch.from_numpy(x[rows]))  # scattered rows count their fault-around
    released = [a for a in advised if a[0] == mmap.MADV_DONTNEED]
    wanted = [a for a in advised if a[0] == mmap.MADV_WILLNEED]  # their pages were asked for at once
    assert len(released) == 9 and wanted and all(start % mmap.PAGESIZE == 0 for _, start, _ in wanted)
    pages = {p for _, start, length in wanted for p in range(start // mmap.PAGESIZE,
                                                             -(-(start + length) // mmap.PAGESIZE))}
    assert {(source.offset + 64 * int(r)) // mmap.PAGESIZE for r in rows} <= pages
    assert len(pages) <= len(set(rows.tolist())) * 2
    assert torch.equal(source[rows], torch.from_numpy(x[rows]))  # still readable after the pages went back


def test_a_source_pickles_without_its_map(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((20, 6)).astype(np.float32)
    source = load_npy(_save(tmp_path, x, x[:2])).x_train
    copy = pickle.loads(pickle.dumps(source))
    assert torch.equal(copy[[3, 1]], torch.from_numpy(x[[3, 1]])) and copy.shape == source.shape


def test_statistics_of_a_large_source_come_from_evenly_spaced_rows(tmp_path: Path) -> None:
    x = np.random.default_rng(3).integers(0, 256, (1000, 2, 3, 3)).astype(np.uint8)
    folder = _save(tmp_path, x, x[:2])
    source = load_npy(folder).x_train
    assert isinstance(source, MemmapSource)
    exact = channel_stats(torch.from_numpy(x))
    assert all(torch.equal(a, b) for a, b in zip(channel_stats(source), exact))
    source.stats_rows = 101
    rows = np.unique(np.linspace(0, 999, 101).round().astype(np.int64))
    sampled = channel_stats(torch.from_numpy(x[rows]))
    assert all(torch.allclose(a, b) for a, b in zip(channel_stats(source), sampled))


def test_data_fingerprint_is_that_of_the_same_data_in_memory(tmp_path: Path) -> None:
    data = make_dataset(40, 10)
    mapped = load_npy(_save(tmp_path, data.x_train.numpy(), data.x_test.numpy(), data.y_train.numpy(),
                            data.y_test.numpy(), classes=np.array(data.classes)))
    assert data_fingerprint(mapped) == data_fingerprint(Dataset("x", data.x_train, data.y_train, data.x_test,
                                                                data.y_test, data.classes))


def test_a_memory_mapped_pool_selects_what_the_same_pool_in_memory_selects(tmp_path: Path) -> None:
    data = make_dataset()
    grey = data.x_train.numpy()[:, 0]  # stored (N, H, W): the map adds the channel per batch
    mapped = load_npy(_save(tmp_path, grey, data.x_test.numpy()[:, 0], data.y_train.numpy(), data.y_test.numpy(),
                            classes=np.array(data.classes)))
    assert isinstance(mapped.x_train, MemmapSource)
    mapped.augment = data.augment
    outcomes = []
    for dataset in (data, mapped):
        torch.manual_seed(0)
        loop = ActiveLearningLoop(
            TinyNet(), dataset, build_strategy("learning-loss"),
            LoopConfig(initial=20, query=10, cycles=2, subset=60, seed=0, layers=["conv", "hidden"],
                       embedding_layer="hidden"),
            TrainConfig(epochs=2, batch_size=16, lr=0.05, milestones=(), stop_grad_epoch=1),
        )
        results = loop.run()
        selected, scores = loop.query_scored(10)
        outcomes.append(([r.selected for r in results], [r.metrics for r in results], selected.tolist(),
                         scores.tolist() if scores is not None else None))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] and outcomes[0][3] is not None


def test_bad_folders_are_refused_before_anything_is_mapped(tmp_path: Path) -> None:
    x = np.zeros((6, 4, 4), np.uint8)
    with pytest.raises(DatasetNotFoundError, match="no folder given"):
        load_npy(None)
    with pytest.raises(DatasetNotFoundError, match="lacks y_test.npy"):
        folder = _save(tmp_path / "a", x, x[:2])
        (folder / "y_test.npy").unlink()
        load_npy(folder)
    folder = _save(tmp_path / "b", x, x[:2])
    data = (folder / "x_train.npy").read_bytes()
    (folder / "x_train.npy").write_bytes(data[:-5])
    with pytest.raises(DatasetFormatError, match="truncated"):
        load_npy(folder)
    folder = _save(tmp_path / "c", np.asfortranarray(np.zeros((6, 4, 5), np.uint8)), x[:2, :, :5].copy())
    with pytest.raises(DatasetFormatError, match="Fortran order"):
        load_npy(folder)
    folder = _save(tmp_path / "d", x, x[:2, :3])
    with pytest.raises(DatasetFormatError, match="both splits"):
        load_npy(folder)
    folder = _save(tmp_path / "e", x, x[:2], y_train=np.arange(5))
    with pytest.raises(DatasetFormatError, match="6 inputs but y_train.npy 5 labels"):
        load_npy(folder)
    folder = _save(tmp_path / "f", x.astype(np.complex64), x[:2].astype(np.complex64))
    with pytest.raises(DatasetFormatError, match="complex"):
        load_npy(folder)
    folder = _save(tmp_path / "g", x, x[:2], y_train=np.arange(6) * 1.5)
    with pytest.raises(DatasetFormatError, match="integers"):
        load_npy(folder)
    _save(tmp_path / "h", x, x[:2])
    np.save(tmp_path / "h" / "x_train.npy", np.array([object()] * 6), allow_pickle=True)
    with pytest.raises(DatasetFormatError, match="pickle"):
        load_npy(tmp_path / "h")


def test_limits_bound_what_is_loaded_not_what_is_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.zeros((4096, 64, 64), np.uint8)  # 16 MiB of inputs, mapped
    folder = _save(tmp_path, x, x[:2])
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(100 << 20))
    assert len(load_npy(folder, resident_bytes=1 << 20).x_train) == 4096
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", str(1 << 20))
    with pytest.raises(ResourceLimitError, match="LEARNLOSS_MAX_BYTES"):
        load_npy(folder, resident_bytes=1 << 20)


def test_non_finite_rows_are_refused_when_read(tmp_path: Path) -> None:
    x = np.ones((8, 3), np.float64)
    x[5, 1] = np.nan
    data = load_npy(_save(tmp_path, x[:4], x[:2]))  # the statistics read every row: x[:4] is clean
    assert torch.equal(data.x_train[:], torch.ones(4, 3))
    mapped = load_npy(_save(tmp_path / "bad", x[:4], x))
    assert torch.equal(mapped.x_test[[0, 4]], torch.ones(2, 3))
    with pytest.raises(DatasetFormatError, match="not finite .* in sample 5"):
        mapped.x_test[[7, 5]]
