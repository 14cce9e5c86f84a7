"""``torchrun --nproc-per-node 2 -m learnloss run`` end to end: rank 0 alone writes, its checkpoints restore in one
process and select there what the two ranks selected, and a killed rank fails the run at once with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from learnloss.project.store import ProjectStore
from learnloss.runs.builder import build_loop
from learnloss.runs.journal import restore_checkpoint
from learnloss.runs.presets import resolve_spec
from tests_support import digits_project

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "LEARNLOSS_DIST_TIMEOUT": "30", **extra}


def test_two_processes_run_write_once_and_match_one_process_for_the_same_weights(tmp_path):
    out = tmp_path / "ddp"
    run = subprocess.run([*TORCHRUN, "-m", "learnloss", "run", "--out", str(out), "--protocol", "quick",
                          "--cycles", "2", "--epochs", "1", "--quiet"],
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1  # rank 0 alone wrote and printed
    assert run.stderr.count("cycle 1: 200 labels") == 1
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["world_size"] == 2
    assert [cycle["n_labeled"] for cycle in results["cycles"]] == [100, 200]
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["cycle-0.pt", "cycle-1.pt"]

    # cycle 0's checkpoint (the weights after its training), restored in this one process, evaluates and selects
    # exactly what the two ranks did
    spec = resolve_spec("quick", {"cycles": 2, "epochs": 1})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loop = build_loop(spec)
        loop.begin()
        assert np.flatnonzero(loop.pool.labeled_at == 0).tolist() == results["initial_labeled"]
        with ProjectStore(out, kind="simulation") as store:
            restore_checkpoint(loop, store, store.cycles()[0])
        metrics, ranking, _ = loop.evaluate()
        selected = loop.query_batch(spec.query).selected.tolist()
    finally:
        torch.set_num_threads(threads)
    cycle = results["cycles"][0]
    assert selected == cycle["selected"]
    assert metrics["accuracy"] == cycle["test_accuracy"]
    assert ranking == cycle["lpm_ranking_accuracy"]



def _worker_with_rank(marker: str, rank: int) -> int | None:
    """The pid of the process of this test's launch (its environment holds ``marker``) with ``RANK=rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LEARNLOSS_TEST_MARKER={marker}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_a_killed_rank_fails_the_run_quickly_with_one_line(tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "killed"
    process = subprocess.Popen([*TORCHRUN, "-m", "learnloss", "run", "--out", str(out), "--protocol", "quick",
                                "--cycles", "3", "--epochs", "40", "--quiet"],
                               env=_env(LEARNLOSS_TEST_MARKER=marker), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        victim = None
        while time.monotonic() < deadline and process.poll() is None:  # training has started once the store is
            if (out / "learnloss.db").exists():
                victim = _worker_with_rank(marker, 1)
                if victim is not None:
                    break
            time.sleep(0.2)
        assert victim is not None, "the workers never started training"
        time.sleep(0.5)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        elapsed = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    assert elapsed < 45
    lines = [line for line in stderr.splitlines() if line.startswith("learnloss: error: rank 0 of 2")]
    assert len(lines) == 1, stderr[-3000:]
    assert "SIGKILL" in stderr  # torchrun names the rank that died
    assert not (out / "results.json").exists()


def test_two_processes_query_a_project_once_and_select_what_one_process_selects_for_the_same_weights(tmp_path):
    from learnloss.active.oracle import HumanOracle
    from learnloss.labeling.workflow import project_dataset, project_spec
    from learnloss.runs.journal import LabelingJournal

    project = digits_project(tmp_path)
    run = subprocess.run([*TORCHRUN, "-m", "learnloss", "query", str(project), "--k", "10", "--device", "cpu",
                          "--quiet"], env=_env(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("cycle 0: trained; queried 10 items") == 1, run.stdout  # rank 0 alone printed
    with ProjectStore(project, kind="labeling") as store:
        cycles = store.cycles()
        assert [(row["cycle"], row["status"]) for row in cycles] == [(0, "queried")]
        queried = store.query_items(0)
        assert len(queried) == 10
        assert (project / "exports" / "query-0.csv").is_file()

        # the weights the two ranks trained, restored in this one process, select the same items in the same order
        spec = project_spec(store).replace(device="cpu")
        labels = store.current_labels()
        dataset, pool_ids = project_dataset(store, spec, labels)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            loop = build_loop(spec, dataset, oracle=HumanOracle(), initial=40, query=10, cycles=2)
            LabelingJournal(store, spec, store.classes(), pool_ids, labels).resume(loop)
            restore_checkpoint(loop, store, cycles[0])
            batch = loop.query_batch(10)
        finally:
            torch.set_num_threads(threads)
    assert [pool_ids[int(i)] for i in batch.selected] == [item_id for item_id, *_ in queried]
    assert [row[3] for row in queried] == pytest.approx([float(s) for s in batch.scores], abs=1e-5)
