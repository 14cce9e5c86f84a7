"""Plots: PNG files are written (atomically) for one run and for a comparison."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from learnloss.errors import UsageError
from learnloss.reports import plot_comparison, plot_learning_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("ranking", [None, [0.6, None, 0.7]])
def test_plot_learning_curve(tmp_path: Path, make_results: Any, ranking: Any) -> None:
    path = tmp_path / "curve.png"
    plot_learning_curve(make_results("learning-loss", ranking=ranking, aubc=0.7), path)
    assert _is_png(path)
    assert os.listdir(tmp_path) == ["curve.png"]


def test_plot_learning_curve_needs_cycles(tmp_path: Path, make_results: Any) -> None:
    with pytest.raises(UsageError, match="without cycles"):
        plot_learning_curve(make_results(accuracies=(), n_labeled=()), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_plot_comparison(tmp_path: Path, make_results: Any) -> None:
    groups = {
        "random": [make_results("random", s, (0.5 + s / 100, 0.6, 0.7)) for s in range(3)],
        "learning-loss": [make_results("learning-loss", s, (0.5, 0.7, 0.8 + s / 100)) for s in range(3)],
        "entropy": [make_results("entropy", 0, (0.5, 0.65), n_labeled=(1000, 2000))],
    }
    path = tmp_path / "comparison.png"
    plot_comparison(groups, path)
    assert _is_png(path)
    assert os.listdir(tmp_path) == ["comparison.png"]
    with pytest.raises(UsageError, match="at least one"):
        plot_comparison({}, path)


def _axis_labels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every y-axis label the plots set."""
    from matplotlib.axes import Axes

    labels: list[str] = []
    original = Axes.set_ylabel

    def record(self: Axes, label: str, *args: Any, **kwargs: Any) -> Any:
        labels.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_ylabel", record)
    return labels


def test_plots_name_the_primary_metric(tmp_path: Path, make_results: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = _axis_labels(monkeypatch)
    plot_learning_curve(make_results("random", accuracies=(0.1, 0.3, 0.5), metric="test_r2"), tmp_path / "c.png")
    groups = {"random": [make_results("random", s, (0.1, 0.3 + s / 10, 0.5), metric="test_r2") for s in range(2)]}
    plot_comparison(groups, tmp_path / "cmp.png")
    assert _is_png(tmp_path / "c.png") and _is_png(tmp_path / "cmp.png")
    assert labels == ["test r2", "test r2 (mean ± std over seeds)"]
    labels.clear()
    plot_comparison({"random": [make_results("random", 0)]}, tmp_path / "acc.png")
    assert labels == ["test accuracy (mean ± std over seeds)"]


def test_plot_comparison_refuses_mixed_primary_metrics(tmp_path: Path, make_results: Any) -> None:
    groups = {"random": [make_results("random", 0)], "entropy": [make_results("entropy", 0, metric="test_r2")]}
    with pytest.raises(UsageError, match="different primary metrics"):
        plot_comparison(groups, tmp_path / "x.png")
    assert os.listdir(tmp_path) == []
