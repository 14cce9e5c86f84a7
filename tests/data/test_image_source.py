"""Image files decoded per batch: lazily, in parallel, through a cache bounded in bytes."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learnloss.data import ImageSource
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import AugmentSpec, channel_stats
from learnloss.data.image_source import ByteCache
from learnloss.data.images import read_images
from learnloss.errors import DatasetFormatError


def _images(folder: Path, n: int = 24, rgb: bool = True) -> list[Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        size = (10 + i % 3, 9)  # sizes differ: they are resized to one
        pixels = rng.integers(0, 256, (size[1], size[0], 3) if rgb else (size[1], size[0]), dtype=np.uint8)
        paths.append(folder / f"{i:02d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_nothing_is_decoded_before_its_rows_are_read(tmp_path: Path) -> None:
    paths = _images(tmp_path)
    expected = torch.from_numpy(read_images(paths, "RGB", (8, 8), resize=True))
    source = ImageSource(paths, "RGB", (8, 8), workers=2)
    assert source.decoded == 0 and source.shape == (24, 3, 8, 8) and source.dtype == torch.uint8
    assert torch.equal(source[torch.tensor([5, 2, 5])], expected[[5, 2, 5]])
    assert source.decoded == 2  # a repeated row is decoded once
    assert torch.equal(source[[2, 5, 7]], expected[[2, 5, 7]]) and source.decoded == 3  # 2 and 5 were cached
    assert torch.equal(source[:], expected) and source.decoded == 24
    assert torch.equal(ImageSource(paths, "L", (8, 8))[[0, 23]],
                       torch.from_numpy(read_images([paths[0], paths[23]], "L", (8, 8), resize=True)))


@pytest.mark.parametrize("prefetch", [False, None])
def test_batches_decode_only_their_own_rows(tmp_path: Path, prefetch: bool | None) -> None:
    paths = _images(tmp_path)
    source = ImageSource(paths, "RGB", (8, 8), cache_bytes=0, workers=2)
    expected = torch.from_numpy(read_images(paths, "RGB", (8, 8), resize=True))
    batches = ArrayBatches(source, None, np.arange(24), 5, lambda b: b.float(), torch.device("cpu"),
                           shuffle=torch.Generator().manual_seed(0), prefetch=prefetch)
    decoded = []
    for index, inputs, _ in batches:
        decoded.append(source.decoded)
        assert torch.equal(inputs, expected[index].float())
    ends = [5, 10, 15, 20, 24]
    if prefetch is False:
        assert decoded == ends  # per batch, never ahead of the batch
    else:  # by default the next batch is read while this one is used: at most one batch ahead
        assert all(end <= seen <= after for seen, end, after in zip(decoded, ends, ends[1:] + [24]))
    list(batches)
    assert source.decoded == 48  # nothing cached: the next epoch decodes again


def test_reading_ahead_gives_the_same_batches(tmp_path: Path) -> None:
    paths = _images(tmp_path)
    source = ImageSource(paths, "RGB", (8, 8), cache_bytes=0, workers=2)
    runs = []
    for prefetch in (False, True):
        generator = torch.Generator().manual_seed(3)
        batches = ArrayBatches(source, torch.arange(24), np.arange(24), 5, lambda b: b.float() / 255,
                               torch.device("cpu"), shuffle=generator, augment=AugmentSpec(pad=1, flip=True),
                               merge_singleton=True, prefetch=prefetch)
        runs.append([(i.tolist(), x, y.tolist()) for _ in range(2) for i, x, y in batches])
        runs[-1].append(generator.get_state())
    for (a, b) in zip(runs[0][:-1], runs[1][:-1]):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert torch.equal(runs[0][-1], runs[1][-1])
    stopped = iter(ArrayBatches(source, None, np.arange(24), 5, lambda b: b.float(), torch.device("cpu")))
    next(stopped)
    del stopped  # leaving early waits for the batch read ahead, and leaves no thread behind
    assert not [t for t in threading.enumerate() if t.name.startswith("learnloss-prefetch")]


def test_the_cache_never_exceeds_its_bound(tmp_path: Path) -> None:
    paths = _images(tmp_path)
    image_bytes = 3 * 8 * 8
    source = ImageSource(paths, "RGB", (8, 8), cache_bytes=5 * image_bytes + 10, workers=2)
    rng = np.random.default_rng(1)
    for _ in range(30):
        rows = rng.integers(0, 24, int(rng.integers(1, 9)))
        source[rows]
        assert source.cache.nbytes <= source.cache.max_bytes and len(source.cache) <= 5
    assert len(source.cache) == 5 and source.cache.nbytes == 5 * image_bytes
    source[[20, 21, 22, 23, 19]]
    before = source.decoded
    source[[23, 19, 21, 22]]  # the five most recently used are the ones kept
    assert source.decoded == before
    source[[0]]  # evicts the least recently used of them: 20
    assert 20 not in source.cache and 0 in source.cache and source.decoded == before + 1
    source.release()
    assert len(source.cache) == 0 and source.cache.nbytes == 0


def test_byte_cache_evicts_least_recently_used() -> None:
    cache = ByteCache(30)
    for key in range(3):
        cache.put(key, np.zeros(10, np.uint8))
    assert cache.get(0) is not None  # 0 is now the most recent: 1 goes first
    cache.put(3, np.zeros(10, np.uint8))
    assert 1 not in cache and {0, 2, 3} <= {k for k in range(4) if k in cache} and cache.nbytes == 30
    cache.put(4, np.zeros(31, np.uint8))  # larger than the bound: never cached, nothing evicted
    assert 4 not in cache and len(cache) == 3
    cache.put(0, np.zeros(20, np.uint8))  # replacing a key accounts for the old array
    assert cache.nbytes <= 30 and 0 in cache


def test_decoding_runs_in_the_pool_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _images(tmp_path, 16)
    source = ImageSource(paths, "RGB", (8, 8), workers=2)
    threads: set[str] = set()
    original = source._decode_one

    def spy(row: int) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return original(row)

    monkeypatch.setattr(source, "_decode_one", spy)
    source[np.arange(16)]
    assert threads and all(name.startswith("learnloss-decode") for name in threads)
    source.close()
    assert torch.equal(source[[3]], torch.from_numpy(read_images([paths[3]], "RGB", (8, 8), resize=True)))


def test_a_damaged_file_fails_the_read_that_needs_it(tmp_path: Path) -> None:
    paths = _images(tmp_path, 8)
    paths[6].write_bytes(paths[6].read_bytes()[:40])
    source = ImageSource(paths, "RGB", (8, 8), workers=2)
    assert source[[0, 1, 2]].shape == (3, 3, 8, 8)
    with pytest.raises(DatasetFormatError, match="06.png"):
        source[[1, 6, 7]]
    paths[6].unlink()
    with pytest.raises(DatasetFormatError, match="06.png"):
        source[[6]]


def test_statistics_and_pickling(tmp_path: Path) -> None:
    paths = _images(tmp_path, 12)
    expected = torch.from_numpy(read_images(paths, "RGB", (8, 8), resize=True))
    source = ImageSource(paths, "RGB", (8, 8), workers=2)
    assert all(torch.equal(a, b) for a, b in zip(channel_stats(source), channel_stats(expected)))
    source.stats_rows = 4  # a larger pool: estimated from evenly spaced images
    rows = np.unique(np.linspace(0, 11, 4).round().astype(np.int64))
    assert all(torch.allclose(a, b) for a, b in zip(channel_stats(source), channel_stats(expected[rows])))
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy.cache) == 0 and copy.decoded == source.decoded
    assert torch.equal(copy[[1, 0]], expected[[1, 0]])
