"""A journaled simulated run resumes after an interruption at any step and selects what it would have."""

from __future__ import annotations

import pytest

from learnloss.errors import UsageError
from learnloss.runs.experiment import run_experiment
from learnloss.project.checkpoint import CheckpointError
from learnloss.runs.journal import SimulationJournal as StoreJournal
from learnloss.runs.presets import resolve_spec
from learnloss.project.store import ProjectStore


def _run(settings, **kwargs):
    return run_experiment(resolve_spec("quick", settings), **kwargs)

TINY = {"epochs": 2, "initial": 30, "query": 20, "cycles": 3, "subset": 200, "device": "cpu", "seed": 7}


def _strip(results):
    cycles = [{k: v for k, v in c.items() if not k.endswith("_seconds")} for c in results["cycles"]]
    return cycles, results["initial_labeled"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _run({**TINY, "strategy": "learning-loss"}, out=tmp_path_factory.mktemp("whole"))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(("step", "count"), [("labeled", 1), ("trained", 1), ("queried", 1), ("trained", 2),
                                             ("queried", 2), ("trained", 3)])
def test_resume_after_an_interruption_at_any_step_gives_the_same_run(tmp_path, monkeypatch, uninterrupted, step, count):
    original = getattr(StoreJournal, step)
    calls = []

    def crash_after(self, *args):
        original(self, *args)
        calls.append(step)
        if len(calls) == count:
            raise Interrupt  # the step was recorded; the process dies before the next one

    monkeypatch.setattr(StoreJournal, step, crash_after)
    with pytest.raises(Interrupt):
        _run({**TINY, "strategy": "learning-loss"}, out=tmp_path)
    monkeypatch.setattr(StoreJournal, step, original)
    resumed = _run({**TINY, "strategy": "learning-loss"}, out=tmp_path, resume=True)
    assert _strip(resumed) == _strip(uninterrupted)
    with ProjectStore(tmp_path) as store:
        assert store.counts()["labeled"] == 30 + 20 * 2
        queried = list(store.db.execute("SELECT cycle, count(*) FROM queries GROUP BY cycle"))
        assert queried == [(0, 20), (1, 20)], "a query was duplicated or lost"


def test_an_existing_run_needs_resume_and_resume_needs_a_run(tmp_path, uninterrupted):
    with pytest.raises(UsageError, match="no run to resume"):
        _run({**TINY, "strategy": "random"}, out=tmp_path / "new", resume=True)
    _run({**TINY, "strategy": "random", "cycles": 2}, out=tmp_path / "done")
    with pytest.raises(UsageError, match="already holds a run; pass --resume"):
        _run({**TINY, "strategy": "random", "cycles": 2}, out=tmp_path / "done")
    with pytest.raises(UsageError, match=r"other settings \(epochs: stored 2, requested 3; .*stop_grad_epoch"):
        _run({**TINY, "strategy": "random", "cycles": 2, "epochs": 3}, out=tmp_path / "done",
                       resume=True)


def test_a_damaged_checkpoint_is_rolled_back_and_trained_again(tmp_path, monkeypatch):
    original = StoreJournal.trained

    def crash(self, *args):
        original(self, *args)
        raise Interrupt

    monkeypatch.setattr(StoreJournal, "trained", crash)
    with pytest.raises(Interrupt):
        _run({**TINY, "strategy": "random"}, out=tmp_path)
    monkeypatch.setattr(StoreJournal, "trained", original)
    checkpoint = tmp_path / "checkpoints" / "cycle-0.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-5])
    lines: list[str] = []
    resumed = _run({**TINY, "strategy": "random"}, out=tmp_path, resume=True, log=lines.append)
    whole = _run({**TINY, "strategy": "random"}, out=tmp_path / "whole", log=lines.append)
    assert _strip(resumed) == _strip(whole)
    assert len(lines) == 1 and "does not match the checksum" in lines[0]
    assert "Rolled the run back to the initial labeled set; cycle 0 is trained again" in lines[0]


def test_a_checkpoint_of_another_structure_is_one_error_naming_the_file(tmp_path, monkeypatch):
    import hashlib

    import torch

    _run({**TINY, "strategy": "random", "cycles": 2}, out=tmp_path)
    path = tmp_path / "checkpoints" / "cycle-1.pt"
    snapshot = torch.load(path, weights_only=True)
    snapshot["modules"][0] = {k: v for k, v in list(snapshot["modules"][0].items())[1:]}  # a parameter missing
    torch.save(snapshot, path)
    with ProjectStore(tmp_path) as store, store.transaction() as db:
        db.execute("UPDATE cycles SET checkpoint_sha256 = ? WHERE cycle = 1",
                   (hashlib.sha256(path.read_bytes()).hexdigest(),))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} does not fit the model this run builds \(.*missing"):
        _run({**TINY, "strategy": "random", "cycles": 2}, out=tmp_path, resume=True)
