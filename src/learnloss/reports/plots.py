"""Learning-curve figures (PNG) of one run and of several strategies.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend change)
and written atomically: to a temporary file in the target directory, then :func:`os.replace`.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from learnloss.errors import UsageError
from learnloss.reports.metrics import aubc
from learnloss.reports.results import validate_results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_comparison", "plot_learning_curve"]

_DPI = 120


def _save_png_atomic(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``fig`` to ``path`` as PNG via a temporary file in the same directory and :func:`os.replace`."""
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp.png", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=_DPI)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
    cycles = results["cycles"]
    if results.get("aubc") is not None:
        return float(results["aubc"])
    if not cycles:
        return math.nan
    return aubc([c["n_labeled"] for c in cycles], [c["test_accuracy"] for c in cycles])


def plot_learning_curve(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Plot test accuracy against the number of labelled samples of one run and save it as PNG at ``path``.

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
    x = _column(cycles, "n_labeled")
    accuracy = _column(cycles, "test_accuracy")
    ranking = _column(cycles, "lpm_ranking_accuracy")
    rho = _column(cycles, "lpm_spearman")
    has_lpm = bool(np.isfinite(ranking).any())

    fig = _new_figure(7.0, 6.5 if has_lpm else 4.5)
    if has_lpm:
        ax_acc, ax_lpm = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    else:
        ax_acc, ax_lpm = fig.subplots(1, 1), None
    ax_acc.plot(x, accuracy, marker="o", label="test accuracy")
    ax_acc.set_ylabel("test accuracy")
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
    _save_png_atomic(fig, path)


def _mean_curve(runs: list[dict[str, Any]]) -> tuple[npt.NDArray[np.float64], ...]:
    """Mean and population std of test accuracy at every label count any run reached (runs present there)."""
    points: dict[int, list[float]] = {}
    for run in runs:
        for cycle in run["cycles"]:
            points.setdefault(int(cycle["n_labeled"]), []).append(float(cycle["test_accuracy"]))
    xs = np.array(sorted(points), dtype=np.float64)
    means = np.array([np.mean(points[int(v)]) for v in xs], dtype=np.float64)
    stds = np.array([np.std(points[int(v)], ddof=0) for v in xs], dtype=np.float64)
    return xs, means, stds


def plot_comparison(groups: Mapping[str, list[dict[str, Any]]], path: str | os.PathLike[str]) -> None:
    """Overlay the learning curves of several strategies and save the figure as PNG at ``path``.

    ``groups`` maps a strategy label to its runs (loaded ``results.json`` dicts, one per seed). Each strategy
    is drawn as the mean test accuracy over its runs with a band of +- one population standard deviation;
    the legend gives the number of seeds and the mean AUBC (Zhan et al. 2021). When runs of one strategy have
    different label schedules, each label count is averaged over the runs that reached it.

    Raises:
        UsageError: ``groups`` is empty, or a strategy has no runs or only runs without cycles.
        ResultsFormatError: a run does not follow the results schema.
    """
    if not groups:
        raise UsageError("plot_comparison needs at least one strategy with runs, got none")
    fig = _new_figure(8.0, 5.0)
    ax = fig.subplots(1, 1)
    datasets: set[str] = set()
    for label, runs in groups.items():
        for run in runs:
            validate_results(run, f"run of {label!r}")
            datasets.add(str(run["config"]["dataset"]))
        runs_with_cycles = [run for run in runs if run["cycles"]]
        if not runs_with_cycles:
            raise UsageError(f"strategy {label!r} has no run with a finished cycle; nothing to plot")
        xs, means, stds = _mean_curve(runs_with_cycles)
        aubcs = [_run_aubc(run) for run in runs_with_cycles]
        legend = f"{label} (n={len(runs_with_cycles)}, AUBC {float(np.nanmean(aubcs)):.4f})"
        (line,) = ax.plot(xs, means, marker="o", markersize=4, label=legend)
        ax.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("labelled samples")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title("strategy comparison" + (f" on {', '.join(sorted(datasets))}" if datasets else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _save_png_atomic(fig, path)
