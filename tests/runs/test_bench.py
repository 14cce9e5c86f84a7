"""The benchmark grid: planning, resuming, refusing to mix settings, pairing and reproducibility."""

from __future__ import annotations

import json

import pytest

from learnloss.runs.bench import Arm, plan_runs, run_bench
from learnloss.errors import UsageError

TINY = {"epochs": 1, "initial": 20, "query": 10, "cycles": 2, "subset": 60, "device": "cpu"}
ARMS = [Arm("random"), Arm("learning-loss", {"lpm_loss": "mse"})]


def _load(path):
    return json.loads(path.read_text())


def test_arm_label_and_folder():
    arm = Arm("learning-loss", {"lpm_loss": "mse", "milestones": [8, 12]})
    assert arm.label == "learning-loss (lpm_loss=mse, milestones=8,12)"
    assert arm.folder == "learning-loss__lpm_loss=mse__milestones=8-12"
    assert Arm("entropy").label == Arm("entropy").folder == "entropy"
    with pytest.raises(UsageError, match="set by the benchmark grid"):
        Arm("random", {"seed": 3})


def test_plan_is_seed_major_with_resolved_settings(tmp_path):
    plan = plan_runs("quick", ARMS, [2, 0], tmp_path, {"epochs": 10})
    assert [(run.arm.folder, run.seed) for run in plan] == [
        ("random", 2), ("learning-loss__lpm_loss=mse", 2), ("random", 0), ("learning-loss__lpm_loss=mse", 0)
    ]
    assert plan[1].folder == tmp_path / "learning-loss__lpm_loss=mse" / "seed-2"
    assert plan[1].spec.lpm_loss == "mse" and plan[0].spec.lpm_loss == "ranking"
    assert plan[0].spec.epochs == 10 and plan[0].spec.milestones == (8,)  # scaled with the epochs


@pytest.mark.parametrize(
    ("arms", "seeds", "match"),
    [([], [0], "at least one strategy"), (ARMS, [], "at least one seed"), (ARMS, [1, 1], "same seed twice: 1"),
     ([Arm("random"), Arm("random")], [0], "same arm twice: random")],
)
def test_bad_grids_are_refused(tmp_path, arms, seeds, match):
    with pytest.raises(UsageError, match=match):
        plan_runs("quick", arms, seeds, tmp_path)


def test_bench_runs_pairs_resumes_and_refuses_other_settings(tmp_path):
    lines: list[str] = []
    run_bench("quick", ARMS, [0, 1], tmp_path, TINY, log=lines.append)
    paths = sorted(tmp_path.rglob("results.json"))
    assert len(paths) == 4
    runs = {(r["config"]["arm"], r["config"]["seed"]): r for r in map(_load, paths)}
    assert set(runs) == {(a.label, s) for a in ARMS for s in (0, 1)}
    for seed in (0, 1):  # paired: one initial set per seed, shared by every arm
        assert runs[("random", seed)]["initial_labeled"] == runs[("learning-loss (lpm_loss=mse)", seed)]["initial_labeled"]
    assert runs[("random", 0)]["initial_labeled"] != runs[("random", 1)]["initial_labeled"]
    assert runs[("learning-loss (lpm_loss=mse)", 0)]["config"]["lpm_loss"] == "mse"
    assert (tmp_path / "random" / "seed-0" / "learning_curve.png").exists()

    killed = tmp_path / "random" / "seed-1" / "results.json"
    kept = [p for p in paths if p != killed]
    stamps = [p.stat().st_mtime_ns for p in kept]
    killed.unlink()  # as if killed before its results were written
    lines.clear()
    run_bench("quick", ARMS, [0, 1], tmp_path, TINY, log=lines.append)
    assert lines[0] == "benchmark quick: 4 runs, 3 already done"
    assert [p.stat().st_mtime_ns for p in kept] == stamps, "a finished run was run again"
    rerun = _load(tmp_path / "random" / "seed-1" / "results.json")
    assert [c["selected"] for c in rerun["cycles"]] == [c["selected"] for c in runs[("random", 1)]["cycles"]]

    before = (tmp_path / "random" / "seed-0" / "results.json").read_bytes()
    with pytest.raises(UsageError, match=r"random/seed-0/results.json was made with other settings \(epochs: stored 1, requested 2"):
        run_bench("quick", ARMS, [0, 1], tmp_path, {**TINY, "epochs": 2}, log=lines.append)
    assert (tmp_path / "random" / "seed-0" / "results.json").read_bytes() == before


def test_same_grid_same_results_apart_from_timings(tmp_path):
    arms = [Arm("learning-loss")]
    for name in ("a", "b"):
        run_bench("quick", arms, [3], tmp_path / name, TINY, log=lambda line: None)
    a, b = (_load(tmp_path / name / "learning-loss" / "seed-3" / "results.json") for name in ("a", "b"))
    for doc in (a, b):
        doc.pop("wall_seconds"), doc.pop("environment")
        for cycle in doc["cycles"]:
            cycle.pop("train_seconds"), cycle.pop("query_seconds")
    assert a == b


@pytest.mark.parametrize(
    ("protocol", "arms", "match"),
    [("no-such-protocol", ARMS, "protocol"), ("quick", [*ARMS, Arm("entrpy")], "strategy 'entrpy'"),
     ("quick", [*ARMS, Arm("random", {"model": "resnet7"})], "model 'resnet7'"),
     ("quick", [*ARMS, Arm("random", {"dataset": "cifar11"})], "dataset 'cifar11'")],
)
def test_a_bad_name_in_any_arm_fails_before_any_run(tmp_path, protocol, arms, match):
    with pytest.raises(UsageError, match=match):
        run_bench(protocol, arms, [0], tmp_path, TINY)
    assert not any(tmp_path.iterdir())


def test_a_benchmark_refuses_data_without_test_samples_before_training(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "notest.npz"
    x, y = rng.random((100, 1, 8, 8)).astype("float32"), rng.integers(0, 3, 100)
    np.savez(data, x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    settings = {**TINY, "dataset": "npz", "data_dir": str(data), "model": "small-cnn"}
    with pytest.raises(UsageError, match="has no test samples, and a benchmark compares runs by their test metric"):
        run_bench("quick", [Arm("random")], [0], tmp_path / "bench", settings, log=lambda line: None)
    assert not list((tmp_path / "bench").rglob("learnloss.db")), "a run was started"


def test_results_without_benchmark_settings_are_one_clear_error(tmp_path):
    folder = tmp_path / "random" / "seed-0"
    run_bench("quick", [Arm("random")], [0], tmp_path, TINY, log=lambda line: None)
    path = folder / "results.json"
    doc = _load(path)
    doc["bench"] = "not a dict"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="records no benchmark settings.*delete .*seed-0 to run it again"):
        run_bench("quick", [Arm("random")], [0], tmp_path, TINY, log=lambda line: None)
