"""Fixtures of the reports tests: a factory of schema-valid results documents."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

ResultsFactory = Callable[..., dict[str, Any]]


def _make_results(
    strategy: str = "random",
    seed: int = 0,
    accuracies: Sequence[float] = (0.5, 0.7, 0.9),
    n_labeled: Sequence[int] = (1000, 2000, 3000),
    ranking: Sequence[float | None] | None = None,
    dataset: str = "cifar10",
    aubc: float | None = None,
    metric: str | None = None,
    **config: Any,
) -> dict[str, Any]:
    """``metric`` (e.g. ``"test_r2"``) names the primary metric the cycles carry instead of ``test_accuracy``;
    without it the document has no ``primary_metric`` field, like files written before tasks named metrics."""
    ranking = list(ranking) if ranking is not None else [None] * len(accuracies)
    cycles = [
        {
            "cycle": i,
            "n_labeled": int(n),
            metric or "test_accuracy": float(a),
            "lpm_ranking_accuracy": r,
            "lpm_spearman": None if r is None else 2 * r - 1,
            "train_seconds": 1.5 + i,
            "query_seconds": 0.25,
            "selected": [i, i + 10] if i < len(accuracies) - 1 else [],
        }
        for i, (n, a, r) in enumerate(zip(n_labeled, accuracies, ranking))
    ]
    results: dict[str, Any] = {
        "config": {"strategy": strategy, "dataset": dataset, "seed": seed, "protocol": "quick", **config},
        "environment": {"python": "3.11", "device": "cpu"},
        "cycles": cycles,
        "aubc": aubc,
    }
    if metric is not None:
        results["primary_metric"] = metric
    return results


@pytest.fixture
def make_results() -> ResultsFactory:
    """``make_results(strategy=..., seed=..., accuracies=..., n_labeled=..., ranking=..., metric=..., **config)``."""
    return _make_results
