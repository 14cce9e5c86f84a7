"""Compare finished runs: per group of runs, AUBC and the final value of the primary metric as mean ± std over
seeds; text tables.

Runs are grouped by their benchmark arm, or else by their strategy plus every setting that tells them apart
(:func:`label_runs`). The learning curve is the primary metric the runs name (``test_accuracy`` for
classification, ``test_r2`` for regression; :func:`learnloss.reports.results.primary_metric`); runs with
different primary metrics are not comparable and are refused.

AUBC is the area under the budget curve of Zhan et al. 2021, "A comparative survey of deep active learning"
(:func:`learnloss.metrics.aubc`); the LPM ranking accuracy shown per cycle is the measure of Yoo &
Kweon, "Learning Loss for Active Learning", CVPR 2019.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnloss.errors import UsageError
from learnloss.metrics import aubc, mean_std
from learnloss.reports.results import (
    DEFAULT_PRIMARY_METRIC,
    RESULTS_FILENAME,
    ResultsFormatError,
    ResultsNotFoundError,
    common_primary_metric,
    load_results,
    metric_label,
    primary_metric,
)

__all__ = [
    "LEARNING_LOSS_STRATEGY",
    "NON_DISTINGUISHING_SETTINGS",
    "ComparisonRow",
    "ComparisonWarning",
    "compare_runs",
    "curve_aubc",
    "find_results",
    "format_curve_table",
    "format_table",
    "group_runs",
    "label_runs",
    "setting_text",
    "summarise_groups",
    "strategy_label",
]

LEARNING_LOSS_STRATEGY = "learning-loss"
#: Settings that never tell compared runs apart: the seed (runs of a group are its seeds), the benchmark arm
#: and the strategy (they start the label), where a run executes and finds its data, the protocol (the settings
#: carry what it resolved to) and bookkeeping derived from the data and the model.
NON_DISTINGUISHING_SETTINGS = frozenset({
    "seed", "arm", "strategy", "protocol",
    "device", "data_dir", "download",
    "pool_size", "test_size", "input_shape", "num_classes", "lpm_attached",
})


class ComparisonWarning(UserWarning):
    """Runs grouped together are not strictly comparable (different label schedules, datasets or seeds)."""


@dataclass(frozen=True)
class ComparisonRow:
    """One strategy summarised over its runs (one per seed); stds are population stds (``ddof=0``).

    ``final_accuracy_*`` is the primary metric (``metric``, a cycle key such as ``test_accuracy`` or
    ``test_r2``) of the last cycle; the names stay for existing callers. ``n_labeled_final`` is the label count
    of the last cycle, ``None`` when the runs disagree on it. ``schedules_match`` is false when the runs used
    different label schedules (see :class:`ComparisonWarning`).
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
    metric: str = DEFAULT_PRIMARY_METRIC


def strategy_label(config: Mapping[str, Any]) -> str:
    """The group name of one run on its own: the benchmark arm it belongs to (``config["arm"]``) when it has
    one, else ``config["strategy"]``. Among other runs, :func:`label_runs` adds the settings that differ."""
    if config.get("arm"):
        return str(config["arm"])
    return str(config["strategy"])


def setting_text(value: Any) -> str:
    """A setting's value as run and arm labels write it (lists joined with commas)."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _canonical(value: Any) -> str:
    """A comparable form of a setting's value: 1 and 1.0 are equal, dict order does not matter."""

    def normal(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, Mapping):
            return {str(k): normal(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [normal(x) for x in v]
        return repr(v)

    return json.dumps(normal(value), sort_keys=True)


def label_runs(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The group label of each run of ``configs`` (their ``config`` sections), compared together.

    A run of a benchmark is labelled by its arm (``config["arm"]``). Any other run is labelled by its strategy
    plus every setting whose value differs among the compared runs of that strategy (without an arm), in the
    format of a benchmark arm label, keys sorted and lists joined with commas:
    ``learning-loss (reset=reinit, stop_grad_epoch=0)``. A setting a run does not record is left out of its
    label. :data:`NON_DISTINGUISHING_SETTINGS` (the seed, where a run executes, derived bookkeeping) never
    tell runs apart, so runs differing only in those share a label.
    """
    by_strategy: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        if not config.get("arm"):
            by_strategy.setdefault(str(config["strategy"]), []).append(i)
    labels = [strategy_label(config) for config in configs]
    for strategy, members in by_strategy.items():
        keys = sorted({key for i in members for key in configs[i]} - NON_DISTINGUISHING_SETTINGS)
        differing = [
            key for key in keys
            if len({_canonical(configs[i][key]) if key in configs[i] else None for i in members}) > 1
        ]
        for i in members:
            shown = [f"{key}={setting_text(configs[i][key])}" for key in differing if key in configs[i]]
            labels[i] = f"{strategy} ({', '.join(shown)})" if shown else strategy
    return labels


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
    """Load every run under ``dirs`` (see :func:`find_results`) and group them by :func:`label_runs`: a
    benchmark's runs by their arm, other runs by strategy plus the settings that differ among them.

    Each loaded dict gets a ``"_path"`` key with the path of its ``results.json``. Groups and runs within a
    group are in a stable order (label, then seed, then path).

    Raises:
        ResultsNotFoundError, ResultsFormatError: as :func:`find_results` and :func:`load_results`.
        UsageError: the runs name different primary metrics (not comparable).
    """
    runs: list[dict[str, Any]] = []
    for path in find_results(dirs):
        results = load_results(path)
        results["_path"] = str(path)
        runs.append(results)
    common_primary_metric(runs)
    groups: dict[str, list[dict[str, Any]]] = {}
    for label, results in zip(label_runs([run["config"] for run in runs]), runs):
        groups.setdefault(label, []).append(results)
    for members in groups.values():
        members.sort(key=lambda r: (r["config"]["seed"], r["_path"]))
    return dict(sorted(groups.items()))


def curve_aubc(run: Mapping[str, Any], metric: str | None = None) -> float:
    """The AUBC (Zhan et al. 2021) of one run's learning curve, recomputed from its cycles: ``metric`` (by
    default the run's primary metric) against ``n_labeled``.

    Raises:
        ResultsFormatError: the run has no cycles, or a cycle has no value of the metric (null).
    """
    key = metric or primary_metric(run)
    cycles = run["cycles"]
    where = run.get("_path", "<results>")
    if not cycles:
        raise ResultsFormatError(
            f"{where}: field 'cycles' is empty, so the run has no {metric_label(key)} to compare; finish or "
            "re-run it, or leave its directory out"
        )
    values = [c.get(key) for c in cycles]
    bad = [i for i, v in enumerate(values) if v is None or not math.isfinite(float(v))]
    if bad:
        raise ResultsFormatError(
            f"{where}: field 'cycles[{bad[0]}].{key}' is null, so the run's AUBC is undefined; re-run it or "
            "leave its directory out"
        )
    return aubc([int(c["n_labeled"]) for c in cycles], [float(v) for v in values])


def _summarise(label: str, runs: list[dict[str, Any]], metric: str) -> ComparisonRow:
    aubcs: list[float] = []
    finals: list[float] = []
    schedules: list[tuple[int, ...]] = []
    for run in runs:
        aubcs.append(curve_aubc(run, metric))
        cycles = run["cycles"]
        schedules.append(tuple(int(c["n_labeled"]) for c in cycles))
        finals.append(float(cycles[-1][metric]))
    schedules_match = len(set(schedules)) == 1
    if not schedules_match:
        detail = "; ".join(f"{run.get('_path', '<results>')}: {list(s)}" for run, s in zip(runs, schedules))
        warnings.warn(
            f"runs of {label!r} used different label schedules (n_labeled per cycle), so their AUBC and final "
            f"{metric_label(metric)} are not directly comparable: {detail}. Re-run them with the same initial "
            "size, query size and number of cycles",
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
        run_dirs=tuple(Path(run["_path"]).parent for run in runs if "_path" in run),
        metric=metric,
    )


def _sort_key(row: ComparisonRow) -> tuple[float, str]:
    return (-row.aubc_mean if row.aubc_mean == row.aubc_mean else float("inf"), row.strategy)


def compare_runs(dirs: Sequence[str | os.PathLike[str]]) -> list[ComparisonRow]:
    """Summarise the runs under ``dirs`` per strategy, best AUBC first.

    Each entry of ``dirs`` is a run directory holding ``results.json``, a folder searched recursively for
    them, or a ``results.json`` itself. Runs are grouped by :func:`label_runs`. Per group, the AUBC of every run
    (Zhan et al. 2021, recomputed from its cycles) and the primary metric of its last cycle (test accuracy for
    classification) are reduced to mean and population std over the runs.

    Warns:
        ComparisonWarning: runs of one group used different label schedules, repeat a seed, or the runs
            span several datasets.

    Raises:
        ResultsNotFoundError: a path does not exist or holds no ``results.json``.
        ResultsFormatError: a file is malformed, a run has no cycles or a cycle lacks the primary metric.
        UsageError: the runs name different primary metrics (e.g. accuracy and R²): not comparable.
    """
    return summarise_groups(group_runs(dirs))


def summarise_groups(groups: dict[str, list[dict[str, Any]]]) -> list[ComparisonRow]:
    """Rows of :func:`compare_runs` from runs already grouped by :func:`group_runs`.

    Raises:
        UsageError: the runs name different primary metrics.
        ResultsFormatError: a run has no cycles or a cycle lacks the primary metric.
    """
    metric = common_primary_metric(run for runs in groups.values() for run in runs)
    datasets = sorted({str(run["config"]["dataset"]) for runs in groups.values() for run in runs})
    if len(datasets) > 1:
        warnings.warn(
            f"the compared runs use different datasets ({', '.join(datasets)}); compare one dataset at a time",
            ComparisonWarning,
            stacklevel=2,
        )
    rows = [_summarise(label, runs, metric) for label, runs in groups.items()]
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


def _final_header(metric: str) -> str:
    """``final acc`` for ``test_accuracy``, ``final r2`` for ``test_r2``."""
    name = metric[len("test_"):] if metric.startswith("test_") else metric
    return "final " + metric_label(name, short=True)


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """A plain-text table of ``rows``, best AUBC mean first, columns aligned; the final-value column is named
    after the rows' metric (``final acc`` for test accuracy, ``final r2`` for R²)::

        strategy       seeds  AUBC mean ± std  final acc mean ± std
        -------------  -----  ---------------  --------------------
        learning-loss      3  0.7000 ± 0.0100       0.8000 ± 0.0050

    Raises:
        UsageError: the rows summarise different metrics.
    """
    metrics = sorted({row.metric for row in rows})
    if len(metrics) > 1:
        raise UsageError(
            f"the rows summarise different metrics ({', '.join(metrics)}), which are not comparable; "
            "tabulate runs of one task at a time"
        )
    metric = metrics[0] if metrics else DEFAULT_PRIMARY_METRIC
    header = ("strategy", "seeds", "AUBC mean ± std", f"{_final_header(metric)} mean ± std")
    body = [
        (row.strategy, str(row.seeds), _pm(row.aubc_mean, row.aubc_std),
         _pm(row.final_accuracy_mean, row.final_accuracy_std))
        for row in sorted(rows, key=_sort_key)
    ]
    return _render(header, body, right=(False, True, True, True))


def _cell(value: Any, digits: int = 4) -> str:
    """A number, or ``-`` when not recorded or undefined."""
    if value is None or not math.isfinite(float(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def format_curve_table(results: dict[str, Any]) -> str:
    """The per-cycle learning curve of one run as a plain-text table.

    Columns: cycle, labeled, the primary metric (``test acc`` for ``test_accuracy``, ``test r2`` for
    ``test_r2``), LPM rank acc, train s, query s; ``-`` where a value is not recorded or undefined.
    """
    metric = primary_metric(results)
    header = ("cycle", "labeled", metric_label(metric, short=True), "LPM rank acc", "train s", "query s")
    body = [
        (
            str(c["cycle"]),
            str(c["n_labeled"]),
            _cell(c.get(metric)),
            _cell(c.get("lpm_ranking_accuracy")),
            f"{c['train_seconds']:.2f}",
            f"{c['query_seconds']:.2f}",
        )
        for c in results["cycles"]
    ]
    return _render(header, body, right=(True,) * len(header))
