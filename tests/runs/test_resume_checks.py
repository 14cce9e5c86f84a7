"""A simulated run knows its ground truth: resuming checks every stored label against the dataset's target and
refuses a store that disagrees (edited with sqlite3 here), naming the item — through the real command line."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from learnloss.cli.main import main

CLI = ["--protocol", "quick", "--epochs", "1", "--cycles", "2", "--initial", "30", "--query", "20", "--subset", "200",
       "--device", "cpu", "--quiet", "--strategy", "random", "--seed", "1"]


def _run(out: Path, *extra: str) -> int:
    return main(["run", "--out", str(out), *CLI, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    assert _run(out) == 0
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def test_an_intact_store_resumes(finished: Path, tmp_path: Path) -> None:
    assert _run(_copy(finished, tmp_path), "--resume") == 0


def test_a_label_whose_class_was_edited_in_the_store_is_refused_naming_the_item(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    db = sqlite3.connect(out / "learnloss.db")
    with db:
        label_id, source, class_id = db.execute(
            "SELECT l.id, i.source, l.class_id FROM labels l JOIN items i ON i.id = l.item_id WHERE l.current = 1 "
            "ORDER BY l.id LIMIT 1").fetchone()
        other = db.execute("SELECT id FROM classes WHERE id != ? ORDER BY id LIMIT 1", (class_id,)).fetchone()[0]
        db.execute("UPDATE labels SET class_id = ? WHERE id = ?", (other, label_id))
    db.close()
    before = (out / "learnloss.db").read_bytes()
    results = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert _run(out, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"the store disagrees with the dataset at item {source}" in err, err
    assert (out / "learnloss.db").read_bytes() == before  # nothing written
    assert (out / "results.json").read_bytes() == results


def test_a_label_moved_to_another_item_is_refused(finished, tmp_path, capsys):
    """Swapping which item two labels of different classes belong to keeps every count: only the truth shows it."""
    out = _copy(finished, tmp_path)
    db = sqlite3.connect(out / "learnloss.db")
    with db:
        rows = db.execute("SELECT l.id, l.class_id FROM labels l WHERE l.current = 1 ORDER BY l.id").fetchall()
        first = rows[0]
        second = next(row for row in rows if row[1] != first[1])
        db.execute("UPDATE labels SET class_id = ? WHERE id = ?", (second[1], first[0]))
        db.execute("UPDATE labels SET class_id = ? WHERE id = ?", (first[1], second[0]))
    db.close()
    capsys.readouterr()
    assert _run(out, "--resume") == 2
    assert "the store disagrees with the dataset at item" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())  # still the finished run's
