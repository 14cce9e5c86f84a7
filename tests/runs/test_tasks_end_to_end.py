"""``learnloss run`` end to end for the paper's other tasks, as the README shows them: detection (offline scenes,
CenterNet-FPN), keypoints (stick figures, hourglass) and regression (diabetes, MLP), each with learning loss and
with its own uncertainty baseline — shortened to 2 cycles of 1 epoch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from learnloss.cli.main import main

CASES = [
    # (protocol, strategy, extra flags, primary metric, other metrics)
    ("detection-cpu", "learning-loss", ["--dataset", "digit-scenes"], "map50", ["map"]),
    ("detection-cpu", "uncertainty", ["--dataset", "digit-scenes"], "map50", ["map"]),
    ("keypoints-cpu", "learning-loss", [], "pck", ["mean_error"]),
    ("keypoints-cpu", "uncertainty", [], "pck", ["mean_error"]),
    ("regression-cpu", "learning-loss", [], "r2", ["rmse"]),
    ("regression-cpu", "mc-variance", [], "r2", ["rmse"]),
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("protocol", "strategy", "extra", "primary", "others"), CASES)
def test_a_task_runs_end_to_end_with_its_baseline_and_learning_loss(tmp_path_factory, protocol, strategy, extra,
                                                                     primary, others, capsys):
    cache = tmp_path_factory.getbasetemp() / "dataset-cache"  # generated once for the whole module
    out = tmp_path_factory.mktemp("run")
    subset = [] if protocol == "regression-cpu" else ["--subset", "300"]
    assert main(["run", "--protocol", protocol, "--strategy", strategy, "--cycles", "2", "--epochs", "1",
                 *subset, "--data-dir", str(cache), "--out", str(out), "--quiet", *extra]) == 0
    printed = capsys.readouterr().out
    assert f"test {primary}" in printed and "AUBC" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["primary_metric"] == f"test_{primary}"
    first, second = results["cycles"]
    spec_query = 20 if protocol == "regression-cpu" else 200
    assert len(first["selected"]) == spec_query and second["n_labeled"] == first["n_labeled"] + spec_query
    for cycle in results["cycles"]:
        for name in (primary, *others):
            assert math.isfinite(cycle[f"test_{name}"]), (name, cycle)
    if strategy == "learning-loss":  # the LPM ranks the task's real per-sample losses
        assert 0.0 <= first["lpm_ranking_accuracy"] <= 1.0
    assert results["config"]["task"] == {"detection-cpu": "detection", "keypoints-cpu": "keypoints",
                                         "regression-cpu": "regression"}[protocol]
