"""Resident memory and scoring throughput on memory-mapped pools of 100k to 10M items (``--dataset npy``).

Usage:
    python benchmarks/bench_pool_memory.py [--pools 100000 1000000 10000000] [--dir /tmp/learnloss-pools]
                                           [--score 4096] [--batch-size 512] [--repeats 9] [--no-release]

For each pool size a folder of ``.npy`` files is written once (``x_train.npy`` of ``uint8`` 1×28×28 images —
10M items take 7.8 GB of disk — ``y_train.npy``, and a 1,000-item test split; the free space is checked first) and
measured in a fresh subprocess that loads it with ``load_dataset("npy", ...)`` (inputs memory-mapped) and then:

1. reads the *whole* pool through the batches scoring uses (``ArrayBatches``, normalised floats, no model): every
   page of the file passes through the process;
2. scores a fresh sorted random subset of ``--score`` items spread over the whole pool each time, as a query does
   (``ArrayBatches`` reading the next batch ahead, ``stream`` with the LPM's scores, small-cnn with the loss
   prediction module attached), ``--repeats`` times. Before each scoring batch, two bare passes run over a batch
   of the same size read from the pool before they are timed (from rows of their own: the scoring pass meets its
   pages as a query does, not warmed by them): the same network without the LPM (``bare net``), and the network
   with the LPM computing the predicted losses (``net+LPM``: the least a score costs). Each triple of batches sees
   the same load of a shared machine (:class:`Interleaved`). ``ratio vs net`` and ``ratio vs net+LPM`` are the
   medians over the repeats of scoring throughput / bare throughput; the load average is printed with the JSON.

Printed per pool: the peak of resident memory while loading (channel statistics read a bounded chunk at a time) and
the resident memory once loaded (model built, warmed up); the part of it that grows with the pool by design, the
labels (an ``int64`` tensor, 8 bytes per item); the peak while the whole pool was read, and while it was read and
the subset scored (the kernel's high-water mark, reset after loading), and what that peak added to the loaded
state (``added``; the bare pass's batches in memory, 50 MiB for 16,384 items, are part of it). With
``--no-release`` the source never gives its mapped pages back (``resident_bytes`` beyond the file's size), to show
what the release does. A full-pool scoring pass of 10M items would take hours on a CPU, hence the subset; its
throughput does not depend on the pool size (the read-through shows the cost of reading).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ITEM_SHAPE = (1, 28, 28)
TEST_ITEMS = 1000


def _status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in MiB (Linux)."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _reset_peak() -> bool:
    """Reset the kernel's high-water mark of resident memory (Linux 4.0+), so a phase's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def make_pool(folder: Path, n: int, seed: int = 0) -> Path:
    """``folder`` holding a pool of ``n`` random ``uint8`` images with labels 0..9 (kept when already there)."""
    x_path = folder / "x_train.npy"
    if x_path.is_file():
        header = np.load(x_path, mmap_mode="r")
        if header.shape == (n, *ITEM_SHAPE[1:]) and (folder / "y_test.npy").is_file():
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    need = n * int(np.prod(ITEM_SHAPE)) + (n + TEST_ITEMS * 800)
    free = shutil.disk_usage(folder).free
    if need > free - (1 << 30):
        raise SystemExit(f"{folder}: {n:,} items need {need / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB are free; "
                         "choose a smaller pool or another --dir")
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.uint8, shape=(n, *ITEM_SHAPE[1:]))
    step = 1 << 18
    for start in range(0, n, step):
        stop = min(n, start + step)
        x[start:stop] = rng.integers(0, 256, (stop - start, *ITEM_SHAPE[1:]), dtype=np.uint8)
    x.flush()
    del x
    np.save(folder / "y_train.npy", rng.integers(0, 10, n, dtype=np.uint8))
    np.save(folder / "x_test.npy", rng.integers(0, 256, (TEST_ITEMS, *ITEM_SHAPE[1:]), dtype=np.uint8))
    np.save(folder / "y_test.npy", np.arange(TEST_ITEMS, dtype=np.uint8) % 10)
    return folder


class Interleaved:
    """Scoring batches with bare forward passes over a batch of the same size next to each (before one scored
    batch, after the next, in turn: what runs first does not always win). The time ``stream`` spends on a batch (its
    forward pass, the LPM, what it keeps) plus the wait for the batch to be read counts as ``score``; the bare
    network's forward of its own batch as ``bare``; the network with the LPM attached computing the predicted losses
    of that batch (no stream, nothing kept) as ``lpm``. Passes a fraction of a second apart see the same load of a
    shared machine."""

    def __init__(self, batches: Any, bare: torch.nn.Module, view: Any, inputs: list[torch.Tensor]) -> None:
        self.batches, self.bare, self.view, self.inputs = batches, bare, view, inputs
        self.seconds = {"bare": 0.0, "lpm": 0.0, "score": 0.0}

    def _timed(self, name: str, start: float) -> None:
        self.seconds[name] += time.perf_counter() - start

    def _bare_passes(self, inputs: torch.Tensor) -> None:
        start = time.perf_counter()
        with torch.inference_mode():
            self.bare(inputs)
        self._timed("bare", start)
        start = time.perf_counter()
        with torch.inference_mode():  # stream has put the model in eval mode and kept what it needs of a batch
            self.view.model(inputs)
            self.view.learning_loss.predicted_loss()
            self.view.clear()
        self._timed("lpm", start)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.batches)
        for i, inputs in enumerate(self.inputs):
            if i % 2 == 0:  # before the scored batch, then after it: what runs first does not always win
                self._bare_passes(inputs)
            start = time.perf_counter()
            batch = next(batches)  # waits for the batch read ahead, if it is not read yet
            self._timed("score", start)
            start = time.perf_counter()
            yield batch  # resumes when stream asks for the next batch: it has scored this one
            self._timed("score", start)
            if i % 2 == 1:
                self._bare_passes(inputs)


def measure(args: argparse.Namespace) -> dict:
    """One pool, in this (fresh) process."""
    import learnloss
    from learnloss.data.batches import ArrayBatches
    from learnloss.data.memmap import RESIDENT_BYTES
    from learnloss.data.npy import load_npy
    from learnloss.inference import ModelView, stream
    from learnloss.models import build_model, default_taps
    from learnloss.strategies import LearningLossStrategy
    from learnloss.tasks import ClassificationTask

    torch.set_num_threads(args.threads or torch.get_num_threads())
    folder = Path(args.folder)
    start = time.perf_counter()
    dataset = load_npy(folder, resident_bytes=(1 << 62) if args.no_release else RESIDENT_BYTES)
    load_seconds = time.perf_counter() - start
    n = len(dataset.x_train)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("small-cnn", ITEM_SHAPE[0], 10)
    example = dataset.to_float(dataset.x_train[:2])
    view = ModelView(model, ClassificationTask(), learnloss.attach(model, default_taps(model), example))
    torch.manual_seed(0)
    bare = build_model("small-cnn", ITEM_SHAPE[0], 10).eval()
    strategy = LearningLossStrategy()
    rng = np.random.default_rng(1)

    def draw() -> np.ndarray:  # a query's candidates: a sorted random subset of the whole pool
        return np.sort(rng.choice(n, size=min(args.score, n), replace=False))

    stream(view, ArrayBatches(dataset.x_train, None, draw()[:2 * args.batch_size], args.batch_size,
                              dataset.to_float, cpu), strategy.collect)  # warm-up
    loaded = _status()
    reset = _reset_peak()

    start = time.perf_counter()  # 1. every item of the pool through the scoring batches, no model
    for _, inputs, _ in ArrayBatches(dataset.x_train, None, np.arange(n), args.batch_size, dataset.to_float, cpu):
        pass
    read_seconds = time.perf_counter() - start
    after_read = _status()

    times: dict[str, list[float]] = {"bare": [], "lpm": [], "score": []}
    for _ in range(args.repeats):
        # The bare passes' batches: as many, as large, read from the pool before they are timed — from rows of
        # their own, so that the scoring pass meets its rows' pages as a query does, not warmed by the bare pass.
        inputs_in_memory = [inputs for _, inputs, _ in ArrayBatches(dataset.x_train, None, draw(), args.batch_size,
                                                                     dataset.to_float, cpu)]
        subset = draw()
        paired = Interleaved(ArrayBatches(dataset.x_train, None, subset, args.batch_size, dataset.to_float, cpu),
                             bare, view, inputs_in_memory)
        indices, values = stream(view, paired, strategy.collect)
        for name, seconds in paired.seconds.items():
            times[name].append(seconds)
        assert len(indices) == len(subset) and np.isfinite(values["score"]).all()
        del inputs_in_memory
    end = _status()
    median = {name: float(np.median(values)) for name, values in times.items()}
    score = np.asarray(times["score"])
    ratio_bare, ratio_lpm = np.asarray(times["bare"]) / score, np.asarray(times["lpm"]) / score  # per repeat
    return {
        "pool": n, "file_gib": n * int(np.prod(ITEM_SHAPE)) / 2**30, "release": not args.no_release,
        "load_s": load_seconds, "rss_load_mib": loaded["VmRSS"], "peak_load_mib": loaded["VmHWM"],
        "peak_reset": reset, "labels_mib": dataset.y_train.nbytes / 2**20,
        "read_all_s": read_seconds, "read_items_per_s": n / read_seconds,
        "rss_after_read_mib": after_read["VmRSS"], "rss_file_after_read_mib": after_read["RssFile"],
        "peak_read_mib": after_read["VmHWM"],
        "peak_rss_mib": end["VmHWM"], "added_mib": end["VmHWM"] - loaded["VmRSS"],
        "scored": len(subset), "score_items_per_s": len(subset) / median["score"],
        "bare_items_per_s": len(subset) / median["bare"], "lpm_items_per_s": len(subset) / median["lpm"],
        "ratio": float(np.median(ratio_bare)), "ratio_lpm": float(np.median(ratio_lpm)),
        "ratios": [round(float(r), 3) for r in ratio_bare], "ratios_lpm": [round(float(r), 3) for r in ratio_lpm],
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--dir", default="/tmp/learnloss-pools")
    parser.add_argument("--score", type=int, default=4096, help="items scored per repeat (a random subset)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-release", action="store_true", help="never give mapped pages back")
    parser.add_argument("--folder", help=argparse.SUPPRESS)  # the subprocess's pool
    args = parser.parse_args()
    if args.folder:
        print(json.dumps(measure(args)))
        return
    rows = []
    header = ("pool", "file GiB", "peak RSS load", "RSS loaded", "labels", "peak RSS read-all", "peak RSS read+score",
              "added", "read-all items/s", "score items/s", "bare net items/s", "net+LPM items/s", "ratio vs net",
              "ratio vs net+LPM")
    print(" | ".join(header))
    for n in args.pools:
        folder = make_pool(Path(args.dir) / str(n), n)
        cmd = [sys.executable, __file__, "--folder", str(folder), "--score", str(args.score), "--batch-size",
               str(args.batch_size), "--repeats", str(args.repeats), "--threads", str(args.threads)]
        if args.no_release:
            cmd.append("--no-release")
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['pool']:,} | {row['file_gib']:.2f} | {row['peak_load_mib']:.0f} MiB"
              f" | {row['rss_load_mib']:.0f} MiB | {row['labels_mib']:.0f} MiB"
              f" | {row['peak_read_mib']:.0f} MiB | {row['peak_rss_mib']:.0f} MiB | {row['added_mib']:+.0f} MiB"
              f" | {row['read_items_per_s']:,.0f} | {row['score_items_per_s']:,.0f} | {row['bare_items_per_s']:,.0f}"
              f" | {row['lpm_items_per_s']:,.0f} | {row['ratio']:.3f} | {row['ratio_lpm']:.3f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
