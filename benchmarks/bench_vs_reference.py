"""learnloss against a reference-style implementation of the same cycle, side by side, phase by phase.

Usage:
    python benchmarks/bench_vs_reference.py [--pairs 2] [--out FILE.json]
        [--precision fp32|bf16|fp16] [--channels-last] [--batch-size 128] [--threads N]   (learnloss side)
        [--eval-batch-size B]                                                              (learnloss side)
        [--device auto|cpu|cuda]                                                           (both sides)
        [--labeled 200] [--query 200] [--cycles 2] [--epochs 2] [--test 10000] [--subset 2000]
        [--dataset fashion-mnist|digits|synthetic] [--model resnet18] [--image-size 32] [--seed 0]
        [--ref-batch-size 128] [--ref-workers 0] [--ref-threads N] [--ref-malloc system|keep] (reference side)

Both sides run the same active-learning cycles — the same target model and loss prediction module (learnloss's
ResNet-18 with the LPM attached to its four stages), the same data (Fashion-MNIST centre-padded to 32×32 and
repeated to 3 channels, per-channel normalisation), ``--labeled`` random labels then ``--query`` more per cycle,
``--epochs`` epochs of joint training per cycle (SGD lr 0.1, momentum 0.9, weight decay 5e-4, the paper's
milestone and stop-gradient epoch scaled to ``--epochs``), evaluation on the first ``--test`` test images, and
``--subset`` unlabeled images scored by the LPM before each query:

* reference: ``benchmarks/reference_style.py`` — fp32, per-image PIL transforms through a ``DataLoader``, two
  optimisers, the reference's loss: how public reproductions write it;
* learnloss: ``learnloss.build_loop(resolve_spec("paper", ...), dataset)`` — what ``learnloss run`` runs — with
  ``--precision``, ``--channels-last``, ``--batch-size`` and ``--threads`` (and ``--eval-batch-size``, the
  loop's evaluation and scoring batch, 512 unless given: a diagnostic knob, no ``learnloss run`` setting), and
  glibc's allocator set to keep freed memory as the ``learnloss`` command sets it
  (:func:`learnloss.keep_freed_memory`; ``--ref-malloc keep`` gives the reference the same, to separate the
  allocator's share of a ratio from the rest).

Each run is a fresh subprocess, the sides alternating (reference, learnloss, reference, learnloss, … ``--pairs``
times) so that a drift of the machine hits both alike. Each child times its own phases and prints one JSON line;
this script adds the child's wall time and its user and system CPU seconds (``getrusage`` of the child). It
prints a table of medians over the pairs — training, evaluation and scoring images/s, wall seconds per cycle,
total wall, CPU seconds — with the ratio learnloss/reference as a speed (> 1: learnloss faster; for seconds,
reference/learnloss), and writes every run's raw numbers, the medians, the command line and the machine to
``--out``, with the code version and the environment (``benchmarks/gpu/provenance.py``: git commit or tree hash;
torch, CUDA and cuDNN versions, the GPU's name).

On CUDA (``--device cuda``) both sides synchronise the device around each timed phase. ``benchmarks/gpu/run.sh``
runs this script there with learnloss's fastest settings (bf16, channels-last) against the reference's fp32.
"""

from __future__ import annotations

_START = __import__("time").perf_counter()  # the child's clock starts before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

SIDES = ("reference", "learnloss")
PAPER_EPOCHS, PAPER_MILESTONE, PAPER_STOP_GRAD = 200, 160, 120


# ---------------------------------------------------------------------------------------------- the children


def _milestones(epochs: int) -> tuple[tuple[int, ...], int]:
    """The paper's LR milestone (160/200) and stop-gradient epoch (120/200) scaled to ``epochs``, as
    ``learnloss.resolve_spec`` scales them when only ``epochs`` is given."""
    ratio = epochs / PAPER_EPOCHS
    return (round(PAPER_MILESTONE * ratio),), round(PAPER_STOP_GRAD * ratio)


def _device_name(device: str) -> str:
    import torch

    return device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def _reference_style() -> Any:
    """benchmarks/reference_style.py as a module (it sits beside this script)."""
    folder = str(Path(__file__).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import reference_style

    return reference_style


def _data(args: argparse.Namespace) -> Any:
    prepare_data = _reference_style().prepare_data

    pool = args.labeled + args.query * (args.cycles - 1) + args.subset
    return prepare_data(args.dataset, args.data_dir, args.image_size, args.test, pool, args.seed)


def child_reference(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    ReferenceSettings, run_reference = _reference_style().ReferenceSettings, _reference_style().run_reference

    if args.ref_threads:
        torch.set_num_threads(args.ref_threads)
    kept = False
    if args.ref_malloc == "keep":  # the reference with learnloss's allocator settings, to separate their effect
        from learnloss.cpu_memory import keep_freed_memory

        kept = keep_freed_memory()
    setup = time.perf_counter()
    data = _data(args)
    milestones, stop_grad = _milestones(args.epochs)
    settings = ReferenceSettings(
        model=args.model, labeled=args.labeled, query=args.query, cycles=args.cycles, epochs=args.epochs,
        subset=args.subset, batch_size=args.ref_batch_size, milestones=milestones, stop_grad_epoch=stop_grad,
        workers=args.ref_workers, device=_device_name(args.device), seed=args.seed,
    )
    setup_seconds = time.perf_counter() - setup
    return {"setup_seconds": setup_seconds, "malloc_keeps_freed_memory": kept, **run_reference(data, settings)}


def child_learnloss(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import learnloss
    from learnloss.data.dataset import AugmentSpec, Dataset
    from learnloss.data.registry import available_datasets

    if args.threads:
        torch.set_num_threads(args.threads)
    kept = learnloss.keep_freed_memory()  # as the ``learnloss`` command does at start
    setup = time.perf_counter()
    data = _data(args)
    dataset = Dataset(f"{data.name}-rgb{data.image_size}", data.x_train, data.y_train, data.x_test, data.y_test,
                      data.classes, augment=AugmentSpec(pad=data.crop_padding, flip=True), mean=data.mean,
                      std=data.std)
    milestones, stop_grad = _milestones(args.epochs)
    spec = learnloss.resolve_spec("paper", {
        "strategy": "learning-loss", "dataset": args.dataset if args.dataset in available_datasets() else "npz",
        "download": False, "model": args.model, "initial": args.labeled, "query": args.query, "cycles": args.cycles,
        "subset": args.subset, "epochs": args.epochs, "batch_size": args.batch_size, "milestones": milestones,
        "stop_grad_epoch": stop_grad, "seed": args.seed, "device": args.device, "precision": args.precision,
        "channels_last": args.channels_last, "compile": args.compile,
    })
    loop = learnloss.build_loop(spec, dataset)
    if args.eval_batch_size:  # scoring and evaluation batches (LoopConfig.eval_batch_size; no RunSpec setting)
        loop.loop.eval_batch_size = args.eval_batch_size
    device = loop.device
    phase: dict[str, float] = {}

    def timed(function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            result = function(*a, **k)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            phase[name] = phase.get(name, 0.0) + time.perf_counter() - start
            return result
        return run

    for stage in loop.stages:  # instance attributes: the loop's code is left as it is
        stage.run = timed(stage.run, "train")  # type: ignore[method-assign]
    loop.evaluate = timed(loop.evaluate, "eval")  # type: ignore[method-assign]
    loop.query_batch = timed(loop.query_batch, "score")  # type: ignore[method-assign]
    setup_seconds = time.perf_counter() - setup
    loop.begin()
    cycles = []
    for cycle in range(spec.cycles):
        phase.clear()
        start = time.perf_counter()
        query = cycle < spec.cycles - 1
        n_labeled = loop.pool.n_labeled
        result = loop.step(cycle, query=query)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        cycles.append({
            "cycle": cycle, "n_labeled": n_labeled, "train_seconds": phase.get("train", 0.0),
            "train_images": n_labeled * spec.epochs, "eval_seconds": phase.get("eval", 0.0),
            "eval_images": len(dataset.y_test), "score_seconds": phase.get("score", 0.0),
            "score_images": min(spec.subset or 0, len(loop.pool) - n_labeled) if query else 0,
            "wall_seconds": time.perf_counter() - start, "test_accuracy": result.test_accuracy,
        })
    return {"setup_seconds": setup_seconds, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "precision": spec.precision, "channels_last": spec.channels_last, "compile": spec.compile,
            "batch_size": spec.batch_size,
            "eval_batch_size": loop.loop.eval_batch_size, "workers": 0, "malloc_keeps_freed_memory": kept,
            "cycles": cycles}


def child(args: argparse.Namespace) -> None:
    import torch

    result = (child_reference if args.child == "reference" else child_learnloss)(args)
    cycles = result["cycles"]

    def rate(images: str, seconds: str) -> float | None:
        total = sum(c[seconds] for c in cycles)
        return sum(c[images] for c in cycles) / total if total > 0 else None

    result.update({
        "side": args.child, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_images_per_s": rate("train_images", "train_seconds"),
        "eval_images_per_s": rate("eval_images", "eval_seconds"),
        "score_images_per_s": rate("score_images", "score_seconds"),
        "wall_seconds_per_cycle": sum(c["wall_seconds"] for c in cycles) / len(cycles),
        "child_seconds": time.perf_counter() - _START,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------ the parent

#: (key, label, higher is better) of each row of the table.
ROWS = (
    ("train_images_per_s", "training img/s", True),
    ("eval_images_per_s", "evaluation img/s", True),
    ("score_images_per_s", "scoring img/s", True),
    ("wall_seconds_per_cycle", "wall s per cycle", False),
    ("process_seconds", "total wall s (process)", False),
    ("user_seconds", "user CPU s", False),
    ("system_seconds", "system CPU s", False),
)


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


def machine(device: str) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name() if device != "cpu" and torch.cuda.is_available() else None
    return {
        "cpu": _provenance_module().cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "platform": platform.platform(), "torch_threads_default": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def _child_argv(args: argparse.Namespace, side: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", side]
    for name in ("dataset", "data_dir", "image_size", "model", "labeled", "query", "cycles", "epochs", "test",
                 "subset", "seed", "device", "precision", "batch_size", "eval_batch_size", "threads",
                 "ref_batch_size", "ref_workers", "ref_threads", "ref_malloc"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if args.channels_last:
        argv.append("--channels-last")
    if args.compile:
        argv.append("--compile")
    return argv


def run_child(args: argparse.Namespace, side: str) -> dict[str, Any]:
    argv = _child_argv(args, side)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"the {side} run failed (exit {proc.returncode}): {shlex.join(argv)}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result.update({
        "process_seconds": seconds, "user_seconds": after.ru_utime - before.ru_utime,
        "system_seconds": after.ru_stime - before.ru_stime, "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()), "argv": argv,
    })
    return result


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float | None]], dict[str, float | None]]:
    """Medians over the pairs of each side, and the ratio of each row as a speed-up of learnloss."""
    medians = {side: {key: _median([r[key] for r in runs if r["side"] == side]) for key, _, _ in ROWS}
               for side in SIDES}
    ratios: dict[str, float | None] = {}
    for key, _, higher in ROWS:
        ref, ours = medians["reference"][key], medians["learnloss"][key]
        if ref is None or ours is None or ref <= 0 or ours <= 0:
            ratios[key] = None
        else:
            ratios[key] = ours / ref if higher else ref / ours
    return medians, ratios


def table(medians: dict[str, dict[str, float | None]], ratios: dict[str, float | None]) -> str:
    def cell(value: float | None) -> str:
        return "—" if value is None else (f"{value:,.1f}" if value >= 10 else f"{value:.2f}")

    lines = [f"{'phase':<24} {'reference':>11} {'learnloss':>11} {'ratio':>7}", "-" * 56]
    for key, label, _ in ROWS:
        ratio = ratios[key]
        lines.append(f"{label:<24} {cell(medians['reference'][key]):>11} {cell(medians['learnloss'][key]):>11} "
                     f"{'—' if ratio is None else f'{ratio:.2f}x':>7}")
    return "\n".join(lines)


def parent(args: argparse.Namespace) -> None:
    info = machine(args.device)
    origin = provenance(args.device)
    runs: list[dict[str, Any]] = []
    for pair in range(args.pairs):
        for side in SIDES:
            result = run_child(args, side)
            result["pair"] = pair
            runs.append(result)
            accuracies = ", ".join(f"{c['test_accuracy']:.3f}" for c in result["cycles"])
            print(f"pair {pair + 1}/{args.pairs} {side:<9}: train {result['train_images_per_s'] or 0:,.1f} img/s, "
                  f"eval {result['eval_images_per_s'] or 0:,.1f} img/s, score {result['score_images_per_s'] or 0:,.1f} "
                  f"img/s, {result['wall_seconds_per_cycle']:.1f} s/cycle, {result['process_seconds']:.1f} s in all "
                  f"(user {result['user_seconds']:.1f} s, sys {result['system_seconds']:.1f} s; "
                  f"test acc {accuracies})", flush=True)
            if args.out and len(runs) < 2 * args.pairs:  # what is done survives a stop (a time limit) in between
                report(args, info, origin, runs, complete=False)
    text = report(args, info, origin, runs, complete=True)
    print("\n" + text, flush=True)
    if args.out:
        print(f"\nwrote {args.out}")


def report(args: argparse.Namespace, info: dict[str, Any], origin: dict[str, Any], runs: list[dict[str, Any]],
           complete: bool) -> str:
    """The header and table of ``runs``; with ``--out``, also the record of every run so far (``complete``: whether
    every pair ran), replaced atomically."""
    milestones, stop_grad = _milestones(args.epochs)
    medians, ratios = summarise(runs)
    threads = {side: sorted({r["threads"] for r in runs if r["side"] == side}) for side in SIDES}
    device = {side: sorted({r["device_name"] for r in runs if r["side"] == side}) for side in SIDES}
    loads = [r["loadavg_before"][0] for r in runs]
    all_threads = [r["threads"] for r in runs]
    busy = max(all_threads) + 0.5  # the 1-minute average still holds the child that just ended
    eval_batch = sorted({r["eval_batch_size"] for r in runs if r["side"] == "learnloss"})
    kept = sorted({r["malloc_keeps_freed_memory"] for r in runs if r["side"] == "learnloss"})
    header = [
        f"machine: {info['gpu'] or info['cpu']} ({info['cpus_usable']} usable CPUs), torch {info['torch']}, "
        f"threads reference {threads['reference']} / learnloss {threads['learnloss']}, "
        f"OMP_NUM_THREADS={info['OMP_NUM_THREADS']}",
        f"device: reference {device['reference']}, learnloss {device['learnloss']}; learnloss precision "
        f"{args.precision}{' channels-last' if args.channels_last else ''} batch {args.batch_size} (eval/scoring "
        f"{eval_batch}, malloc keeps freed memory: {kept}); reference fp32 batch {args.ref_batch_size} workers "
        f"{args.ref_workers} malloc {args.ref_malloc}",
        f"load average (1 min) when each child started: {min(loads):.2f} to {max(loads):.2f} "
        f"({'busy' if max(loads) > busy else 'quiet'} machine: the previous child's {max(all_threads)} threads "
        f"still count in it; above {busy:.1f}, other processes were running)",
        f"work: {args.model} + LPM, {args.dataset} as {args.image_size}x{args.image_size} RGB, {args.labeled} + "
        f"{args.query}/cycle labels, {args.cycles} cycles x {args.epochs} epochs (milestone {list(milestones)}, "
        f"stop-grad epoch {stop_grad}), {args.test} test, {args.subset} scored; medians of {args.pairs} pair(s)",
        "ratio: learnloss speed / reference speed (> 1: learnloss faster; for seconds, reference / learnloss)",
    ]
    text = "\n".join(header) + "\n\n" + table(medians, ratios)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]), "argv": sys.argv,
            "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
            "milestones": list(milestones), "stop_grad_epoch": stop_grad, "machine": info, **origin,
            "complete": complete, "pairs_done": sum(r["side"] == SIDES[-1] for r in runs),
            "rows": [{"key": key, "label": label, "higher_is_better": higher} for key, label, higher in ROWS],
            "medians": medians, "ratios": ratios, "table": text, "runs": runs,
        }
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(out)
    return text


def build_parser() -> argparse.ArgumentParser:
    """The options of both sides (``benchmarks/bench_compile.py`` reuses them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2, help="reference/learnloss pairs of runs, alternating")
    parser.add_argument("--out", default=None, help="JSON file for every run's numbers, the medians and the machine")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="learnloss side")
    parser.add_argument("--channels-last", action="store_true", help="learnloss side")
    parser.add_argument("--compile", action="store_true", help="learnloss side: torch.compile the target model")
    parser.add_argument("--batch-size", type=int, default=128, help="learnloss side")
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="learnloss side's evaluation and scoring batch (default: learnloss's own, 512)")
    parser.add_argument("--threads", type=int, default=None, help="learnloss side's torch threads (default: torch's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="both sides")
    parser.add_argument("--labeled", type=int, default=200, help="initial random labels")
    parser.add_argument("--query", type=int, default=200, help="labels added per cycle")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cycle")
    parser.add_argument("--test", type=int, default=10000, help="test images evaluated (the first ones)")
    parser.add_argument("--subset", type=int, default=2000, help="unlabeled images scored per query")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, digits, or synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--image-size", type=int, default=32, help="images are centre-padded to this square, RGB")
    parser.add_argument("--model", default="resnet18", help="a learnloss model name (both sides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-batch-size", type=int, default=128, help="reference side's batch size")
    parser.add_argument("--ref-workers", type=int, default=0, help="reference side's DataLoader workers")
    parser.add_argument("--ref-threads", type=int, default=None, help="reference side's torch threads "
                        "(default: --threads)")
    parser.add_argument("--ref-malloc", choices=["system", "keep"], default="system",
                        help="reference side's allocator: glibc's defaults (as public reproductions run), or "
                        "learnloss's keep_freed_memory settings (to separate their effect from the rest)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a child may run")
    parser.add_argument("--child", choices=SIDES, default=None, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.ref_threads is None:
        args.ref_threads = args.threads
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
