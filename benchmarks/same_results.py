"""Check that two benchmark folders hold the same results, timings aside: the reproducibility check.

Usage:
    python benchmarks/same_results.py COMMITTED_DIR REPRODUCED_DIR

For every run (strategy folder and seed) present in either folder it compares the initial labeled set and,
cycle by cycle, the labeled count, test accuracy, LPM ranking accuracy and Spearman correlation and the selected
samples. Wall times, the environment and the paths are ignored. Prints one line per run and exits 1 if any
run differs or is missing from one side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMPARED = ("n_labeled", "test_accuracy", "lpm_ranking_accuracy", "lpm_spearman", "selected")


def _runs(folder: Path) -> dict[str, dict]:
    return {str(path.parent.relative_to(folder)): json.loads(path.read_text()) for path in folder.rglob("results.json")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    a, b = _runs(args.a), _runs(args.b)
    failures = 0
    for name in sorted(a.keys() | b.keys()):
        if name not in a or name not in b:
            print(f"{name}: only in {args.a if name in a else args.b}")
            failures += 1
            continue
        left, right = a[name], b[name]
        problems = []
        if left.get("initial_labeled") != right.get("initial_labeled"):
            problems.append("initial labeled set")
        if len(left["cycles"]) != len(right["cycles"]):
            problems.append("number of cycles")
        for x, y in zip(left["cycles"], right["cycles"]):
            problems += [f"cycle {x['cycle']} {key}" for key in COMPARED if x.get(key) != y.get(key)]
        print(f"{name}: {'identical' if not problems else 'DIFFERS in ' + ', '.join(problems[:5])}")
        failures += bool(problems)
    print(f"{len(a.keys() | b.keys()) - failures} of {len(a.keys() | b.keys())} runs identical apart from timings")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
