"""Paired AUBC differences between two benchmark folders that ran the same arms and seeds with different settings.

Usage:
    python benchmarks/paired_aubc.py CHANGED BASELINE [--arms ARM ...]

For each arm present in both folders (``<arm>/seed-<s>/results.json``, as ``learnloss bench`` writes them) and each
seed in both, prints both AUBCs and their difference, then per arm the mean difference ± its population standard
deviation over seeds and the baseline's own seed standard deviation (over the seeds compared): a change "within
noise" is one whose mean difference is smaller than that spread. Used for the precision parity of
``benchmarks/results/precision`` (bf16 + channels-last against the committed fp32 runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from learnloss.reports.paired import paired_difference


def aubcs(folder: Path, arm: str) -> dict[int, float]:
    found = {}
    for path in sorted((folder / arm).glob("seed-*/results.json")):
        found[int(path.parent.name.split("-", 1)[1])] = float(json.loads(path.read_text())["aubc"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("changed", type=Path)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--arms", nargs="+", default=None, help="arm folder names (default: every shared arm)")
    args = parser.parse_args()
    arms = args.arms or sorted({p.name for p in args.changed.iterdir() if p.is_dir()}
                               & {p.name for p in args.baseline.iterdir() if p.is_dir()})
    print(f"{'arm':<16} {'seed':>4} {'baseline':>9} {'changed':>9} {'diff':>8}")
    summary = []
    for arm in arms:
        changed, baseline = aubcs(args.changed, arm), aubcs(args.baseline, arm)
        seeds = sorted(changed.keys() & baseline.keys())
        if not seeds:
            continue
        for seed in seeds:
            print(f"{arm:<16} {seed:>4} {baseline[seed]:>9.4f} {changed[seed]:>9.4f} "
                  f"{changed[seed] - baseline[seed]:>+8.4f}")
        difference = paired_difference(changed, baseline)
        spread = statistics.pstdev([baseline[s] for s in seeds])
        summary.append(f"{arm}: {len(seeds)} paired seeds, AUBC difference {difference.mean:+.4f} ± "
                       f"{difference.std:.4f} (baseline's seed std {spread:.4f})")
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
