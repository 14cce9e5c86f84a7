"""``fmnist-paper`` trials in the time a device run has left: learning loss and random, as many seeds as fit, several
``learnloss run`` processes at once, each stopped cleanly (Ctrl-C: its store keeps the finished cycles) at the
deadline.

The protocol is ``fmnist-paper`` as ``learnloss run --protocol fmnist-paper`` runs it (ResNet-18, 1,000 initial
labels + 1,000 per cycle, 10 cycles, M = 10,000, bf16 + channels-last on a GPU that computes bf16), except for the
epochs per cycle when the paper's 200 do not fit: then every trial runs the largest number ``E`` that fits — the LR
milestone and the stop-gradient epoch scale with it (80 % and 60 %), as ``--epochs`` alone always scales them —
and the record says so. ``E`` is planned from the training rate measured just before (learnloss's training images
per second in ``throughput.json`` from ``benchmarks/bench_vs_reference.py``), the image-steps of the protocol
(``E × Σ labeled per cycle`` = ``E × 55,000``), the processes sharing the device and a safety margin; it is
``LEARNLOSS_GPU_TRIAL_EPOCHS`` when that is set.

Usage: ``python benchmarks/gpu/trials.py --seconds S --work DIR --raw DIR --out FILE.json [--dry-run]``. Writes
``FILE.json``: the plan, every trial's status (complete, interrupted with its finished cycles, failed), its
``results.json`` document when it finished, the code version and the environment; each trial's ``results.json``,
learning curve and log are copied to ``--raw``/trials/NAME/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FULL_EPOCHS = 200
ARMS = ("learning-loss", "random")  # the default arms; LEARNLOSS_GPU_TRIAL_ARMS="learning-loss" runs one
#: How much faster the device trains when several processes share it than one process alone (a guess, refined by
#: the measurement of each run: each trial records its own rate). Processes interleave their kernels, filling the
#: gaps a single process leaves while Python launches the next one.
SHARING_GAIN = 1.5
SAFETY = 0.75  # of the training time planned; the rest covers evaluation, scoring, start-up and checkpoints
START_SECONDS = 35  # a process's start: imports, the dataset read and made resident, the first CUDA kernels
GRACE_SECONDS = 25  # after Ctrl-C, to write what is finished, before the process is killed (less in a short run)
_CYCLE = re.compile(r"^cycle (\d+): (\d+) labels, (.*)$")


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def measured_rate(throughput: Path) -> float | None:
    """learnloss's median training images/s in ``throughput.json`` (bench_vs_reference's record), if present."""
    record = _load(throughput)
    try:
        rate = record["medians"]["learnloss"]["train_images_per_s"]
    except (KeyError, TypeError):
        return None
    return float(rate) if rate else None


def image_steps_per_epoch(initial: int, query: int, cycles: int) -> int:
    """Images a training epoch of every cycle visits in all: the labeled set of each cycle, summed."""
    return sum(initial + query * cycle for cycle in range(cycles))


def plan(seconds: float, rate: float | None, seeds: int, epochs: int | None, dry_run: bool,
         arms: tuple[str, ...] = ARMS) -> dict[str, Any]:
    """How many seeds and epochs fit in ``seconds`` at ``rate`` training images/s (one process alone), each seed
    running every one of ``arms`` at once."""
    initial, query, cycles = (20, 20, 2) if dry_run else (1000, 1000, 10)
    per_epoch = image_steps_per_epoch(initial, query, cycles)
    chosen = {"seconds": round(seconds, 1), "measured_rate": rate, "arms": list(arms),
              "image_steps_per_epoch": per_epoch,
              "sharing_gain": SHARING_GAIN, "safety": SAFETY, "start_seconds": START_SECONDS}
    if dry_run:
        return {**chosen, "seeds": 1, "epochs": 1, "why": "dry run: toy sizes"}
    if epochs is not None:
        return {**chosen, "seeds": seeds, "epochs": epochs, "why": "LEARNLOSS_GPU_TRIAL_EPOCHS"}
    if rate is None:
        return {**chosen, "seeds": seeds, "epochs": 10, "why": "no measured rate: 10 epochs"}
    for n in range(seeds, 0, -1):
        processes = n * len(arms)
        per_process = rate * min(processes, SHARING_GAIN) / processes
        usable = max(0.0, seconds - START_SECONDS - GRACE_SECONDS) * SAFETY
        fit = math.floor(usable * per_process / per_epoch)
        if fit >= 1:
            return {**chosen, "seeds": n, "epochs": min(FULL_EPOCHS, fit),
                    "why": f"{processes} processes at ~{per_process:,.0f} img/s each"}
    return {**chosen, "seeds": 0, "epochs": 0, "why": "not even one epoch per cycle fits"}


def _command(strategy: str, seed: int, epochs: int, out: Path, data_dir: str | None, dry_run: bool) -> list[str]:
    argv = [sys.executable, "-m", "learnloss", "run", "--protocol", "fmnist-paper", "--strategy", strategy,
            "--seed", str(seed), "--epochs", str(epochs), "--quiet", "--out", str(out), "--no-download"]
    if dry_run:
        return argv + ["--dataset", "digits", "--model", "small-cnn", "--initial", "20", "--query", "20", "--cycles",
                       "2", "--subset", "60", "--batch-size", "16", "--device", "cpu"]
    return argv + (["--data-dir", data_dir] if data_dir else []) + ["--device", "cuda"]


def _partial_cycles(log: str) -> list[dict[str, Any]]:
    """The cycles a run printed (``cycle N: L labels, test accuracy A, ...``): what an interrupted trial finished."""
    cycles = []
    for line in log.splitlines():
        match = _CYCLE.match(line.strip())
        if match:
            cycle: dict[str, Any] = {"cycle": int(match.group(1)), "n_labeled": int(match.group(2))}
            for part in match.group(3).split(", "):
                words = part.rsplit(" ", 1)
                if len(words) == 2:
                    try:
                        cycle[words[0].replace(" ", "_")] = float(words[1])
                    except ValueError:
                        pass
            cycles.append(cycle)
    return cycles


def run_trials(args: argparse.Namespace) -> dict[str, Any]:
    """Start every trial at once, stop what is still running at the deadline, and gather what each one did."""
    started = time.monotonic()
    deadline = started + args.seconds
    grace = min(GRACE_SECONDS, max(2.0, 0.15 * args.seconds))
    epochs_env = os.environ.get("LEARNLOSS_GPU_TRIAL_EPOCHS")
    arms = tuple(args.arms.split())
    chosen = plan(args.seconds, measured_rate(Path(args.throughput)) if args.throughput else None, args.seeds,
                  int(epochs_env) if epochs_env else None, args.dry_run, arms)
    print(f"trials: plan {json.dumps(chosen)}", flush=True)
    work, raw = Path(args.work), Path(args.raw) / "trials"
    work.mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 2) // max(1, chosen["seeds"] * len(arms))))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    trials: list[dict[str, Any]] = []
    running: list[tuple[dict[str, Any], subprocess.Popen[bytes], Any]] = []
    for seed in range(chosen["seeds"]):
        for strategy in arms:
            name = f"{strategy}-seed{seed}"
            out = work / name
            argv = _command(strategy, seed, chosen["epochs"], out, args.data_dir, args.dry_run)
            sink = (work / f"{name}.log").open("wb")
            process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
            trial = {"name": name, "strategy": strategy, "seed": seed, "epochs": chosen["epochs"],
                     "full_protocol": chosen["epochs"] == FULL_EPOCHS and not args.dry_run, "argv": argv,
                     "started": time.monotonic()}
            trials.append(trial)
            running.append((trial, process, sink))
    interrupted: set[str] = set()
    while any(process.poll() is None for _, process, _ in running):
        now = time.monotonic()
        for trial, process, _ in running:
            if process.poll() is None and now >= deadline - grace and trial["name"] not in interrupted:
                process.send_signal(signal.SIGINT)  # learnloss run keeps its finished cycles and says so
                interrupted.add(trial["name"])
            elif process.poll() is None and now >= deadline:
                process.kill()
        time.sleep(0.25)
    for trial, process, sink in running:
        sink.close()
        trial["rc"] = process.returncode
        trial["wall_seconds"] = round(time.monotonic() - trial.pop("started"), 1)
        out = work / trial["name"]
        log = (work / f"{trial['name']}.log").read_text(errors="replace")
        results = _load(out / "results.json")
        keep = raw / trial["name"]
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / f"{trial['name']}.log", keep / "log.txt")
        for name in ("results.json", "learning_curve.png"):
            if (out / name).exists():
                shutil.copyfile(out / name, keep / name)
        if results is not None and process.returncode == 0:
            trial.update(status="complete", aubc=results.get("aubc"), cycles=[
                {k: c.get(k) for k in ("cycle", "n_labeled", "test_accuracy", "lpm_ranking_accuracy",
                                       "train_seconds", "query_seconds")} for c in results["cycles"]],
                results=results)
        else:
            trial.update(status="interrupted" if trial["name"] in interrupted else "failed",
                         cycles=_partial_cycles(log), log_tail=log[-1500:])
        done = trial["cycles"]
        images = sum(c["n_labeled"] for c in done) * trial["epochs"]
        trained = sum(c.get("train_seconds") or 0 for c in done)
        trial["train_images_per_s"] = images / trained if trained > 0 else None
        print(f"trials: {trial['name']}: {trial['status']} (rc {trial['rc']}), {len(done)} cycles, "
              f"{trial['wall_seconds']} s", flush=True)
    return {"plan": chosen, "deadline_seconds": args.seconds, "trials": trials}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as None (strict JSON, as learnloss's own writer makes it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, required=True, help="time the trials may take, start to stop")
    parser.add_argument("--work", required=True, help="folder for the runs (stores, checkpoints)")
    parser.add_argument("--raw", required=True, help="folder the results, curves and logs are copied to")
    parser.add_argument("--out", required=True, help="JSON record of the plan and every trial")
    parser.add_argument("--throughput", default=None, help="bench_vs_reference's record, for the measured rate")
    parser.add_argument("--data-dir", default=None, help="where Fashion-MNIST's files are")
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("LEARNLOSS_GPU_TRIAL_SEEDS", "2")))
    parser.add_argument("--arms", default=os.environ.get("LEARNLOSS_GPU_TRIAL_ARMS", " ".join(ARMS)),
                        help="strategies, space-separated")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (digits, the small CNN)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provenance import provenance

    record = run_trials(args)
    record.update(provenance("cpu" if args.dry_run else "auto"))
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_finite(record), indent=2, allow_nan=False, default=str) + "\n")
    tmp.replace(out)
    if any(trial["status"] == "failed" for trial in record["trials"]):
        sys.exit(1)  # recorded in trials.json; the exit status tells the step it failed


if __name__ == "__main__":
    main()
