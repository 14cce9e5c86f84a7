"""Task-owned targets end to end: a regression task (diabetes, MLP, per-sample MSE, R² and RMSE) through the same
loop, builder, journal and results as classification, with learning-loss and random."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnloss.reports.results import primary_metric, validate_results
from learnloss.runs.builder import build_loop
from learnloss.runs.experiment import run_experiment
from learnloss.runs.presets import resolve_spec

SETTINGS = {"dataset": "diabetes", "model": "mlp", "initial": 60, "query": 40, "cycles": 3, "subset": None,
            "epochs": 20, "batch_size": 16, "lr": 0.01, "milestones": (), "stop_grad_epoch": 10, "dropout": 0.0,
            "device": "cpu"}


@pytest.mark.parametrize("strategy", ["learning-loss", "random"])
def test_regression_runs_through_the_loop_and_the_journal(tmp_path, strategy):
    spec = resolve_spec("quick", {**SETTINGS, "strategy": strategy})
    results = run_experiment(spec, out=tmp_path / strategy)
    validate_results(results)
    assert results["config"]["task"] == "regression"
    assert primary_metric(results) == "test_r2"
    cycles = results["cycles"]
    assert [c["n_labeled"] for c in cycles] == [60, 100, 140]
    assert all(math.isfinite(c["test_r2"]) and c["test_rmse"] > 0 for c in cycles)
    assert cycles[-1]["test_r2"] > 0.05  # better than predicting the mean: a real fit
    assert "test_accuracy" not in cycles[0]
    assert (cycles[0]["lpm_ranking_accuracy"] is not None) == (strategy == "learning-loss")
    assert len(set(cycles[0]["selected"]) | set(cycles[1]["selected"])) == 80
    # the resumed journal reads float targets back from the store
    again = run_experiment(spec, out=tmp_path / strategy, resume=True)
    assert [c["selected"] for c in again["cycles"]] == [c["selected"] for c in cycles]


def test_pool_holds_float_targets_and_the_oracle_fills_them():
    loop = build_loop(resolve_spec("quick", {**SETTINGS, "strategy": "learning-loss", "cycles": 2}))
    loop.run()
    labeled = loop.pool.labeled_indices
    assert loop.pool.targets.dtype == torch.float32 and loop.pool.targets.shape == (len(loop.pool), 1)
    assert torch.equal(loop.pool.targets[labeled], loop.dataset.y_train[labeled])
    assert torch.isnan(loop.pool.targets[loop.pool.unlabeled_indices]).all()
    with pytest.raises(Exception, match="finite"):
        loop.pool.add_labels(loop.pool.unlabeled_indices[:1], np.array([[np.nan]], dtype=np.float32), 9)


def test_uncertainty_strategies_are_refused_for_regression():
    with pytest.raises(Exception, match="no class probabilities"):
        build_loop(resolve_spec("quick", {**SETTINGS, "strategy": "entropy", "cycles": 2})).run()
