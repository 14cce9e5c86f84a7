"""benchmarks/bench_vs_reference.py runs both sides and records every phase (tiny settings; timings not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_vs_reference.py"
PHASES = ("train_images_per_s", "eval_images_per_s", "score_images_per_s", "wall_seconds_per_cycle")
ROWS = (*PHASES, "process_seconds", "user_seconds", "system_seconds")


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("vs-reference") / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", "digits", "--model", "small-cnn", "--labeled", "32", "--query", "32",
         "--cycles", "2", "--epochs", "1", "--test", "64", "--subset", "64", "--pairs", "1", "--threads", "1",
         "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "training img/s" in proc.stdout and "scoring img/s" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


def test_both_sides_ran_every_phase(record: dict) -> None:
    runs = record["runs"]
    assert [run["side"] for run in runs] == ["reference", "learnloss"]
    for run in runs:
        assert run["threads"] == 1 and run["device"] == "cpu"
        assert [c["n_labeled"] for c in run["cycles"]] == [32, 64]
        assert [c["score_images"] for c in run["cycles"]] == [64, 0]  # scored before the one query only
        assert all(c["eval_images"] == 64 and c["train_images"] == c["n_labeled"] for c in run["cycles"])
        for key in ROWS:
            assert run[key] > 0, (run["side"], key)
    assert runs[0]["precision"] == "fp32" and runs[0]["batch_size"] == 128


def test_medians_ratios_and_context_are_recorded(record: dict) -> None:
    for key in ROWS:
        assert record["medians"]["reference"][key] > 0 and record["medians"]["learnloss"][key] > 0
        assert record["ratios"][key] > 0
    assert record["machine"]["torch"] and record["machine"]["cpu"]
    assert "--pairs 1" in record["command"] and record["settings"]["labeled"] == 32
    assert "training img/s" in record["table"]
