"""Boxes and keypoints round-trip through a real Label Studio: the labeling configuration learnloss writes is
accepted, tasks with learnloss's predictions import with their pre-annotations stored, annotations posted the way
Label Studio's labeling interface posts them (regions in percent of the image, an occluded keypoint as a per-region
``visibility`` choice on the same region id) come back in the JSON export, and that export parses into exactly the
targets drawn, imports into a labeling store, and imports again without changing anything.

The results are built as the labeling interface (``web/dist`` of Label Studio 1.23) serialises them: a region's
``serialize()`` gives ``original_width``, ``original_height``, ``image_rotation`` and its geometry in ``value``
(``x, y, width, height, rotation`` of a rectangle; ``x, y, width`` of a keypoint); each of its results adds ``id``
(the region's id), ``from_name``, ``to_name``, ``type``, ``origin`` and the control's value (``rectanglelabels``,
``keypointlabels``, ``choices``), and keeps the ``score`` of a region that came from a prediction. The server stores
them as given; Label Studio's own validator (``label_studio_sdk``'s ``LabelInterface``, which checks imported
predictions when the prediction-validation feature flag is on) is run on every result too.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lsclient import executable

from learnloss.project.annotations import AnnotationSchema
from learnloss.project.importer import import_labels, parse_label_file
from learnloss.project.labelstudio import LabelStudioSetup, label_studio_task
from learnloss.project.store import ProjectStore

#: Images are wider than tall, so that a coordinate divided by the wrong side shows.
WIDTH, HEIGHT = 40, 30
DETECTION = AnnotationSchema("detection", ("cat", "dog", "bird"))
KEYPOINTS = AnnotationSchema("keypoints", ("head", "neck", "left_paw", "right_paw", "tail"),
                             (("head", "neck"), ("neck", "left_paw"), ("neck", "right_paw"), ("neck", "tail")),
                             category="animal")
MODEL_VERSION = "learnloss-round-trip"
#: The store's first item of a round trip (after other items): not a Label Studio task id (those start at 1 on a
#: fresh server), so that reading Label Studio's ``id`` instead of ``learnloss_id`` would label other items.
FIRST_ID = 101


# ------------------------------------------------------------------------------------ as the labeling UI posts


def _region(rid: str, from_name: str, kind: str, value: dict[str, Any], origin: str = "manual") -> dict[str, Any]:
    return {"original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "value": value, "id": rid,
            "from_name": from_name, "to_name": "image", "type": kind, "origin": origin}


def ui_box(rid: str, label: str, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    """A rectangle drawn from pixel ``(x0, y0)`` to ``(x1, y1)``: percent of the image, as the UI stores it."""
    value = {"x": x0 / WIDTH * 100, "y": y0 / HEIGHT * 100, "width": (x1 - x0) / WIDTH * 100,
             "height": (y1 - y0) / HEIGHT * 100, "rotation": 0, "rectanglelabels": [label]}
    return _region(rid, "label", "rectanglelabels", value)


def ui_point(rid: str, name: str, x: float, y: float) -> dict[str, Any]:
    """A keypoint placed at pixel ``(x, y)``; ``width`` is the point's drawn size (percent of the width)."""
    return _region(rid, "label", "keypointlabels",
                   {"x": x / WIDTH * 100, "y": y / HEIGHT * 100, "width": 0.75, "keypointlabels": [name]})


def ui_occluded(point: dict[str, Any]) -> dict[str, Any]:
    """The per-region ``visibility`` choice ``occluded`` of ``point``: same id, the region's geometry, the choice."""
    geometry = {key: point["value"][key] for key in ("x", "y", "width")}
    return _region(point["id"], "visibility", "choices", {**geometry, "choices": ["occluded"]})


def ui_relation(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A relation the labeler drew from region ``a`` to ``b`` (the region panel offers it in every image project):
    no ``from_name`` and no ``value``."""
    return {"from_id": a["id"], "to_id": b["id"], "type": "relation", "direction": "right"}


def accepted(prediction: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prediction's regions submitted unchanged (the labeler accepted the pre-annotation): the UI keeps their
    ids and scores, adds the image's size and marks their origin."""
    out = []
    for result in copy.deepcopy(prediction):
        out.append({"original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, **result,
                    "origin": "prediction"})
    return out


def px(x: float, y: float) -> list[float]:
    """A pixel position as the stored target holds it: normalised by the image's sides, rounded to 1e-6."""
    return [round(x / WIDTH, 6), round(y / HEIGHT, 6)]


def boxes(*found: tuple[str, float, float, float, float]) -> dict[str, Any]:
    """The stored detection target of boxes given in pixels (sorted by corners, as stored)."""
    stored = [{"label": label, "box": px(x0, y0) + px(x1, y1)} for label, x0, y0, x1, y1 in found]
    return {"boxes": sorted(stored, key=lambda box: (box["box"], box["label"]))}


# ------------------------------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One labeling task's plan: per image, the model's raw output (its prediction), what the labeler does and
    what learnloss must read back."""

    schema: AnnotationSchema
    raw_predictions: list[Any]
    #: per image: the results submitted; ("cancel", results): drawn, then skipped; "accept": the prediction's
    #: regions submitted unchanged (keypoints: the neck then marked occluded); None: not annotated
    actions: list[Any]
    #: per image: the stored target expected, or why the task is skipped
    expected: list[Any]


def detection_case() -> Case:
    raw = [
        [{"class": 0, "box": [0.1, 0.1, 0.5, 0.6], "score": 0.91}, {"class": 1, "box": [0.5, 0.2, 0.9, 0.8],
                                                                     "score": 0.47}],
        [{"class": 2, "box": [0.6, 0.3, 1.0, 0.7], "score": 0.88}],
        [{"class": 1, "box": [0.2, 0.2, 0.3, 0.3], "score": 0.12}],  # below the score threshold: not shown
        [{"class": 0, "box": [0.0, 0.0, 0.4, 0.4], "score": 0.66}],
        [{"class": 0, "box": [0.3, 0.3, 0.6, 0.6], "score": 0.5}],
        # the prediction the labeler accepts: awkward decimals, one box of each class, one below the threshold
        [{"class": 2, "box": [0.123456789, 0.2345678, 0.456789, 0.987654321], "score": 0.7654321},
         {"class": 0, "box": [0.0, 0.5, 1.0, 1.0], "score": 0.31},
         {"class": 1, "box": [0.7, 0.1, 0.9, 0.3], "score": 0.299}],
    ]
    edge = ui_box("Hk3dL9aQ_x", "bird", 25, 9, 40, 21)
    edge["value"]["width"] = 37.50000000000001  # the UI clips a box to the image with float noise: x + width > 100
    cat, dog = ui_box("aB3xYz01Qw", "cat", 3.5, 2, 21, 17.25), ui_box("Zk81pPq2_s", "dog", 20, 5, 39.5, 29)
    actions = [
        [cat, dog, ui_relation(cat, dog)],
        [edge],
        [],  # submitted without a box: an image holding no object
        ("cancel", [ui_box("Cc0000aaaa", "cat", 1, 1, 10, 10)]),  # the labeler drew, then pressed Skip
        None,  # not annotated
        "accept",
    ]
    expected = [
        boxes(("cat", 3.5, 2, 21, 17.25), ("dog", 20, 5, 39.5, 29)),
        {"boxes": [{"label": "bird", "box": [0.625, 0.3, 1.0, 0.7]}]},
        {"boxes": []},
        "skipped in Label Studio (cancelled)",
        "no annotation yet",
        {"boxes": [{"label": "cat", "box": [0.0, 0.5, 1.0, 1.0]},
                   {"label": "bird", "box": [0.123457, 0.234568, 0.456789, 0.987654]}]},
    ]
    return Case(DETECTION, raw, actions, expected)


def keypoints_case() -> Case:
    def figure(head, neck, left, right, tail):
        return [(*head,), (*neck,), (*left,), (*right,), (*tail,)]

    raw = [
        figure((0.5, 0.2, 0.9), (0.5, 0.4, 0.8), (0.3, 0.6, 0.4), (0.7, 0.6, 0.05), (0.5, 0.9, 0.6)),
        figure((0.4, 0.1, 0.7), (0.4, 0.3, 0.7), (0.2, 0.5, 0.5), (0.6, 0.5, 0.5), (0.4, 0.8, 0.5)),
        figure((0.5, 0.5, 0.3), (0.5, 0.5, 0.3), (0.5, 0.5, 0.3), (0.5, 0.5, 0.3), (0.5, 0.5, 0.3)),
        figure((0.1, 0.1, 0.2), (0.2, 0.2, 0.2), (0.3, 0.3, 0.2), (0.4, 0.4, 0.2), (0.5, 0.5, 0.2)),
        figure((0.25, 0.25, 0.95), (0.3333333, 0.4444444, 0.85), (0.1, 0.7, 0.5), (0.9, 0.7, 0.02), (1.0, 1.0, 0.6)),
        figure((0.5, 0.5, 0.5), (0.5, 0.6, 0.5), (0.4, 0.7, 0.5), (0.6, 0.7, 0.5), (0.5, 0.9, 0.5)),
    ]
    head, neck = ui_point("kp_head_01", "head", 20, 5), ui_point("kp_neck_01", "neck", 20.5, 11.25)
    left, right = ui_point("kp_lpaw_01", "left_paw", 12, 18), ui_point("kp_rpaw_01", "right_paw", 29.75, 18.5)
    tail = ui_point("kp_tail_01", "tail", 40, 30)  # on the image's corner
    full = [head, neck, left, ui_occluded(left), ui_occluded(right), right, tail,  # a choice may come first
            ui_relation(head, neck), ui_relation(neck, tail)]  # the labeler linked keypoints along the skeleton
    partial = [ui_point("p2_head_xx", "head", 8, 3), ui_point("p2_tail_xx", "tail", 33, 27.5)]
    actions = [
        full,
        partial,
        ("cancel", [ui_point("p3_head_xx", "head", 1, 1)]),
        None,
        "accept",
        [],  # submitted without a keypoint: nothing to store
    ]
    expected = [
        {"keypoints": {"head": px(20, 5) + [2], "neck": px(20.5, 11.25) + [2], "left_paw": px(12, 18) + [1],
                       "right_paw": px(29.75, 18.5) + [1], "tail": [1.0, 1.0, 2]}},
        {"keypoints": {"head": px(8, 3) + [2], "tail": px(33, 27.5) + [2]}},
        "skipped in Label Studio (cancelled)",
        "no annotation yet",
        # the accepted prediction, its neck marked occluded; right_paw's confidence 0.02 hid it
        {"keypoints": {"head": [0.25, 0.25, 2], "neck": [0.333333, 0.444444, 1], "left_paw": [0.1, 0.7, 2],
                       "tail": [1.0, 1.0, 2]}},
        "annotated without any keypoint",
    ]
    return Case(KEYPOINTS, raw, actions, expected)


# -------------------------------------------------------------------------------------------- Label Studio


def _sdk_problems(config: str, result_lists: list[list[dict[str, Any]]], folder: Path) -> list[str] | None:
    """What Label Studio's own validator (``LabelInterface.validate_prediction``, run in its environment) says of
    each list of results under ``config``; None when that environment has no Python to run it."""
    binary = executable()
    python = binary.parent / "python" if binary is not None else None
    if python is None or not python.exists():
        return None
    given = folder / "sdk-check.json"
    given.write_text(json.dumps({"config": config, "results": result_lists}))
    script = (
        "import json, sys\n"
        "from label_studio_sdk.label_interface import LabelInterface\n"
        "given = json.load(open(sys.argv[1]))\n"
        "li = LabelInterface(given['config'])\n"
        "out = []\n"
        "for n, results in enumerate(given['results']):\n"
        "    out += [f'results {n}: {e}' for e in li.validate_prediction({'result': results}, return_errors=True)]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(python), "-c", script, str(given)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@dataclass
class RoundTrip:
    case: Case
    project: int
    ls_tasks: list[dict[str, Any]]  # Label Studio's tasks, in the order of the case's images
    sent_predictions: list[list[dict[str, Any]]]
    posted: list[tuple[list[dict[str, Any]], bool]]  # what each annotation posted held, and if cancelled
    item_ids: list[int]
    paths: list[str]
    export: Path  # the default JSON export: tasks with annotations
    export_all: Path  # with download_all_tasks=true
    folder: Path
    expected: dict[int, Any] = field(default_factory=dict)  # learnloss_id -> stored target
    skipped: dict[int, str] = field(default_factory=dict)  # learnloss_id -> why


def _images(folder: Path, count: int) -> list[str]:
    """``count`` small images of ``WIDTH`` × ``HEIGHT`` pixels in ``folder``, named with a space (URLs quote it)."""
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = []
    for n in range(count):
        name = f"pic {n:02d}.png"
        Image.new("RGB", (WIDTH, HEIGHT), (40 * n % 256, 90, 160)).save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="module", params=["detection", "keypoints"])
def trip(request, label_studio, tmp_path_factory) -> RoundTrip:
    case = detection_case() if request.param == "detection" else keypoints_case()
    schema = case.schema
    folder = tmp_path_factory.mktemp(f"{schema.task}-round-trip")
    images = label_studio.document_root / f"{schema.task}-photos"
    paths = _images(images, len(case.actions))
    item_ids = list(range(FIRST_ID, FIRST_ID + len(paths)))
    setup = LabelStudioSetup.for_project(images, label_studio.document_root)

    # the configuration: Label Studio validates it when the project is created
    project = label_studio.create_project(f"{schema.task} round trip", schema.label_studio_config())
    label_studio.add_local_storage(project, images)
    sent, tasks = [], []
    for n, (item_id, path, raw) in enumerate(zip(item_ids, paths, case.raw_predictions)):
        stored_prediction = schema.prediction(raw)  # what a query stores
        results = schema.label_studio_results(json.loads(stored_prediction), prediction=True, prefix="p")
        sent.append(results)
        tasks.append(label_studio_task(setup, item_id, path, stored_prediction, None, 0.5 + n / 100, n + 1,
                                       MODEL_VERSION, results))
    assert label_studio.import_tasks(project, tasks)["task_count"] == len(tasks)
    by_item = {task["data"]["learnloss_id"]: task for task in label_studio.tasks(project)}
    ls_tasks = [by_item[item_id] for item_id in item_ids]

    posted = []
    expected, skipped = {}, {}
    for n, (task, action, want) in enumerate(zip(ls_tasks, case.actions, case.expected)):
        if action is None:
            posted.append(([], False))
        else:
            cancelled = isinstance(action, tuple)
            if cancelled:
                results = action[1]
            elif action == "accept":
                results = accepted(label_studio.predictions(task["id"])[0]["result"])
                if schema.task == "keypoints":  # the labeler marks the neck occluded
                    neck = next(r for r in results if r["value"]["keypointlabels"] == ["neck"])
                    results.append(ui_occluded({**neck, "value": dict(neck["value"])}))
            else:
                results = action
            label_studio.annotate_results(task["id"], results, cancelled=cancelled)
            posted.append((results, cancelled))
        if isinstance(want, str):
            skipped[item_ids[n]] = want
        else:
            expected[item_ids[n]] = want

    export = folder / "export.json"
    export.write_bytes(label_studio.export(project, "JSON"))
    export_all = folder / "export-all.json"
    export_all.write_bytes(label_studio.export(project, "JSON", all_tasks=True))
    return RoundTrip(case, project, ls_tasks, sent, posted, item_ids, paths, export, export_all, folder, expected,
                     skipped)


def _store(trip: RoundTrip, folder: Path) -> ProjectStore:
    """A labeling store whose items are the round trip's images, with the ids the tasks carry."""
    store = ProjectStore(folder, create=True, kind="labeling")
    schema = trip.case.schema
    with store.transaction() as db:
        store.set_meta("annotation", schema.to_meta(), db)
        store.add_classes(db, schema.names)
        store.add_items(db, [f"other/{n:03d}.png" for n in range(FIRST_ID - 1)], "pool")
        store.add_items(db, trip.paths, "pool")
    assert store.items()[FIRST_ID - 1:] == list(zip(trip.item_ids, trip.paths))
    assert store.annotation_schema() == schema
    return store


# ------------------------------------------------------------------------------------------------- the tests


def test_the_server_accepts_the_config_and_stores_the_predictions(label_studio, trip):
    schema = trip.case.schema
    project = label_studio.api("GET", f"/api/projects/{trip.project}")
    assert project["label_config"].strip() == schema.label_studio_config().strip()  # kept (the last newline dropped)
    for task, sent in zip(trip.ls_tasks, trip.sent_predictions):
        stored = label_studio.predictions(task["id"])
        assert len(stored) == 1
        assert stored[0]["result"] == sent  # kept as sent: ids, percent coordinates, per-region scores
        assert stored[0]["model_version"] == MODEL_VERSION
        assert stored[0]["score"] == pytest.approx(task["data"]["score"])
        # the Data Manager's tasks list shows them too (the pre-annotation the labeler sees)
        assert [p["result"] for p in task["predictions"]] == [sent]
    if schema.task == "detection":  # boxes cannot be turned: learnloss reads axis-aligned boxes only
        assert 'canRotate="false"' in project["label_config"]
    kinds = {r["type"] for sent in trip.sent_predictions for r in sent}
    assert kinds == {"rectanglelabels" if schema.task == "detection" else "keypointlabels"}
    if schema.task == "detection":  # a box below the score threshold is not shown
        assert [len(s) for s in trip.sent_predictions] == [2, 1, 0, 1, 1, 2]
    else:  # a keypoint below the confidence threshold is not shown
        assert [len(s) for s in trip.sent_predictions] == [4, 5, 5, 5, 4, 5]
        assert all(0 < r["score"] <= 1 for s in trip.sent_predictions for r in s)


def test_label_studio_validator_accepts_every_result(trip):
    """The results learnloss sends as predictions and those the UI posts pass Label Studio's own validator (the
    one the server runs on imported predictions when prediction validation is on)."""
    lists = [s for s in trip.sent_predictions if s] + [results for results, _ in trip.posted if results]
    problems = _sdk_problems(trip.case.schema.label_studio_config(), lists, trip.folder)
    if problems is None:
        pytest.skip("no Python in Label Studio's environment to run its validator")
    assert problems == []


def test_the_export_holds_the_annotations_as_posted(trip):
    exported = json.loads(trip.export.read_text())
    by_item = {task["data"]["learnloss_id"]: task for task in exported}
    unannotated = [item for item, why in trip.skipped.items() if why == "no annotation yet"]
    assert set(by_item) == set(trip.item_ids) - set(unannotated)  # the default export leaves those out
    for item_id, (results, cancelled) in zip(trip.item_ids, trip.posted):
        if item_id in unannotated:
            continue
        (annotation,) = by_item[item_id]["annotations"]
        assert annotation["was_cancelled"] is cancelled
        assert annotation["result"] == results  # the server stores and exports results unchanged
    everything = json.loads(trip.export_all.read_text())
    assert sorted(task["data"]["learnloss_id"] for task in everything) == trip.item_ids


def test_the_export_parses_into_the_targets_drawn(trip):
    schema = trip.case.schema
    parsed = parse_label_file(trip.export, schema)
    assert parsed.problems == []
    assert parsed.fmt == "labelstudio"
    assert {row.item_id: row.target for row in parsed.rows} == trip.expected
    assert {row.item_id: row.path for row in parsed.rows} == {
        item: path for item, path in zip(trip.item_ids, trip.paths) if item in trip.expected}
    assert all(row.label is None for row in parsed.rows)
    listed = [why for item, why in trip.skipped.items() if why != "no annotation yet"]
    assert len(parsed.skipped) == len(listed)
    for item, why in trip.skipped.items():
        if why != "no annotation yet":
            assert any(f"(learnloss_id {item}): {why}" in line for line in parsed.skipped), parsed.skipped
    # the export of every task also lists the one nobody annotated
    every = parse_label_file(trip.export_all, schema)
    assert every.problems == []
    assert {row.item_id: row.target for row in every.rows} == trip.expected
    for item, why in trip.skipped.items():
        assert any(f"(learnloss_id {item}): {why}" in line for line in every.skipped), every.skipped
    assert len(every.skipped) == len(trip.skipped)


def test_importing_the_export_stores_exactly_the_targets_and_again_changes_nothing(trip, tmp_path):
    with _store(trip, tmp_path / "project") as store:
        summary = import_labels(store, trip.export)
        assert (summary.added, summary.relabeled, summary.unchanged) == (len(trip.expected), 0, 0)
        assert len(summary.skipped) == len([why for why in trip.skipped.values() if why != "no annotation yet"])
        assert store.current_labels() == trip.expected
        history = store.label_history()
        assert {entry["item_id"]: entry["target"] for entry in history} == trip.expected
        assert all(entry["source"] == "import:labelstudio" for entry in history)

        again = import_labels(store, trip.export)
        assert (again.added, again.relabeled, again.unchanged) == (0, 0, len(trip.expected))
        assert not again.changed
        # the export of every task holds the same labels: nothing changes either
        every = import_labels(store, trip.export_all)
        assert (every.added, every.relabeled, every.unchanged) == (0, 0, len(trip.expected))
        assert store.current_labels() == trip.expected
        assert store.label_history() == history


def test_stored_targets_go_back_to_label_studio_as_the_same_regions(label_studio, trip, tmp_path):
    """A stored label shown again in Label Studio (as an annotation) and exported reads back unchanged: the forms
    learnloss writes and the one it reads agree, through the real server."""
    schema = trip.case.schema
    targets = list(trip.expected.values())
    project = label_studio.create_project(f"{schema.task} stored targets", schema.label_studio_config())
    setup = LabelStudioSetup.for_project(label_studio.document_root / f"{schema.task}-photos",
                                         label_studio.document_root)
    ids = list(trip.expected)
    tasks = [{"data": {"image": setup.image_url(trip.paths[trip.item_ids.index(item)]), "learnloss_id": item,
                       "path": trip.paths[trip.item_ids.index(item)]}} for item in ids]
    assert label_studio.import_tasks(project, tasks)["task_count"] == len(tasks)
    by_item = {task["data"]["learnloss_id"]: task for task in label_studio.tasks(project)}
    for item, target in zip(ids, targets):
        label_studio.annotate_results(by_item[item]["id"], schema.label_studio_results(target))
    export = tmp_path / "export.json"
    export.write_bytes(label_studio.export(project, "JSON"))
    parsed = parse_label_file(export, schema)
    assert parsed.problems == []
    expected = {item: target for item, target in trip.expected.items()
                if not (schema.task == "keypoints" and not target["keypoints"])}
    assert {row.item_id: row.target for row in parsed.rows} == expected
