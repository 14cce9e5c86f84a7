"""add, remove, doctor and backup from the command line, and hostile stores fed to every reading command."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from learnloss.cli.main import main
from tests_support import init_grey_project


@pytest.fixture
def project(tmp_path, capsys):
    assert init_grey_project(tmp_path)[0] == 0
    capsys.readouterr()
    return tmp_path / "proj"


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its content."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_init_reports_the_colour_mode_and_add_registers_new_images(tmp_path, capsys):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6):  # four colour images and two greyscale ones: the project is colour, two converted
        mode, shape = ("RGB", (8, 8, 3)) if i < 4 else ("L", (8, 8))
        Image.fromarray(np.full(shape, 40 * i, dtype=np.uint8), mode=mode).save(root / f"{i}.png")
    assert main(["init", str(tmp_path / "proj"), "--images", str(root), "--classes", "a,b"]) == 0
    assert "colour: rgb (2 image(s) converted)" in capsys.readouterr().out
    (root / "more").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8), mode="RGB").save(root / "more" / f"{i}.png")
    assert main(["add", str(tmp_path / "proj"), "--images", str(root / "more")]) == 0
    assert "added 3 images" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "proj"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["pool"] == 9


def test_remove_retires_items_and_doctor_and_backup_check_the_store(project, tmp_path, capsys):
    assert main(["remove", str(project), "3", "4.png", "--reason", "blurred"]) == 0
    out = capsys.readouterr().out
    assert "retired item 3 (10.png)" in out and "(4.png)" in out  # items are numbered in name order
    assert main(["remove", str(project), "3"]) == 0
    assert "already retired" in capsys.readouterr().out
    assert main(["remove", str(project), "999"]) == 2
    assert "999" in capsys.readouterr().err
    assert main(["status", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["pool"] == 28

    (project / "checkpoints").mkdir(exist_ok=True)
    (project / "checkpoints" / "cycle-7-0123456789ab.pt").write_bytes(b"orphan")
    assert main(["doctor", str(project)]) == 1
    assert "cycle-7-0123456789ab.pt" in capsys.readouterr().out
    assert main(["doctor", str(project), "--fix"]) == 0
    assert not (project / "checkpoints" / "cycle-7-0123456789ab.pt").exists()
    capsys.readouterr()
    assert main(["doctor", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    copy = tmp_path / "backup.db"
    assert main(["backup", str(project), str(copy)]) == 0
    assert "checked" in capsys.readouterr().out and copy.stat().st_size > 0
    assert main(["backup", str(project), str(copy)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_a_run_folder_is_not_a_project_for_the_labeling_commands(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--out", str(run), "--cycles", "1", "--epochs", "1", "--initial", "20", "--quiet"]) == 0
    before = _tree(run)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n1,0\n")
    for args in (["label", str(run), str(labels), "--relabel"], ["query", str(run), "--k", "2"],
                 ["status", str(run)], ["remove", str(run), "1"]):
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "simulated run folder" in err and len(err.strip().splitlines()) == 1
    assert _tree(run) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7)), min_size=1,
                      max_size=8),
       command=st.sampled_from(["status", "export", "label", "doctor", "remove", "backup"]))
def test_bit_flips_in_the_store_give_one_line_or_a_correct_answer_and_touch_nothing_outside(
        project, tmp_path, capsys, flips, command):
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(project, work / "proj")
    (work / "answers.csv").write_text("path,label\n10.png,a\n")
    db = work / "proj" / "learnloss.db"
    data = bytearray(db.read_bytes())
    for offset, bit in flips:
        data[offset % len(data)] ^= 1 << bit
    db.write_bytes(bytes(data))
    outside = _tree(tmp_path / "photos")
    args = {"status": ["status", str(work / "proj")],
            "export": ["export", str(work / "proj"), "--out", str(work / "out.csv")],
            "label": ["label", str(work / "proj"), str(work / "answers.csv")],
            "doctor": ["doctor", str(work / "proj"), "--fix"],
            "remove": ["remove", str(work / "proj"), "7"],
            "backup": ["backup", str(work / "proj"), str(work / "copy.db")]}[command]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), err  # never 70: no unexpected error, whatever the damage
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1
    assert _tree(tmp_path / "photos") == outside  # the images are never written
    assert {p.name for p in work.iterdir()} <= {"proj", "answers.csv", "out.csv", "copy.db"}  # no stray files


def test_an_image_deleted_later_is_named_with_the_command_that_unblocks_the_project(project, tmp_path, capsys):
    (tmp_path / "photos" / "20.png").unlink()
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert "'20.png'" in line and f"learnloss remove {project} " in line and len(line.splitlines()) == 1
    item = line.rsplit(" ", 1)[-1]
    assert main(["remove", str(project), item]) == 0
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 0
    assert "queried 2 items" in capsys.readouterr().out
