"""benchmarks/gpu/run.sh works before a GPU is lent: its dry run (``LEARNLOSS_GPU_DRY_RUN=1``) runs every step on the
CPU at toy sizes and leaves the summary, the records and the raw files a device run leaves; a failing step is
recorded and the run goes on; a step that no longer fits the budget is skipped; a trial still running at its
deadline is stopped with Ctrl-C and recorded as interrupted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"
#: What a device run returns: the tool that runs it brings back at most 8 files.
OUTPUTS = {"summary.txt", "summary.json", "run.log", "throughput.json", "trials.json", "raw.tar.gz"}


def _run(out: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "OUT": str(out), "LEARNLOSS_GPU_DRY_RUN": "1", "PYTHON": sys.executable,
                 "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=timeout, env=variables, cwd=ROOT)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-dry-run")
    return _run(out, timeout=600), out


def test_every_step_runs_and_the_summary_comes_last(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == OUTPUTS  # raw/ packed into raw.tar.gz, nothing else left behind
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["elapsed_seconds"] <= summary["budget_seconds"]
    assert [s["step"] for s in summary["steps"]] == ["environment", "tests", "speed", "throughput", "trials"]
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("(full record:")
    assert summary["text"].splitlines()[0] in proc.stdout  # the summary's text is what was printed last
    assert (out / "summary.txt").read_text().strip() == summary["text"]


def test_the_code_version_and_environment_are_recorded(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    version, environment = summary["code_version"], summary["environment"]
    assert re.fullmatch(r"[0-9a-f]{64}", version["tree_sha256"])
    assert environment["torch"] == torch.__version__ and environment["device"] == "cpu"
    for name in ("throughput.json", "trials.json"):  # every result file carries them too
        record = json.loads((out / name).read_text())
        assert record["code_version"]["tree_sha256"] == version["tree_sha256"], name
        assert record["environment"]["torch"] == torch.__version__, name


def test_the_cuda_tests_ran_on_the_cpu(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = dry_run
    tests = json.loads((out / "summary.json").read_text())["tests"]
    assert tests["counts"].get("passed", 0) >= 2 and not tests["failed"]
    skipped = [o for o in tests["outcomes"] if o["outcome"] == "skipped"]
    assert skipped and all("fp16" in o["test"] and "accelerator" in o["reason"] for o in skipped)


def test_throughput_side_by_side_and_trials_are_recorded(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    throughput = summary["throughput"]
    assert throughput["complete"] and throughput["pairs_done"] == 1
    for side in ("reference", "learnloss"):
        assert throughput[side]["train_images_per_s"] > 0 and throughput[side]["score_images_per_s"] > 0
    assert summary["speed"] and summary["speed"][0]["train_images_per_s_lpm"] > 0
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert sorted(t["name"] for t in trials) == ["learning-loss-seed0", "random-seed0"]
    for trial in trials:
        assert trial["status"] == "complete" and [c["n_labeled"] for c in trial["cycles"]] == [20, 40]
        assert trial["results"]["config"]["protocol"] == "fmnist-paper"
    with tarfile.open(out / "raw.tar.gz") as packed:
        names = set(packed.getnames())
    assert {"raw/trials/learning-loss-seed0/results.json", "raw/trials/random-seed0/results.json", "raw/env.json",
            "raw/tests.jsonl", "raw/tests.log", "raw/throughput.log"} <= names
    assert not [n for n in names if n.endswith((".db", ".pt"))]  # stores and checkpoints stay behind


def test_a_failing_step_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    # trials is the cheapest step that can follow the failing one ("throughput" runs speed and then throughput, about
    # twice as long; "speed" is not a step of its own); one arm halves its work
    proc = _run(tmp_path, timeout=300, LEARNLOSS_GPU_STEPS="tests trials", LEARNLOSS_GPU_TRIAL_ARMS="random",
                LEARNLOSS_GPU_TESTS="tests/cuda/test_no_such_file.py")
    assert proc.returncode == 1, proc.stdout[-3000:]
    steps = {s["step"]: s for s in json.loads((tmp_path / "summary.json").read_text())["steps"]}
    assert steps["tests"]["status"] == "failed" and steps["tests"]["rc"] != 0
    assert steps["trials"]["status"] == "ok"  # the next step ran all the same
    trials = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert [(t["name"], t["status"]) for t in trials] == [("random-seed0", "complete")]
    assert "1 step(s) failed or ran out of time" in proc.stdout


def test_steps_that_no_longer_fit_the_budget_are_skipped(tmp_path: Path) -> None:
    proc = _run(tmp_path, timeout=300, LEARNLOSS_GPU_BUDGET_S="20")
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["step"]: s["status"] for s in summary["steps"]}
    assert steps == {"environment": "ok", "tests": "skipped", "speed": "skipped", "throughput": "skipped",
                     "trials": "skipped"}
    assert summary["text"].splitlines()[0] in proc.stdout


def test_a_trial_running_at_its_deadline_is_interrupted_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "trials.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                       if p), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "trials.py"), "--dry-run", "--seconds",
                           "3", "--work", str(tmp_path / "work"), "--raw", str(tmp_path / "raw"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = json.loads(out.read_text())["trials"]
    assert len(trials) == 2 and all(t["status"] == "interrupted" and t["wall_seconds"] < 60 for t in trials), trials
    assert all((tmp_path / "raw" / "trials" / t["name"] / "log.txt").exists() for t in trials)
