"""The summary of a device run: ``summary.json`` and a short text, from what each step of ``run.sh`` left in its raw
folder. Imports nothing heavy (no torch), so it runs even when the steps failed because torch did.

Usage: ``python benchmarks/gpu/summarize.py --out OUT --raw OUT/raw --budget SECONDS --elapsed SECONDS [--dry-run]``
(writes ``OUT/summary.json`` and ``OUT/summary.txt`` and prints the text).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

#: The issue's targets on one H100/H200.
TARGET_TRAIN_IMAGES_PER_S = 20_000
TARGET_TRIAL_SECONDS = 600


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _rate(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:,.0f}"


def _tests(raw: Path) -> dict[str, Any]:
    outcomes = _lines(raw / "tests.jsonl")
    counts: dict[str, int] = {}
    for line in outcomes:
        counts[line["outcome"]] = counts.get(line["outcome"], 0) + 1
    failed = [{"test": o["test"], "error": o.get("error", "")} for o in outcomes if o["outcome"] == "failed"]
    return {"counts": counts, "failed": failed, "outcomes": outcomes}


def _throughput(raw: Path) -> dict[str, Any] | None:
    record = _load(raw / "throughput.json")
    if not isinstance(record, dict):
        return None
    medians, ratios = record.get("medians", {}), record.get("ratios", {})
    keys = ("train_images_per_s", "eval_images_per_s", "score_images_per_s", "wall_seconds_per_cycle")
    return {
        "complete": record.get("complete"), "pairs_done": record.get("pairs_done"),
        "settings": {k: record.get("settings", {}).get(k) for k in (
            "device", "precision", "channels_last", "compile", "batch_size", "ref_batch_size", "dataset", "model",
            "image_size", "labeled", "query", "cycles", "epochs", "test", "subset", "pairs")},
        "reference": {k: medians.get("reference", {}).get(k) for k in keys},
        "learnloss": {k: medians.get("learnloss", {}).get(k) for k in keys},
        "ratio": {k: ratios.get(k) for k in keys},
        "device_name": (record.get("environment") or {}).get("device_name"),
    }


def _speed(raw: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(raw.glob("speed-*.json")):
        record = _load(path)
        if isinstance(record, dict):
            rows.append({k: record.get(k) for k in (
                "device", "model", "batch_size", "precision", "channels_last", "compile", "train_images_per_s_plain",
                "train_images_per_s_lpm", "score_images_per_s", "lpm_share_of_step_time", "host_syncs")}
                        | {"file": path.name})
    return rows


def _trials(raw: Path) -> dict[str, Any] | None:
    record = _load(raw / "trials.json")
    if not isinstance(record, dict):
        return None
    rows = []
    for trial in record.get("trials", []):
        cycles = trial.get("cycles") or []
        last = cycles[-1] if cycles else {}
        rows.append({"name": trial.get("name"), "status": trial.get("status"), "epochs": trial.get("epochs"),
                     "full_protocol": trial.get("full_protocol"), "cycles_done": len(cycles),
                     "final_labels": last.get("n_labeled"), "final_accuracy": last.get("test_accuracy"),
                     "aubc": trial.get("aubc"), "wall_seconds": trial.get("wall_seconds"),
                     "train_images_per_s": trial.get("train_images_per_s"),
                     "error": ([line for line in (trial.get("log_tail") or "").splitlines() if line.strip()] or [""])[-1]
                     if trial.get("status") == "failed" else None})
    return {"plan": record.get("plan"), "trials": rows}


def summarise(out: Path, raw: Path, budget: float, elapsed: float, dry_run: bool) -> tuple[dict[str, Any], str]:
    """The summary document and its text."""
    env = _load(raw / "env.json") or {}
    steps = _lines(raw / "steps.jsonl")
    document: dict[str, Any] = {
        "dry_run": dry_run, "budget_seconds": budget, "elapsed_seconds": elapsed,
        "code_version": env.get("code_version"), "environment": env.get("environment"),
        "steps": steps, "tests": _tests(raw), "throughput": _throughput(raw), "speed": _speed(raw),
        "trials": _trials(raw),
        "targets": {"train_images_per_s": TARGET_TRAIN_IMAGES_PER_S, "full_trial_seconds": TARGET_TRIAL_SECONDS},
    }
    environment = document["environment"] or {}
    version = document["code_version"] or {}
    commit = version.get("git_commit")
    lines = [
        f"learnloss GPU run{' (DRY RUN, CPU, toy sizes)' if dry_run else ''}: {environment.get('device_name', '?')}, "
        f"torch {environment.get('torch', '?')}, CUDA {environment.get('cuda')}, "
        f"code {commit[:12] + (' +changes' if version.get('git_dirty') else '') if commit else 'tree'} "
        f"(tree {str(version.get('tree_sha256', '?'))[:12]}); {elapsed:.0f} s of {budget:.0f} s",
        "steps: " + ", ".join(f"{s['step']} {s['status']} ({s['seconds']} s)" for s in steps),
    ]
    tests = document["tests"]
    if tests["counts"]:
        lines.append("tests: " + ", ".join(f"{n} {k}" for k, n in sorted(tests["counts"].items())))
        lines += [f"  FAILED {f['test']}: {f['error'][:160]}" for f in tests["failed"][:8]]
    throughput = document["throughput"]
    if throughput:
        s = throughput["settings"]
        lines.append(f"throughput vs reference ({s.get('model')} + LPM, {s.get('image_size')}x{s.get('image_size')}, "
                     f"learnloss {s.get('precision')}{' channels-last' if s.get('channels_last') else ''}"
                     f"{' compile' if s.get('compile') else ''} batch {s.get('batch_size')}, reference fp32 batch "
                     f"{s.get('ref_batch_size')}; {throughput['pairs_done']} pair(s)"
                     f"{'' if throughput['complete'] else ', INCOMPLETE'}):")
        for key, label in (("train_images_per_s", "training img/s"), ("eval_images_per_s", "evaluation img/s"),
                           ("score_images_per_s", "scoring img/s")):
            ratio = throughput["ratio"].get(key)
            lines.append(f"  {label:<17} reference {_rate(throughput['reference'].get(key)):>9}  learnloss "
                         f"{_rate(throughput['learnloss'].get(key)):>9}  "
                         f"{'—' if ratio is None else f'{ratio:.2f}x'}")
    for row in document["speed"]:
        lines.append(f"steady-state step ({row['model']}, batch {row['batch_size']}, {row['precision']}"
                     f"{' channels-last' if row['channels_last'] else ''}): training {_rate(row['train_images_per_s_lpm'])}"
                     f" img/s with the LPM, {_rate(row['train_images_per_s_plain'])} without; scoring "
                     f"{_rate(row['score_images_per_s'])} img/s")
        syncs = row.get("host_syncs")
        if isinstance(syncs, dict):
            lines.append(f"  host syncs per training step (loop's batches): {syncs.get('per_step', 0):.1f}; at "
                         + ", ".join(f"{site} x{n}" for site, n in list((syncs.get('sites') or {}).items())[:6]))
    best = max([r["train_images_per_s_lpm"] or 0 for r in document["speed"]]
               + [(throughput or {}).get("learnloss", {}).get("train_images_per_s") or 0], default=0)
    if best and not dry_run:
        lines.append(f"target >= {TARGET_TRAIN_IMAGES_PER_S:,} training img/s: best measured {best:,.0f} "
                     f"({'met' if best >= TARGET_TRAIN_IMAGES_PER_S else 'NOT met'})")
    trials = document["trials"]
    if trials:
        plan = trials["plan"] or {}
        lines.append(f"fmnist-paper trials: {plan.get('seeds')} seed(s) x ({', '.join(plan.get('arms') or [])}), "
                     f"{plan.get('epochs')}"
                     f" epochs/cycle{' (full protocol)' if plan.get('epochs') == 200 else ' (paper: 200)'}; "
                     f"{plan.get('why')}")
        for t in trials["trials"]:
            acc, aubc = t["final_accuracy"], t["aubc"]
            lines.append(f"  {t['name']:<20} {t['status']:<11} {t['cycles_done']} cycles, "
                         f"{t['final_labels'] or 0} labels, acc {'—' if acc is None else f'{acc:.4f}'}, "
                         f"AUBC {'—' if aubc is None else f'{aubc:.4f}'}, {t['wall_seconds']} s, "
                         f"train {_rate(t['train_images_per_s'])} img/s")
            if t.get("error"):
                lines.append(f"    {t['error'][:200]}")
    text = "\n".join(lines)
    return document, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--elapsed", type=float, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    document, text = summarise(out, Path(args.raw), args.budget, args.elapsed, args.dry_run)
    document["text"] = text
    (out / "summary.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (out / "summary.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
