"""Learning-curve figures (PNG) of one run and of several strategies.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend change)
and written atomically (:func:`learnloss.atomic.atomic_write`): to a temporary file in the target directory, then
a rename; given the run folder as ``root``, no folder below it is followed through a symbolic link, and a link at the
file's name is replaced, never written through.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from learnloss.atomic import atomic_write
from learnloss.errors import UsageError
from learnloss.metrics import aubc
from learnloss.reports.results import common_primary_metric, metric_label, primary_metric, validate_results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_comparison", "plot_learning_curve"]

_DPI = 120


def _save_png_atomic(fig: Figure, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
    """Render ``fig`` to ``path`` (below the folder ``root``, default its own folder) as PNG atomically
    (:func:`learnloss.atomic.atomic_write`)."""
    with atomic_write(path, binary=True, root=root) as handle:
        fig.savefig(handle, format="png", dpi=_DPI)


def _new_figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas; matplotlib is imported here so importing this module stays cheap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _column(cycles: list[dict[str, Any]], key: str) -> npt.NDArray[np.float64]:
    """One field of every cycle as floats, ``None`` as NaN (a gap in the plotted line)."""
    return np.array([math.nan if c.get(key) is None else float(c[key]) for c in cycles], dtype=np.float64)


def _run_aubc(results: Mapping[str, Any]) -> float:
    """The run's stored AUBC, else recomputed from its primary metric (NaN where a value is missing)."""
    cycles = results["cycles"]
    if results.get("aubc") is not None:
        return float(results["aubc"])
    values = _column(cycles, primary_metric(results))
    if not cycles or not np.isfinite(values).all():
        return math.nan
    return aubc([c["n_labeled"] for c in cycles], values.tolist())


def plot_learning_curve(results: dict[str, Any], path: str | os.PathLike[str],
                        root: str | os.PathLike[str] | None = None) -> None:
    """Plot the run's primary metric (:func:`learnloss.reports.results.primary_metric`: test accuracy for
    classification, R² for regression) against the number of labelled samples and save it as PNG at ``path``
    (below the folder ``root``, default its own folder: :func:`learnloss.atomic.atomic_write`).

    The title names the strategy, dataset and AUBC (Zhan et al. 2021). When the run recorded the ranking
    accuracy of the loss prediction module (Yoo & Kweon, CVPR 2019) a second panel shows it, together with
    the Spearman correlation when present.

    Raises:
        ResultsFormatError: ``results`` does not follow the results schema.
        UsageError: the run has no cycles.
    """
    validate_results(results)
    cycles = results["cycles"]
    if not cycles:
        raise UsageError("cannot plot a learning curve of a run without cycles; wait until a cycle has finished")
    config = results["config"]
    metric = primary_metric(results)
    x = _column(cycles, "n_labeled")
    accuracy = _column(cycles, metric)
    ranking = _column(cycles, "lpm_ranking_accuracy")
    rho = _column(cycles, "lpm_spearman")
    has_lpm = bool(np.isfinite(ranking).any())

    fig = _new_figure(7.0, 6.5 if has_lpm else 4.5)
    if has_lpm:
        ax_acc, ax_lpm = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    else:
        ax_acc, ax_lpm = fig.subplots(1, 1), None
    ax_acc.plot(x, accuracy, marker="o", label=metric_label(metric))
    ax_acc.set_ylabel(metric_label(metric))
    ax_acc.grid(True, alpha=0.3)
    title = f"{config['strategy']} on {config['dataset']} (seed {config['seed']}) -- AUBC {_run_aubc(results):.4f}"
    ax_acc.set_title(title)
    if ax_lpm is not None:
        ax_lpm.plot(x, ranking, marker="s", color="tab:orange", label="LPM ranking accuracy")
        if np.isfinite(rho).any():
            ax_lpm.plot(x, rho, marker="^", color="tab:green", label="LPM Spearman")
        ax_lpm.set_ylabel("loss prediction")
        ax_lpm.grid(True, alpha=0.3)
        ax_lpm.legend(loc="best", fontsize="small")
        ax_lpm.set_xlabel("labelled samples")
    else:
        ax_acc.set_xlabel("labelled samples")
    fig.tight_layout()
    _save_png_atomic(fig, path, root)


def _mean_curve(runs: list[dict[str, Any]], key: str = "test_accuracy") -> tuple[npt.NDArray[np.float64], ...]:
    """Mean and population std of ``key`` at every label count any run reached (runs that recorded it there)."""
    points: dict[int, list[float]] = {}
    for run in runs:
        for cycle in run["cycles"]:
            value = cycle.get(key)
            if value is not None and math.isfinite(float(value)):
                points.setdefault(int(cycle["n_labeled"]), []).append(float(value))
    xs = np.array(sorted(points), dtype=np.float64)
    means = np.array([np.mean(points[int(v)]) for v in xs], dtype=np.float64)
    stds = np.array([np.std(points[int(v)], ddof=0) for v in xs], dtype=np.float64)
    return xs, means, stds


#: Per-cycle fields of the loss prediction module :func:`plot_comparison` can draw, with their axis labels; the
#: runs' primary metric (``test_accuracy``, ``test_r2``, ...) is drawn by default.
PLOTTED_METRICS = {
    "test_accuracy": "test accuracy",
    "lpm_ranking_accuracy": "LPM ranking accuracy on test pairs",
    "lpm_spearman": "LPM Spearman correlation on test",
}


def plot_comparison(
    groups: Mapping[str, list[dict[str, Any]]], path: str | os.PathLike[str], metric: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> None:
    """Overlay one per-cycle metric of several strategies and save the figure as PNG at ``path``.

    ``groups`` maps a strategy label to its runs (loaded ``results.json`` dicts, one per seed). Each strategy
    is drawn as the mean of ``metric`` over its runs with a band of +- one population standard deviation.
    ``metric`` is by default the runs' primary metric (test accuracy for classification, R² for regression),
    for which the legend gives the number of seeds and the mean AUBC (Zhan et al. 2021); it may also be any
    ``test_<metric>`` the runs record or a key of :data:`PLOTTED_METRICS` (the LPM's ranking accuracy or
    Spearman correlation of Yoo & Kweon, CVPR 2019). Each label count is averaged over the runs that
    recorded the metric there; strategies that never recorded it (no LPM) are left out.

    Raises:
        UsageError: ``groups`` is empty, ``metric`` is unknown, the runs have different primary metrics, no
            strategy recorded the metric, or a strategy has only runs without cycles.
        ResultsFormatError: a run does not follow the results schema.
    """
    if not groups:
        raise UsageError("plot_comparison needs at least one strategy with runs, got none")
    for label, runs in groups.items():
        for run in runs:
            validate_results(run, run.get("_path", f"run of {label!r}"))
    primary = common_primary_metric(run for runs in groups.values() for run in runs)
    metric = metric or primary
    if metric not in PLOTTED_METRICS and not metric.startswith("test_"):
        raise UsageError(
            f"cannot plot {metric!r}; choose the runs' primary metric {primary!r}, another test_<metric> they "
            f"record, or one of {', '.join(PLOTTED_METRICS)}"
        )
    axis_label = PLOTTED_METRICS.get(metric) or metric_label(metric)
    fig = _new_figure(8.0, 5.0)
    ax = fig.subplots(1, 1)
    datasets: set[str] = set()
    drawn = 0
    for label, runs in groups.items():
        datasets.update(str(run["config"]["dataset"]) for run in runs)
        runs_with_cycles = [run for run in runs if run["cycles"]]
        if not runs_with_cycles:
            raise UsageError(f"strategy {label!r} has no run with a finished cycle; nothing to plot")
        xs, means, stds = _mean_curve(runs_with_cycles, metric)
        if not len(xs):
            continue
        legend = f"{label} (n={len(runs_with_cycles)}"
        if metric == primary:
            legend += f", AUBC {float(np.nanmean([_run_aubc(run) for run in runs_with_cycles])):.4f}"
        (line,) = ax.plot(xs, means, marker="o", markersize=4, label=legend + ")")
        ax.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        raise UsageError(f"no strategy recorded {axis_label}; nothing to plot")
    ax.set_xlabel("labelled samples")
    ax.set_ylabel(f"{axis_label} (mean ± std over seeds)")
    ax.set_title("strategy comparison" + (f" on {', '.join(sorted(datasets))}" if datasets else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right" if metric == primary else "best", fontsize="small")
    fig.tight_layout()
    _save_png_atomic(fig, path, root)
