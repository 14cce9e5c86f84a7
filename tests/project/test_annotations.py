"""AnnotationSchema: what a detection or keypoints label is, its one stored form, its training targets, and its
Label Studio and COCO forms (each read back to the same stored target)."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET

import pytest
import torch

from annotation_support import ls_occluded, ls_point
from learnloss.errors import UsageError
from learnloss.tasks import build_task
from learnloss.project.annotations import (
    KEYPOINT_MIN_CONFIDENCE,
    MAX_PREDICTED_BOXES,
    PREDICTION_MIN_SCORE,
    AnnotationSchema,
)

DET = AnnotationSchema("detection", ("cat", "dog"))
KP = AnnotationSchema("keypoints", ("head", "left_paw", "tail"), (("head", "tail"), ("head", "left_paw")), "animal")
CLS = AnnotationSchema("classification", ("cat", "dog", "bird"))


def _problems_of(call):
    """Run ``call(problems)``; its result and the problems it added."""
    problems: list[str] = []
    return call(problems), problems


def _ls_box(x, y, w, h, labels=("cat",), rotation=0, ident="a"):
    return {"id": ident, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": list(labels)}}




# ------------------------------------------------------------------------------------------- construction


@pytest.mark.parametrize(("args", "message"), [
    (("segmentation", ("a", "b")), "a project's task is one of classification, detection, keypoints, not 'segmentation'"),
    (("classification", ("a",)), "a classification project needs at least 2 classes; give them with --classes"),
    (("detection", ()), "a detection project needs at least 1 class; give them with --classes"),
    (("keypoints", ()), "a keypoints project needs at least 1 keypoint; give them with --keypoints"),
    (("detection", ("a", "b"), (("a", "b"),)), "a skeleton belongs to a keypoints project"),
    (("keypoints", ("a", "b"), (("a", "x"),)), "the skeleton edge a-x must join two different keypoints of the "
                                               "project (a, b)"),
    (("keypoints", ("a", "b"), (("a", "a"),)), "the skeleton edge a-a must join two different keypoints"),
])
def test_construction_refusals(args, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        AnnotationSchema(*args)


def test_smallest_valid_schemas_are_accepted():
    assert AnnotationSchema("detection", ("cat",)).names == ("cat",)
    assert AnnotationSchema("keypoints", ("nose",)).category == "person"
    assert AnnotationSchema("classification", ("a", "b")).classes


def test_meta_round_trip_and_legacy_store():
    stored = json.loads(json.dumps(KP.to_meta()))  # as the store keeps it
    assert "names" not in stored, "the names are the store's classes table"
    assert AnnotationSchema.from_meta(stored, KP.names) == KP
    assert AnnotationSchema.from_meta(DET.to_meta(), DET.names) == DET
    legacy = AnnotationSchema.from_meta(None, ["a", "b"])
    assert legacy.task == "classification" and legacy.names == ("a", "b")


@pytest.mark.parametrize(("schema", "what"), [(CLS, "a class"), (DET, "boxes"), (KP, "keypoints")])
def test_what_and_classes(schema, what):
    assert schema.what == what
    assert schema.classes == (schema.task == "classification")


def test_describe_counts():
    assert DET.describe({"boxes": []}) == "0 boxes"
    assert DET.describe({"boxes": [{"label": "cat", "box": [0, 0, 1, 1]}]}) == "1 box"
    assert KP.describe({"keypoints": {"head": [0.1, 0.1, 2], "tail": [0.2, 0.2, 1]}}) == "2 keypoints"
    assert KP.describe({"keypoints": {"head": [0.1, 0.1, 2]}}) == "1 keypoint"
    assert CLS.describe("cat") == "'cat'"


# ------------------------------------------------------------------------------------------------ checks


def test_box_inside_the_image_is_taken():
    box, problems = _problems_of(lambda p: DET.box("t", "dog", 0.1, 0.2, 0.3, 0.4, p))
    assert box == {"label": "dog", "box": [0.1, 0.2, 0.3, 0.4]} and problems == []


@pytest.mark.parametrize(("label", "corners", "message"), [
    ("wolf", (0.1, 0.1, 0.2, 0.2), "t: unknown class 'wolf'; the classes are cat, dog"),
    (None, (0.1, 0.1, 0.2, 0.2), "t: unknown class None"),
    ("cat", (-0.01, 0.1, 0.2, 0.2), "t: the 'cat' box leaves the image"),
    ("cat", (0.1, 0.1, 1.001, 0.2), "t: the 'cat' box leaves the image"),
    ("cat", (0.1, 0.1, 0.2, 1.0 + 2e-4), "t: the 'cat' box leaves the image"),
    ("cat", (0.3, 0.1, 0.3, 0.2), "t: the 'cat' box has no area"),
    ("cat", (0.3, 0.1, 0.2, 0.2), "t: the 'cat' box has no area"),
    ("cat", (0.1, 0.5, 0.2, 0.4), "t: the 'cat' box has no area"),
    # both corners within the tolerance beyond the edge: clipped to the same line
    ("cat", (1.00002, 0.1, 1.00005, 0.2), "t: the 'cat' box has no area"),
    # a difference below the stored precision is no area either
    ("cat", (0.1, 0.1, 0.1000001, 0.2), "t: the 'cat' box has no area"),
])
def test_box_refusals(label, corners, message):
    box, problems = _problems_of(lambda p: DET.box("t", label, *corners, p))
    assert box is None
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_box_within_tolerance_is_clipped_in_canonical_form():
    box, problems = _problems_of(lambda p: DET.box("t", "cat", -5e-5, -1e-4, 1.00005, 1.0 + 1e-4, p))
    assert problems == []
    assert DET.canonical({"boxes": [box]}) == {"boxes": [{"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]}]}


def test_point_checks():
    point, problems = _problems_of(lambda p: KP.point("t", "tail", 0.25, 0.75, 1, p))
    assert point == ("tail", [0.25, 0.75, 1]) and problems == []
    _, problems = _problems_of(lambda p: KP.point("t", "ear", 0.25, 0.75, 2, p))
    assert problems == ["t: unknown keypoint 'ear'; the keypoints are head, left_paw, tail"]
    for v in (0, 3, -1):
        point, problems = _problems_of(lambda p: KP.point("t", "head", 0.25, 0.75, v, p))
        assert point is None and problems[0].startswith(f"t: keypoint 'head' has visibility {v}"), problems
    for x, y in ((-0.01, 0.5), (0.5, 1.01), (1.0 + 2e-4, 0.0)):
        point, problems = _problems_of(lambda p: KP.point("t", "head", x, y, 2, p))
        assert point is None and problems[0].startswith("t: keypoint 'head' lies outside the image"), problems
    point, problems = _problems_of(lambda p: KP.point("t", "head", -5e-5, 1.00005, 2, p))
    assert problems == []
    assert KP.canonical({"keypoints": dict([point])}) == {"keypoints": {"head": [0.0, 1.0, 2]}}


def test_keypoint_placed_twice():
    target, problems = _problems_of(lambda p: KP.keypoints("t", [("head", [0.1, 0.1, 2]), ("head", [0.2, 0.2, 2])], p))
    assert target is None and problems == ["t: keypoint 'head' is placed twice; keep one"]


# ------------------------------------------------------------------------------------------ canonical form


def test_canonical_detection_rounds_and_sorts():
    messy = {"boxes": [{"label": "dog", "box": [0.5, 0.5, 0.9, 0.9]},
                       {"label": "cat", "box": [0.12345649, 0.2000004, 0.3, 0.4]},
                       {"label": "cat", "box": [0.5, 0.5, 0.9, 0.9]}]}
    assert DET.canonical(messy) == {"boxes": [
        {"label": "cat", "box": [0.123456, 0.2, 0.3, 0.4]},
        {"label": "cat", "box": [0.5, 0.5, 0.9, 0.9]},
        {"label": "dog", "box": [0.5, 0.5, 0.9, 0.9]},
    ]}


def test_same_label_has_one_canonical_form():
    a = {"boxes": [{"label": "dog", "box": [0.6, 0.1, 0.8, 0.3]}, {"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}]}
    b = {"boxes": [{"label": "cat", "box": [0.1000000001, 0.1, 0.2, 0.2]}, {"label": "dog", "box": [0.6, 0.1, 0.8, 0.3]}]}
    assert DET.canonical(a) == DET.canonical(b)
    assert DET.canonical(DET.canonical(a)) == DET.canonical(a)
    assert json.dumps(DET.canonical(a)) == json.dumps(DET.canonical(b)), "one stored text, too"


def test_canonical_keypoints_orders_by_schema_rounds_and_makes_v_int():
    target = KP.canonical({"keypoints": {"tail": [0.3333333333, 0.5, 1.0], "head": [0.1, 0.9999996, 2]}})
    assert target == {"keypoints": {"head": [0.1, 1.0, 2], "tail": [0.333333, 0.5, 1]}}
    assert list(target["keypoints"]) == ["head", "tail"]
    assert all(isinstance(point[2], int) for point in target["keypoints"].values())


# --------------------------------------------------------------------------------------------- check_stored


def test_check_stored_accepts_canonical_targets():
    det = {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3, 0.4]}]}
    assert DET.check_stored(det, "item 1") == det
    assert DET.check_stored({"boxes": []}, "item 1") == {"boxes": []}
    kp = {"keypoints": {"head": [0.1, 0.2, 2], "tail": [0.5, 0.5, 1]}}
    assert KP.check_stored(kp, "item 1") == kp
    assert KP.check_stored({"keypoints": {}}, "item 1") == {"keypoints": {}}


def test_check_stored_returns_the_canonical_form():
    messy = {"boxes": [{"label": "dog", "box": [0.5, 0.5, 0.6, 0.6]}, {"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}]}
    assert DET.check_stored(messy, "x") == DET.canonical(messy)
    assert KP.check_stored({"keypoints": {"tail": [0.5, 0.5, 1.0], "head": [0.1, 0.1, 2]}}, "x") == \
        {"keypoints": {"head": [0.1, 0.1, 2], "tail": [0.5, 0.5, 1]}}


@pytest.mark.parametrize(("schema", "target", "message"), [
    (DET, None, "item 7: not a detection label"),
    (DET, "cat", "item 7: not a detection label"),
    (DET, {"boxes": {"label": "cat"}}, "item 7: not a detection label"),
    (DET, {"keypoints": {}}, "item 7: not a detection label"),
    (DET, {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3]}]}, "item 7: box 1 is not"),
    (DET, {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3, "0.4"]}]}, "item 7: box 1 is not"),
    (DET, {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3, True]}]}, "item 7: box 1 is not"),
    (DET, {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3, float("nan")]}]}, "item 7: box 1 is not"),
    (DET, {"boxes": ["cat"]}, "item 7: box 1 is not"),
    (DET, {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}, {"label": "wolf", "box": [0.1, 0.1, 0.2, 0.2]}]},
     "item 7: box 2: unknown class 'wolf'"),
    (DET, {"boxes": [{"label": "cat", "box": [0.1, 0.1, 1.5, 0.2]}]}, "item 7: box 1: the 'cat' box leaves the image"),
    (KP, None, "item 7: not a keypoints label"),
    (KP, {"boxes": []}, "item 7: not a keypoints label"),
    (KP, {"keypoints": [["head", 0.1, 0.1, 2]]}, "item 7: not a keypoints label"),
    (KP, {"keypoints": {"head": [0.1, 0.1]}}, "item 7: keypoint 'head' is not [x, y, v]"),
    (KP, {"keypoints": {"head": [0.1, None, 2]}}, "item 7: keypoint 'head' is not [x, y, v]"),
    (KP, {"keypoints": {"ear": [0.1, 0.1, 2]}}, "item 7: unknown keypoint 'ear'"),
    (KP, {"keypoints": {"head": [0.1, 0.1, 0]}}, "item 7: keypoint 'head' has visibility 0"),
    (KP, {"keypoints": {"head": [0.1, 0.1, 1.5]}}, "item 7: keypoint 'head' has visibility -1"),
    (KP, {"keypoints": {"head": [0.1, -0.5, 2]}}, "item 7: keypoint 'head' lies outside the image"),
])
def test_check_stored_refuses_malformed_targets(schema, target, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        schema.check_stored(target, "item 7")


def test_check_stored_lists_every_problem():
    bad = {"boxes": [{"label": "wolf", "box": [0.1, 0.1, 0.2, 0.2]}, {"label": "cat", "box": [0.5, 0.5, 0.5, 0.6]}]}
    with pytest.raises(UsageError) as caught:
        DET.check_stored(bad, "x")
    assert "box 1: unknown class 'wolf'" in str(caught.value) and "box 2: the 'cat' box has no area" in str(caught.value)


# ---------------------------------------------------------------------------------------------- training


def test_encode_classification():
    out = CLS.encode(["dog", "bird", "cat"])
    assert out.dtype == torch.long and out.tolist() == [1, 2, 0]


def test_encode_detection_pads_to_the_most_boxes():
    labels = [
        {"boxes": [{"label": "dog", "box": [0.1, 0.2, 0.3, 0.4]}, {"label": "cat", "box": [0.5, 0.5, 0.75, 1.0]}]},
        {"boxes": []},
        {"boxes": [{"label": "cat", "box": [0.0, 0.0, 0.5, 0.5]}]},
    ]
    out = DET.encode(labels)
    assert out.shape == (3, 2, 5) and out.dtype == torch.float32
    expected = torch.tensor([
        [[1, 0.1, 0.2, 0.3, 0.4], [0, 0.5, 0.5, 0.75, 1.0]],
        [[-1, 0, 0, 0, 0], [-1, 0, 0, 0, 0]],
        [[0, 0.0, 0.0, 0.5, 0.5], [-1, 0, 0, 0, 0]],
    ])
    assert torch.allclose(out, expected)


def test_encode_detection_without_any_box_has_one_padding_row():
    out = DET.encode([{"boxes": []}, {"boxes": []}])
    assert out.shape == (2, 1, 5)
    assert out[:, :, 0].tolist() == [[-1.0], [-1.0]] and out[:, :, 1:].abs().sum() == 0
    assert DET.encode([]).shape == (0, 1, 5)


def test_encode_keypoints():
    labels = [{"keypoints": {"tail": [0.5, 0.25, 1], "head": [0.1, 0.2, 2]}}, {"keypoints": {}}]
    out = KP.encode(labels)
    assert out.shape == (2, 3, 3)
    expected = torch.tensor([[[0.1, 0.2, 2.0], [0, 0, 0], [0.5, 0.25, 1.0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    assert torch.allclose(out, expected)


def test_unknown_targets():
    # a project's unlabeled items get its task's empty targets (ProjectImages.dataset)
    unknown = {schema.task: build_task(schema.task).empty_targets for schema in (CLS, DET, KP)}
    assert unknown["classification"](3, torch.zeros(5, dtype=torch.long)).tolist() == [-1, -1, -1]
    det = unknown["detection"](2, torch.zeros(7, 4, 5))
    assert det.shape == (2, 4, 5) and torch.isnan(det).all()
    kp = unknown["keypoints"](1, torch.zeros(7, 3, 3))
    assert kp.shape == (1, 3, 3) and torch.isnan(kp).all()


# ------------------------------------------------------------------------------------------- predictions


def test_prediction_classification_is_the_class_name():
    assert CLS.prediction(2) == "bird"
    assert CLS.prediction(torch.tensor(1)) == "dog"


def test_prediction_detection_filters_low_scores_and_names_classes():
    found = [
        {"class": 1, "score": 0.91234567, "box": [0.1, 0.2, 0.3, 0.4]},
        {"class": torch.tensor(0), "score": PREDICTION_MIN_SCORE, "box": [-0.01, 0.5, 0.6, 1.2]},
        {"class": 0, "score": PREDICTION_MIN_SCORE - 1e-3, "box": [0.1, 0.1, 0.2, 0.2]},
    ]
    stored = json.loads(DET.prediction(found))
    assert stored == {"boxes": [
        {"label": "dog", "box": [0.1, 0.2, 0.3, 0.4], "score": 0.9123},
        {"label": "cat", "box": [0.0, 0.5, 0.6, 1.0], "score": PREDICTION_MIN_SCORE},  # clipped to the image
    ]}
    assert json.loads(DET.prediction([])) == {"boxes": []}
    assert json.loads(DET.prediction([{"class": 0, "score": 0.1, "box": [0, 0, 1, 1]}])) == {"boxes": []}


def test_prediction_detection_keeps_at_most_the_best_boxes():
    found = [{"class": 0, "score": 0.99 - n / 1000, "box": [0.1, 0.1, 0.2, 0.2]} for n in range(MAX_PREDICTED_BOXES + 10)]
    boxes = json.loads(DET.prediction(found))["boxes"]
    assert len(boxes) == MAX_PREDICTED_BOXES
    assert boxes[0]["score"] == 0.99 and boxes[-1]["score"] == round(0.99 - (MAX_PREDICTED_BOXES - 1) / 1000, 4)


def test_prediction_keypoints_keeps_every_keypoint_with_its_confidence():
    value = torch.tensor([[0.1, 0.2, 0.987654], [1.2, -0.1, 0.05], [0.5, 0.5, 0.5]])
    stored = json.loads(KP.prediction(value))
    assert list(stored["keypoints"]) == ["head", "left_paw", "tail"]
    assert stored["keypoints"]["head"] == pytest.approx([0.1, 0.2, 0.9877])
    assert stored["keypoints"]["left_paw"] == pytest.approx([1.0, 0.0, 0.05])  # clipped into the image
    assert stored["keypoints"]["tail"] == pytest.approx([0.5, 0.5, 0.5])


# ------------------------------------------------------------------------------------------ Label Studio


def _config(schema):
    return ET.fromstring(schema.label_studio_config())


def test_label_studio_config_classification():
    root = _config(CLS)
    assert root.tag == "View"
    (image,) = root.findall("Image")
    assert image.get("name") == "image" and image.get("value") == "$image"
    (choices,) = root.findall("Choices")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("label", "image", "single")
    assert [c.get("value") for c in choices.findall("Choice")] == ["cat", "dog", "bird"]
    assert root.findall("RectangleLabels") == [] and root.findall("KeyPointLabels") == []


def test_label_studio_config_detection():
    schema = AnnotationSchema("detection", ("cat & dog", 'say "hi"', "<b>"))
    root = _config(schema)
    assert root.find("Image").get("zoom") == "true"
    (rects,) = root.findall("RectangleLabels")
    assert (rects.get("name"), rects.get("toName")) == ("label", "image")
    assert [label.get("value") for label in rects.findall("Label")] == ["cat & dog", 'say "hi"', "<b>"]
    assert root.findall("Choices") == [] and root.findall("KeyPointLabels") == []


def test_label_studio_config_keypoints():
    root = _config(KP)
    (points,) = root.findall("KeyPointLabels")
    assert (points.get("name"), points.get("toName")) == ("label", "image")
    assert [label.get("value") for label in points.findall("Label")] == ["head", "left_paw", "tail"]
    (visibility,) = root.findall("Choices")
    assert (visibility.get("name"), visibility.get("toName"), visibility.get("perRegion")) == \
        ("visibility", "image", "true")
    assert [c.get("value") for c in visibility.findall("Choice")] == ["occluded"]


def test_label_studio_results_classification():
    assert CLS.label_studio_results("dog") == [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]


DET_TARGETS = [
    {"boxes": []},
    {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3, 0.4]}]},
    DET.canonical({"boxes": [{"label": "dog", "box": [0.123457, 0.654321, 0.999999, 0.987654]},
                             {"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]},
                             {"label": "cat", "box": [0.333333, 0.1, 0.666667, 0.2]}]}),
]


@pytest.mark.parametrize("target", DET_TARGETS)
def test_label_studio_round_trip_detection(target):
    results = DET.label_studio_results(target)
    assert len(results) == len(target["boxes"])
    assert all(r["type"] == "rectanglelabels" and r["from_name"] == "label" and r["value"]["rotation"] == 0
               for r in results)
    assert len({r["id"] for r in results}) == len(results), "region ids are unique"
    back, problems = _problems_of(lambda p: DET.from_label_studio(json.loads(json.dumps(results)), "task 1", p))
    assert problems == [] and back == target


def test_label_studio_results_detection_are_percent():
    (result,) = DET.label_studio_results({"boxes": [{"label": "dog", "box": [0.1, 0.2, 0.4, 0.8]}]})
    value = result["value"]
    assert value["rectanglelabels"] == ["dog"]
    assert [value["x"], value["y"], value["width"], value["height"]] == pytest.approx([10, 20, 30, 60])


KP_TARGETS = [
    {"keypoints": {"head": [0.1, 0.2, 2], "left_paw": [0.3, 0.4, 1], "tail": [0.987654, 0.012345, 2]}},
    {"keypoints": {"tail": [0.5, 0.5, 1]}},
    {"keypoints": {"head": [0.0, 1.0, 1], "left_paw": [1.0, 0.0, 1]}},
]


@pytest.mark.parametrize("target", KP_TARGETS)
def test_label_studio_round_trip_keypoints(target):
    results = KP.label_studio_results(target)
    occluded = sorted(name for name, (_, _, v) in target["keypoints"].items() if v == 1)
    regions = [r for r in results if r["type"] == "keypointlabels"]
    choices = [r for r in results if r["type"] == "choices"]
    assert len(regions) == len(target["keypoints"])
    assert all(c["from_name"] == "visibility" and c["value"]["choices"] == ["occluded"] for c in choices)
    by_id = {r["id"]: r["value"]["keypointlabels"][0] for r in regions}
    assert sorted(by_id[c["id"]] for c in choices) == occluded, "the occluded choice rides on its keypoint's region"
    back, problems = _problems_of(lambda p: KP.from_label_studio(json.loads(json.dumps(results)), "task 1", p))
    assert problems == [] and back == target


def test_from_label_studio_occluded_choice_may_come_first():
    results = [ls_occluded("b"), ls_point(10, 20, "head", "a"), ls_point(30, 40, "tail", "b")]
    back, problems = _problems_of(lambda p: KP.from_label_studio(results, "t", p))
    assert problems == [] and back == {"keypoints": {"head": [0.1, 0.2, 2], "tail": [0.3, 0.4, 1]}}


def test_from_label_studio_visibility_without_occluded_is_visible():
    results = [ls_point(10, 20, "head", "a"), {**ls_occluded("a"), "value": {"choices": []}}]
    back, problems = _problems_of(lambda p: KP.from_label_studio(results, "t", p))
    assert problems == [] and back == {"keypoints": {"head": [0.1, 0.2, 2]}}


def test_label_studio_prediction_results_carry_scores():
    predicted = json.loads(DET.prediction([{"class": 1, "score": 0.8, "box": [0.1, 0.2, 0.3, 0.4]},
                                           {"class": 0, "score": 0.5, "box": [0.5, 0.5, 0.6, 0.6]}]))
    results = DET.label_studio_results(predicted, prediction=True, prefix="p")
    assert [(r["id"], r["value"]["rectanglelabels"], r["score"]) for r in results] == \
        [("p1", ["dog"], 0.8), ("p2", ["cat"], 0.5)]


def test_label_studio_keypoint_predictions_drop_low_confidence():
    predicted = json.loads(KP.prediction(torch.tensor([[0.1, 0.2, 0.9], [0.3, 0.4, KEYPOINT_MIN_CONFIDENCE / 2],
                                                       [0.5, 0.6, KEYPOINT_MIN_CONFIDENCE]])))
    results = KP.label_studio_results(predicted, prediction=True)
    assert all(r["type"] == "keypointlabels" for r in results), "a prediction has no visibility choices"
    assert [(r["value"]["keypointlabels"], r["score"]) for r in results] == \
        [(["head"], pytest.approx(0.9)), (["tail"], pytest.approx(KEYPOINT_MIN_CONFIDENCE))]
    assert [r["value"]["x"] for r in results] == pytest.approx([10, 50])
    assert len({r["id"] for r in results}) == 2


def test_from_label_studio_tolerance_clips_and_beyond_is_refused():
    inside, problems = _problems_of(lambda p: DET.from_label_studio([_ls_box(-0.005, 0, 100.005, 100)], "t", p))
    assert problems == [] and inside == {"boxes": [{"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]}]}
    outside, problems = _problems_of(lambda p: DET.from_label_studio([_ls_box(-0.05, 0, 50, 50)], "t", p))
    assert outside is None and problems[0].startswith("t: region 1: the 'cat' box leaves the image")


def test_from_label_studio_full_turn_is_not_rotated():
    back, problems = _problems_of(lambda p: DET.from_label_studio([_ls_box(10, 10, 20, 20, rotation=360)], "t", p))
    assert problems == [] and back == {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.3, 0.3]}]}


@pytest.mark.parametrize(("schema", "results", "message"), [
    (DET, [_ls_box(10, 10, 20, 20, rotation=30)], "t: region 1: the 'cat' box is rotated (30°)"),
    (DET, [_ls_box(10, 10, 20, 20, rotation=-90)], "t: region 1: the 'cat' box is rotated (-90°)"),
    (DET, [_ls_box(10, 10, 20, 20, labels=("cat", "dog"))],
     "t: region 1: a region needs exactly one label, found ['cat', 'dog']"),
    (DET, [_ls_box(10, 10, 20, 20, labels=())], "t: region 1: a region needs exactly one label, found []"),
    (DET, [_ls_box(10, 10, 20, 20, labels=("wolf",))], "t: region 1: unknown class 'wolf'"),
    (DET, [_ls_box(10, 10, 0, 20)], "t: region 1: the 'cat' box has no area"),
    (DET, [_ls_box(10, "10", 20, 20)], "t: region 1: the 'cat' box needs numeric x, y, width and height"),
    (DET, [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}],
     "t: region 1: a 'choices' result, but a detection project reads rectanglelabels"),
    (DET, [ls_point(10, 10, "cat", "a")], "t: region 1: a 'keypointlabels' result, but a detection project reads "
                                           "rectanglelabels"),
    (DET, [ls_occluded("a")], "t: region 1: a 'choices' result, but a detection project"),
    (DET, ["cat"], "t: region 1: a result must be an object with a 'value'"),
    (DET, [{"type": "rectanglelabels"}], "t: region 1: a result must be an object with a 'value'"),
    (KP, [_ls_box(10, 10, 20, 20)], "t: region 1: a 'rectanglelabels' result, but a keypoints project reads "
                                    "keypointlabels"),
    (KP, [ls_point(10, 10, "head", "a"), ls_point(20, 20, "head", "b")], "t: keypoint 'head' is placed twice"),
    (KP, [ls_point(10, 10, "ear", "a")], "t: region 1: unknown keypoint 'ear'"),
    (KP, [ls_point(10, 101, "head", "a")], "t: region 1: keypoint 'head' lies outside the image"),
    (KP, [ls_point(None, 10, "head", "a")], "t: region 1: keypoint 'head' needs numeric x and y"),
    (KP, [{**ls_point(10, 10, "head", "a"), "value": {"x": 10, "y": 10, "keypointlabels": ["head", "tail"]}}],
     "t: region 1: a region needs exactly one label"),
])
def test_from_label_studio_problems(schema, results, message):
    target, problems = _problems_of(lambda p: schema.from_label_studio(results, "t", p))
    assert target is None
    assert any(problem.startswith(message) for problem in problems), problems


def test_from_label_studio_reports_every_bad_region():
    results = [_ls_box(10, 10, 20, 20, rotation=10), _ls_box(10, 10, 20, 20), _ls_box(1, 1, 2, 2, labels=("wolf",))]
    target, problems = _problems_of(lambda p: DET.from_label_studio(results, "task 4", p))
    assert target is None and len(problems) == 2
    assert problems[0].startswith("task 4: region 1:") and problems[1].startswith("task 4: region 3:")


def test_from_label_studio_keeps_earlier_problems_apart():
    problems = ["an earlier task's problem"]
    assert DET.from_label_studio([_ls_box(10, 10, 20, 20)], "t", problems) == \
        {"boxes": [{"label": "cat", "box": [0.1, 0.1, 0.3, 0.3]}]}
    assert KP.from_label_studio([ls_point(10, 10, "head", "a")], "t", problems) == \
        {"keypoints": {"head": [0.1, 0.1, 2]}}
    assert problems == ["an earlier task's problem"]


def test_from_label_studio_empty_results():
    assert DET.from_label_studio([], "t", []) == {"boxes": []}
    assert KP.from_label_studio([], "t", []) == {"keypoints": {}}


# ------------------------------------------------------------------------------------------------- COCO


def _by_id(schema):
    return {category["id"]: category for category in schema.coco_categories()}


def test_coco_categories():
    assert DET.coco_categories() == [{"id": 1, "name": "cat", "supercategory": "object"},
                                     {"id": 2, "name": "dog", "supercategory": "object"}]
    assert KP.coco_categories() == [{"id": 1, "name": "animal", "supercategory": "animal",
                                     "keypoints": ["head", "left_paw", "tail"], "skeleton": [[1, 3], [1, 2]]}]


def test_coco_annotations_detection_in_pixels():
    target = {"boxes": [{"label": "cat", "box": [0.25, 0.5, 0.75, 1.0]}, {"label": "dog", "box": [0.0, 0.0, 0.5, 0.25]}]}
    out = DET.coco_annotations(target, image_id=7, width=640, height=480, first_id=10)
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in out] == [
        (10, 7, 1, [160.0, 240.0, 320.0, 240.0], 76800.0, 0),
        (11, 7, 2, [0.0, 0.0, 320.0, 120.0], 38400.0, 0),
    ]


def test_coco_annotations_keypoints_in_pixels():
    target = {"keypoints": {"head": [0.25, 0.5, 2], "tail": [0.75, 0.25, 1]}}
    (out,) = KP.coco_annotations(target, image_id=3, width=200, height=100, first_id=5)
    assert (out["id"], out["image_id"], out["category_id"]) == (5, 3, 1)
    assert out["keypoints"] == [50.0, 50.0, 2, 0, 0, 0, 150.0, 25.0, 1]
    assert out["num_keypoints"] == 2
    assert out["bbox"] == [50.0, 25.0, 100.0, 25.0]


@pytest.mark.parametrize(("target", "size"), [
    ({"boxes": []}, (640, 480)),
    ({"boxes": [{"label": "cat", "box": [0.25, 0.5, 0.75, 1.0]}, {"label": "dog", "box": [0.0, 0.0, 0.5, 0.25]}]},
     (640, 480)),
    ({"boxes": [{"label": "dog", "box": [0.1, 0.2, 0.3, 0.4]}]}, (1000, 500)),
])
def test_coco_round_trip_detection(target, size):
    annotations = json.loads(json.dumps(DET.coco_annotations(target, 1, *size, first_id=1)))
    back, problems = _problems_of(lambda p: DET.from_coco(annotations, _by_id(DET), *size, "image 1", p))
    assert problems == [] and back == DET.canonical(target)


@pytest.mark.parametrize("target", [
    {"keypoints": {"head": [0.25, 0.5, 2], "tail": [0.75, 0.25, 1]}},
    {"keypoints": {"head": [0.0, 0.0, 1], "left_paw": [1.0, 1.0, 2], "tail": [0.5, 0.5, 2]}},
])
def test_coco_round_trip_keypoints(target):
    annotations = json.loads(json.dumps(KP.coco_annotations(target, 1, 200, 100, first_id=1)))
    back, problems = _problems_of(lambda p: KP.from_coco(annotations, _by_id(KP), 200, 100, "image 1", p))
    assert problems == [] and back == target


ODD_BOXES = DET.canonical({"boxes": [
    {"label": "cat", "box": [0.123457, 0.2, 0.5, 0.6]},
    {"label": "dog", "box": [0.199119, 0.327708, 0.235226, 0.543307]},
    {"label": "dog", "box": [0.255637, 0.202467, 0.579156, 0.333792]},
    {"label": "cat", "box": [0.409005, 0.404732, 0.79342, 0.600829]},
]})
ODD_POINTS = {"keypoints": {"head": [0.123457, 0.987654, 2], "left_paw": [0.000001, 0.999999, 1],
                            "tail": [0.409005, 0.600829, 2]}}


@pytest.mark.parametrize("size", [(100, 100), (200, 150), (333, 77), (640, 480), (4000, 3000)])
def test_coco_round_trip_is_the_same_label(size):
    back = DET.from_coco(DET.coco_annotations(ODD_BOXES, 1, *size, 1), _by_id(DET), *size, "image 1", [])
    assert DET.same(back, ODD_BOXES) and DET.same(ODD_BOXES, back)
    points = KP.from_coco(KP.coco_annotations(ODD_POINTS, 1, *size, 1), _by_id(KP), *size, "image 1", [])
    assert KP.same(points, ODD_POINTS)


@pytest.mark.parametrize("size", [(8, 8), (5, 5)])
def test_coco_round_trip_is_the_same_label_on_tiny_images(size):
    back = DET.from_coco(DET.coco_annotations(ODD_BOXES, 1, *size, 1), _by_id(DET), *size, "image 1", [])
    assert DET.same(back, ODD_BOXES)


def test_same():
    assert CLS.same("cat", "cat") and not CLS.same("cat", "dog")
    box = {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.3, 0.4]}]}
    near = {"boxes": [{"label": "cat", "box": [0.100009, 0.199991, 0.3, 0.400009]}]}
    far = {"boxes": [{"label": "cat", "box": [0.1, 0.2, 0.30002, 0.4]}]}
    other = {"boxes": [{"label": "dog", "box": [0.1, 0.2, 0.3, 0.4]}]}
    assert DET.same(box, near) and DET.same(near, box)
    assert not DET.same(box, far) and not DET.same(box, other)
    assert not DET.same(box, {"boxes": []}) and not DET.same({"boxes": []}, box)
    assert not DET.same(box, {"boxes": box["boxes"] * 2})
    assert DET.same({"boxes": []}, {"boxes": []})
    point = {"keypoints": {"head": [0.5, 0.5, 2], "tail": [0.1, 0.1, 1]}}
    assert KP.same(point, {"keypoints": {"tail": [0.100005, 0.1, 1], "head": [0.5, 0.499995, 2]}})
    assert not KP.same(point, {"keypoints": {"head": [0.5, 0.5, 2], "tail": [0.1, 0.1, 2]}}), "visibility differs"
    assert not KP.same(point, {"keypoints": {"head": [0.5, 0.5, 2]}})
    assert not KP.same({"keypoints": {"head": [0.5, 0.5, 2]}}, point)
    assert not KP.same(point, {"keypoints": {"head": [0.5, 0.5, 2], "tail": [0.1, 0.10002, 1]}})


def test_from_coco_reads_categories_by_name_and_keypoints_by_name():
    categories = {7: {"id": 7, "name": "dog"}, 3: {"id": 3, "name": "cat"}}
    annotations = [{"id": 1, "category_id": 7, "bbox": [10, 20, 30, 40]}, {"id": 2, "category_id": 3, "bbox": [0, 0, 100, 100]}]
    assert DET.from_coco(annotations, categories, 100, 100, "i", []) == {"boxes": [
        {"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]}, {"label": "dog", "box": [0.1, 0.2, 0.4, 0.6]}]}
    # another tool's order of the keypoints, and an unlabeled one (v = 0, any coordinates)
    category = {1: {"id": 1, "name": "x", "keypoints": ["tail", "head", "left_paw"]}}
    figure = [{"id": 1, "category_id": 1, "keypoints": [50, 50, 1, 10, 20, 2, 99, 99, 0]}]
    assert KP.from_coco(figure, category, 100, 100, "i", []) == \
        {"keypoints": {"head": [0.1, 0.2, 2], "tail": [0.5, 0.5, 1]}}


@pytest.mark.parametrize(("schema", "annotations", "categories", "message"), [
    (DET, [{"id": 4, "category_id": 9, "bbox": [0, 0, 10, 10]}], None,
     "image 1: annotation 4: category_id 9 is not in 'categories'"),
    (DET, [{"id": 4, "category_id": 1, "bbox": [0, 0, 10]}], None,
     "image 1: annotation 4: 'bbox' must be [x, y, width, height] in pixels"),
    (DET, [{"id": 4, "category_id": 1, "bbox": "0 0 10 10"}], None, "image 1: annotation 4: 'bbox' must be"),
    (DET, [{"id": 4, "category_id": 1, "bbox": [0, 0, 10, None]}], None, "image 1: annotation 4: 'bbox' must be"),
    (DET, [{"id": 4, "category_id": 1}], None, "image 1: annotation 4: 'bbox' must be"),
    (DET, [{"id": 4, "category_id": 1, "bbox": [600, 0, 100, 10]}], None,
     "image 1: annotation 4: the 'cat' box leaves the image"),
    (DET, [{"id": 4, "category_id": 1, "bbox": [10, 10, 0, 10]}], None, "image 1: annotation 4: the 'cat' box has no area"),
    (DET, [{"id": 4, "category_id": 1, "bbox": [0, 0, 10, 10]}], {1: {"id": 1, "name": "wolf"}},
     "image 1: annotation 4: unknown class 'wolf'"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [1, 1, 2] * 3}, {"id": 2, "category_id": 1, "keypoints": [1, 1, 2] * 3}],
     None, "image 1: 2 figures with keypoints; a keypoints project holds one figure per image"),
    (KP, [{"id": 1, "category_id": 5, "keypoints": [1, 1, 2] * 3}], None,
     "image 1: annotation 1: its category lists no 'keypoints' names"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [1, 1, 2] * 2}], None,
     "image 1: annotation 1: 'keypoints' must be 9 numbers, x, y, v for each of head, left_paw, tail"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [1, 1, 2, 1, 1, 2, 1, "1", 2]}], None,
     "image 1: annotation 1: 'keypoints' must be 9 numbers"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [1, 1, 2, 1, 1, 3, 0, 0, 0]}], None,
     "image 1: annotation 1: keypoint 'left_paw' has visibility 3"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [700, 1, 2, 0, 0, 0, 0, 0, 0]}], None,
     "image 1: annotation 1: keypoint 'head' lies outside the image"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [1, 1, 2, 1, 1, 2]}], {1: {"id": 1, "keypoints": ["head", "head"]}},
     "image 1: annotation 1: keypoint 'head' is placed twice"),
    (KP, [{"id": 1, "category_id": 1, "keypoints": [1, 1, 2]}], {1: {"id": 1, "keypoints": ["ear"]}},
     "image 1: annotation 1: unknown keypoint 'ear'"),
])
def test_from_coco_problems(schema, annotations, categories, message):
    target, problems = _problems_of(
        lambda p: schema.from_coco(annotations, categories or _by_id(schema), 640, 480, "image 1", p))
    assert target is None
    assert any(problem.startswith(message) for problem in problems), problems


def test_from_coco_keypoints_without_figure_is_a_problem():
    target, problems = _problems_of(lambda p: KP.from_coco([], _by_id(KP), 640, 480, "image 1", p))
    assert target is None and problems == ["image 1: 0 figures with keypoints; a keypoints project holds one figure "
                                           "per image"]


def test_from_coco_detection_without_annotations_is_an_empty_image():
    assert DET.from_coco([], _by_id(DET), 640, 480, "image 1", []) == {"boxes": []}


def test_from_coco_pixel_tolerance():
    # 0.05 px beyond a 1000 px side is within the tolerance (clipped); 0.5 px is not
    inside, problems = _problems_of(lambda p: DET.from_coco(
        [{"id": 1, "category_id": 2, "bbox": [-0.05, 0, 1000.1, 500]}], _by_id(DET), 1000, 500, "i", p))
    assert problems == [] and inside == {"boxes": [{"label": "dog", "box": [0.0, 0.0, 1.0, 1.0]}]}
    outside, problems = _problems_of(lambda p: DET.from_coco(
        [{"id": 1, "category_id": 2, "bbox": [-0.5, 0, 100, 100]}], _by_id(DET), 1000, 500, "i", p))
    assert outside is None and "leaves the image" in problems[0]


def test_coco_and_label_studio_agree_on_one_label():
    target = {"boxes": [{"label": "dog", "box": [0.25, 0.125, 0.5, 0.75]}]}
    via_studio = DET.from_label_studio(DET.label_studio_results(target), "t", [])
    via_coco = DET.from_coco(DET.coco_annotations(target, 1, 800, 600, 1), _by_id(DET), 800, 600, "i", [])
    assert via_studio == via_coco == target
    assert not math.isnan(DET.encode([via_coco]).sum().item())


def test_a_name_given_twice_is_refused():
    with pytest.raises(UsageError, match="once; head repeat"):
        AnnotationSchema("keypoints", ("head", "neck", "head"))
