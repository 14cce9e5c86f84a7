"""Retiring unusable items and checking a project folder: remove_items and doctor on real projects and files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learnloss.errors import UsageError
from learnloss.labeling.maintenance import TMP_GRACE_SECONDS, UnknownItemsError, doctor, remove_items
from learnloss.labeling.workflow import init_project
from learnloss.project.store import DB_FILENAME, LabelRecord, ProjectStore, StoreBusyError, StoreKindError

NFD_NAME = unicodedata.normalize("NFD", "café.png")


def _project(tmp_path: Path) -> Path:
    """A labeling project over eight real images (one with a decomposed, NFD, file name), four labeled."""
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"{i}.png" for i in range(7)] + [NFD_NAME]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(root / name)
    labels = tmp_path / "seed.csv"
    labels.write_text("path,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(4)))
    init_project(tmp_path / "proj", images=root, classes=["a", "b"], labels=labels)
    return tmp_path / "proj"


def _old(path: Path) -> None:
    past = time.time() - TMP_GRACE_SECONDS - 10
    os.utime(path, (past, past), follow_symlinks=False)


# ------------------------------------------------------------------------------------------------- remove


def test_remove_by_id_and_by_path_keeps_history(tmp_path):
    project = _project(tmp_path)
    with ProjectStore(project) as store:
        ids = {source: item_id for item_id, source in store.items()}
    composed = unicodedata.normalize("NFC", "café.png")
    assert composed != NFD_NAME and composed in ids  # registered in NFC, whatever the disk's spelling
    removed = remove_items(project, [str(ids["1.png"]), "5.png", NFD_NAME, str(tmp_path / "photos" / "6.png")],
                           reason="blurry\nphoto")
    assert [(r.item_id, r.source, r.retired_now, r.reason) for r in removed] == [
        (ids["1.png"], "1.png", True, "blurry photo"), (ids["5.png"], "5.png", True, "blurry photo"),
        (ids[composed], composed, True, "blurry photo"), (ids["6.png"], "6.png", True, "blurry photo")]
    with ProjectStore(project) as store:
        assert sorted(source for _, source in store.items()) == ["0.png", "2.png", "3.png", "4.png"]
        assert store.counts()["retired"] == 4 and store.counts()["labeled"] == 3
        assert any(h["path"] == "1.png" and h["current"] for h in store.label_history()), "history was lost"
    again = remove_items(project, ["1.png", "1.png", "0.png"], reason="other")
    assert [(r.source, r.retired_now, r.reason) for r in again] == [("1.png", False, "blurry photo"),
                                                                     ("0.png", True, "other")]


def test_unknown_items_are_refused_all_or_nothing(tmp_path):
    project = _project(tmp_path)
    before = (project / DB_FILENAME).read_bytes()
    with pytest.raises(UnknownItemsError, match=r"2 item\(s\) are not in the project, so nothing was removed: "
                                                r"'nope.png', '999'; name items by id or by path"):
        remove_items(project, ["0.png", "nope.png", "999", "1.png"])
    with pytest.raises(UnknownItemsError, match="'../0.png'"):
        remove_items(project, ["../0.png"])
    with ProjectStore(project) as store:
        assert store.counts()["retired"] == 0
    assert (project / DB_FILENAME).read_bytes() == before
    with pytest.raises(UsageError, match="name at least one item"):
        remove_items(project, [])
    with pytest.raises(UsageError, match="give a reason"):
        remove_items(project, ["0.png"], reason="  ")


def test_remove_refuses_a_run_folder_and_waits_for_a_query(tmp_path):
    run = tmp_path / "run"
    with ProjectStore(run, create=True, kind="simulation") as store:
        with store.transaction() as db:
            store.add_items(db, ["0", "1"])
    with pytest.raises(StoreKindError, match="is a simulated run folder"):
        remove_items(run, ["0"])
    project = _project(tmp_path)
    script = (
        "import sys, time\n"
        "from learnloss.project.store import ProjectStore\n"
        "with ProjectStore(sys.argv[1]) as store, store.exclusive('query'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(project)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match=r"learnloss query \(pid \d+\) is running on .*; run remove again"):
            remove_items(project, ["0.png"], timeout=0.3)
    finally:
        holder.kill()
        holder.wait()
    with ProjectStore(project) as store:
        assert store.counts()["retired"] == 0


# ------------------------------------------------------------------------------------------------- doctor


def test_a_healthy_project_is_ok(tmp_path):
    project = _project(tmp_path)
    report = doctor(project)
    assert report.ok, report.lines()
    assert (report.kind, report.items_checked) == ("labeling", 8)
    assert report.lines()[-1] == "ok: nothing to fix"
    assert report.to_dict()["ok"] is True


def test_doctor_fixes_leftovers_reports_bad_items_and_never_touches_what_is_outside(tmp_path):
    project = _project(tmp_path)
    checkpoints = project / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "cycle-0-abc.pt").write_bytes(b"recorded")
    with ProjectStore(project) as store:
        with store.transaction() as db:
            store.add_trained_cycle(db, 0, {}, {}, "fp", "checkpoints/cycle-0-abc.pt", "sha")
    orphan = checkpoints / "cycle-0-old.pt"
    orphan.write_bytes(b"left behind")
    leftover = project / "exports" / ".query-0.csv.ab12cd_9.tmp"
    leftover.parent.mkdir(exist_ok=True)  # init wrote exports/labelstudio-config.xml
    leftover.write_text("half")
    _old(leftover)
    fresh = project / ".learnloss.db.zz99yy00.tmp"
    fresh.write_bytes(b"being written")
    outside = tmp_path / "precious.pt"
    outside.write_bytes(b"not the project's")
    (checkpoints / "cycle-9-link.pt").symlink_to(outside)
    (checkpoints / ".cycle-9.pt.qqqqqqqq.tmp").symlink_to(outside)
    os.utime(checkpoints / ".cycle-9.pt.qqqqqqqq.tmp", (0, 0), follow_symlinks=False)
    (tmp_path / "photos" / "2.png").unlink()
    (tmp_path / "photos" / "3.png").write_bytes(b"not an image at all")

    report = doctor(project)
    assert not report.ok and report.removed == []
    kinds = sorted((f.kind, f.path) for f in report.files)
    assert kinds == [("link", "checkpoints/.cycle-9.pt.qqqqqqqq.tmp"), ("link", "checkpoints/cycle-9-link.pt"),
                     ("orphan_checkpoint", "checkpoints/cycle-0-old.pt"),
                     ("tmp_leftover", ".learnloss.db.zz99yy00.tmp"),
                     ("tmp_leftover", "exports/.query-0.csv.ab12cd_9.tmp")]
    items = {f.path: f for f in report.items}
    assert set(items) == {"2.png", "3.png"}
    assert items["2.png"].kind == "missing_item" and items["3.png"].kind == "unreadable_item"
    assert items["2.png"].fix is not None and items["2.png"].fix.endswith(f"learnloss remove {project} "
                                                                          f"{items['2.png'].item_id}")
    assert report.remove_command == f"learnloss remove {project} {items['2.png'].item_id} {items['3.png'].item_id}"
    assert all(p.exists() for p in (orphan, leftover, fresh)), "doctor without --fix deleted something"

    fixed = doctor(project, fix=True)
    assert sorted(fixed.removed) == sorted([orphan, leftover])
    assert not orphan.exists() and not leftover.exists()
    assert fresh.exists(), "a temporary file that may still be being written was removed"
    assert outside.read_bytes() == b"not the project's", "a file outside the project was touched"
    assert (checkpoints / "cycle-9-link.pt").is_symlink() and (checkpoints / "cycle-0-abc.pt").exists()
    lines = fixed.lines()
    assert any("orphan checkpoint: checkpoints/cycle-0-old.pt" in line and line.endswith("removed") for line in lines)
    assert any("learnloss remove" in line and "2.png" in line for line in lines)
    assert not fixed.ok

    for path in (checkpoints / "cycle-9-link.pt", checkpoints / ".cycle-9.pt.qqqqqqqq.tmp"):
        path.unlink()
    _old(fresh)
    remove_items(project, [str(items["2.png"].item_id), "3.png"], reason="doctor")
    final = doctor(project, fix=True)
    assert final.ok, final.lines()
    assert final.removed == [fresh]


def test_doctor_reports_a_damaged_store_and_deletes_no_checkpoint(tmp_path):
    project = _project(tmp_path)
    (project / "checkpoints").mkdir()
    (project / "checkpoints" / "cycle-0.pt").write_bytes(b"maybe recorded")
    raw = sqlite3.connect(project / DB_FILENAME)
    raw.execute("PRAGMA writable_schema = ON")
    raw.execute("UPDATE sqlite_master SET sql = replace(sql, 'current = 1', 'current = 0') "
                "WHERE name = 'labels_one_current'")
    raw.commit()
    raw.close()
    report = doctor(project, fix=True)
    assert not report.ok
    assert [f.kind for f in report.store] == ["integrity"]
    assert "labels_one_current" in report.store[0].message
    assert (project / "checkpoints" / "cycle-0.pt").exists(), "a damaged store made a checkpoint look orphaned"

    (project / DB_FILENAME).write_bytes(b"")
    empty = doctor(project)
    assert not empty.ok and empty.store[0].kind == "store" and "empty (0 bytes)" in empty.store[0].message
    assert (project / DB_FILENAME).stat().st_size == 0


def test_doctor_on_a_run_folder_and_on_an_older_store(tmp_path):
    run = tmp_path / "run"
    with ProjectStore(run, create=True, kind="simulation") as store:
        with store.transaction() as db:
            store.add_classes(db, ["a", "b"])
            store.add_items(db, ["0", "1"])
            store.add_labels(db, [LabelRecord(1, "a", "oracle")])
    report = doctor(run)
    assert report.ok and report.kind == "simulation" and report.items_checked == 0
    assert report.lines()[0].startswith(f"{run}: simulated run folder, schema version")
    with pytest.raises(UsageError, match="is not a folder"):
        doctor(tmp_path / "nowhere")


def test_doctor_reports_interrupted_inits_next_to_the_project_without_touching_them(tmp_path):
    project = _project(tmp_path)
    staging = tmp_path / ".proj.k2j4h5g6"
    staging.mkdir()
    (staging / DB_FILENAME).write_bytes(b"partial")
    report = doctor(project, fix=True)
    assert [(f.kind, f.path) for f in report.files] == [("staging", str(staging))]
    assert staging.exists() and not report.ok
