"""The run specification: one typed object, resolved once from a preset, validated, serialised and compared."""

from __future__ import annotations

import json

import pytest

from learnloss.cli.main import main
from learnloss.errors import UnknownNameError, UsageError
from learnloss.runs.presets import LABELING_PRESETS, PRESETS, available_protocols, resolve_spec
from learnloss.runs.spec import RunSpec, spec_differences


def test_the_defaults_are_the_papers_recipe():
    spec = RunSpec()
    assert spec == resolve_spec("paper")
    assert (spec.dataset, spec.model, spec.initial, spec.query, spec.cycles, spec.subset) == (
        "cifar10", "resnet18", 1000, 1000, 10, 10000)
    assert (spec.epochs, spec.lr, spec.milestones, spec.stop_grad_epoch, spec.lpm_weight, spec.margin) == (
        200, 0.1, (160,), 120, 1.0, 1.0)
    assert spec.precision == "auto" and spec.channels_last is True  # the fast path where the device has it


def test_one_preset_table_with_a_labeling_preset():
    assert set(available_protocols()) == {
        "paper", "quick", "fmnist-cpu", "fmnist-lt-cpu", "fmnist-paper", "ssl-paper", "labeling", "detection-cpu",
        "keypoints-cpu", "regression-cpu", "labeling-detection", "labeling-keypoints"}
    assert set(LABELING_PRESETS.values()) == {"labeling", "labeling-detection", "labeling-keypoints"}
    for task, protocol in LABELING_PRESETS.items():  # each task's project trains that task's bundled model
        spec = resolve_spec(protocol)
        assert spec.dataset == "project" and (spec.task or "classification") == task and spec.reset == "reinit"
    assert resolve_spec("labeling-keypoints").lpm_weight == 1e-4  # the paper's pose-estimation λ
    labeling = resolve_spec("labeling")
    assert labeling.stop_grad_epoch == 0 and labeling.reset == "reinit" and labeling.subset is None
    assert labeling.image_size == 32 and labeling.protocol == "labeling"
    assert all(key in RunSpec.__dataclass_fields__ for preset in PRESETS.values() for key in preset)


def test_epoch_scaling_happens_in_one_place():
    assert resolve_spec("paper", {"epochs": 100}).milestones == (80,)
    assert resolve_spec("paper", {"epochs": 100}).stop_grad_epoch == 60
    assert resolve_spec("quick", {"epochs": 10}).milestones == (8,)
    given = resolve_spec("quick", {"epochs": 10, "milestones": [5], "stop_grad_epoch": "never"})
    assert given.milestones == (5,) and given.stop_grad_epoch is None


def test_json_form_round_trips_with_never_and_all():
    spec = resolve_spec("quick", {"stop_grad_epoch": "never", "strategy": "stochastic(margin):beta=2"})
    data = spec.to_dict()
    assert data["subset"] == "all" and data["stop_grad_epoch"] == "never" and data["milestones"] == [24]
    assert json.loads(json.dumps(data)) == data
    assert RunSpec.from_dict(data) == spec
    assert RunSpec.from_dict({**data, "pool_size": 5, "lpm_attached": True}) == spec  # derived facts ignored


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, "--epochs must be a positive"),
    ({"lr": float("nan")}, "--lr must be a finite"),
    ({"subset": 10, "query": 20}, "--subset (10) must be at least --query (20)"),
    ({"reset": "cold"}, "--reset must be one of warm, reinit"),
    ({"dropout": 1.0}, "--dropout must be in [0, 1)"),
    ({"strategy": "core-set:chnk=5"}, "unknown parameter 'chnk'"),
    ({"colour": "red"}, "unknown setting(s) colour"),
])
def test_validation_in_one_place(settings, message):
    with pytest.raises(UsageError) as error:
        resolve_spec("quick", settings)
    assert message in str(error.value)


def test_unknown_names_fail_before_any_data_is_loaded():
    with pytest.raises(UnknownNameError, match="unknown protocol"):
        resolve_spec("papr")
    with pytest.raises(UnknownNameError, match="unknown model"):
        resolve_spec("quick", {"model": "resnet9"})
    with pytest.raises(UnknownNameError, match="unknown strategy"):
        resolve_spec("quick", {"strategy": "entrpy"})


def test_stored_versus_requested_is_one_comparison():
    spec = resolve_spec("quick", {"seed": 3})
    stored = spec.to_dict()
    assert spec_differences(stored, spec.replace(device="cpu", data_dir="/elsewhere")) == []  # where it runs
    assert spec_differences(stored, spec.replace(epochs=5)) == ["epochs: stored 30, requested 5"]
    older = {key: value for key, value in stored.items() if key not in ("precision", "channels_last", "task")}
    assert spec_differences(older, spec) == []  # a setting added later counts as what such runs ran with
    paper = resolve_spec("paper").to_dict()
    assert spec_differences({k: v for k, v in paper.items() if k not in ("precision", "channels_last")},
                            resolve_spec("paper")) == [
        "channels_last: stored False, requested True", "precision: stored 'fp32', requested 'auto'"]
    assert spec_differences(older, spec.replace(precision="bf16")) == ["precision: stored 'fp32', requested 'bf16'"]


def test_run_with_nothing_but_out_runs_quick_with_learning_loss(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["protocol"] == "quick" and results["config"]["strategy"] == "learning-loss"
    assert results["config"]["dataset"] == "digits" and len(results["cycles"]) == 5
    assert "AUBC" in capsys.readouterr().out
