"""Crash safety: real processes killed with SIGKILL at random moments lose nothing and repeat nothing.

A simulated run is killed again and again while it trains, queries and labels; after every kill the store
must pass SQLite's integrity check, keep every label it had committed, hold exactly the labels its recorded
queries imply, and never hold a query twice. Resumed each time, the run must end with exactly the selection of
an uninterrupted run. Label imports are killed the same way and must apply all of a file or nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = ["run", "--protocol", "quick", "--strategy", "learning-loss", "--epochs", "2", "--initial", "30",
       "--query", "20", "--cycles", "8", "--subset", "200", "--seed", "3", "--device", "cpu", "--quiet"]
KILLS = 20

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b550000000a49444154789c63600000000200015da5a8a1"
    "0000000049454e44ae426082"
)  # a 1x1 greyscale PNG


def _learnloss(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "learnloss", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _state(db_path: Path) -> dict:
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        labels = {source: (name, cycle) for source, name, cycle in db.execute(
            "SELECT i.source, c.name, l.cycle FROM labels l JOIN items i ON i.id = l.item_id "
            "JOIN classes c ON c.id = l.class_id WHERE l.current = 1")}
        queries = list(db.execute("SELECT cycle, item_id FROM queries"))
        cycles = dict(db.execute("SELECT cycle, status FROM cycles"))
        return {"labels": labels, "queries": queries, "cycles": cycles}
    finally:
        db.close()


def _check_invariants(state: dict, previous: dict) -> None:
    lost = {k: v for k, v in previous["labels"].items() if state["labels"].get(k) != v}
    assert not lost, f"committed labels lost or changed by a kill: {list(lost)[:5]}"
    assert len(set(state["queries"])) == len(state["queries"]), "a query was recorded twice"
    queried_cycles = [c for c, status in state["cycles"].items() if status == "queried"]
    assert len(state["queries"]) == 20 * len(queried_cycles)
    if state["labels"]:
        assert len(state["labels"]) == 30 + 20 * len(queried_cycles), "labels and recorded queries disagree"
    assert sorted(state["cycles"]) == list(range(len(state["cycles"]))), "a cycle is missing"


def test_a_run_killed_at_random_moments_loses_nothing_and_resumes_exactly(tmp_path):
    reference = tmp_path / "reference"
    done = _learnloss(*RUN, "--out", str(reference))
    assert done.wait(timeout=600) == 0, done.stderr.read()
    expected = json.loads((reference / "results.json").read_text())

    rng = random.Random(1234)
    kills = starts = finished = 0
    while kills < KILLS:  # a run that finishes before enough kills is checked, then another one is started
        out = tmp_path / f"killed-{finished}"
        previous = {"labels": {}, "queries": [], "cycles": {}}
        while True:
            resume = ["--resume"] if (out / "learnloss.db").exists() else []
            process = _learnloss(*RUN, "--out", str(out), *resume)
            starts += 1
            time.sleep(rng.uniform(0.2, 3.0))
            if process.poll() is None and kills < KILLS:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
            else:
                assert process.wait(timeout=600) == 0, process.stderr.read()
            if (out / "learnloss.db").exists():
                state = _state(out / "learnloss.db")
                _check_invariants(state, previous)
                previous = state
            if (out / "results.json").exists():
                break
            assert starts < 10 * KILLS, "the run never finished"
        resumed = json.loads((out / "results.json").read_text())
        assert [c["selected"] for c in resumed["cycles"]] == [c["selected"] for c in expected["cycles"]]
        assert [c["test_accuracy"] for c in resumed["cycles"]] == [c["test_accuracy"] for c in expected["cycles"]]
        assert resumed["initial_labeled"] == expected["initial_labeled"]
        finished += 1
    print(f"{kills} kills, {starts} process starts, {finished} runs finished identical to the reference")
    assert kills == KILLS and finished >= 1


def test_an_import_killed_at_random_moments_applies_all_or_nothing(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3000):
        (root / f"{i}.png").write_bytes(_PNG)  # init reads every header
    init = _learnloss("init", str(tmp_path / "proj"), "--images", str(root), "--classes", "a,b")
    assert init.wait(timeout=600) == 0, init.stderr.read()
    files = []
    for n in range(3):
        path = tmp_path / f"labels-{n}.csv"
        path.write_text("path,label\n" + "".join(f"{i}.png,{'ab'[(i + n) % 2]}\n" for i in range(n * 1000, (n + 1) * 1000)))
        files.append(path)
    rng = random.Random(99)
    applied: set[int] = set()
    kills = 0
    for attempt in range(40):
        n = min(len(applied), 2) if len(applied) < 3 else None
        if n is None:
            break
        process = _learnloss("label", str(tmp_path / "proj"), str(files[n]))
        time.sleep(rng.uniform(0.5, 3.0))
        # every fourth attempt runs to the end, so that the imports progress on a busy machine too
        if attempt % 4 != 3 and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        db = sqlite3.connect(tmp_path / "proj" / "learnloss.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = db.execute("SELECT count(*) FROM labels").fetchone()[0]
        imports = db.execute("SELECT count(*) FROM imports").fetchone()[0]
        db.close()
        assert count == 1000 * imports, f"a killed import left {count} labels for {imports} imported files"
        applied = set(range(imports))
    assert applied == {0, 1, 2}
    assert kills >= 1


def test_a_box_import_killed_at_random_moments_applies_all_or_nothing(tmp_path):
    """The same guarantee for a detection project's COCO files (targets checked against each image's header)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(1500):
        (root / f"{i}.png").write_bytes(_PNG)
    init = _learnloss("init", str(tmp_path / "proj"), "--images", str(root), "--task", "detection", "--classes", "a,b")
    assert init.wait(timeout=600) == 0, init.stderr.read()
    files = []
    for n in range(3):
        images = [{"id": i, "file_name": f"{i}.png", "width": 1, "height": 1} for i in range(n * 500, (n + 1) * 500)]
        annotations = [{"id": 2 * i + k, "image_id": i, "category_id": 1 + k, "bbox": [0, 0, 1, 1], "iscrowd": 0}
                       for i in range(n * 500, (n + 1) * 500) for k in (0, 1)]
        path = tmp_path / f"boxes-{n}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
        files.append(path)
    rng = random.Random(7)
    imports = kills = 0
    for attempt in range(40):
        if imports == 3:
            break
        process = _learnloss("label", str(tmp_path / "proj"), str(files[imports]))
        time.sleep(rng.uniform(0.5, 3.0))
        if attempt % 4 != 3 and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        db = sqlite3.connect(tmp_path / "proj" / "learnloss.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        targets = [json.loads(text) for (text,) in db.execute("SELECT target FROM labels")]
        imports = db.execute("SELECT count(*) FROM imports").fetchone()[0]
        db.close()
        assert len(targets) == 500 * imports, f"a killed import left {len(targets)} labels for {imports} files"
        assert all(len(target["boxes"]) == 2 for target in targets)
    assert imports == 3
    assert kills >= 1


def test_two_processes_importing_at_once_both_apply_one_after_the_other(tmp_path):
    from learnloss.project.store import ProjectStore

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(400):
        (root / f"{i}.png").write_bytes(_PNG)  # init reads every header
    init = _learnloss("init", str(tmp_path / "proj"), "--images", str(root), "--classes", "a,b")
    assert init.wait(timeout=600) == 0, init.stderr.read()
    files = []
    for n in range(2):
        path = tmp_path / f"part-{n}.csv"
        path.write_text("path,label\n" + "".join(f"{i}.png,a\n" for i in range(n * 200, (n + 1) * 200)))
        files.append(path)
    both = [_learnloss("label", str(tmp_path / "proj"), str(path)) for path in files]
    assert [p.wait(timeout=600) for p in both] == [0, 0], [p.stderr.read() for p in both]
    with ProjectStore(tmp_path / "proj") as store:
        assert store.counts()["labeled"] == 400 and store.counts()["imports"] == 2


def test_a_query_killed_at_random_moments_records_one_query(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(root / f"{i}.png")
    labels = tmp_path / "seed.csv"
    labels.write_text("path,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(10)))
    init = _learnloss("init", str(tmp_path / "proj"), "--images", str(root), "--classes", "a,b", "--labels",
                      str(labels), "--image-size", "8", "--epochs", "3")
    assert init.wait(timeout=600) == 0, init.stderr.read()
    random_delay = random.Random(7)
    kills = 0
    for attempt in range(30):
        process = _learnloss("query", str(tmp_path / "proj"), "--k", "5", "--quiet")
        if kills < 6:
            time.sleep(random_delay.uniform(0.5, 4.0))
        if kills < 6 and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            continue
        assert process.wait(timeout=600) == 0, process.stderr.read()
        break
    db = sqlite3.connect(tmp_path / "proj" / "learnloss.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert list(db.execute("SELECT cycle, count(*) FROM queries GROUP BY cycle")) == [(0, 5)]
    assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 10
    db.close()
    again = _learnloss("query", str(tmp_path / "proj"), "--k", "5", "--quiet")
    assert again.wait(timeout=600) == 0
    db = sqlite3.connect(tmp_path / "proj" / "learnloss.db")
    assert list(db.execute("SELECT cycle, count(*) FROM queries GROUP BY cycle")) == [(0, 5)], "query duplicated"
    db.close()
    assert (tmp_path / "proj" / "exports" / "query-0.labelstudio.json").exists()
