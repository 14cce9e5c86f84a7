"""Labeling projects of boxes (detection) and keypoints, end to end: init from COCO, query files, status, exports that
read back unchanged, and what is refused (with nothing written)."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from annotation_support import CLASSES, KEYPOINTS, TINY, box_images, seed_paths, task_names, write_coco
from tests_support import store_snapshot

from learnloss.errors import UsageError
from learnloss.labeling.workflow import (
    add_items, export_labels, init_project, label_project, project_status, query_project,
)
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.exports import QueriedItem, write_query_batch
from learnloss.project.importer import LabelFileError
from learnloss.project.labelstudio import LabelStudioSetup
from learnloss.project.store import ProjectStore

TASKS = ("detection", "keypoints")


def _expected(record: dict, task: str) -> dict:
    """The stored (normalised) label of a record of ``box_images`` (64 × 64)."""
    if task == "detection":
        x, y, w, h = record["bbox"]
        return {"boxes": [{"label": record["cls"], "box": [x / 64, y / 64, (x + w) / 64, (y + h) / 64]}]}
    return {"keypoints": {name: [px / 64, py / 64, v] for name, (px, py, v) in record["points"].items()}}


def _labels_by_path(project: Path) -> dict[str, object]:
    with ProjectStore(project) as store:
        sources = dict(store.items())
        return {sources[item]: label for item, label in store.current_labels().items()}


def _make(base: Path, task: str, query: int | None = None) -> tuple[Path, Path, list[dict]]:
    """A project of ``task`` over 24 pool and 8 test images, 8 pool and all test images labeled by COCO; queried
    for ``query`` items when given."""
    data = base / "data"
    records = box_images(data)
    coco = write_coco(base / "seed.coco.json", records, task, seed_paths(records))
    project = base / "proj"
    init_project(project, images=data, labels=coco, task=task, settings=TINY, **task_names(task))
    if query:
        query_project(project, query, device="cpu")
    return project, data, records


@pytest.fixture(scope="module")
def queried(tmp_path_factory):
    """A queried project of each task (shared: tests only read it)."""
    return {task: _make(tmp_path_factory.mktemp(task), task, query=4) for task in TASKS}


@pytest.fixture(params=TASKS)
def fresh(request, tmp_path):
    """An unqueried project of each task (no training: cheap), for tests that write to it."""
    return (request.param, *_make(tmp_path, request.param))


# ------------------------------------------------------------------------------------------------------ init


@pytest.mark.parametrize("task", TASKS)
def test_init_takes_the_split_from_train_and_test_folders_and_the_labels_from_coco(tmp_path, task):
    project, data, records = _make(tmp_path, task)
    with ProjectStore(project) as store:
        split = {source: where for _, source, where in store.items_with_split()}
        counts = store.counts()
        assert store.annotation_schema().task == task
    assert split == {r["path"]: "pool" if r["split"] == "train" else "test" for r in records}
    assert counts["pool"] == 24 and counts["test"] == 8 and counts["labeled"] == 16
    labels = _labels_by_path(project)
    assert labels == {r["path"]: _expected(r, task) for r in records if r["path"] in seed_paths(records)}
    config = (project / "exports" / "labelstudio-config.xml").read_text()
    tag = "RectangleLabels" if task == "detection" else "KeyPointLabels"
    (control,) = ElementTree.fromstring(config).iter(tag)
    assert [label.get("value") for label in control.iter("Label")] == list(CLASSES if task == "detection"
                                                                             else KEYPOINTS)


def test_pixels_and_normalised_coordinates_convert_with_the_image_size(tmp_path):
    """A 40 × 20-pixel box at (8, 4) in a 64 × 32 image is [0.125, 0.125, 0.75, 0.75] of its width and height;
    COCO and Label Studio exports give the pixels and percents back."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("L", (64, 32)).save(data / "wide.png")
    Image.new("L", (64, 32)).save(data / "other.png")
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "wide.png", "width": 64, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [8, 4, 40, 20], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    init_project(tmp_path / "proj", images=data, labels=coco, task="detection", classes=list(CLASSES), settings=TINY)
    assert _labels_by_path(tmp_path / "proj") == {"wide.png": {"boxes": [{"label": "dog",
                                                                          "box": [0.125, 0.125, 0.75, 0.75]}]}}
    export_labels(tmp_path / "proj", tmp_path / "out.json", "coco")
    document = json.loads((tmp_path / "out.json").read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in document["images"]] == [("wide.png", 64, 32)]
    (annotation,) = document["annotations"]
    assert annotation["bbox"] == [8, 4, 40, 20] and annotation["category_id"] == 2 and annotation["area"] == 800
    export_labels(tmp_path / "proj", tmp_path / "ls.json", "labelstudio")
    (region,) = json.loads((tmp_path / "ls.json").read_text())[0]["annotations"][0]["result"]
    assert region["type"] == "rectanglelabels" and region["value"]["rectanglelabels"] == ["dog"]
    assert [region["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([12.5, 12.5, 62.5, 62.5])

    # keypoints: (16, 24) px of a 64 × 32 image is (0.25, 0.75); COCO writes pixels back
    schema = AnnotationSchema("keypoints", KEYPOINTS)
    category = {1: {"id": 1, "name": "figure", "keypoints": list(KEYPOINTS)}}
    problems: list[str] = []
    target = schema.from_coco([{"id": 1, "category_id": 1, "keypoints": [16, 24, 2, 0, 0, 0, 48, 8, 1]}], category,
                              64, 32, "image 1", problems)
    assert problems == [] and target == {"keypoints": {"head": [0.25, 0.75, 2], "foot": [0.75, 0.25, 1]}}
    (written,) = schema.coco_annotations(target, 1, 64, 32, 1)
    assert written["keypoints"] == [16, 24, 2, 0, 0, 0, 48, 8, 1] and written["num_keypoints"] == 2


@pytest.mark.parametrize(
    ("task", "names", "fragment"),
    [
        ("detection", {}, "a detection project needs its object classes: give them with --classes"),
        ("keypoints", {}, "a keypoints project needs its keypoint names, in order: give them with --keypoints"),
        ("keypoints", {"classes": ["cat"]}, "names its points with --keypoints"),
        ("detection", {"classes": ["cat"], "keypoints": ["head"]}, "belong to --task keypoints"),
        ("detection", {"classes": ["cat"], "skeleton": [("a", "b")]}, "belong to --task keypoints"),
        ("keypoints", {"keypoints": ["head", "hand"], "skeleton": [("head", "tail")]},
         "the skeleton edge head-tail must join two different keypoints of the project (head, hand)"),
        ("keypoints", {"keypoints": ["head", "hand"], "skeleton": [("head", "head")]},
         "the skeleton edge head-head must join two different keypoints"),
        ("detection", {"classes": ["cat", " cat"]}, "are the same class"),
    ],
)
def test_init_refuses_missing_or_misplaced_names_and_creates_nothing(tmp_path, task, names, fragment):
    data = tmp_path / "data"
    box_images(data, n_train=2, n_test=1)
    with pytest.raises(UsageError) as raised:
        init_project(tmp_path / "proj", images=data, task=task, settings=TINY, **names)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("task", TASKS)
def test_a_manifest_label_column_is_refused_once_for_boxes_and_keypoints(tmp_path, task):
    data = tmp_path / "data"
    records = box_images(data, n_train=4, n_test=2)
    manifest = data / "manifest.csv"
    manifest.write_text("path,label,split\n" + "".join(
        f"{r['path']},{r['cls']},{'pool' if r['split'] == 'train' else 'test'}\n" for r in records))
    with pytest.raises(UsageError) as raised:
        init_project(tmp_path / "proj", manifest=manifest, task=task, settings=TINY, **task_names(task))
    message = str(raised.value)
    assert f"a {task} project takes its labels from --labels or learnloss label" in message
    assert message.count("takes its labels") == 1 and "manifest.csv row 2" in message and "\n" not in message
    assert "nothing was created" in message and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # the same manifest with the label column left empty is taken, its split column giving the split
    manifest.write_text("path,label,split\n" + "".join(
        f"{r['path']},,{'pool' if r['split'] == 'train' else 'test'}\n" for r in records))
    counts = init_project(tmp_path / "proj", manifest=manifest, task=task, settings=TINY, **task_names(task))
    assert (counts["pool"], counts["test"], counts["labeled"]) == (4, 2, 0)


def test_add_items_refuses_a_manifest_label_in_a_detection_project(tmp_path):
    project, data, _ = _make(tmp_path, "detection")
    more = box_images(data / "more", n_train=2, n_test=0, seed=1)
    manifest = data / "more" / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"{r['path']},cat\n" for r in more))
    with ProjectStore(project) as store:
        before = store.counts()
    with pytest.raises(UsageError, match="a detection project takes its labels from --labels") as raised:
        add_items(project, manifest=manifest)
    assert "nothing was added" in str(raised.value)
    with ProjectStore(project) as store:
        assert store.counts() == before
    manifest.write_text("path,label\n" + "".join(f"{r['path']},\n" for r in more))
    assert add_items(project, manifest=manifest)["added"] == 2


# ----------------------------------------------------------------------------------------------------- query


@pytest.mark.parametrize("task", TASKS)
def test_query_files_of_boxes_and_keypoints(queried, task):
    project, _, _ = queried[task]
    exports = project / "exports"
    header = (exports / "query-0.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["id", "path", "prediction", "confidence"] and "label" not in header
    batch = json.loads((exports / "query-0.json").read_text())
    assert batch["task"] == task and len(batch["items"]) == 4
    names = "classes" if task == "detection" else "keypoints"
    assert batch[names] == list(CLASSES if task == "detection" else KEYPOINTS)
    for item in batch["items"]:
        assert "label" not in item and isinstance(item["prediction"], dict)  # decoded, not JSON text
        if task == "detection":
            assert set(item["prediction"]) == {"boxes"}
        else:
            assert list(item["prediction"]["keypoints"]) == list(KEYPOINTS)
    tasks = json.loads((exports / "query-0.labelstudio.json").read_text())
    assert [t["data"]["learnloss_id"] for t in tasks] == [i["id"] for i in batch["items"]]
    wanted = "rectanglelabels" if task == "detection" else "keypointlabels"
    for entry in tasks:
        (prediction,) = entry["predictions"]
        assert prediction["model_version"] == "learnloss-cycle-0"
        for region in prediction["result"]:
            assert region["type"] == wanted and region["from_name"] == "label" and region["to_name"] == "image"
            assert region["value"][wanted][0] in (CLASSES if task == "detection" else KEYPOINTS)
            assert region["score"] >= (0.3 if task == "detection" else 0.1)
    if task == "keypoints":  # a heatmap always has a peak: regions of the confident keypoints
        decoded = [i["prediction"]["keypoints"] for i in batch["items"]]
        assert [len(t["predictions"][0]["result"]) for t in tasks] == [
            sum(c >= 0.1 for _, _, c in points.values()) for points in decoded]
    config = ElementTree.fromstring((exports / "labelstudio-config.xml").read_text())
    tag = "RectangleLabels" if task == "detection" else "KeyPointLabels"
    assert len(list(config.iter(tag))) == 1
    assert [c.get("name") for c in config.iter("Choices")] == ([] if task == "detection" else ["visibility"])
    if task == "detection":
        assert next(config.iter(tag)).get("canRotate") == "false"


@pytest.mark.parametrize("task", TASKS)
def test_status_names_the_task_and_its_metrics(queried, task):
    status = project_status(queried[task][0])
    assert status["task"] == task
    (cycle,) = status["cycles"]
    assert cycle["n_labeled"] == 8 and "test_accuracy" not in cycle
    metrics = ("test_map50", "test_map") if task == "detection" else ("test_pck", "test_mean_error")
    for name in metrics:
        assert isinstance(cycle[name], float)
    assert status["classes"] == list(CLASSES if task == "detection" else KEYPOINTS)


def test_query_batch_shows_stored_predictions_as_regions(tmp_path):
    """The pre-annotations of a batch: each stored box (or confident keypoint) is one region, in percent."""
    setup = LabelStudioSetup.for_project(tmp_path)
    boxes = json.dumps({"boxes": [{"label": "dog", "box": [0.1, 0.2, 0.5, 0.6], "score": 0.9},
                                  {"label": "cat", "box": [0.0, 0.0, 0.25, 1.0], "score": 0.4}]})
    items = [QueriedItem(3, "train/a.png", 1, 0.5, boxes, 0.9), QueriedItem(4, "train/b.png", 2, 0.25,
                                                                           '{"boxes": []}', None)]
    files, _ = write_query_batch(tmp_path / "det", 0, items, AnnotationSchema("detection", CLASSES), {}, setup)
    first, second = json.loads(files["labelstudio"].read_text())
    regions = first["predictions"][0]["result"]
    assert [r["type"] for r in regions] == ["rectanglelabels"] * 2
    assert [r["value"]["rectanglelabels"] for r in regions] == [["dog"], ["cat"]]
    assert [r["score"] for r in regions] == [0.9, 0.4] and first["predictions"][0]["score"] == 0.5
    assert [regions[0]["value"][k] for k in ("x", "y", "width", "height", "rotation")] == pytest.approx(
        [10, 20, 40, 40, 0])
    assert second["predictions"][0]["result"] == []
    batch = json.loads(files["json"].read_text())
    assert batch["items"][0]["prediction"] == json.loads(boxes) and batch["task"] == "detection"
    assert "label" not in files["csv"].read_text().splitlines()[0].split(",")
    assert "<RectangleLabels" in files["labelstudio_config"].read_text()

    points = json.dumps({"keypoints": {"head": [0.5, 0.25, 0.8], "hand": [0.1, 0.1, 0.05], "foot": [1, 1, 0.1]}})
    files, _ = write_query_batch(tmp_path / "kp", 2, [QueriedItem(5, "x.png", 1, None, points, 0.3)],
                                 AnnotationSchema("keypoints", KEYPOINTS), {}, setup)
    (entry,) = json.loads(files["labelstudio"].read_text())
    regions = entry["predictions"][0]["result"]
    assert [(r["type"], r["value"]["keypointlabels"], r["value"]["x"], r["value"]["y"], r["score"])
            for r in regions] == [("keypointlabels", ["head"], 50.0, 25.0, 0.8),
                                  ("keypointlabels", ["foot"], 100.0, 100.0, 0.1)]  # hand: below 0.1
    assert entry["predictions"][0]["model_version"] == "learnloss-cycle-2" and "score" not in entry["predictions"][0]
    assert "<KeyPointLabels" in files["labelstudio_config"].read_text()


def test_a_batch_item_without_a_stored_prediction_has_no_pre_annotation(tmp_path):
    setup = LabelStudioSetup.for_project(tmp_path)
    files, _ = write_query_batch(tmp_path / "det", 0, [QueriedItem(3, "a.png", 1, 0.5, "", None)],
                                 AnnotationSchema("detection", CLASSES), {}, setup)
    (entry,) = json.loads(files["labelstudio"].read_text())
    assert entry["predictions"][0]["result"] == []
    assert json.loads(files["json"].read_text())["items"][0]["prediction"] is None


# ---------------------------------------------------------------------------------------------------- export


def test_coco_export_initialises_a_project_with_the_same_labels(fresh, tmp_path):
    task, project, data, records = fresh
    with ProjectStore(project) as store:
        unlabeled = sorted(item for item, _ in store.items("pool") if item not in store.current_labels())
        sources = dict(store.items())
    empty = unlabeled[0]
    studio = tmp_path / "ls-empty.json"  # Label Studio: an annotation without a region
    studio.write_text(json.dumps([{"id": 1, "data": {"learnloss_id": empty, "path": sources[empty]},
                                   "annotations": [{"id": 1, "result": []}]}]))
    summary = label_project(project, studio)
    if task == "detection":  # an image holding no object
        assert summary.added == 1 and _labels_by_path(project)[sources[empty]] == {"boxes": []}
    else:  # a figure without any keypoint is no label
        assert summary.added == 0 and "annotated without any keypoint" in summary.skipped[0]
    before = _labels_by_path(project)
    assert export_labels(project, tmp_path / "labels.coco.json", "coco") == len(before)
    document = json.loads((tmp_path / "labels.coco.json").read_text())
    assert {i["file_name"] for i in document["images"]} == set(before)
    flagged = {i["file_name"] for i in document["images"] if i.get("no_objects")}
    assert flagged == ({sources[empty]} if task == "detection" else set())
    again = tmp_path / "again"
    counts = init_project(again, images=data, labels=tmp_path / "labels.coco.json", task=task, settings=TINY,
                          **task_names(task))
    assert counts["labeled"] == len(before) and counts["skipped"] == []
    assert _labels_by_path(again) == before


def test_labelstudio_export_reads_back_unchanged(fresh, tmp_path):
    task, project, _, records = fresh
    with ProjectStore(project) as store:
        snapshot = store_snapshot(store)
        labeled = len(store.current_labels())
    out = tmp_path / "tasks.json"
    assert export_labels(project, out, "labelstudio") == labeled
    tasks = json.loads(out.read_text())
    wanted = "rectanglelabels" if task == "detection" else "keypointlabels"
    kinds = {r["type"] for t in tasks for r in t["annotations"][0]["result"]}
    assert kinds == ({wanted} if task == "detection" else {wanted, "choices"})  # occluded hands: a per-region choice
    summary = label_project(project, out)
    assert (summary.added, summary.relabeled, summary.unchanged, summary.skipped) == (0, 0, labeled, ())
    with ProjectStore(project) as store:
        assert store_snapshot(store) == snapshot


@pytest.mark.parametrize("task", TASKS)
def test_coco_of_another_image_size_is_refused_naming_both_sizes(tmp_path, task):
    project, data, records = _make(tmp_path, task)
    pool = [r for r in records if r["split"] == "train"][-2:]
    coco = write_coco(tmp_path / "resized.json", pool, task, {r["path"] for r in pool}, size=(128, 96))
    with ProjectStore(project) as store:
        snapshot = store_snapshot(store)
    with pytest.raises(LabelFileError) as raised:
        label_project(project, coco)
    message = str(raised.value)
    assert "2 problems, nothing was imported" in message
    assert "the file says the image is 128×96 pixels, but it is 64×64" in message and pool[0]["path"] in message
    with ProjectStore(project) as store:
        assert store_snapshot(store) == snapshot
    # at init, the same file leaves no project behind
    with pytest.raises(LabelFileError, match="128×96 pixels, but it is 64×64"):
        init_project(tmp_path / "other", images=data, labels=coco, task=task, settings=TINY, **task_names(task))
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".other.*"))


def test_coco_without_no_objects_skips_an_image_without_annotations(tmp_path):
    data = tmp_path / "data"
    records = box_images(data, n_train=3, n_test=1)
    coco = write_coco(tmp_path / "c.json", records, "detection", {records[0]["path"]})
    counts = init_project(tmp_path / "proj", images=data, labels=coco, task="detection", classes=list(CLASSES),
                          settings=TINY)
    assert counts["labeled"] == 1 and len(counts["skipped"]) == 3
    assert all("no annotation, left unlabeled" in line and '"no_objects": true' in line for line in counts["skipped"])
    document = json.loads(coco.read_text())
    document["images"][1]["no_objects"] = True
    coco.write_text(json.dumps(document))
    shutil.rmtree(tmp_path / "proj")
    init_project(tmp_path / "proj", images=data, labels=coco, task="detection", classes=list(CLASSES), settings=TINY)
    assert _labels_by_path(tmp_path / "proj") == {records[0]["path"]: _expected(records[0], "detection"),
                                                   records[1]["path"]: {"boxes": []}}


def test_a_changed_box_needs_relabel_and_the_history_keeps_the_old_one(tmp_path):
    project, _, records = _make(tmp_path, "detection")
    out = tmp_path / "tasks.json"
    export_labels(project, out, "labelstudio")
    tasks = json.loads(out.read_text())
    changed = tasks[0]
    item = changed["data"]["learnloss_id"]
    changed["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["cat" if tasks[0]["annotations"][0][
        "result"][0]["value"]["rectanglelabels"] == ["dog"] else "dog"]
    out.write_text(json.dumps(tasks))
    with ProjectStore(project) as store:
        snapshot, old = store_snapshot(store), store.current_labels()[item]
    with pytest.raises(LabelFileError, match=f"item {item} is labeled with 1 box, the file says otherwise .1 box.; "
                                             "pass --relabel"):
        label_project(project, out)
    with ProjectStore(project) as store:
        assert store_snapshot(store) == snapshot
    summary = label_project(project, out, relabel=True)
    assert (summary.added, summary.relabeled, summary.unchanged) == (0, 1, len(tasks) - 1)
    with ProjectStore(project) as store:
        new = store.current_labels()[item]
        history = [entry for entry in store.label_history() if entry["item_id"] == item]
    assert new["boxes"][0]["box"] == old["boxes"][0]["box"] and new["boxes"][0]["label"] != old["boxes"][0]["label"]
    assert [entry["target"] for entry in history] == [old, new]
    # the history export carries each label's target, as stored
    export_labels(project, tmp_path / "history.csv")
    rows = [row for row in csv.DictReader((tmp_path / "history.csv").open()) if row["item_id"] == str(item)]
    assert [json.loads(row["target"]) for row in rows] == [old, new] and [row["label"] for row in rows] == ["", ""]
    export_labels(project, tmp_path / "history.json")
    entries = [e for e in json.loads((tmp_path / "history.json").read_text()) if e["item_id"] == item]
    assert [e["target"] for e in entries] == [old, new] and [e["current"] for e in entries] == [False, True]
