"""Throughput and memory of learnloss: training with/without the LPM, scoring, and scoring memory vs pool size.

Usage:
    python benchmarks/bench_speed.py throughput [--model resnet18] [--size 32] [--channels 3] [--batch-size 128]
                                                [--steps 20] [--repeats 3] [--device auto]
    python benchmarks/bench_speed.py memory [--pool 10000 100000 1000000] [--model small-cnn] [--size 28]

``throughput`` prints training images/s of the plain target model and of the target with the LPM attached
(same batches, same optimiser; medians of alternating repeats), the LPM's share of step time, and scoring
images/s (eval mode, LPM scores).
``memory`` scores synthetic pools streamed batch by batch, each pool size in a fresh subprocess, and prints
the peak resident memory added by scoring: it must not grow with the pool beyond the 12 bytes per sample of
the kept scores and indices.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

import learnloss
from learnloss.inference import ModelView, stream
from learnloss.models import build_model, default_taps
from learnloss.strategies import LearningLossStrategy
from learnloss.tasks import ClassificationTask
from learnloss.training import TrainConfig, Trainer


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class SyntheticBatches:
    """Batches generated from their indices, so a pool of any size needs no memory of its own."""

    def __init__(self, n: int, shape: tuple[int, ...], batch_size: int, device: torch.device, classes: int = 10) -> None:
        self.n, self.shape, self.batch_size, self.device, self.classes = n, shape, batch_size, device, classes

    def __iter__(self):
        for start in range(0, self.n, self.batch_size):
            index = torch.arange(start, min(start + self.batch_size, self.n))
            g = torch.Generator().manual_seed(start)
            x = torch.randn((len(index), *self.shape), generator=g).to(self.device)
            yield index, x, (index % self.classes).to(self.device)


def throughput(args: argparse.Namespace) -> dict:
    device = _device(args.device)
    shape = (args.channels, args.size, args.size)
    batches = list(SyntheticBatches(args.batch_size * args.steps, shape, args.batch_size, device))
    scoring = list(SyntheticBatches(args.batch_size * args.steps * 2, shape, args.batch_size * 2, device))
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "model": args.model, "input": list(shape), "batch_size": args.batch_size, "repeats": args.repeats}
    views, trainer = {}, Trainer(TrainConfig(epochs=1, milestones=(), stop_grad_epoch=None))
    for name in ("plain", "lpm"):
        torch.manual_seed(0)
        model = build_model(args.model, args.channels, 10).to(device)
        ll = learnloss.attach(model, default_taps(model), batches[0][1][:2]) if name == "lpm" else None
        views[name] = ModelView(model, ClassificationTask(), ll)
        trainer.fit(views[name], batches[:3])  # warm-up
    times: dict[str, list[float]] = {"plain": [], "lpm": [], "score": []}
    for _ in range(args.repeats):  # alternate so that drifts of the machine hit both alike
        for name, view in views.items():
            _sync(device)
            start = time.perf_counter()
            trainer.fit(view, batches)
            _sync(device)
            times[name].append(time.perf_counter() - start)
        _sync(device)
        start = time.perf_counter()
        stream(views["lpm"], scoring, LearningLossStrategy().collect)
        _sync(device)
        times["score"].append(time.perf_counter() - start)
    median = {name: float(np.median(values)) for name, values in times.items()}
    results["train_images_per_s_plain"] = len(batches) * args.batch_size / median["plain"]
    results["train_images_per_s_lpm"] = len(batches) * args.batch_size / median["lpm"]
    results["score_images_per_s"] = len(scoring) * args.batch_size * 2 / median["score"]
    results["lpm_share_of_step_time"] = 1 - median["plain"] / median["lpm"]
    return results


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_one(args: argparse.Namespace) -> dict:
    device = _device(args.device)
    shape = (args.channels, args.size, args.size)
    torch.manual_seed(0)
    model = build_model(args.model, args.channels, 10).to(device)
    ll = learnloss.attach(model, default_taps(model), torch.zeros(2, *shape, device=device))
    view = ModelView(model, ClassificationTask(), ll)
    strategy = LearningLossStrategy()
    stream(view, SyntheticBatches(4 * args.batch_size, shape, args.batch_size, device), strategy.collect)  # warm-up
    before = _rss_mib()
    start = time.perf_counter()
    indices, values = stream(view, SyntheticBatches(args.pool[0], shape, args.batch_size, device), strategy.collect)
    seconds = time.perf_counter() - start
    assert len(indices) == args.pool[0] and np.isfinite(values["score"]).all()
    return {"pool": args.pool[0], "peak_rss_before_mib": before, "peak_rss_after_mib": _rss_mib(),
            "scoring_added_mib": _rss_mib() - before, "kept_mib": (indices.nbytes + values["score"].nbytes) / 2**20,
            "seconds": seconds, "images_per_s": args.pool[0] / seconds}


def memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for pool in args.pool:
        cmd = [sys.executable, __file__, "memory-one", "--pool", str(pool), "--model", args.model, "--size",
               str(args.size), "--channels", str(args.channels), "--batch-size", str(args.batch_size), "--device", args.device]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["throughput", "memory", "memory-one"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    memory_mode = args.mode.startswith("memory")
    args.model = args.model or ("small-cnn" if memory_mode else "resnet18")
    args.size = args.size or (28 if memory_mode else 32)
    args.channels = args.channels or (1 if memory_mode else 3)
    if args.mode == "throughput":
        print(json.dumps(throughput(args), indent=2))
    elif args.mode == "memory":
        memory(args)
    else:
        print(json.dumps(memory_one(args)))


if __name__ == "__main__":
    main()
