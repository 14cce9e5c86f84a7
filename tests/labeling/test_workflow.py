"""The labeling workflow on a folder of images: init, query, label, query again, status, export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from learnloss.errors import UsageError
from learnloss.project.importer import import_labels
from learnloss.project.store import ProjectStore
from learnloss.labeling.workflow import export_labels, init_project, project_status, query_project

FAST = {"epochs": 2, "milestones": [], "stop_grad_epoch": 1, "image_size": 8, "batch_size": 8}


def _images(root, layout):
    """Two classes told apart by brightness; ``layout`` is 'folders' (class per folder) or 'flat'."""
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(24):
        label = "dark" if i % 2 else "light"
        pixels = (rng.integers(0, 60, (10, 10)) + (40 if label == "dark" else 180)).astype(np.uint8)
        rel = f"{label}/{i}.png" if layout == "folders" and i < 6 else f"{i}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(path)
        truth[rel] = label
    return truth


def test_flat_folder_query_label_and_round_again(tmp_path):
    truth = _images(tmp_path / "photos", "flat")
    labels = tmp_path / "seed.csv"
    labels.write_text("path,label\n" + "".join(f"{i}.png,{truth[f'{i}.png']}\n" for i in range(6)))
    counts = init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["dark", "light"], labels=labels,
                          settings=FAST)
    assert counts["pool"] == 24 and counts["labeled"] == 6

    first = query_project(tmp_path / "proj", k=5)
    assert first.cycle == 0 and first.trained and first.new_query and len(first.items) == 5
    queried = [item.path for item in first.items]
    assert not set(queried) & {f"{i}.png" for i in range(6)}, "a labeled image was queried"
    assert {item.prediction for item in first.items} <= {"dark", "light"}

    again = query_project(tmp_path / "proj", k=5)  # nothing labeled since: the open query is exported again
    assert not again.new_query and [item.path for item in again.items] == queried
    with ProjectStore(tmp_path / "proj") as store:
        assert store.counts()["open_queries"] == 5

    batch = first.files["csv"]
    rows = list(csv.DictReader(batch.open(encoding="utf-8")))
    for row in rows:
        row["label"] = truth[row["path"]]
    with batch.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with ProjectStore(tmp_path / "proj") as store:
        summary = import_labels(store, batch)
    assert summary.added == 5

    second = query_project(tmp_path / "proj", k=5)
    assert second.cycle == 1 and second.new_query
    assert not set(item.path for item in second.items) & set(queried)
    status = project_status(tmp_path / "proj")
    assert status["counts"]["labeled"] == 11 and status["open_queries"] == {1: 5}
    assert [c["status"] for c in status["cycles"]] == ["queried", "queried"]

    exported = tmp_path / "labels.json"
    assert export_labels(tmp_path / "proj", exported) == 11
    history = json.loads(exported.read_text())
    from_query = [h for h in history if h["file"] == "query-0.csv"]
    assert len(from_query) == 5 and all(h["cycle"] == 0 and h["strategy"] == "learning-loss" for h in from_query)


def test_class_folders_give_initial_labels(tmp_path):
    _images(tmp_path / "photos", "folders")
    with pytest.raises(UsageError, match="at least two classes; give them with --classes"):
        init_project(tmp_path / "proj", images=tmp_path / "photos", settings=FAST)
    counts = init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["dark", "light"], settings=FAST)
    assert counts["labeled"] == 0  # mixed layout: top-level files too, so no folder is taken for a class
    (tmp_path / "only").mkdir()
    for label in ("dark", "light"):
        (tmp_path / "photos" / label).rename(tmp_path / "only" / label)
    counts = init_project(tmp_path / "proj2", images=tmp_path / "only", settings=FAST)
    assert counts["labeled"] == 6
    with ProjectStore(tmp_path / "proj2") as store:
        assert store.classes() == ["dark", "light"]


def test_manifest_paths_must_stay_inside_the_root(tmp_path):
    truth = _images(tmp_path / "photos", "flat")
    manifest = tmp_path / "photos" / "manifest.csv"
    manifest.write_text("path,label\n0.png,dark\n../secret.png,light\n/etc/hosts,dark\n1.png,cat\n")
    with pytest.raises(UsageError, match="climbs out.*is absolute"):
        init_project(tmp_path / "proj", manifest=manifest, classes=["dark", "light"])
    assert not (tmp_path / "proj").exists(), "a failed init left a project behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".proj")]
    manifest.write_text("path,label,split\n" + "".join(f"{p},{label},{'test' if i < 4 else 'pool'}\n"
                                                       for i, (p, label) in enumerate(truth.items())))
    counts = init_project(tmp_path / "proj", manifest=manifest, settings=FAST)
    assert counts["test"] == 4 and counts["labeled"] == 24


def test_a_bad_initial_label_file_creates_nothing(tmp_path):
    _images(tmp_path / "photos", "flat")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\n0.png,wolf\n")
    with pytest.raises(UsageError, match="unknown class 'wolf'"):
        init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["dark", "light"], labels=bad)
    assert not (tmp_path / "proj").exists()


def test_query_needs_labels_and_enough_unlabeled(tmp_path):
    _images(tmp_path / "photos", "flat")
    init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["dark", "light"], settings=FAST)
    with pytest.raises(UsageError, match="no pool item is labeled"):
        query_project(tmp_path / "proj", k=3)
    with pytest.raises(UsageError, match="--k must be positive"):
        query_project(tmp_path / "proj", k=0)


def test_export_csv_escapes_formulas(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("=evil().png", "b.png"):
        Image.new("L", (8, 8)).save(root / name)
    init_project(tmp_path / "proj", images=root, classes=["+a", "b"])
    with ProjectStore(tmp_path / "proj") as store:
        (tmp_path / "l.json").write_text(json.dumps([{"path": "=evil().png", "label": "+a"}]))
        import_labels(store, tmp_path / "l.json")
    export_labels(tmp_path / "proj", tmp_path / "out.csv")
    (row,) = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert row["path"] == "'=evil().png" and row["label"] == "'+a"


@pytest.mark.parametrize("strategy", ["ssl-lpm", "diverse(margin)", "badge"])
def test_a_project_queries_with_the_semi_supervised_and_diverse_strategies(tmp_path, strategy):
    truth = _images(tmp_path / "photos", "flat")
    labels = tmp_path / "seed.csv"
    labels.write_text("path,label\n" + "".join(f"{i}.png,{truth[f'{i}.png']}\n" for i in range(8)))
    init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["dark", "light"], labels=labels,
                 settings={**FAST, "semi_epochs": 2, "semi_threshold": 0.0})
    outcome = query_project(tmp_path / "proj", k=4, strategy=strategy)
    picked = [item.path for item in outcome.items]
    assert len(set(picked)) == 4 and not set(picked) & {f"{i}.png" for i in range(8)}
    with ProjectStore(tmp_path / "proj") as store:
        assert store.counts()["open_queries"] == 4
