"""compare_runs: grouping, mean ± population std over seeds, tables."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest

from learnloss.reports import (
    ComparisonRow,
    ComparisonWarning,
    ResultsFormatError,
    ResultsNotFoundError,
    compare_runs,
    format_curve_table,
    format_table,
    group_runs,
    label_runs,
    strategy_label,
    write_json_atomic,
)
from learnloss.errors import UsageError

# AUBC of accuracies (a, b, c) at labels (1000, 2000, 3000) is (a + 2b + c) / 4
RANDOM = [(0.50, 0.60, 0.70), (0.52, 0.62, 0.72), (0.54, 0.64, 0.74)]  # AUBC 0.60, 0.62, 0.64
LLOSS = [(0.50, 0.70, 0.80), (0.50, 0.70, 0.84), (0.50, 0.70, 0.88)]  # AUBC 0.675, 0.685, 0.695


@pytest.fixture
def runs_root(tmp_path: Path, make_results: Any) -> Path:
    root = tmp_path / "runs"
    for strategy, curves, extra in (("random", RANDOM, {}), ("learning-loss", LLOSS, {"lpm_loss": "ranking"})):
        for seed, accuracies in enumerate(curves):
            run = root / strategy / f"seed{seed}"
            run.mkdir(parents=True)
            write_json_atomic(run / "results.json", make_results(strategy, seed, accuracies, **extra))
    return root


def test_compare_runs_numbers(runs_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = compare_runs([runs_root])
    assert [r.strategy for r in rows] == ["learning-loss", "random"]
    lloss, random = rows
    assert lloss.seeds == random.seeds == 3
    assert lloss.aubc_mean == pytest.approx(0.685)
    assert lloss.aubc_std == pytest.approx(math.sqrt(2 * 0.01**2 / 3))
    assert lloss.final_accuracy_mean == pytest.approx(0.84)
    assert lloss.final_accuracy_std == pytest.approx(math.sqrt(2 * 0.04**2 / 3))
    assert random.aubc_mean == pytest.approx(0.62)
    assert random.aubc_std == pytest.approx(math.sqrt(2 * 0.02**2 / 3))
    assert random.final_accuracy_mean == pytest.approx(0.72)
    assert random.final_accuracy_std == pytest.approx(math.sqrt(2 * 0.02**2 / 3))
    assert lloss.n_labeled_final == random.n_labeled_final == 3000
    assert lloss.schedules_match and random.schedules_match
    assert len(lloss.run_dirs) == 3


def test_compare_runs_accepts_run_dirs_and_deduplicates(runs_root: Path) -> None:
    dirs = [runs_root / "random" / "seed0", runs_root / "random", runs_root / "random" / "seed1" / "results.json"]
    (row,) = compare_runs(dirs)
    assert row.strategy == "random" and row.seeds == 3


def test_format_table(runs_root: Path) -> None:
    rows = compare_runs([runs_root])
    table = format_table(list(reversed(rows)))  # sorted by AUBC regardless of input order
    lines = table.splitlines()
    assert lines == [
        "strategy       seeds  AUBC mean ± std  final acc mean ± std",
        "-------------  -----  ---------------  --------------------",
        "learning-loss      3  0.6850 ± 0.0082       0.8400 ± 0.0327",
        "random             3  0.6200 ± 0.0163       0.7200 ± 0.0163",
    ]


def _write(root: Path, name: str, results: dict[str, Any]) -> None:
    run = root / name
    run.mkdir(parents=True)
    write_json_atomic(run / "results.json", results)


def test_lpm_loss_variant_is_its_own_group(tmp_path: Path, make_results: Any) -> None:
    for seed, loss in enumerate(("ranking", "mse", "mse")):
        _write(tmp_path, f"run{seed}", make_results("learning-loss", seed, lpm_loss=loss))
    _write(tmp_path, "run9", make_results("random", 0, lpm_loss="mse"))
    groups = group_runs([tmp_path])
    assert {k: len(v) for k, v in groups.items()} == {
        "learning-loss (lpm_loss=mse)": 2, "learning-loss (lpm_loss=ranking)": 1, "random": 1,
    }


def test_runs_differing_in_settings_form_groups_labelled_by_them(tmp_path: Path, make_results: Any) -> None:
    for seed in range(2):
        for epoch in (0, 120):
            _write(tmp_path, f"sg{epoch}-{seed}", make_results("learning-loss", seed, stop_grad_epoch=epoch,
                                                               reset="reinit", milestones=[160]))
    groups = group_runs([tmp_path])
    assert {k: [r["config"]["seed"] for r in v] for k, v in groups.items()} == {
        "learning-loss (stop_grad_epoch=0)": [0, 1], "learning-loss (stop_grad_epoch=120)": [0, 1],
    }


def test_labels_list_every_differing_setting_sorted_like_an_arm(tmp_path: Path, make_results: Any) -> None:
    _write(tmp_path, "a", make_results("learning-loss", 0, reset="reinit", stop_grad_epoch=0, milestones=[80, 120]))
    _write(tmp_path, "b", make_results("learning-loss", 0, reset="warm", stop_grad_epoch=120, milestones=[160]))
    assert list(group_runs([tmp_path])) == [
        "learning-loss (milestones=160, reset=warm, stop_grad_epoch=120)",
        "learning-loss (milestones=80,120, reset=reinit, stop_grad_epoch=0)",
    ]


def test_runs_differing_only_in_seed_location_and_bookkeeping_share_a_group(
    tmp_path: Path, make_results: Any
) -> None:
    for seed, device in enumerate(("cpu", "cuda:0", "cuda:1")):
        _write(tmp_path, f"run{seed}", make_results(
            "entropy", seed, device=device, data_dir=f"/data/{seed}", download=seed == 0, pool_size=1000 + seed,
            protocol="quick" if seed else "fmnist-cpu", lpm_attached=bool(seed), lr=0.1 if seed else 0.10,
        ))
    groups = group_runs([tmp_path])
    assert {k: len(v) for k, v in groups.items()} == {"entropy": 3}


def test_arm_label_wins(tmp_path: Path, make_results: Any) -> None:
    for seed in range(2):
        _write(tmp_path, f"plain{seed}", make_results("learning-loss", seed, arm="learning-loss", reset="warm"))
        _write(tmp_path, f"reinit{seed}", make_results("learning-loss", seed, arm="learning-loss (reset=reinit)",
                                                      reset="reinit"))
    groups = group_runs([tmp_path])
    assert {k: len(v) for k, v in groups.items()} == {"learning-loss": 2, "learning-loss (reset=reinit)": 2}


def test_label_runs_and_strategy_label_alone() -> None:
    configs = [
        {"strategy": "random", "seed": 0, "epochs": 10},
        {"strategy": "random", "seed": 1, "epochs": 20},
        {"strategy": "random", "seed": 2},  # a setting a run does not record is left out of its label
        {"strategy": "entropy", "seed": 0, "epochs": 10},
    ]
    assert label_runs(configs) == ["random (epochs=10)", "random (epochs=20)", "random", "entropy"]
    assert strategy_label({"strategy": "learning-loss", "lpm_loss": "mse"}) == "learning-loss"
    assert strategy_label({"strategy": "learning-loss", "arm": "learning-loss (lpm_loss=mse)"}) == (
        "learning-loss (lpm_loss=mse)"
    )


def test_schedule_mismatch_warns(tmp_path: Path, make_results: Any) -> None:
    for seed, schedule in enumerate(((1000, 2000, 3000), (1000, 2000, 4000))):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        write_json_atomic(run / "results.json", make_results("random", seed, n_labeled=schedule))
    with pytest.warns(ComparisonWarning, match="different label schedules"):
        (row,) = compare_runs([tmp_path])
    assert not row.schedules_match
    assert row.n_labeled_final is None


def test_no_results_names_the_folders(tmp_path: Path, runs_root: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsNotFoundError, match="empty") as info:
        compare_runs([runs_root, empty, tmp_path / "missing"])
    assert str(empty) in str(info.value) and str(tmp_path / "missing") in str(info.value)
    assert isinstance(info.value, UsageError)
    with pytest.raises(UsageError, match="at least one"):
        compare_runs([])


def test_format_curve_table(make_results: Any) -> None:
    results = make_results(ranking=[None, 0.75, math.nan])
    assert format_curve_table(results).splitlines() == [
        "cycle  labeled  test acc  LPM rank acc  train s  query s",
        "-----  -------  --------  ------------  -------  -------",
        "    0     1000    0.5000             -     1.50     0.25",
        "    1     2000    0.7000        0.7500     2.50     0.25",
        "    2     3000    0.9000             -     3.50     0.25",
    ]


def test_comparison_row_is_a_dataclass() -> None:
    row = ComparisonRow("x", 1, 0.5, 0.0, 0.6, 0.0, 100)
    assert format_table([row]).splitlines()[-1] == "x             1  0.5000 ± 0.0000       0.6000 ± 0.0000"


# ------------------------------------------------------------------------------ the primary metric names the curve

R2 = [(0.10, 0.30, 0.50), (0.20, 0.40, 0.60)]  # AUBC 0.30, 0.40


def test_compare_regression_runs_by_r2(tmp_path: Path, make_results: Any) -> None:
    for seed, curve in enumerate(R2):
        _write(tmp_path, f"run{seed}", make_results("random", seed, curve, metric="test_r2", dataset="housing"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (row,) = compare_runs([tmp_path])
    assert row.metric == "test_r2"
    assert row.aubc_mean == pytest.approx(0.35) and row.final_accuracy_mean == pytest.approx(0.55)
    assert format_table([row]).splitlines()[:2] == [
        "strategy  seeds  AUBC mean ± std  final r2 mean ± std",
        "--------  -----  ---------------  -------------------",
    ]


def test_runs_with_different_primary_metrics_are_refused(tmp_path: Path, make_results: Any) -> None:
    _write(tmp_path, "cls", make_results("random", 0))
    _write(tmp_path, "reg", make_results("random", 1, metric="test_r2"))
    with pytest.raises(UsageError, match="different primary metrics") as info:
        compare_runs([tmp_path])
    assert "test_accuracy" in str(info.value) and "test_r2" in str(info.value)
    rows = [ComparisonRow("a", 1, 0.5, 0.0, 0.6, 0.0, 100), ComparisonRow("b", 1, 0.5, 0.0, 0.6, 0.0, 100,
                                                                           metric="test_r2")]
    with pytest.raises(UsageError, match="different metrics"):
        format_table(rows)


def test_a_null_primary_metric_is_a_clear_error(tmp_path: Path, make_results: Any) -> None:
    results = make_results("random", 0, metric="test_r2")
    results["cycles"][1]["test_r2"] = None
    _write(tmp_path, "run0", results)
    with pytest.raises(ResultsFormatError, match=r"cycles\[1\]\.test_r2' is null"):
        compare_runs([tmp_path])


def test_format_curve_table_names_the_primary_metric(make_results: Any) -> None:
    results = make_results(accuracies=(0.25, math.nan, 0.75), metric="test_r2")
    results["cycles"][1]["test_r2"] = None
    assert format_curve_table(results).splitlines()[:4] == [
        "cycle  labeled  test r2  LPM rank acc  train s  query s",
        "-----  -------  -------  ------------  -------  -------",
        "    0     1000   0.2500             -     1.50     0.25",
        "    1     2000        -             -     2.50     0.25",
    ]
