"""Compare finished runs: per strategy, AUBC and final accuracy as mean ± std over seeds; text tables.

AUBC is the area under the budget curve of Zhan et al. 2021, "A comparative survey of deep active learning"
(:func:`learnloss.metrics.aubc`); the LPM ranking accuracy shown per cycle is the measure of Yoo &
Kweon, "Learning Loss for Active Learning", CVPR 2019.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnloss.errors import UsageError
from learnloss.metrics import aubc, mean_std
from learnloss.reports.results import RESULTS_FILENAME, ResultsFormatError, ResultsNotFoundError, load_results

__all__ = [
    "LEARNING_LOSS_STRATEGY",
    "ComparisonRow",
    "ComparisonWarning",
    "compare_runs",
    "find_results",
    "format_curve_table",
    "format_table",
    "group_runs",
    "summarise_groups",
    "strategy_label",
]

LEARNING_LOSS_STRATEGY = "learning-loss"
_DEFAULT_LPM_LOSS = "ranking"


class ComparisonWarning(UserWarning):
    """Runs grouped together are not strictly comparable (different label schedules, datasets or seeds)."""


@dataclass(frozen=True)
class ComparisonRow:
    """One strategy summarised over its runs (one per seed); stds are population stds (``ddof=0``).

    ``n_labeled_final`` is the label count of the last cycle, ``None`` when the runs disagree on it.
    ``schedules_match`` is false when the runs used different label schedules (see :class:`ComparisonWarning`).
    """

    strategy: str
    seeds: int
    aubc_mean: float
    aubc_std: float
    final_accuracy_mean: float
    final_accuracy_std: float
    n_labeled_final: int | None
    schedules_match: bool = True
    run_dirs: tuple[Path, ...] = field(default=(), compare=False)


def strategy_label(config: dict[str, Any]) -> str:
    """The group name of a run: the benchmark arm it belongs to (``config["arm"]``) when it has one, else
    ``config["strategy"]`` with a non-default LPM loss appended for learning loss.

    E.g. ``"learning-loss"`` for the ranking loss of Yoo & Kweon (2019) and ``"learning-loss (mse)"`` when the
    run used ``lpm_loss="mse"``.
    """
    if config.get("arm"):
        return str(config["arm"])
    strategy = str(config["strategy"])
    lpm_loss = config.get("lpm_loss")
    if strategy == LEARNING_LOSS_STRATEGY and lpm_loss is not None and lpm_loss != _DEFAULT_LPM_LOSS:
        return f"{strategy} ({lpm_loss})"
    return strategy


def find_results(dirs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every ``results.json`` under ``dirs`` (each a run directory, a folder of run directories searched
    recursively, or a ``results.json`` itself), de-duplicated and sorted.

    Raises:
        UsageError: ``dirs`` is empty.
        ResultsNotFoundError: a path does not exist, or holds no ``results.json`` (all such paths are named).
    """
    if not dirs:
        raise UsageError("compare needs at least one run directory or folder of runs, got none")
    found: dict[Path, None] = {}
    missing: list[str] = []
    empty: list[str] = []
    for entry in dirs:
        path = Path(entry)
        if path.is_file():
            found[path.resolve()] = None
            continue
        if not path.is_dir():
            missing.append(str(path))
            continue
        hits = sorted(p for p in path.rglob(RESULTS_FILENAME) if p.is_file())
        if not hits:
            empty.append(str(path))
        for hit in hits:
            found[hit.resolve()] = None
    problems = []
    if missing:
        problems.append(f"these paths do not exist: {', '.join(missing)}")
    if empty:
        problems.append(f"no {RESULTS_FILENAME} found (searched recursively) in: {', '.join(empty)}")
    if problems:
        raise ResultsNotFoundError(
            "; ".join(problems) + f"; pass run directories containing {RESULTS_FILENAME} or folders of them"
        )
    return sorted(found)


def group_runs(dirs: Sequence[str | os.PathLike[str]]) -> dict[str, list[dict[str, Any]]]:
    """Load every run under ``dirs`` (see :func:`find_results`) and group them by :func:`strategy_label`.

    Each loaded dict gets a ``"_path"`` key with the path of its ``results.json``. Groups and runs within a
    group are in a stable order (label, then seed, then path).

    Raises:
        ResultsNotFoundError, ResultsFormatError: as :func:`find_results` and :func:`load_results`.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in find_results(dirs):
        results = load_results(path)
        results["_path"] = str(path)
        groups.setdefault(strategy_label(results["config"]), []).append(results)
    for runs in groups.values():
        runs.sort(key=lambda r: (r["config"]["seed"], r["_path"]))
    return dict(sorted(groups.items()))


def _summarise(label: str, runs: list[dict[str, Any]]) -> ComparisonRow:
    aubcs: list[float] = []
    finals: list[float] = []
    schedules: list[tuple[int, ...]] = []
    for run in runs:
        cycles = run["cycles"]
        if not cycles:
            raise ResultsFormatError(
                f"{run['_path']}: field 'cycles' is empty, so the run has no accuracy to compare; finish or "
                "re-run it, or leave its directory out"
            )
        schedule = tuple(int(c["n_labeled"]) for c in cycles)
        schedules.append(schedule)
        aubcs.append(aubc(schedule, [c["test_accuracy"] for c in cycles]))
        finals.append(float(cycles[-1]["test_accuracy"]))
    schedules_match = len(set(schedules)) == 1
    if not schedules_match:
        detail = "; ".join(f"{run['_path']}: {list(s)}" for run, s in zip(runs, schedules))
        warnings.warn(
            f"runs of {label!r} used different label schedules (n_labeled per cycle), so their AUBC and final "
            f"accuracy are not directly comparable: {detail}. Re-run them with the same initial size, query "
            "size and number of cycles",
            ComparisonWarning,
            stacklevel=3,
        )
    seeds = [run["config"]["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        warnings.warn(
            f"runs of {label!r} repeat a seed ({sorted(seeds)}); each run counts once -- remove duplicated run "
            "directories if they are copies",
            ComparisonWarning,
            stacklevel=3,
        )
    finals_n = {s[-1] for s in schedules}
    aubc_mean, aubc_std = mean_std(aubcs)
    acc_mean, acc_std = mean_std(finals)
    return ComparisonRow(
        strategy=label,
        seeds=len(runs),
        aubc_mean=aubc_mean,
        aubc_std=aubc_std,
        final_accuracy_mean=acc_mean,
        final_accuracy_std=acc_std,
        n_labeled_final=finals_n.pop() if len(finals_n) == 1 else None,
        schedules_match=schedules_match,
        run_dirs=tuple(Path(run["_path"]).parent for run in runs),
    )


def _sort_key(row: ComparisonRow) -> tuple[float, str]:
    return (-row.aubc_mean if row.aubc_mean == row.aubc_mean else float("inf"), row.strategy)


def compare_runs(dirs: Sequence[str | os.PathLike[str]]) -> list[ComparisonRow]:
    """Summarise the runs under ``dirs`` per strategy, best AUBC first.

    Each entry of ``dirs`` is a run directory holding ``results.json``, a folder searched recursively for
    them, or a ``results.json`` itself. Runs are grouped by :func:`strategy_label`. Per group, the AUBC of
    every run (Zhan et al. 2021, recomputed from its cycles) and the test accuracy of its last cycle are
    reduced to mean and population std over the runs.

    Warns:
        ComparisonWarning: runs of one group used different label schedules, repeat a seed, or the runs
            span several datasets.

    Raises:
        ResultsNotFoundError: a path does not exist or holds no ``results.json``.
        ResultsFormatError: a file is malformed or a run has no cycles.
    """
    return summarise_groups(group_runs(dirs))


def summarise_groups(groups: dict[str, list[dict[str, Any]]]) -> list[ComparisonRow]:
    """Rows of :func:`compare_runs` from runs already grouped by :func:`group_runs`."""
    datasets = sorted({str(run["config"]["dataset"]) for runs in groups.values() for run in runs})
    if len(datasets) > 1:
        warnings.warn(
            f"the compared runs use different datasets ({', '.join(datasets)}); compare one dataset at a time",
            ComparisonWarning,
            stacklevel=2,
        )
    rows = [_summarise(label, runs) for label, runs in groups.items()]
    return sorted(rows, key=_sort_key)


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """A plain-text table of ``rows``, best AUBC mean first, columns aligned::

        strategy       seeds  AUBC mean ± std  final acc mean ± std
        -------------  -----  ---------------  --------------------
        learning-loss      3  0.7000 ± 0.0100       0.8000 ± 0.0050
    """
    header = ("strategy", "seeds", "AUBC mean ± std", "final acc mean ± std")
    body = [
        (row.strategy, str(row.seeds), _pm(row.aubc_mean, row.aubc_std),
         _pm(row.final_accuracy_mean, row.final_accuracy_std))
        for row in sorted(rows, key=_sort_key)
    ]
    return _render(header, body, right=(False, True, True, True))


def format_curve_table(results: dict[str, Any]) -> str:
    """The per-cycle learning curve of one run as a plain-text table.

    Columns: cycle, labeled, test acc, LPM rank acc (``-`` when not recorded or undefined), train s, query s.
    """
    header = ("cycle", "labeled", "test acc", "LPM rank acc", "train s", "query s")
    body = []
    for c in results["cycles"]:
        rank = c.get("lpm_ranking_accuracy")
        body.append(
            (
                str(c["cycle"]),
                str(c["n_labeled"]),
                f"{c['test_accuracy']:.4f}",
                "-" if rank is None or rank != rank else f"{rank:.4f}",
                f"{c['train_seconds']:.2f}",
                f"{c['query_seconds']:.2f}",
            )
        )
    return _render(header, body, right=(True,) * len(header))
