"""The command line end to end on the embedded digits dataset, and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from learnloss.cli.main import main

FAST = ["--epochs", "2", "--cycles", "2", "--initial", "40", "--query", "40", "--quiet"]


def _run(tmp_path, *args):
    out = tmp_path / "run"
    code = main(["run", "--protocol", "quick", "--out", str(out), *FAST, *args])
    return code, out


def test_run_writes_results_and_plot(tmp_path, capsys):
    code, out = _run(tmp_path, "--strategy", "learning-loss", "--seed", "1")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    config = results["config"]
    assert config["strategy"] == "learning-loss" and config["dataset"] == "digits" and config["seed"] == 1
    assert config["epochs"] == 2 and config["protocol"] == "quick" and config["reset"] in ("warm", "reinit")
    assert config["stop_grad_epoch"] == round(18 * 2 / 30), "stop-gradient epoch scales with --epochs"
    assert {"torch", "python"} <= set(results["environment"])
    cycles = results["cycles"]
    assert [c["n_labeled"] for c in cycles] == [40, 80]
    assert len(cycles[0]["selected"]) == 40 and cycles[1]["selected"] == []
    for cycle in cycles:
        assert 0 <= cycle["test_accuracy"] <= 1 and 0 <= cycle["lpm_ranking_accuracy"] <= 1
        assert cycle["train_seconds"] > 0 and cycle["query_seconds"] >= 0
    assert 0 <= results["aubc"] <= 1
    assert (out / "learning_curve.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "AUBC" in printed and "40" in printed and "80" in printed


def test_same_seed_same_selection_from_the_command_line(tmp_path):
    selections = []
    for name in ("a", "b"):
        assert main(["run", "--out", str(tmp_path / name), "--strategy", "entropy", "--seed", "3", *FAST]) == 0
        selections.append(json.loads((tmp_path / name / "results.json").read_text())["cycles"][0]["selected"])
    assert selections[0] == selections[1]


def test_compare_prints_a_table_and_writes_a_plot(tmp_path, capsys):
    for strategy in ("random", "entropy"):
        for seed in ("0", "1"):
            assert main(["run", "--out", str(tmp_path / f"{strategy}-{seed}"), "--strategy", strategy,
                         "--seed", seed, *FAST]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path), "--plot", str(tmp_path / "cmp.png")]) == 0
    table = capsys.readouterr().out
    assert "random" in table and "entropy" in table and "±" in table
    assert (tmp_path / "cmp.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "imagenet-22k"], "unknown dataset"),
        (["--strategy", "bald"], "unknown strategy"),
        (["--model", "vgg16"], "unknown model"),
        (["--layers", "block1,nope"], "no submodule named 'nope'"),
        (["--initial", "1300", "--query", "100", "--cycles", "3"], "exceeds the pool"),
        (["--dataset", "cifar10", "--data-dir", "EMPTY", "--no-download"], "cifar"),
        (["--device", "tpu"], "--device"),
        (["--protocol", "imagenet"], "unknown protocol"),
    ],
)
def test_bad_input_is_one_clear_line_exit_2_and_no_results(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"kept": true}')
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    (tmp_path / "empty").mkdir()
    code = main(["run", "--out", str(out), "--strategy", "learning-loss", *FAST, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment.lower() in err.lower()
    assert err.startswith("learnloss: error:") and "Traceback" not in err
    assert (out / "results.json").read_text() == '{"kept": true}'


@pytest.mark.parametrize("args", [["--query", "0"], ["--epochs", "-3"], ["--subset", "some"], ["--lr", "nan"]])
def test_non_positive_or_malformed_counts_are_usage_errors(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as info:
        main(["run", "--out", str(tmp_path / "x"), *args])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_diverging_training_exits_1_and_writes_nothing(tmp_path, capsys):
    code, out = _run(tmp_path, "--strategy", "learning-loss", "--lr", "1e30")
    err = capsys.readouterr().err
    assert code == 1 and "diverged" in err and "learning rate" in err
    assert not (out / "results.json").exists()


def test_console_entry_point_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "learnloss", "run", "--strategy", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown strategy 'nope'" in proc.stderr


def test_bench_runs_the_grid_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--protocol", "quick", "--strategies", "random", "learning-loss:lpm-loss=mse", "--seeds", "0", "1",
            "--out", str(out), *FAST]
    assert main(args) == 0
    assert len(list(out.rglob("results.json"))) == 4
    report = (out / "report.md").read_text()
    assert "learnloss " + " ".join(args) in report
    assert "| learning-loss (lpm_loss=mse) | 2 |" in report and "### Against random" in report
    printed = capsys.readouterr().out
    assert "learning-loss (lpm_loss=mse)" in printed and f"wrote {out / 'report.md'}" in printed


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("learning-loss:lpm-loss=msx", "argument --lpm-loss: invalid choice: 'msx'"),
        ("random:colour=red", "unrecognized arguments: --colour red"),
        ("random:epochs", "expected KEY=VALUE after ':', got 'epochs'"),
        (":epochs=2", "strategy name is missing"),
        ("entrpy", "unknown strategy 'entrpy'"),
    ],
)
def test_a_bad_bench_strategy_is_one_clear_line_and_runs_nothing(tmp_path, capsys, spec, fragment):
    out = tmp_path / "bench"
    assert main(["bench", "--strategies", "random", spec, "--seeds", "0", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("learnloss: error:") and fragment in err and "Traceback" not in err
    assert not list(out.rglob("results.json"))


def test_arm_settings_are_parsed_like_run_flags():
    from learnloss.cli.main import parse_arm

    arm = parse_arm("learning-loss:stop-grad-epoch=never:milestones=8,12:lpm_weight=0.5:subset=all")
    assert arm.strategy == "learning-loss"
    assert dict(arm.overrides) == {"stop_grad_epoch": "never", "milestones": [8, 12], "lpm_weight": 0.5, "subset": "all"}


def test_dropout_must_be_a_probability(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--out", str(tmp_path / "x"), "--dropout", "1.5"])
    assert info.value.code == 2 and "probability" in capsys.readouterr().err
