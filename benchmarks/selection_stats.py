"""What each strategy of a benchmark queried: class balance of the queried samples, per strategy.

Usage:
    python benchmarks/selection_stats.py BENCH_DIR [--data-dir PATH]

For every run under ``BENCH_DIR`` it looks up the true classes of the samples the run queried (the pool indices
in ``cycles[*].selected``) and prints a markdown table, per strategy, mean ± std over seeds of:

* the normalised entropy of the queried samples' class histogram (1 = perfectly balanced, 0 = one class);
* the share of queries taken by the most-queried class;
* the share of each class among all queries (mean over seeds).

A strategy that keeps querying a few hard classes shows low entropy and a high top-class share; that is one
known way a loss- or uncertainty-ranked selection falls behind random sampling on small budgets.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from learnloss.data import load_dataset
from learnloss.reports.compare import group_runs
from learnloss.metrics import mean_std


def class_shares(selected: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of ``selected`` pool indices in each class."""
    counts = np.bincount(labels[selected], minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def normalised_entropy(shares: np.ndarray) -> float:
    """Shannon entropy of a class distribution divided by log(number of classes)."""
    nonzero = shares[shares > 0]
    return float(-(nonzero * np.log(nonzero)).sum() / np.log(len(shares)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_dir")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    groups = group_runs([args.bench_dir])
    datasets = {run["config"]["dataset"] for runs in groups.values() for run in runs}
    if len(datasets) != 1:
        raise SystemExit(f"expected runs of one dataset, found {sorted(datasets)}")
    data = load_dataset(datasets.pop(), args.data_dir, download=False)
    labels = data.y_train.numpy()
    stats: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for label, runs in groups.items():
        for run in runs:
            selected = np.array([i for cycle in run["cycles"] for i in cycle["selected"]], dtype=np.int64)
            shares = class_shares(selected, labels, data.num_classes)
            stats[label]["entropy"].append(normalised_entropy(shares))
            stats[label]["top"].append(float(shares.max()))
            stats[label]["shares"].append(shares)
    header = ["strategy", "class entropy", "top-class share"] + list(data.classes)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for label in sorted(stats, key=lambda name: -np.mean(stats[name]["entropy"])):
        entropy, top = mean_std(stats[label]["entropy"]), mean_std(stats[label]["top"])
        shares = np.mean(stats[label]["shares"], axis=0)
        cells = [label, f"{entropy[0]:.3f} ± {entropy[1]:.3f}", f"{top[0]:.3f} ± {top[1]:.3f}"]
        print("| " + " | ".join(cells + [f"{share:.3f}" for share in shares]) + " |")


if __name__ == "__main__":
    main()
