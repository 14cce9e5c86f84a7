"""Does ``torch.compile`` pay back? learnloss's loop with and without ``--compile``, side by side.

Usage:
    python benchmarks/bench_compile.py [--pairs 2] [--out FILE.json] [every option of bench_vs_reference.py]

The same work as ``benchmarks/bench_vs_reference.py`` (ResNet-18 + LPM, Fashion-MNIST at 32×32 RGB, ``--cycles``
cycles of ``--epochs`` epochs, evaluation and scoring), run by learnloss twice over in alternating fresh
subprocesses — eager, then compiled (:meth:`torch.nn.Module.compile` through the ``compile`` setting), ``--pairs``
times — with the precision and memory format given. Compilation happens in the first passes of each shape, so
the first cycle carries it; the table shows each cycle's wall time separately, the per-phase rates of the later
cycles, and how many cycles it takes for the compiled loop to catch up (the overhead of cycle 0 divided by the
saving per later cycle).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_vs_reference as bench  # noqa: E402

MODES = ("eager", "compiled")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _later_rate(run: dict[str, Any], images: str, seconds: str) -> float | None:
    later = run["cycles"][1:]
    total = sum(c[seconds] for c in later)
    return sum(c[images] for c in later) / total if total > 0 else None


def main() -> None:
    parser = bench.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error("--cycles must be at least 2: the first cycle carries the compilation")
    runs: list[dict[str, Any]] = []
    for pair in range(args.pairs):
        for mode in MODES:
            args.compile = mode == "compiled"
            result = bench.run_child(args, "learnloss")
            result.update({"pair": pair, "mode": mode})
            runs.append(result)
            walls = ", ".join(f"{c['wall_seconds']:.1f}" for c in result["cycles"])
            print(f"pair {pair + 1}/{args.pairs} {mode:<8}: cycle walls {walls} s; "
                  f"{result['process_seconds']:.1f} s in all", flush=True)
    rows: dict[str, dict[str, float]] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        rows[mode] = {
            "cycle0_wall_s": _median([r["cycles"][0]["wall_seconds"] for r in mine]),
            "later_wall_s_per_cycle": _median([statistics.mean(c["wall_seconds"] for c in r["cycles"][1:])
                                               for r in mine]),
            "later_train_img_s": _median([v for r in mine if (v := _later_rate(r, "train_images", "train_seconds"))]),
            "later_eval_img_s": _median([v for r in mine if (v := _later_rate(r, "eval_images", "eval_seconds"))]),
            "process_s": _median([r["process_seconds"] for r in mine]),
        }
    eager, compiled = rows["eager"], rows["compiled"]
    overhead = compiled["cycle0_wall_s"] - eager["cycle0_wall_s"]
    saving = eager["later_wall_s_per_cycle"] - compiled["later_wall_s_per_cycle"]
    payback = overhead / saving if saving > 0 else None
    lines = [f"{'':<28} {'eager':>10} {'compiled':>10}", "-" * 50]
    for key, label in (("cycle0_wall_s", "cycle 0 wall s"), ("later_wall_s_per_cycle", "later cycles wall s each"),
                       ("later_train_img_s", "later training img/s"), ("later_eval_img_s", "later evaluation img/s"),
                       ("process_s", "process wall s")):
        lines.append(f"{label:<28} {eager[key]:>10.1f} {compiled[key]:>10.1f}")
    lines.append(f"compilation overhead in cycle 0: {overhead:.1f} s; saving per later cycle: {saving:.1f} s; "
                 + (f"pays back after {payback:.1f} later cycles" if payback is not None else "never pays back"))
    text = (f"{args.model} + LPM, precision {args.precision}{' channels-last' if args.channels_last else ''}, "
            f"{args.cycles} cycles x {args.epochs} epochs, {args.labeled} + {args.query}/cycle labels, "
            f"{args.test} test, {args.subset} scored; medians of {args.pairs} pair(s)\n" + "\n".join(lines))
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": bench.machine(args.device),
                  "rows": rows, "overhead_s": overhead, "saving_s_per_cycle": saving, "payback_cycles": payback,
                  "table": text, "runs": runs}
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
