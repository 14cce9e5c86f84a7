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
