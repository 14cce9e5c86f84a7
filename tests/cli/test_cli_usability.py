"""What a user meets first: --version, defaults in --help, --quiet, Ctrl-C that says how to resume, n/a metrics."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import learnloss
from learnloss.cli.main import build_parser, main

TINY = ["--dataset", "digits", "--epochs", "1", "--cycles", "2", "--initial", "50", "--query", "50"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with single spaces


# ------------------------------------------------------------------------------------------------- --version


def test_version_prints_the_installed_version_and_exits_0(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"learnloss {version('learnloss')}\n"
    assert version("learnloss") == learnloss.__version__


def test_version_of_a_source_tree_never_installed_is_unknown(monkeypatch, capsys):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == "learnloss unknown\n"


def test_version_from_the_console_entry_point():
    proc = subprocess.run([sys.executable, "-m", "learnloss", "--version"], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert proc.returncode == 0 and proc.stdout == f"learnloss {learnloss.__version__}\n" and proc.stderr == ""


# ------------------------------------------------------------------------------------------------- --help


def test_run_help_shows_real_defaults_and_protocol_defaults(capsys):
    text = _help_text(capsys, "run")
    assert ("preset: detection-cpu, fmnist-cpu, fmnist-lt-cpu, fmnist-paper, keypoints-cpu, labeling, "
            "labeling-detection, labeling-keypoints, paper, quick, regression-cpu, ssl-paper (default: quick)"
            ) in text.replace("- ", "-")  # argparse may wrap a line after a name's hyphen
    assert "training epochs per cycle (default: from --protocol; 30 in quick)" in text
    assert "M: unlabeled samples scored per cycle, or 'all' (default: from --protocol; all in quick)" in text
    assert "e.g. 160 (default: from --protocol; 24 in quick)" in text
    assert "(default: from --protocol; learning-loss in quick)" in text  # --strategy
    assert "auto, cpu or cuda (default: auto)" in text
    assert "else fp32 (default: from --protocol; fp32 in quick)" in text  # --precision
    assert "(default: the model's own)" in text
    assert "None" not in text and "default: False" not in text


def test_every_option_with_a_default_says_it(capsys):
    """Every option of every command either shows its default or has none to show (flags, required options,
    options that are unset unless given) — and never shows ``default: None``."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(commands.choices) >= 14
    for name, sub in commands.choices.items():
        text = _help_text(capsys, name)
        assert "default: None" not in text and "default: False" not in text, name
        for action in sub._actions:
            if action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
                assert f"(default: {action.default})" in text, (name, action.option_strings)


def test_bench_and_other_commands_show_their_defaults(capsys):
    bench = _help_text(capsys, "bench")
    assert "(default: quick)" in bench and "K: labels added per cycle (default: from --protocol; 100 in quick)" in bench
    assert "(default: the protocol's benchmark arms)" in bench
    assert "why, recorded with the item (default: removed)" in _help_text(capsys, "remove")
    init = _help_text(capsys, "init")
    assert "rgb or grey (default: auto)" in init and "(default: 32)" in init and "(default: 30)" in init
    assert "auto, cpu or cuda (default: auto)" in _help_text(capsys, "query")


# ------------------------------------------------------------------------------------------------- --quiet


def test_quiet_run_still_prints_one_line_per_cycle(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "run"), *TINY, "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cycle ")]
    assert [line.split(":")[0] for line in lines] == ["cycle 0", "cycle 1"]
    assert re.fullmatch(r"cycle 0: 50 labels, test accuracy \d\.\d{4}, LPM ranking accuracy \d\.\d{4}", lines[0])
    assert "it/s" not in err and "%|" not in err  # no progress bar


def test_quiet_bench_still_prints_one_line_per_run(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--strategies", "random", "--seeds", "0", "1", "--out", str(out), *TINY, "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "benchmark quick: 2 runs, 0 already done"
    assert err[1] == "[1/2] random, seed 0" and err[3] == "[2/2] random, seed 1"
    assert re.fullmatch(r" {4}AUBC \d\.\d{4}, final test accuracy \d\.\d{4}, \d+\.\d s", err[2])
    assert len(err) == 5


# ------------------------------------------------------------------------------------------------- Ctrl-C


def _default_sigint() -> None:  # a shell's background job starts with SIGINT ignored; a user's run never does
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stored_cycles(out: Path) -> list[int]:
    with sqlite3.connect(f"file:{out / 'learnloss.db'}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT cycle FROM cycles ORDER BY cycle")]


def _span(cycles: list[int]) -> str:
    return {1: f"cycle {cycles[0]}", 2: f"cycles {cycles[0]} and {cycles[-1]}"}.get(
        len(cycles), f"cycles {cycles[0]}–{cycles[-1]}")


def test_ctrl_c_during_run_names_the_kept_cycles_and_the_command_that_resumes(tmp_path):
    """A real process: SIGINT once cycle 0 is finished; exit 130, one line naming what is kept and the exact
    command; that command continues the run to its end without training the kept cycles again."""
    argv = ["run", "--out", "my run", "--protocol", "quick", "--dataset", "digits", "--cycles", "3", "--epochs", "10",
            "--initial", "50", "--query", "50", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "learnloss", *argv], cwd=tmp_path, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    try:
        seen = []
        for line in proc.stderr:  # one line per finished cycle, even with --quiet
            seen.append(line)
            if line.startswith("cycle 0:"):
                proc.send_signal(signal.SIGINT)
                break
        out, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    kept = _stored_cycles(tmp_path / "my run")
    assert kept[0] == 0 and kept == list(range(len(kept))) and len(kept) < 3
    command = shlex.join(["learnloss", *argv, "--resume"])
    assert command.startswith("learnloss run --out 'my run' --protocol quick") and command.endswith(" --quiet --resume")
    assert err.splitlines()[-1] == (f"learnloss: interrupted; my run keeps the finished {_span(kept)} (nothing "
                                    f"half-written); continue the run with: {command}")
    assert "Traceback" not in err and out == ""

    printed = err.splitlines()[-1].split("continue the run with: ", 1)[1]
    resumed = subprocess.run([sys.executable, "-m", *shlex.split(printed)], cwd=tmp_path, env=ENV, text=True,
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [line.split(":")[0] for line in resumed.stderr.splitlines() if line.startswith("cycle ")] == [
        f"cycle {c}" for c in range(len(kept), 3)]  # the kept cycles are not trained again
    results = json.loads((tmp_path / "my run" / "results.json").read_text())
    assert [c["n_labeled"] for c in results["cycles"]] == [50, 100, 150]


def test_ctrl_c_before_any_cycle_says_the_run_starts_over(tmp_path, capsys, monkeypatch):
    from learnloss.active.loop import ActiveLearningLoop

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    argv = ["run", "--out", str(out), *TINY, "--quiet"]
    with monkeypatch.context() as patch:  # the store and the initial labels are recorded, no cycle is
        patch.setattr(ActiveLearningLoop, "train_cycle", interrupted)
        assert main(argv) == 130
    command = shlex.join(["learnloss", *argv, "--resume"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"learnloss: interrupted before any cycle finished; nothing was kept, the run starts over with: {command}")
    assert main(shlex.split(command)[1:]) == 0  # the printed command runs it from the start
    assert len(json.loads((out / "results.json").read_text())["cycles"]) == 2


def test_ctrl_c_before_the_run_folder_exists_gives_the_same_command(tmp_path, capsys, monkeypatch):
    import learnloss.runs.experiment as experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    argv = ["run", "--out", str(tmp_path / "run"), *TINY]
    assert main(argv) == 130
    assert capsys.readouterr().err == ("learnloss: interrupted before any cycle finished; nothing was kept, the run "
                                       f"starts over with: {shlex.join(['learnloss', *argv])}\n")


def test_ctrl_c_after_a_cycle_trained_but_not_queried_keeps_it(tmp_path, capsys, monkeypatch):
    from learnloss.active.loop import ActiveLearningLoop

    real = ActiveLearningLoop.query_batch
    calls = []

    def second_query_interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--dataset", "digits", "--epochs", "1", "--cycles", "3", "--initial", "50",
            "--query", "50"]
    with monkeypatch.context() as patch:
        patch.setattr(ActiveLearningLoop, "query_batch", second_query_interrupted)
        assert main(argv) == 130
    assert _stored_cycles(out) == [0, 1]
    command = shlex.join(["learnloss", *argv, "--resume"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"learnloss: interrupted; {out} keeps the finished cycles 0 and 1 (nothing half-written); continue the run "
        f"with: {command}")
    assert main(shlex.split(command)[1:]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("cycle ")] == [
        "cycle 1", "cycle 2"]  # cycle 1's query is made, its training is not repeated
    assert [c["n_labeled"] for c in json.loads((out / "results.json").read_text())["cycles"]] == [50, 100, 150]


def test_ctrl_c_of_a_resumed_run_does_not_add_resume_twice(tmp_path, capsys, monkeypatch):
    from learnloss.active.loop import ActiveLearningLoop

    out = tmp_path / "run"
    argv = ["run", "--out", str(out), *TINY]
    real = ActiveLearningLoop.train_cycle

    def second_interrupted(self, cycle, *args, **kwargs):
        if cycle == 1:
            raise KeyboardInterrupt
        return real(self, cycle, *args, **kwargs)

    monkeypatch.setattr(ActiveLearningLoop, "train_cycle", second_interrupted)
    assert main(argv) == 130
    assert main([*argv, "--resume"]) == 130
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.endswith(f"keeps the finished cycle 0 (nothing half-written); continue the run with: "
                         f"{shlex.join(['learnloss', *argv, '--resume'])}")


def test_ctrl_c_during_bench_says_the_same_command_continues(tmp_path, capsys, monkeypatch):
    import learnloss.runs.bench as bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_experiment", interrupted)
    argv = ["bench", "--strategies", "random", "--seeds", "0", "--out", str(tmp_path / "b"), *TINY, "--quiet"]
    assert main(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"learnloss: interrupted; {tmp_path / 'b'} keeps every finished run and the finished cycles of the "
        f"interrupted one; continue the benchmark with the same command: {shlex.join(['learnloss', *argv])}")


# ------------------------------------------------------------------------------------------------- status


@pytest.fixture
def queried_project(tmp_path, capsys):
    from tests_support import init_grey_project

    assert init_grey_project(tmp_path)[0] == 0  # no test images: cycle 0 has no test accuracy (NaN)
    assert main(["query", str(tmp_path / "proj"), "--k", "4", "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path / "proj"


def test_status_prints_n_a_for_a_metric_a_cycle_lacks(queried_project, capsys, monkeypatch):
    assert main(["status", str(queried_project)]) == 0
    out = capsys.readouterr().out
    assert "\n  cycle 0 (queried): 6 labels, test accuracy n/a, LPM ranking accuracy n/a\n" in out  # no test split
    assert "nan" not in out.lower()

    import learnloss.labeling.workflow as workflow

    status = workflow.project_status(queried_project)
    status["cycles"] = [{"cycle": 0, "status": "queried", "n_labeled": 6, "test_accuracy": math.nan},
                        {"cycle": 1, "status": "trained", "n_labeled": 10, "test_accuracy": 0.5,
                         "lpm_ranking_accuracy": 0.625}]
    monkeypatch.setattr(workflow, "project_status", lambda project: status)
    assert main(["status", str(queried_project)]) == 0
    out = capsys.readouterr().out
    assert "  cycle 0 (queried): 6 labels, test accuracy n/a, LPM ranking accuracy n/a\n" in out
    assert "  cycle 1 (trained): 10 labels, test accuracy 0.5000, LPM ranking accuracy 0.6250\n" in out


def test_status_json_writes_null_for_a_missing_or_nan_metric(queried_project, capsys, monkeypatch):
    assert main(["status", str(queried_project), "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text
    cycle = json.loads(text)["cycles"][0]
    assert cycle["test_accuracy"] is None and cycle["lpm_ranking_accuracy"] is None  # no test split

    import learnloss.labeling.workflow as workflow

    status = workflow.project_status(queried_project)
    status["cycles"] = [{"cycle": 0, "status": "queried", "n_labeled": 6, "test_accuracy": math.nan}]
    monkeypatch.setattr(workflow, "project_status", lambda project: status)
    assert main(["status", str(queried_project), "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text
    assert json.loads(text)["cycles"] == [{"cycle": 0, "status": "queried", "n_labeled": 6, "test_accuracy": None,
                                           "lpm_ranking_accuracy": None}]
