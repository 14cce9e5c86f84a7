"""Hostile inputs and damaged stores: a simulated run recovers from a damaged checkpoint and stays the run an
uninterrupted one is, refuses other data, and never reads or deletes anything outside its folder because of what its
store says — checked through the real command line and real SQLite stores."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from learnloss.cli.main import main
from learnloss.project.checkpoint import CheckpointMismatchError
from learnloss.project.store import ProjectStore
from learnloss.runs.experiment import run_experiment
from learnloss.runs.journal import SimulationJournal
from learnloss.runs.presets import resolve_spec

TINY = {"epochs": 2, "initial": 30, "query": 20, "cycles": 3, "subset": 200, "device": "cpu", "seed": 7,
        "strategy": "learning-loss"}
SETTINGS = ["--protocol", "quick", "--epochs", "1", "--cycles", "3", "--initial", "30", "--query", "20", "--subset",
            "200", "--device", "cpu", "--quiet"]
CLI = [*SETTINGS, "--strategy", "random", "--seed", "1"]


class Interrupt(Exception):
    pass


def _run(settings=None, **kwargs):
    return run_experiment(resolve_spec("quick", {**TINY, **(settings or {})}), log=kwargs.pop("log", _lines.append),
                          **kwargs)


_lines: list[str] = []


def _strip(results):
    cycles = [{k: v for k, v in c.items() if not k.endswith("_seconds")} for c in results["cycles"]]
    return cycles, results["initial_labeled"]


def _interrupted(tmp_path, monkeypatch, step, count):
    """A run killed right after its ``count``-th ``step`` was recorded."""
    original = getattr(SimulationJournal, step)
    calls = []

    def crash_after(self, *args):
        original(self, *args)
        calls.append(step)
        if len(calls) == count:
            raise Interrupt

    monkeypatch.setattr(SimulationJournal, step, crash_after)
    with pytest.raises(Interrupt):
        _run(out=tmp_path)
    monkeypatch.setattr(SimulationJournal, step, original)


def _snapshot(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_weights(a, b):
    one, two = _snapshot(a), _snapshot(b)
    assert len(one["modules"]) == len(two["modules"])
    for x, y in zip(one["modules"], two["modules"]):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert torch.equal(one["generator"], two["generator"]) and torch.equal(one["torch"], two["torch"])
    assert json.loads(one["numpy"]["subset"]) == json.loads(two["numpy"]["subset"])
    assert json.loads(one["numpy"]["strategy"]) == json.loads(two["numpy"]["strategy"])


def _stored(folder):
    with ProjectStore(folder) as store:
        return (store.counts()["labeled"], list(store.db.execute("SELECT cycle, count(*) FROM queries GROUP BY cycle")),
                [(c["cycle"], c["status"], c["checkpoint"]) for c in store.cycles()])


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return out, _run(out=out)


def _damage(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------- two checkpoints, fallback


def test_a_run_keeps_the_last_two_checkpoints(whole):
    out, _ = whole
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["cycle-1.pt", "cycle-2.pt"]
    assert [c[2] for c in _stored(out)[2]] == [None, "checkpoints/cycle-1.pt", "checkpoints/cycle-2.pt"]


# (how the run stopped, which checkpoints are damaged or gone, the cycle it is rolled back to)
SCENARIOS = [
    ("finished", {"cycle-2.pt": "damage"}, "cycle 1"),
    ("finished", {"cycle-2.pt": "delete"}, "cycle 1"),
    ("finished", {"cycle-2.pt": "damage", "cycle-1.pt": "damage"}, "the initial labeled set"),
    (("queried", 2), {"cycle-1.pt": "damage"}, "cycle 0"),
    (("queried", 2), {"cycle-1.pt": "delete", "cycle-0.pt": "delete"}, "the initial labeled set"),
    (("trained", 2), {"cycle-1.pt": "truncate"}, "cycle 0"),
    (("trained", 1), {"cycle-0.pt": "damage"}, "the initial labeled set"),
]


@pytest.mark.parametrize(("stop", "harm", "back_to"), SCENARIOS)
def test_a_damaged_latest_checkpoint_rolls_back_and_gives_the_same_run(tmp_path, monkeypatch, whole, stop, harm,
                                                                       back_to):
    whole_out, uninterrupted = whole
    if stop == "finished":
        _run(out=tmp_path)
    else:
        _interrupted(tmp_path, monkeypatch, *stop)
    for name, how in harm.items():
        path = tmp_path / "checkpoints" / name
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:-5])
        else:
            _damage(path)
    lines: list[str] = []
    resumed = _run(out=tmp_path, resume=True, log=lines.append)
    assert _strip(resumed) == _strip(uninterrupted), "the recovered run is not the uninterrupted one"
    _same_weights(tmp_path / "checkpoints" / "cycle-2.pt", whole_out / "checkpoints" / "cycle-2.pt")
    assert _stored(tmp_path) == _stored(whole_out), "a query or label was lost or duplicated"
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"Rolled the run back to {back_to}" in lines[0] and "trained again" in lines[0]
    assert resumed["recovered"] == lines
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["cycle-1.pt", "cycle-2.pt"]


def test_damaged_streams_of_a_query_roll_back_that_query(tmp_path, monkeypatch, whole):
    _, uninterrupted = whole
    _interrupted(tmp_path, monkeypatch, "queried", 2)
    with ProjectStore(tmp_path) as store:
        store.set_meta("streams:1", {"torch_save": "not base64!"})
    resumed = _run(out=tmp_path, resume=True)
    assert _strip(resumed) == _strip(uninterrupted)


def test_an_intact_run_resumes_without_a_rollback(tmp_path, monkeypatch, whole):
    _, uninterrupted = whole
    _interrupted(tmp_path, monkeypatch, "queried", 1)
    lines: list[str] = []
    resumed = _run(out=tmp_path, resume=True, log=lines.append)
    assert _strip(resumed) == _strip(uninterrupted) and lines == [] and "recovered" not in resumed


# ------------------------------------------------------------------------------------------ leftovers of kills


def test_temporary_files_and_orphan_checkpoints_are_cleaned_on_resume_and_nothing_else(tmp_path, monkeypatch, whole):
    _, uninterrupted = whole
    _interrupted(tmp_path, monkeypatch, "queried", 1)
    folder = tmp_path / "checkpoints"
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "keep.pt").write_bytes(b"precious")
    (folder / ".cycle-1.pt.k3x_9a2q.tmp").write_bytes(b"half a checkpoint")
    (folder / "cycle-9.pt").write_bytes(b"orphan")
    (folder / "notes.txt").write_text("mine")
    (folder / "cycle-8.pt").mkdir()  # a folder with our naming is not ours to delete
    (folder / "cycle-7.pt").symlink_to(outside / "keep.pt")
    (folder / ".cycle-6.pt.abcdefgh.tmp").symlink_to(outside / "keep.pt")
    (tmp_path / ".results.json.abc.tmp").write_text("outside checkpoints/: left alone")
    resumed = _run(out=tmp_path, resume=True)
    assert _strip(resumed) == _strip(uninterrupted)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".cycle-6.pt.abcdefgh.tmp", "cycle-1.pt", "cycle-2.pt", "cycle-7.pt", "cycle-8.pt", "notes.txt"]
    assert (outside / "keep.pt").read_bytes() == b"precious"
    assert (tmp_path / ".results.json.abc.tmp").exists()


# --------------------------------------------------------------------------- hostile stores, through the CLI

def _cli_run(out, *extra):
    return main(["run", "--out", str(out), *CLI, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run made through the command line, and its results."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert _cli_run(out) == 0
    return out, json.loads((out / "results.json").read_text())


def _copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished[0], out, symlinks=True)
    return out


def _secret(tmp_path):
    """A file outside the run folder, with a checkpoint's shape, whose checksum a crafted store records."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.pt"
    with ProjectStore(tmp_path / "run") as store:
        row = store.cycles()[-1]
    shutil.copy(tmp_path / "run" / row["checkpoint"], secret)  # a real snapshot: reading it would "work"
    return secret, hashlib.sha256(secret.read_bytes()).hexdigest()


def _point(out, cycle, recorded, sha256):
    db = sqlite3.connect(out / "learnloss.db")
    with db:
        db.execute("UPDATE cycles SET checkpoint = ?, checkpoint_sha256 = ? WHERE cycle = ?", (recorded, sha256, cycle))
    db.close()


def _cycles(results):
    return [{k: v for k, v in c.items() if not k.endswith("_seconds")} for c in results["cycles"]]


HOSTILE = [
    lambda secret, out: str(secret),  # absolute
    lambda secret, out: "../outside/secret.pt",
    lambda secret, out: "checkpoints/../../outside/secret.pt",
    lambda secret, out: "checkpoints/../keep.txt",  # inside the run folder, but not a checkpoint
    lambda secret, out: "checkpoints/cycle-2.pt\x00/../../../outside/secret.pt",
    lambda secret, out: "checkpoints/" + "a" * 5000 + ".pt",
    lambda secret, out: "checkpoints/" + "../" * 40 + str(secret).lstrip("/"),
]


@pytest.mark.parametrize("hostile", range(len(HOSTILE)))
def test_a_store_pointing_outside_never_makes_a_resume_read_or_delete_it(tmp_path, finished, capsys, hostile):
    out = _copy(finished, tmp_path)
    secret, digest = _secret(tmp_path)
    content = secret.read_bytes()
    (out / "keep.txt").write_text("the run's, not a checkpoint")
    recorded = HOSTILE[hostile](secret, out)
    _point(out, 2, recorded, digest)  # the latest: read on resume, dropped by the rollback
    _point(out, 0, recorded, digest)  # an old one: dropped when the next cycle is recorded
    capsys.readouterr()
    assert _cli_run(out, "--resume") == 0
    err = capsys.readouterr().err
    assert "outside its checkpoints/ folder" in err and "Rolled the run back to cycle 1" in err
    assert secret.read_bytes() == content, "a file outside the run folder was deleted or changed"
    assert (out / "keep.txt").read_text() == "the run's, not a checkpoint"
    assert _cycles(json.loads((out / "results.json").read_text())) == _cycles(finished[1])
    with ProjectStore(out) as store:
        assert [c["checkpoint"] for c in store.cycles()] == [None, "checkpoints/cycle-1.pt", "checkpoints/cycle-2.pt"]


def test_bench_resuming_a_hostile_store_deletes_nothing_outside(tmp_path, finished, capsys):
    bench = tmp_path / "bench"
    folder = bench / "random" / "seed-1"
    shutil.copytree(finished[0], folder)
    (folder / "results.json").unlink()  # a run the benchmark takes up again
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.pt"
    secret.write_bytes(b"not yours")
    _point(folder, 2, str(secret), hashlib.sha256(b"not yours").hexdigest())
    _point(folder, 0, "../../../outside/secret.pt", hashlib.sha256(b"not yours").hexdigest())
    args = ["bench", "--out", str(bench), "--strategies", "random", "--seeds", "1", *SETTINGS]
    assert main(args) == 0
    assert secret.read_bytes() == b"not yours"
    assert "Rolled the run back to cycle 1" in capsys.readouterr().err
    assert _cycles(json.loads((folder / "results.json").read_text())) == _cycles(finished[1])


def test_a_symlinked_checkpoint_folder_is_refused_and_nothing_changes(tmp_path, finished, capsys):
    out = _copy(finished, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "checkpoints", elsewhere)
    (elsewhere / "cycle-0.pt").write_bytes(b"someone else's")
    (out / "checkpoints").symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    stored = _stored(out)
    _damage(elsewhere / "cycle-2.pt")
    before["cycle-2.pt"] = (elsewhere / "cycle-2.pt").read_bytes()
    capsys.readouterr()
    assert _cli_run(out, "--resume") == 1
    err = capsys.readouterr().err
    assert err.startswith("learnloss: error:") and err.count("\n") == 1 and "symbolic link" in err
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before
    assert _stored(out) == stored, "the store changed"


def test_a_symlinked_checkpoint_file_is_not_followed(tmp_path, finished, capsys):
    out = _copy(finished, tmp_path)
    secret, digest = _secret(tmp_path)
    content = secret.read_bytes()
    (out / "checkpoints" / "cycle-2.pt").unlink()
    (out / "checkpoints" / "cycle-2.pt").symlink_to(secret)
    _point(out, 2, "checkpoints/cycle-2.pt", digest)
    capsys.readouterr()
    assert _cli_run(out, "--resume") == 0
    assert "symbolic link" in capsys.readouterr().err
    assert secret.read_bytes() == content
    assert not (out / "checkpoints" / "cycle-2.pt").is_symlink()
    assert _cycles(json.loads((out / "results.json").read_text())) == _cycles(finished[1])


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line_naming_it(tmp_path, finished, capsys):
    out = _copy(finished, tmp_path)
    path = out / "checkpoints" / "cycle-2.pt"
    snapshot = _snapshot(path)
    state = snapshot["modules"][0]
    key = next(k for k, v in state.items() if v.dim() == 2)
    state[key] = torch.zeros(3, 3)  # a crafted pair: valid checksum, wrong shape
    torch.save(snapshot, path)
    _point(out, 2, "checkpoints/cycle-2.pt", hashlib.sha256(path.read_bytes()).hexdigest())
    stored = _stored(out)
    capsys.readouterr()
    assert _cli_run(out, "--resume") == 1
    err = capsys.readouterr().err
    assert err.startswith("learnloss: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and "does not fit the model" in err and f"{key} is (3, 3)" in err
    assert "another --out" in err
    assert _stored(out) == stored
    with pytest.raises(CheckpointMismatchError):
        run_experiment(resolve_spec("quick", {"epochs": 1, "cycles": 3, "initial": 30, "query": 20, "subset": 200,
                                              "device": "cpu", "strategy": "random", "seed": 1}),
                       out=out, resume=True, log=_lines.append)


def test_a_labeling_project_is_not_resumed_as_a_run(tmp_path, finished, capsys):
    out = _copy(finished, tmp_path)
    with ProjectStore(out) as store:
        store.set_meta("kind", "labeling")
    stored = _stored(out)
    assert _cli_run(out, "--resume") == 2
    assert "is a labeling project" in capsys.readouterr().err
    assert _stored(out) == stored


# ----------------------------------------------------------------------------------------------- other data


def _npz(path, seed, test=40):
    rng = np.random.default_rng(seed)
    x = rng.random((200 + test, 1, 8, 8)).astype("float32")
    y = rng.integers(0, 3, 200 + test)
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:], classes=np.array(["a", "b", "c"]))
    return path


NPZ = ["--dataset", "npz", "--model", "small-cnn", "--initial", "20", "--query", "20", "--cycles", "2"]


def test_resuming_on_other_data_is_refused_naming_what_differs(tmp_path, capsys):
    first, second = _npz(tmp_path / "a.npz", 0), _npz(tmp_path / "b.npz", 1)
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--epochs", "1", "--device", "cpu", "--quiet", *NPZ]
    assert main([*args, "--data-dir", str(first)]) == 0
    capsys.readouterr()
    assert main([*args, "--data-dir", str(second), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("learnloss: error:") and err.count("\n") == 1
    assert "holds a run on other data (same shapes, but other values in the sampled rows)" in err
    assert "--data-dir" in err
    assert main([*args, "--data-dir", str(first), "--resume"]) == 0, "the same data resumes"


def test_a_run_stored_before_fingerprints_resumes_and_gets_one(tmp_path, capsys):
    data = _npz(tmp_path / "a.npz", 0)
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--epochs", "1", "--device", "cpu", "--quiet", "--data-dir", str(data), *NPZ]
    assert main(args) == 0
    with ProjectStore(out) as store:
        fingerprint = store.meta("data")
        with store.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'data'")
    assert fingerprint["x_train"] == {"shape": [200, 1, 8, 8], "dtype": "float32"}
    assert main([*args, "--resume"]) == 0
    with ProjectStore(out) as store:
        assert store.meta("data") == fingerprint


# ----------------------------------------------------------------------------------------- an empty test split


def test_an_empty_test_split_is_reported_as_undefined_not_as_divergence(tmp_path, capsys):
    data = _npz(tmp_path / "notest.npz", 0, test=0)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--epochs", "1", "--device", "cpu", "--quiet", "--data-dir", str(data),
                 *NPZ]) == 0
    err = capsys.readouterr().err
    assert "diverged" not in err and "test split is empty" in err
    results = json.loads((out / "results.json").read_text())
    assert results["aubc"] is None and results["cycles"][0]["test_accuracy"] is None


def test_settings_that_differ_are_one_line_with_what_to_do(tmp_path, finished, capsys):
    out = _copy(finished, tmp_path)
    assert _cli_run(out, "--resume", "--lr", "0.5", "--batch-size", "7", "--seed", "3", "--strategy", "entropy",
                    "--dropout", "0.3", "--initial", "31") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings (" in err and "more)" in err
    assert "resume it with the settings it was started with, or run into another --out" in err



# (SQL that damages a finished run's store, the exit code of its resume, a fragment of its one line)
DAMAGE = [
    ("UPDATE meta SET value = '{not json' WHERE key = 'settings'", 1, "is damaged (meta 'settings' is not the JSON"),
    ("UPDATE meta SET value = '[1, 2]' WHERE key = 'settings'", 2, "its run settings are not a mapping"),
    ("DELETE FROM meta WHERE key = 'settings'", 2, "it holds labels or cycles but no run settings"),
    ("UPDATE items SET source = '999999' WHERE id = (SELECT min(id) FROM items)", 2, "labels do not fit the pool"),
    ("DELETE FROM cycles WHERE cycle = 1", 2, "its cycles are [0, 2], not 0, 1"),
    ("UPDATE cycles SET metrics = '{bad' WHERE cycle = 2", 1, "is damaged (the metrics of cycle 2 is not the JSON"),
    ("UPDATE cycles SET metrics = '[]' WHERE cycle = 2", 2, "unreadable metrics"),
    ("UPDATE cycles SET status = 'trained' WHERE cycle = 0", 2, "a cycle before the last was never queried"),
    ("UPDATE cycles SET status = 'queried' WHERE cycle = 2", 0, "no random streams were recorded after its query"),
    ("UPDATE meta SET value = '\"x\"' WHERE key = 'data'", 0, None),  # an unreadable fingerprint is replaced
]


@pytest.mark.parametrize(("sql", "code", "fragment"), DAMAGE)
def test_a_damaged_store_is_one_line_or_recovered_never_a_traceback(tmp_path, finished, capsys, sql, code, fragment):
    out = _copy(finished, tmp_path)
    db = sqlite3.connect(out / "learnloss.db")
    with db:
        db.execute(sql)
    db.close()
    capsys.readouterr()
    assert _cli_run(out, "--resume") == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err
    if code:
        assert err.startswith("learnloss: error:") and err.count("\n") == 1
        assert "run into another --out" in err or "learnloss doctor" in err
    else:
        assert _cycles(json.loads((out / "results.json").read_text())) == _cycles(finished[1])
    if fragment:
        assert fragment in err
