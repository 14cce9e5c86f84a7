"""Importing boxes and keypoints into a detection or keypoints project: Label Studio's JSON export and COCO JSON,
checked against a real store and applied all or nothing."""

from __future__ import annotations

import json
import re

import pytest

from annotation_support import ls_occluded, ls_point
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.importer import LabelFileError, LabelRow, apply_label_rows, import_labels
from learnloss.project.store import LabelRecord, ProjectStore
from tests_support import store_snapshot, write_file

POOL = [f"img/{i}.png" for i in range(5)]
SIZES = {1: (640, 480), 2: (640, 480), 3: (800, 600), 4: (100, 100), 5: (8, 8)}  # item id -> (width, height)
KEYPOINTS = ("nose", "left_eye", "right_eye")


def _store(tmp_path, schema: AnnotationSchema) -> ProjectStore:
    store = ProjectStore(tmp_path / "project", create=True, kind="labeling")
    with store.transaction() as db:
        store.set_meta("annotation", schema.to_meta(), db)
        store.add_classes(db, list(schema.names))
        store.add_items(db, POOL, "pool")
    return store


@pytest.fixture
def det(tmp_path):
    with _store(tmp_path, AnnotationSchema("detection", ("cat", "dog"))) as store:
        yield store


@pytest.fixture
def kp(tmp_path):
    with _store(tmp_path, AnnotationSchema("keypoints", KEYPOINTS, (("nose", "left_eye"),), "face")) as store:
        yield store


def _image_size(item_id: int) -> tuple[int, int]:
    return SIZES[item_id]


def _box(x, y, w, h, label="cat", ident="b"):
    return {"id": ident, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}




def _task(number, item_id, *annotations, by="id"):
    """A task of Label Studio's JSON export as ``learnloss query`` writes its data; each annotation is a list of
    results, or a dict (an annotation object as is)."""
    data = {"image": f"/data/local-files/?d=img/{item_id - 1}.png"}
    if by in ("id", "both"):
        data["learnloss_id"] = item_id
    if by in ("path", "both"):
        data["path"] = f"img/{item_id - 1}.png"
    return {"id": 100 + number, "data": data, "predictions": [],
            "annotations": [a if isinstance(a, dict) else {"id": n, "was_cancelled": False, "result": a}
                            for n, a in enumerate(annotations, 1)]}


def _export(tmp_path, tasks, name="export.json"):
    return write_file(tmp_path, name, json.dumps(tasks))


def _coco(images, annotations, categories):
    return json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": categories})


DET_CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "object"}, {"id": 2, "name": "dog", "supercategory": "object"}]


def _image(image_id, item_id):
    width, height = SIZES[item_id]
    return {"id": image_id, "file_name": POOL[item_id - 1], "width": width, "height": height}


# ------------------------------------------------------------------------------------ Label Studio, detection


def test_label_studio_detection_export_is_applied(det, tmp_path):
    tasks = [
        _task(1, 1, [_box(10, 20, 30, 40, "dog", "a"), _box(50, 50, 25, 50, "cat", "b")]),
        _task(2, 2, [_box(0, 0, 100, 100, "cat")], by="path"),
        _task(3, 3, [_box(12.5, 25, 12.5, 25, "dog")], by="both"),
    ]
    summary = import_labels(det, _export(tmp_path, tasks))
    assert (summary.added, summary.relabeled, summary.unchanged, summary.skipped) == (3, 0, 0, ())
    assert det.current_labels() == {
        1: {"boxes": [{"label": "dog", "box": [0.1, 0.2, 0.4, 0.6]}, {"label": "cat", "box": [0.5, 0.5, 0.75, 1.0]}]},
        2: {"boxes": [{"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]}]},
        3: {"boxes": [{"label": "dog", "box": [0.125, 0.25, 0.25, 0.5]}]},
    }
    history = det.label_history()
    assert {(h["source"], h["file"], h["label"]) for h in history} == {("import:labelstudio", "export.json", None)}
    assert all(h["current"] for h in history)
    assert det.counts()["labeled"] == 3 and det.counts()["imports"] == 1


def test_stored_targets_are_canonical(det, tmp_path):
    # two annotators drew the same boxes in another order, one with float noise below the stored precision
    first = [_box(50, 50, 10, 10, "dog", "a"), _box(10, 10, 10, 10, "cat", "b")]
    second = [_box(10.00000001, 10, 10, 10, "cat", "x"), _box(50, 50, 10, 10, "dog", "y")]
    import_labels(det, _export(tmp_path, [_task(1, 1, first, second)]))
    (stored,) = det.current_labels().values()
    assert stored == {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}, {"label": "dog", "box": [0.5, 0.5, 0.6, 0.6]}]}
    assert det.annotation_schema().check_stored(stored, "item 1") == stored


def test_empty_annotation_in_detection_is_an_image_without_objects(det, tmp_path):
    summary = import_labels(det, _export(tmp_path, [_task(1, 1, []), _task(2, 2, {"result": None})]))
    assert summary.added == 2 and summary.skipped == ()
    assert det.current_labels() == {1: {"boxes": []}, 2: {"boxes": []}}


def test_unlabeled_tasks_are_skipped(det, tmp_path):
    tasks = [
        _task(1, 1, {"was_cancelled": True, "result": [_box(10, 10, 10, 10)]}),
        _task(2, 2),
        _task(3, 3, {"skipped": True, "result": []}),
        _task(4, 4, {"was_cancelled": True, "result": [_box(10, 10, 10, 10, "dog")]}, [_box(20, 20, 10, 10, "cat")]),
    ]
    summary = import_labels(det, _export(tmp_path, tasks))
    assert summary.added == 1
    assert det.current_labels() == {4: {"boxes": [{"label": "cat", "box": [0.2, 0.2, 0.3, 0.3]}]}}
    assert summary.skipped == ("task 1 (learnloss_id 1): skipped in Label Studio (cancelled)",
                               "task 2 (learnloss_id 2): no annotation yet",
                               "task 3 (learnloss_id 3): skipped in Label Studio (cancelled)")


def test_a_file_of_skipped_tasks_writes_nothing(det, tmp_path):
    before = store_snapshot(det)
    summary = import_labels(det, _export(tmp_path, [_task(1, 1), _task(2, 2, {"was_cancelled": True, "result": []})]))
    assert not summary.changed and len(summary.skipped) == 2
    assert store_snapshot(det) == before, "a file that changes nothing is not recorded"


def test_annotations_that_differ_are_a_problem(det, tmp_path):
    tasks = [_task(1, 1, [_box(10, 10, 10, 10, "cat")], [_box(10, 10, 10, 10, "dog")]),
             _task(2, 2, [_box(10, 10, 10, 10)], [_box(10, 10, 10, 10), _box(50, 50, 10, 10)])]
    with pytest.raises(LabelFileError) as caught:
        import_labels(det, _export(tmp_path, tasks))
    assert caught.value.problems == [
        "task 1: its 2 annotations differ (1 box, 1 box); keep one (delete or cancel the others in Label Studio) and "
        "export again",
        "task 2: its 2 annotations differ (1 box, 2 boxes); keep one (delete or cancel the others in Label Studio) and "
        "export again",
    ]
    assert det.current_labels() == {}


def test_one_bad_task_refuses_the_whole_file(det, tmp_path):
    before, counts = store_snapshot(det), det.counts()
    tasks = [_task(1, 1, [_box(10, 10, 10, 10)]),
             _task(2, 2, [{**_box(10, 10, 10, 10), "value": {**_box(10, 10, 10, 10)["value"], "rotation": 45}}]),
             _task(3, 3, [_box(10, 10, 10, 10, "wolf")])]
    with pytest.raises(LabelFileError, match=r"2 problems, nothing was imported: task 2: region 1: the 'cat' box is "
                                             r"rotated \(45°\).*; task 3: region 1: unknown class 'wolf'"):
        import_labels(det, _export(tmp_path, tasks))
    assert store_snapshot(det) == before and det.counts() == counts
    assert det.current_labels() == {}, "the valid task 1 is not applied either"


@pytest.mark.parametrize(("tasks", "message"), [
    ([_task(1, 9, [_box(10, 10, 10, 10)])], "task 1: unknown id 9: not an item of this project"),
    ([{**_task(1, 1, [_box(10, 10, 10, 10)]), "data": {"path": "img/9.png"}}],
     "task 1: unknown path 'img/9.png': not an item of this project"),
    ([{**_task(1, 1, [_box(10, 10, 10, 10)]), "data": {"image": "x.png"}}],
     "task 1: neither id nor path says which item is labeled with 1 box"),
    ([_task(1, 1, [_box(10, 10, 10, 10)]), _task(2, 1, [_box(10, 10, 10, 10)])],
     "task 2: item 1 is labeled again (first at task 1)"),
    ([_task(1, 1, [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}])],
     "task 1: region 1: a 'choices' result, but a detection project reads rectanglelabels"),
    ([_task(1, 1, [{**_box(1, 1, 5, 5), "value": {**_box(1, 1, 5, 5)["value"], "rectanglelabels": ["cat", "dog"]}}])],
     "task 1: region 1: a region needs exactly one label, found ['cat', 'dog']"),
    ([_task(1, 1, [_box(90, 10, 20, 10)])], "task 1: region 1: the 'cat' box leaves the image"),
    ([{**_task(1, 1), "annotations": "none"}], "task 1: 'annotations' must be a list of objects"),
    ([_task(1, 1, {"result": {"x": 1}})], "task 1: an annotation's 'result' must be a list"),
])
def test_label_studio_problems_name_the_task(det, tmp_path, tasks, message):
    before = store_snapshot(det)
    with pytest.raises(LabelFileError, match=re.escape(message)):
        import_labels(det, _export(tmp_path, tasks))
    assert store_snapshot(det) == before


def test_importing_the_same_export_again_changes_nothing(det, tmp_path):
    path = _export(tmp_path, [_task(1, 1, [_box(12.3456789, 23.456789, 34.56789, 45.6789, "dog"), _box(1, 2, 3, 4)]),
                              _task(2, 2, [])])
    import_labels(det, path)
    before = store_snapshot(det)
    summary = import_labels(det, path)
    assert (summary.added, summary.relabeled, summary.unchanged) == (0, 0, 2) and not summary.changed
    assert store_snapshot(det) == before


def test_changed_boxes_need_relabel_and_keep_the_history(det, tmp_path):
    old = {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}]}
    import_labels(det, _export(tmp_path, [_task(1, 1, [_box(10, 10, 10, 10)])], "first.json"))
    changed = _export(tmp_path, [_task(1, 1, [_box(10, 10, 10, 10), _box(50, 50, 10, 10, "dog")]),
                                 _task(2, 2, [_box(30, 30, 10, 10)])], "second.json")
    with pytest.raises(LabelFileError, match=re.escape("task 1: item 1 is labeled with 1 box, the file says otherwise "
                                                       "(2 boxes); pass --relabel to change it")):
        import_labels(det, changed)
    assert det.current_labels() == {1: old}, "task 2 is not applied either"
    summary = import_labels(det, changed, relabel=True)
    assert (summary.added, summary.relabeled, summary.unchanged) == (1, 1, 0)
    new = {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}, {"label": "dog", "box": [0.5, 0.5, 0.6, 0.6]}]}
    assert det.current_labels() == {1: new, 2: {"boxes": [{"label": "cat", "box": [0.3, 0.3, 0.4, 0.4]}]}}
    assert [(h["target"], h["current"], h["file"]) for h in det.label_history() if h["item_id"] == 1] == \
        [(old, False, "first.json"), (new, True, "second.json")]
    assert det.counts()["relabels"] == 1


def test_removing_every_box_is_a_relabel_too(det, tmp_path):
    import_labels(det, _export(tmp_path, [_task(1, 1, [_box(10, 10, 10, 10)])], "first.json"))
    emptied = _export(tmp_path, [_task(1, 1, [])], "second.json")
    with pytest.raises(LabelFileError, match=re.escape("otherwise (0 boxes)")):
        import_labels(det, emptied)
    assert import_labels(det, emptied, relabel=True).relabeled == 1
    assert det.current_labels() == {1: {"boxes": []}}


# ------------------------------------------------------------------------------------ Label Studio, keypoints


def test_label_studio_keypoints_export_is_applied(kp, tmp_path):
    tasks = [
        _task(1, 1, [ls_point(50, 40, "nose", "p1"), ls_point(40, 30, "left_eye", "p2"), ls_occluded("p2"),
                     ls_point(60, 30, "right_eye", "p3")]),
        _task(2, 2, [ls_occluded("q"), ls_point(25, 75, "right_eye", "q")], by="path"),
    ]
    summary = import_labels(kp, _export(tmp_path, tasks))
    assert summary.added == 2
    assert kp.current_labels() == {
        1: {"keypoints": {"nose": [0.5, 0.4, 2], "left_eye": [0.4, 0.3, 1], "right_eye": [0.6, 0.3, 2]}},
        2: {"keypoints": {"right_eye": [0.25, 0.75, 1]}},
    }
    assert import_labels(kp, _export(tmp_path, tasks)).unchanged == 2


def test_keypoints_round_trip_through_label_studio_results(kp, tmp_path):
    schema = kp.annotation_schema()
    assert schema.task == "keypoints" and schema.names == KEYPOINTS and schema.category == "face"
    target = {"keypoints": {"nose": [0.123457, 0.654321, 2], "right_eye": [0.999999, 0.000001, 1]}}
    import_labels(kp, _export(tmp_path, [_task(1, 3, schema.label_studio_results(target))]))
    assert kp.current_labels() == {3: target}


def test_keypoints_annotation_without_a_keypoint_is_skipped(kp, tmp_path):
    tasks = [_task(1, 1, []), _task(2, 2, [ls_point(10, 10, "nose", "a")]), _task(3, 3, {"was_cancelled": True})]
    summary = import_labels(kp, _export(tmp_path, tasks))
    assert summary.added == 1 and kp.current_labels() == {2: {"keypoints": {"nose": [0.1, 0.1, 2]}}}
    assert summary.skipped == ("task 1 (learnloss_id 1): annotated without any keypoint",
                               "task 3 (learnloss_id 3): skipped in Label Studio (cancelled)")


@pytest.mark.parametrize(("results", "message"), [
    ([ls_point(10, 10, "nose", "a"), ls_point(20, 20, "nose", "b")], "task 1: keypoint 'nose' is placed twice; keep one"),
    ([ls_point(10, 10, "chin", "a")], "task 1: region 1: unknown keypoint 'chin'"),
    ([_box(10, 10, 10, 10)], "task 1: region 1: a 'rectanglelabels' result, but a keypoints project reads "
                             "keypointlabels"),
])
def test_keypoints_problems(kp, tmp_path, results, message):
    with pytest.raises(LabelFileError, match=re.escape(message)):
        import_labels(kp, _export(tmp_path, [_task(1, 1, results), _task(2, 2, [ls_point(10, 10, "nose", "a")])]))
    assert kp.current_labels() == {}


def test_keypoint_annotations_that_differ_in_visibility_are_a_problem(kp, tmp_path):
    visible = [ls_point(10, 10, "nose", "a")]
    occluded = [ls_point(10, 10, "nose", "a"), ls_occluded("a")]
    with pytest.raises(LabelFileError, match=re.escape("task 1: its 2 annotations differ (1 keypoint, 1 keypoint)")):
        import_labels(kp, _export(tmp_path, [_task(1, 1, visible, occluded)]))


# --------------------------------------------------------------------------------------------------- COCO


def test_coco_detection_with_matching_sizes(det, tmp_path):
    text = _coco(
        [_image(1, 1), _image(2, 3), {**_image(3, 2), "no_objects": True}, _image(4, 4)],
        [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [64, 48, 128, 96], "area": 1, "iscrowd": 0},
         {"id": 2, "image_id": 1, "category_id": 1, "bbox": [320, 240, 320, 240], "area": 1, "iscrowd": 0},
         {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 400, 150], "area": 1, "iscrowd": 0}],
        DET_CATEGORIES)
    summary = import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert summary.added == 3
    assert summary.skipped == ('image 4 (img/3.png): no annotation, left unlabeled (an image holding no object says '
                               '"no_objects": true)',)
    assert det.current_labels() == {
        1: {"boxes": [{"label": "dog", "box": [0.1, 0.1, 0.3, 0.3]}, {"label": "cat", "box": [0.5, 0.5, 1.0, 1.0]}]},
        3: {"boxes": [{"label": "cat", "box": [0.0, 0.0, 0.5, 0.25]}]},
        2: {"boxes": []},  # "no_objects": an image labeled as holding no object
    }
    assert {h["source"] for h in det.label_history()} == {"import:coco"}
    assert import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size).unchanged == 3


def test_coco_size_mismatch_names_both_sizes(det, tmp_path):
    image = {**_image(1, 1), "width": 320, "height": 240}
    text = _coco([image, _image(2, 2)],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 10, 10]},
                  {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 10, 10, 10]}], DET_CATEGORIES)
    before = store_snapshot(det)
    with pytest.raises(LabelFileError) as caught:
        import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    (problem,) = caught.value.problems
    assert problem.startswith("image 1 (img/0.png): the file says the image is 320×240 pixels, but it is 640×480")
    assert store_snapshot(det) == before, "image 2 is not applied either"


def test_coco_size_is_compared_in_whole_pixels(det, tmp_path):
    text = _coco([{**_image(1, 1), "width": 640.2, "height": 479.9}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64.02, 47.99]}], DET_CATEGORIES)
    import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert det.current_labels() == {1: {"boxes": [{"label": "cat", "box": [0.0, 0.0, 0.1, 0.1]}]}}


def test_coco_without_image_size_is_refused(det, tmp_path):
    text = _coco([_image(1, 1)], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 10, 10]}],
                 DET_CATEGORIES)
    with pytest.raises(LabelFileError, match=re.escape("image 1 (img/0.png): pixel coordinates cannot be checked "
                                                       "against the image here")):
        import_labels(det, write_file(tmp_path, "coco.json", text))
    assert det.current_labels() == {}


def test_coco_image_size_errors_become_problems(det, tmp_path):
    from learnloss.errors import UsageError

    def unreadable(item_id):
        raise UsageError(f"cannot read the image of item {item_id}")

    text = _coco([{**_image(1, 1), "no_objects": True}], [], DET_CATEGORIES)
    with pytest.raises(LabelFileError, match=re.escape("image 1 (img/0.png): cannot read the image of item 1")):
        import_labels(det, write_file(tmp_path, "coco.json", text), image_size=unreadable)


def test_coco_crowd_annotations_are_left_out(det, tmp_path):
    text = _coco([_image(1, 1)],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [64, 48, 64, 48], "iscrowd": 0},
                  {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 640, 480], "iscrowd": 1},
                  {"id": 3, "image_id": 1, "category_id": 2, "bbox": "rle", "iscrowd": 1}],  # its bbox not even checked
                 DET_CATEGORIES)
    summary = import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert summary.added == 1
    assert summary.skipped == ("image 1 (img/0.png): 2 crowd annotation(s) left out",)
    assert det.current_labels() == {1: {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}]}}


@pytest.mark.parametrize(("document", "message"), [
    (_coco([_image(1, 1)], [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 1, 1]}], DET_CATEGORIES),
     "annotation 5: 'category_id' 3 is not among the categories; fix the id or add the category"),
    (_coco([_image(1, 1)], [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1]}], DET_CATEGORIES),
     "image 1 (img/0.png): annotation 5: 'bbox' must be [x, y, width, height] in pixels"),
    (_coco([_image(1, 1)], [{"id": 5, "image_id": 2, "category_id": 1, "bbox": [1, 1, 1, 1]}], DET_CATEGORIES),
     "annotation 5: 'image_id' 2 is not among the images; fix the id or add the image"),
    (_coco([_image(1, 1)], [{"id": 5, "category_id": 1, "bbox": [1, 1, 1, 1]}], DET_CATEGORIES),
     "annotation 5: 'image_id' None is not among the images"),
    (_coco([{**_image(1, 1), "width": 0}], [], DET_CATEGORIES), "image 1: 'width' is 0, not a positive whole number of pixels"),
    (_coco([{"id": 1, "width": 640, "height": 480}], [], DET_CATEGORIES), "image 1: 'file_name' None is not a relative path"),
    (_coco([{**_image(1, 1), "file_name": "img/9.png", "no_objects": True}], [], DET_CATEGORIES),
     "image 1 (img/9.png): unknown path 'img/9.png'"),
    (_coco([{**_image(1, 1), "no_objects": True}, {**_image(2, 1), "id": 2, "no_objects": True}], [], DET_CATEGORIES),
     "image 2 (img/0.png): item 1 is labeled again (first at image 1 (img/0.png))"),
    (json.dumps({"images": [], "annotations": []}), "no 'categories' list at the top level; is this a COCO annotation file?"),
    (_coco([], [], DET_CATEGORIES), "the file holds no labels"),
])
def test_coco_problems(det, tmp_path, document, message):
    before = store_snapshot(det)
    with pytest.raises(LabelFileError, match=re.escape(message)):
        import_labels(det, write_file(tmp_path, "coco.json", document), image_size=_image_size)
    assert store_snapshot(det) == before


def _kp_categories():
    return [{"id": 1, "name": "face", "keypoints": list(KEYPOINTS), "skeleton": [[1, 2]]}]


def test_coco_keypoints_import(kp, tmp_path):
    text = _coco(
        [_image(1, 4), _image(2, 5), _image(3, 3), _image(4, 1)],
        [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": [50, 40, 2, 40, 30, 1, 0, 0, 0], "num_keypoints": 2},
         {"id": 2, "image_id": 2, "category_id": 1, "keypoints": [0, 0, 0] * 3, "num_keypoints": 0},
         {"id": 3, "image_id": 4, "category_id": 1, "keypoints": [1, 1, 2] * 3, "iscrowd": 1}],
        _kp_categories())
    summary = import_labels(kp, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert summary.added == 1
    assert kp.current_labels() == {4: {"keypoints": {"nose": [0.5, 0.4, 2], "left_eye": [0.4, 0.3, 1]}}}
    assert summary.skipped == ("image 2 (img/4.png): no keypoint labeled",
                               "image 3 (img/2.png): no annotation, left unlabeled",
                               "image 4 (img/0.png): 1 crowd annotation(s) left out",
                               "image 4 (img/0.png): no annotation, left unlabeled")


def test_coco_keypoints_two_figures_in_an_image_are_refused(kp, tmp_path):
    figure = {"image_id": 1, "category_id": 1, "keypoints": [50, 40, 2, 40, 30, 1, 0, 0, 0]}
    text = _coco([_image(1, 4)], [{**figure, "id": 1}, {**figure, "id": 2}], _kp_categories())
    with pytest.raises(LabelFileError, match=re.escape("image 1 (img/3.png): 2 figures with keypoints; a keypoints "
                                                       "project holds one figure per image")):
        import_labels(kp, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert kp.current_labels() == {}


def test_coco_export_of_stored_labels_imports_unchanged(det, tmp_path):
    schema = det.annotation_schema()
    target = {"boxes": [{"label": "dog", "box": [0.0, 0.0, 0.5, 0.25]}, {"label": "cat", "box": [0.25, 0.5, 0.75, 1.0]}]}
    assert schema.canonical(target) == target
    with det.transaction() as db:
        det.add_labels(db, [LabelRecord(1, None, "test", target=target)])
    text = _coco([_image(1, 1)], schema.coco_annotations(target, 1, 640, 480, 1), schema.coco_categories())
    before = store_snapshot(det)
    summary = import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert (summary.added, summary.relabeled, summary.unchanged) == (0, 0, 1)
    assert store_snapshot(det) == before


def test_label_studio_label_exported_as_coco_imports_unchanged(det, tmp_path):
    import_labels(det, _export(tmp_path, [_task(1, 1, [_box(12.3457, 20.98765, 30.0001, 40.4321, "dog"),
                                                      _box(1.23456, 2, 3, 4)])]))
    (stored,) = det.current_labels().values()
    schema = det.annotation_schema()
    text = _coco([_image(1, 1)], schema.coco_annotations(stored, 1, 640, 480, 1), schema.coco_categories())
    before = store_snapshot(det)
    summary = import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert (summary.added, summary.relabeled, summary.unchanged) == (0, 0, 1)
    assert store_snapshot(det) == before


def test_coco_export_of_a_tiny_image_imports_unchanged(det, tmp_path):
    schema = det.annotation_schema()
    target = {"boxes": [{"label": "dog", "box": [0.199119, 0.327708, 0.235226, 0.543307]}]}
    with det.transaction() as db:
        det.add_labels(db, [LabelRecord(5, None, "test", target=target)])
    text = _coco([_image(1, 5)], schema.coco_annotations(target, 1, *SIZES[5], 1), schema.coco_categories())
    summary = import_labels(det, write_file(tmp_path, "coco.json", text), image_size=_image_size)
    assert summary.unchanged == 1


def test_nearly_equal_annotations_agree_and_reimport_is_unchanged(det, tmp_path):
    # two annotators, coordinates 1e-6 of the side apart: one label (the first annotation's)
    first, second = [_box(10, 10, 20, 20, "dog")], [_box(10.0001, 9.9999, 20, 20.0001, "dog")]
    import_labels(det, _export(tmp_path, [_task(1, 1, first, second)], "a.json"))
    assert det.current_labels() == {1: {"boxes": [{"label": "dog", "box": [0.1, 0.1, 0.3, 0.3]}]}}
    before = store_snapshot(det)
    summary = import_labels(det, _export(tmp_path, [_task(1, 1, second)], "b.json"))
    assert summary.unchanged == 1 and store_snapshot(det) == before, "the stored label is kept as it was"
    with pytest.raises(LabelFileError, match=re.escape("task 1: item 1 is labeled with 1 box, the file says otherwise")):
        import_labels(det, _export(tmp_path, [_task(1, 1, [_box(10.01, 10, 20, 20, "dog")])], "c.json"))
    with pytest.raises(LabelFileError, match=re.escape("task 1: its 2 annotations differ (1 box, 1 box)")):
        import_labels(det, _export(tmp_path, [_task(1, 2, first, [_box(10.01, 10, 20, 20, "dog")])], "d.json"))


def test_id_and_path_that_contradict_are_a_problem(det, tmp_path):
    task = _task(1, 1, [_box(10, 10, 10, 10)], by="both")
    task["data"]["path"] = "img/3.png"
    with pytest.raises(LabelFileError, match=re.escape("task 1: id 1 is 'img/0.png', not 'img/3.png'")):
        import_labels(det, _export(tmp_path, [task]))


def test_class_rows_are_refused_by_a_detection_project(det, tmp_path):
    rows = [LabelRow("entry 1", 1, None, "cat")]
    with pytest.raises(LabelFileError, match=re.escape("entry 1: this is a detection project, whose labels are boxes; "
                                                       "the file gives a class")):
        apply_label_rows(det, rows, tmp_path / "hook.json", "0" * 64, "labelstudio")
    assert det.current_labels() == {}


def test_target_rows_are_refused_by_a_classification_project(tmp_path):
    with _store(tmp_path, AnnotationSchema("classification", ("cat", "dog"))) as store:
        rows = [LabelRow("entry 1", 1, None, None, {"boxes": []})]
        with pytest.raises(LabelFileError, match=re.escape("entry 1: this is a classification project, whose labels "
                                                           "are a class; the file gives boxes or keypoints")):
            apply_label_rows(store, rows, tmp_path / "hook.json", "0" * 64, "labelstudio")


def test_box_labels_are_compared_in_nfc(tmp_path):
    with _store(tmp_path, AnnotationSchema("detection", ("caf\u00e9", "dog"))) as store:
        categories = [{"id": 1, "name": "cafe\u0301"}]
        text = _coco([_image(1, 1)], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [64, 48, 64, 48]}], categories)
        import_labels(store, write_file(tmp_path, "coco.json", text), image_size=_image_size)
        assert store.current_labels() == {1: {"boxes": [{"label": "caf\u00e9", "box": [0.1, 0.1, 0.2, 0.2]}]}}


# ------------------------------------------------------------------------------------------- wrong formats


def test_csv_is_refused_for_a_detection_project(det, tmp_path):
    path = write_file(tmp_path, "labels.csv", "id,label\n1,cat\n")
    with pytest.raises(LabelFileError) as caught:
        import_labels(det, path)
    assert caught.value.problems == ["a detection project reads boxes from Label Studio's JSON export or COCO JSON, "
                                     "not .csv; export the Label Studio project as JSON, or give COCO JSON"]
    assert det.current_labels() == {}


def test_csv_is_refused_for_a_keypoints_project(kp, tmp_path):
    with pytest.raises(LabelFileError, match=re.escape("a keypoints project reads keypoints from Label Studio's JSON "
                                                       "export or COCO JSON, not .csv")):
        import_labels(kp, write_file(tmp_path, "labels.csv", "id,label\n1,nose\n"))


def test_json_min_export_is_refused(det, tmp_path):
    entries = [{"image": "x", "learnloss_id": 1, "id": 101, "label": [{"x": 1, "y": 1, "width": 5, "height": 5,
                                                                        "rectanglelabels": ["cat"]}],
                "annotator": 1, "annotation_id": 7, "created_at": "", "updated_at": "", "lead_time": 1.0}]
    with pytest.raises(LabelFileError) as caught:
        import_labels(det, _export(tmp_path, entries))
    (problem,) = caught.value.problems
    assert problem.startswith("this is Label Studio's JSON-MIN export, which drops what a detection project needs")


@pytest.mark.parametrize("document", [
    [{"id": 1, "label": "cat"}, {"path": "img/1.png", "label": "dog"}],
    {"cycle": 0, "items": [{"id": 1, "path": "img/0.png", "label": "cat"}]},
])
def test_class_label_file_is_refused_for_a_detection_project(det, tmp_path, document):
    with pytest.raises(LabelFileError) as caught:
        import_labels(det, _export(tmp_path, document))
    (problem,) = caught.value.problems
    assert problem.startswith("the JSON is neither Label Studio's JSON export (a list of tasks with 'annotations') "
                              "nor COCO")
    assert det.current_labels() == {}


def test_classification_label_studio_export_is_refused_for_a_detection_project(det, tmp_path):
    choice = {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
    with pytest.raises(LabelFileError, match=re.escape("task 1: region 1: a 'choices' result, but a detection project "
                                                       "reads rectanglelabels")):
        import_labels(det, _export(tmp_path, [_task(1, 1, [choice])]))


def test_malformed_json_is_refused(det, tmp_path):
    with pytest.raises(LabelFileError, match=re.escape("line 1: malformed JSON")):
        import_labels(det, write_file(tmp_path, "bad.json", "[{"))


def test_a_classification_project_still_reads_class_labels(tmp_path):
    with _store(tmp_path, AnnotationSchema("classification", ("cat", "dog"))) as store:
        import_labels(store, write_file(tmp_path, "labels.csv", "id,label\n1,cat\n2,dog\n"))
        assert store.current_labels() == {1: "cat", 2: "dog"}
        with pytest.raises(LabelFileError, match="an annotation result is not a single choice"):
            import_labels(store, _export(tmp_path, [_task(1, 3, [_box(10, 10, 10, 10)])]))
