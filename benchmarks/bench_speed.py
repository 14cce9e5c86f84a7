"""Throughput and memory of learnloss: training with/without the LPM, scoring, and scoring memory vs pool size.

Usage:
    python benchmarks/bench_speed.py throughput [--model resnet18] [--size 32] [--channels 3] [--batch-size 128]
                                                [--steps 20] [--repeats 3] [--device auto]
                                                [--precision fp32|bf16|fp16] [--channels-last] [--compile]
                                                [--out FILE.json]
    python benchmarks/bench_speed.py memory [--pool 10000 100000 1000000] [--model small-cnn] [--size 28]

``throughput`` prints training images/s of the plain target model and of the target with the LPM attached
(same batches, same optimiser; medians of alternating repeats), the LPM's share of step time, and scoring
images/s (eval mode, LPM scores), in the precision and memory format given (:class:`learnloss.Precision`, as
``learnloss run --precision --channels-last --compile`` sets them). The batches are made once and kept on the
device, so the figures are the steady-state rate of the step itself, without data loading. The JSON printed (and
written to ``--out``) records the code version and the environment (``benchmarks/gpu/provenance.py``). On CUDA it
also counts the host synchronisations of the training steps as the loop feeds them (uint8 inputs resident on the
device, gathered, normalised and augmented per batch by learnloss's own batches, targets on the host), with
``torch.cuda.set_sync_debug_mode``, and names the lines they come from.
``memory`` scores synthetic pools streamed batch by batch, each pool size in a fresh subprocess, and prints
the peak resident memory added by scoring: it must not grow with the pool beyond the 12 bytes per sample of
the kept scores and indices.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import learnloss
from learnloss.inference import ModelView, stream
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import AugmentSpec, normalize
from learnloss.inference.precision import Precision
from learnloss.models import build_model, default_taps
from learnloss.strategies import LearningLossStrategy
from learnloss.tasks import ClassificationTask
from learnloss.training import TrainConfig, Trainer


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _provenance_module() -> Any:
    """``benchmarks/gpu/provenance.py`` (the code version and the environment of every result), imported by path:
    this folder holds scripts, not a package."""
    folder = str(Path(__file__).resolve().parent / "gpu")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import provenance

    return provenance


def provenance(device: str) -> dict[str, Any]:
    """The code version and the environment (``benchmarks/gpu/provenance.py``)."""
    return dict(_provenance_module().provenance(device))


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
    precision = Precision(args.precision, args.channels_last, args.compile).resolve(device)
    precision.check(device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "model": args.model, "input": list(shape), "batch_size": args.batch_size, "repeats": args.repeats,
               "steps": args.steps, "precision": precision.dtype, "channels_last": precision.channels_last,
               "compile": precision.compile}
    views, trainer = {}, Trainer(TrainConfig(epochs=1, milestones=(), stop_grad_epoch=None))
    for name in ("plain", "lpm"):
        torch.manual_seed(0)
        model = precision.prepare_model(build_model(args.model, args.channels, 10).to(device))
        example = precision.inputs(batches[0][1][:2])
        ll = learnloss.attach(model, default_taps(model), example) if name == "lpm" else None
        views[name] = ModelView(model, ClassificationTask(), ll, precision=precision)
        trainer.fit(views[name], batches[:3])  # warm-up (and, with --compile, the compilation)
    stream(views["lpm"], scoring[:2], LearningLossStrategy().collect)  # the eval-mode passes' warm-up
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
    try:  # a diagnostic: its failure must not cost the rates measured above
        results["host_syncs"] = host_syncs(views["lpm"], trainer, shape, args.batch_size, args.steps, device)
    except Exception as error:  # noqa: BLE001
        results["host_syncs"] = {"error": f"{type(error).__name__}: {error}"}
    median = {name: float(np.median(values)) for name, values in times.items()}
    results["train_images_per_s_plain"] = len(batches) * args.batch_size / median["plain"]
    results["train_images_per_s_lpm"] = len(batches) * args.batch_size / median["lpm"]
    results["score_images_per_s"] = len(scoring) * args.batch_size * 2 / median["score"]
    results["lpm_share_of_step_time"] = 1 - median["plain"] / median["lpm"]
    return results


def host_syncs(view: ModelView, trainer: Trainer, shape: tuple[int, ...], batch_size: int, steps: int,
               device: torch.device) -> dict[str, Any] | None:
    """Host synchronisations per training step on CUDA when the batches come as the loop makes them, and the
    lines they come from (``torch.cuda.set_sync_debug_mode("warn")`` warns at each); None on other devices."""
    if device.type != "cuda":
        return None
    n = batch_size * steps
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g)  # the pool's targets stay on the host
    mean, std = torch.full((shape[0],), 0.5), torch.full((shape[0],), 0.25)
    batches = ArrayBatches(x, y, np.arange(n), batch_size, lambda b: normalize(b, mean, std), device,
                           shuffle=torch.Generator().manual_seed(1), augment=AugmentSpec(pad=4, flip=True),
                           merge_singleton=True)
    trainer.fit(view, batches)  # warm-up
    _sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.fit(view, batches)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    _sync(device)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return {"steps": len(batches), "syncs": len(syncs), "per_step": len(syncs) / max(1, len(batches)),
            "sites": dict(sites.most_common(12))}


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
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                        help="throughput: autocast dtype of training and scoring")
    parser.add_argument("--channels-last", action="store_true", help="throughput: channels-last memory format")
    parser.add_argument("--compile", action="store_true", help="throughput: torch.compile the target model")
    parser.add_argument("--out", default=None, help="throughput: also write the JSON to this file")
    args = parser.parse_args()
    memory_mode = args.mode.startswith("memory")
    args.model = args.model or ("small-cnn" if memory_mode else "resnet18")
    args.size = args.size or (28 if memory_mode else 32)
    args.channels = args.channels or (1 if memory_mode else 3)
    if args.mode == "throughput":
        record = {**throughput(args), **provenance(args.device)}
        text = json.dumps(record, indent=2)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(out)
        print(text)
    elif args.mode == "memory":
        memory(args)
    else:
        print(json.dumps(memory_one(args)))


if __name__ == "__main__":
    main()
