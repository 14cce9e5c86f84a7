"""What a labeling project's labels are — a class per image, boxes, or keypoints — and every form they take:
checked on import, stored, turned into training targets, shown to Label Studio and written as COCO JSON.

A project's :class:`AnnotationSchema` names its task and its names: the classes (``classification``; the object
classes of ``detection``) or the keypoints (``keypoints``, in order, with an optional skeleton and the category
the figures belong to, ``person`` by default). A class label is stored as its class; a box or keypoint label as
JSON in the store's ``labels.target``, in coordinates normalised by the image's width and height (``[0, 1]``), so
that a label does not depend on the size the model reads the image at:

* detection: ``{"boxes": [{"label": "cat", "box": [x0, y0, x1, y1]}, ...]}`` — an empty list is an image labeled
  as holding no object of the project's classes;
* keypoints: ``{"keypoints": {"head": [x, y, v], ...}}`` — the labeled keypoints only, with COCO's visibility
  ``v`` (1 labeled but occluded, 2 visible); a keypoint not listed is not labeled (COCO's ``v = 0``).

Coordinates are rounded to 1e-6 of the image side and boxes sorted, so that one label has one stored form
(:meth:`AnnotationSchema.canonical`) and importing the same label twice changes nothing.

Label Studio results (``rectanglelabels`` / ``keypointlabels`` regions, coordinates in percent of the image;
the ``occluded`` choice of the per-region ``visibility`` control marks an occluded keypoint) and COCO JSON
(``bbox`` ``[x, y, width, height]`` and ``keypoints`` ``[x, y, v, ...]`` in pixels) are read and written here;
which file holds what is the importer's business (:mod:`learnloss.project.importer`).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from learnloss.errors import UsageError
from learnloss.project.labelstudio import CONFIG_FROM_NAME, CONFIG_TO_NAME, xml_attribute, label_studio_config

__all__ = [
    "AnnotationSchema",
    "LABEL_CONTROL",
    "PREDICTION_MIN_SCORE",
    "PROJECT_TASKS",
    "VISIBILITY_CONTROL",
]

#: The tasks a labeling project can hold.
PROJECT_TASKS = ("classification", "detection", "keypoints")
#: Names of the controls of the labeling configurations learnloss writes (those of the classification one).
LABEL_CONTROL = CONFIG_FROM_NAME
IMAGE_OBJECT = CONFIG_TO_NAME
#: The per-region choice control of a keypoints configuration: its ``occluded`` choice marks ``v = 1``.
VISIBILITY_CONTROL = "visibility"
OCCLUDED = "occluded"
#: A detection with a lower score is neither stored with a query nor shown as a pre-annotation.
PREDICTION_MIN_SCORE = 0.3
#: A predicted keypoint whose heatmap peak is lower is not shown as a pre-annotation.
KEYPOINT_MIN_CONFIDENCE = 0.1
#: At most this many boxes of an image are stored with a query and pre-annotated.
MAX_PREDICTED_BOXES = 50
#: How far (as a fraction of the image side) a coordinate may fall outside the image and still be taken (then
#: clipped): the rounding of tools that store percent or pixels as floats.
TOLERANCE = 1e-4
_DIGITS = 6
#: Two coordinates closer than this (a fraction of the image side) are the same in two labels of one image.
SAME_WITHIN = 1e-5


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (booleans, text, NaN and infinities are not coordinates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _unit(value: float) -> float:
    """A coordinate inside the tolerance, clipped to ``[0, 1]`` and rounded to the stored precision."""
    return round(min(max(value, 0.0), 1.0), _DIGITS)


def _inside(value: float) -> bool:
    return -TOLERANCE <= value <= 1.0 + TOLERANCE


@dataclass(frozen=True)
class AnnotationSchema:
    """The task of a labeling project and the names its labels use (see the module docstring).

    Attributes:
        task: ``classification``, ``detection`` or ``keypoints``.
        names: the classes (classification, detection) or the keypoints, in order (keypoints).
        skeleton: keypoints only: pairs of keypoint names joined by a line (COCO's ``skeleton``).
        category: keypoints only: what the figures are (COCO's category name).
    """

    task: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[str, str], ...] = ()
    category: str = "person"

    def __post_init__(self) -> None:
        if self.task not in PROJECT_TASKS:
            raise UsageError(f"a project's task is one of {', '.join(PROJECT_TASKS)}, not {self.task!r}")
        least = 2 if self.task == "classification" else 1
        if len(self.names) < least:
            what = "keypoint" if self.task == "keypoints" else "class"
            flag = "--keypoints" if self.task == "keypoints" else "--classes"
            plural = f"{what}{'es' if what == 'class' else 's'}" if least > 1 else what
            raise UsageError(f"a {self.task} project needs at least {least} {plural}; give them with {flag} a,b,c")
        repeated = sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            raise UsageError(f"a project names each {'keypoint' if self.task == 'keypoints' else 'class'} once; "
                             f"{', '.join(repeated)} repeat")
        if self.skeleton and self.task != "keypoints":
            raise UsageError("a skeleton belongs to a keypoints project")
        known = set(self.names)
        for a, b in self.skeleton:
            unknown = [name for name in (a, b) if name not in known]
            if unknown or a == b:
                raise UsageError(f"the skeleton edge {a}-{b} must join two different keypoints of the project "
                                 f"({', '.join(self.names)})")

    # ------------------------------------------------------------------------------------------ stored

    @classmethod
    def from_meta(cls, stored: Any, names: Sequence[str]) -> AnnotationSchema:
        """The schema a project stored (meta ``annotation``), over its stored ``names``; a project made before
        projects had tasks is a classification project."""
        if not isinstance(stored, Mapping):
            return cls("classification", tuple(names))
        skeleton = tuple((str(a), str(b)) for a, b in stored.get("skeleton") or ())
        return cls(str(stored.get("task", "classification")), tuple(names), skeleton,
                   str(stored.get("category") or "person"))

    def to_meta(self) -> dict[str, Any]:
        """The schema as a project stores it (the names are the store's classes)."""
        return {"task": self.task, "skeleton": [list(edge) for edge in self.skeleton], "category": self.category}

    @property
    def classes(self) -> bool:
        """Whether a label is one class (else a JSON target)."""
        return self.task == "classification"

    @property
    def what(self) -> str:
        """What a label of this project holds, for messages."""
        return {"classification": "a class", "detection": "boxes", "keypoints": "keypoints"}[self.task]

    def canonical(self, target: Any) -> Any:
        """The one stored form of a valid ``target``: coordinates rounded, boxes sorted."""
        if self.task == "detection":
            boxes = [{"label": box["label"], "box": [_unit(float(v)) for v in box["box"]]} for box in target["boxes"]]
            return {"boxes": sorted(boxes, key=lambda box: (box["box"], box["label"]))}
        if self.task == "keypoints":
            points = target["keypoints"]
            return {"keypoints": {name: [_unit(float(points[name][0])), _unit(float(points[name][1])),
                                         int(points[name][2])] for name in self.names if name in points}}
        return target

    def same(self, a: Any, b: Any) -> bool:
        """Whether two labels are the same: equal classes, or the same boxes (in stored order) or keypoints with
        every coordinate within :data:`SAME_WITHIN` — a label that went through pixels and back (COCO) is the label
        it was."""
        if self.classes or not isinstance(a, Mapping) or not isinstance(b, Mapping):
            return bool(a == b)
        if self.task == "detection":
            boxes_a, boxes_b = a.get("boxes", []), b.get("boxes", [])
            return len(boxes_a) == len(boxes_b) and all(
                p["label"] == q["label"] and all(abs(u - v) <= SAME_WITHIN for u, v in zip(p["box"], q["box"]))
                for p, q in zip(boxes_a, boxes_b))
        points_a, points_b = a.get("keypoints", {}), b.get("keypoints", {})
        return points_a.keys() == points_b.keys() and all(
            points_a[name][2] == points_b[name][2]
            and all(abs(u - v) <= SAME_WITHIN for u, v in zip(points_a[name][:2], points_b[name][:2]))
            for name in points_a)

    def describe(self, target: Any) -> str:
        """A short account of a target for messages: ``2 boxes``, ``5 keypoints``, or the class."""
        if self.task == "detection":
            count = len(target["boxes"])
            return f"{count} box{'es' if count != 1 else ''}"
        if self.task == "keypoints":
            count = len(target["keypoints"])
            return f"{count} keypoint{'s' if count != 1 else ''}"
        return repr(target)

    # ------------------------------------------------------------------------------------------ checks

    @cached_property
    def _by_nfc(self) -> dict[str, str]:
        """Each name in Unicode NFC (as :func:`learnloss.project.paths.nfc`, whose module imports what imports this
        one) -> the name as registered."""
        return {unicodedata.normalize("NFC", name): name for name in self.names}

    def registered(self, name: Any) -> Any:
        """``name`` as the project registered it when it is one of :attr:`names` once Unicode-normalised (NFC, as
        every name is compared), else ``name`` unchanged."""
        if not isinstance(name, str):
            return name
        return self._by_nfc.get(unicodedata.normalize("NFC", name.strip()), name)

    def box(self, where: str, label: Any, x0: float, y0: float, x1: float, y1: float, problems: list[str]
            ) -> dict[str, Any] | None:
        """A checked box (normalised corners) of class ``label``, or None after adding its problem."""
        label = self.registered(label)
        if not isinstance(label, str) or label not in self.names:
            problems.append(f"{where}: unknown class {label!r}; the classes are {', '.join(self.names)}")
            return None
        if not all(_inside(v) for v in (x0, y0, x1, y1)):
            problems.append(f"{where}: the {label!r} box leaves the image (corners {x0:.4f},{y0:.4f} to {x1:.4f},"
                            f"{y1:.4f} of the image's width and height); draw it inside the image")
            return None
        if _unit(x1) <= _unit(x0) or _unit(y1) <= _unit(y0):
            problems.append(f"{where}: the {label!r} box has no area (width or height 0 or negative); delete it or "
                            "draw it again")
            return None
        return {"label": label, "box": [x0, y0, x1, y1]}

    def point(self, where: str, name: Any, x: float, y: float, v: int, problems: list[str]
              ) -> tuple[str, list[float]] | None:
        """A checked keypoint ``name`` at normalised ``(x, y)`` with visibility ``v`` (1 or 2), or None after
        adding its problem."""
        name = self.registered(name)
        if not isinstance(name, str) or name not in self.names:
            problems.append(f"{where}: unknown keypoint {name!r}; the keypoints are {', '.join(self.names)}")
            return None
        if v not in (1, 2):
            problems.append(f"{where}: keypoint {name!r} has visibility {v!r}; a labeled keypoint is 1 (occluded) or "
                            "2 (visible)")
            return None
        if not (_inside(x) and _inside(y)):
            problems.append(f"{where}: keypoint {name!r} lies outside the image ({x:.4f}, {y:.4f} of its width and "
                            "height); place it inside the image or leave it out")
            return None
        return name, [x, y, v]

    def keypoints(self, where: str, points: Sequence[tuple[str, list[float]]], problems: list[str]
                  ) -> dict[str, Any] | None:
        """The target of one figure's checked ``points``; a keypoint placed twice is a problem."""
        found: dict[str, list[float]] = {}
        for name, value in points:
            if name in found:
                problems.append(f"{where}: keypoint {name!r} is placed twice; keep one")
                return None
            found[name] = value
        return {"keypoints": found}

    def check_stored(self, target: Any, where: str) -> Any:
        """A target read back from a store or a file learnloss wrote, checked; its canonical form.

        Raises:
            UsageError: it is not a target of this schema.
        """
        problems: list[str] = []
        if self.task == "detection" and isinstance(target, Mapping) and isinstance(target.get("boxes"), list):
            boxes = []
            for n, box in enumerate(target["boxes"], 1):
                corners = box.get("box") if isinstance(box, Mapping) else None
                values = [_number(v) for v in corners] if isinstance(corners, list) and len(corners) == 4 else []
                if len(values) != 4 or any(v is None for v in values):
                    problems.append(f"{where}: box {n} is not {{'label': class, 'box': [x0, y0, x1, y1]}}")
                    continue
                x0, y0, x1, y1 = (float(v) for v in values if v is not None)
                checked = self.box(f"{where}: box {n}", box.get("label"), x0, y0, x1, y1, problems)
                boxes.extend([checked] if checked else [])
            if not problems:
                return self.canonical({"boxes": boxes})
        elif self.task == "keypoints" and isinstance(target, Mapping) and isinstance(target.get("keypoints"), Mapping):
            points: list[tuple[str, list[float]]] = []
            for name, value in target["keypoints"].items():
                numbers = [_number(v) for v in value] if isinstance(value, list) and len(value) == 3 else []
                if len(numbers) != 3 or any(v is None for v in numbers):
                    problems.append(f"{where}: keypoint {name!r} is not [x, y, v]")
                    continue
                x, y, v = (float(n) for n in numbers if n is not None)
                point = self.point(where, name, x, y, int(v) if v == int(v) else -1, problems)
                points.extend([point] if point else [])
            if not problems:
                return self.canonical({"keypoints": dict(points)})
        else:
            problems.append(f"{where}: not a {self.task} label")
        raise UsageError("; ".join(problems))

    # ------------------------------------------------------------------------------------- training

    def encode(self, labels: Sequence[Any]) -> torch.Tensor:
        """Training targets of stored labels, in the form the task reads (:class:`~learnloss.data.dataset.Dataset`):
        class indices ``(N,)``; detection rows ``(N, M, 5)`` ``(class, x0, y0, x1, y1)`` with padding rows
        ``(-1, 0, 0, 0, 0)`` up to the most boxes of one image (at least one row); keypoints ``(N, K, 3)``
        ``(x, y, v)`` with ``(0, 0, 0)`` for a keypoint not labeled."""
        index = {name: i for i, name in enumerate(self.names)}
        if self.task == "classification":
            return torch.tensor([index[label] for label in labels], dtype=torch.long)
        if self.task == "detection":
            rows = max([1] + [len(label["boxes"]) for label in labels])
            out = torch.zeros(len(labels), rows, 5)
            out[:, :, 0] = -1
            for n, label in enumerate(labels):
                for m, box in enumerate(label["boxes"]):
                    out[n, m] = torch.tensor([index[box["label"]], *box["box"]])
            return out
        out = torch.zeros(len(labels), len(self.names), 3)
        for n, label in enumerate(labels):
            for name, (x, y, v) in label["keypoints"].items():
                out[n, index[name]] = torch.tensor([x, y, float(v)])
        return out

    def prediction(self, value: Any) -> str:
        """A task's prediction for one item (:meth:`~learnloss.tasks.Task.predict`) as the text a query stores:
        the class name; or JSON of the boxes scoring at least :data:`PREDICTION_MIN_SCORE` (at most
        :data:`MAX_PREDICTED_BOXES`, best first) with class names, or of every keypoint with its confidence."""
        if self.task == "classification":
            return self.names[int(value)]
        if self.task == "detection":
            boxes = [{"label": self.names[int(found["class"])], "box": [_unit(float(v)) for v in found["box"]],
                      "score": round(float(found["score"]), 4)}
                     for found in value if float(found["score"]) >= PREDICTION_MIN_SCORE]
            return json.dumps({"boxes": boxes[:MAX_PREDICTED_BOXES]})
        points = {name: [_unit(float(x)), _unit(float(y)), round(float(c), 4)]
                  for name, (x, y, c) in zip(self.names, value)}
        return json.dumps({"keypoints": points})

    # ---------------------------------------------------------------------------------- Label Studio

    def label_studio_config(self) -> str:
        """The Label Studio labeling configuration of the project: one image (``$image``) and a single choice over
        the classes, rectangles labeled by class, or keypoints labeled by name with a per-region ``occluded``
        choice. Rectangles cannot be rotated (``canRotate="false"``; Label Studio's default lets a labeler turn a
        box, which :meth:`from_label_studio` would refuse)."""
        if self.task == "classification":
            return label_studio_config(self.names)
        head = f'<View>\n  <Image name="{IMAGE_OBJECT}" value="$image" zoom="true"/>\n'
        if self.task == "detection":
            labels = "\n".join(f'    <Label value="{xml_attribute(name)}"/>' for name in self.names)
            body = (f'  <RectangleLabels name="{LABEL_CONTROL}" toName="{IMAGE_OBJECT}" canRotate="false">\n{labels}\n'
                    "  </RectangleLabels>\n")
        else:
            labels = "\n".join(f'    <Label value="{xml_attribute(name)}"/>' for name in self.names)
            body = (f'  <KeyPointLabels name="{LABEL_CONTROL}" toName="{IMAGE_OBJECT}" strokeWidth="2">\n{labels}\n'
                    f'  </KeyPointLabels>\n'
                    f'  <Choices name="{VISIBILITY_CONTROL}" toName="{IMAGE_OBJECT}" perRegion="true" '
                    f'choice="single">\n    <Choice value="{OCCLUDED}"/>\n  </Choices>\n')
        return head + body + "</View>\n"

    def label_studio_results(self, target: Any, prediction: bool = False, prefix: str = "r"
                             ) -> list[dict[str, Any]]:
        """Label Studio results of a stored label, or of a stored ``prediction`` (:meth:`prediction`, decoded): one
        choice, or one region per box or keypoint (ids ``<prefix><n>``), in percent of the image. A prediction's
        score rides along on each region (a box's score, a keypoint's heatmap peak); predicted keypoints below
        :data:`KEYPOINT_MIN_CONFIDENCE` are left out."""
        if self.task == "classification":
            return [{"from_name": LABEL_CONTROL, "to_name": IMAGE_OBJECT, "type": "choices",
                     "value": {"choices": [target]}}]
        results: list[dict[str, Any]] = []
        if self.task == "detection":
            for n, box in enumerate(target["boxes"], 1):
                x0, y0, x1, y1 = (100.0 * v for v in box["box"])
                result: dict[str, Any] = {
                    "id": f"{prefix}{n}", "from_name": LABEL_CONTROL, "to_name": IMAGE_OBJECT,
                    "type": "rectanglelabels",
                    "value": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "rotation": 0,
                              "rectanglelabels": [box["label"]]}}
                if "score" in box:
                    result["score"] = box["score"]
                results.append(result)
            return results
        for n, (name, (x, y, v)) in enumerate(target["keypoints"].items(), 1):
            value = {"x": 100.0 * x, "y": 100.0 * y, "width": 0.75, "keypointlabels": [name]}
            region: dict[str, Any] = {"id": f"{prefix}{n}", "from_name": LABEL_CONTROL, "to_name": IMAGE_OBJECT,
                                      "type": "keypointlabels", "value": value}
            if prediction:  # v is the heatmap's peak
                if v < KEYPOINT_MIN_CONFIDENCE:
                    continue
                region["score"] = v
            results.append(region)
            if not prediction and v == 1:
                results.append({"id": f"{prefix}{n}", "from_name": VISIBILITY_CONTROL, "to_name": IMAGE_OBJECT,
                                "type": "choices", "value": {**value, "choices": [OCCLUDED]}})
        return results

    def from_label_studio(self, results: Sequence[Any], where: str, problems: list[str]) -> Any:
        """The target of one Label Studio annotation's ``results`` (percent coordinates), or None after adding
        its problems. A rotated box, a region with several labels or none, and results of other controls than
        learnloss's configuration are problems. Relations a labeler drew between regions (``type: relation``,
        ``from_id``/``to_id`` and no ``value``: Label Studio offers them in every image project) hold no geometry
        and are ignored."""
        boxes: list[dict[str, Any]] = []
        points: list[tuple[str, list[float]]] = []
        occluded: set[str] = set()
        regions: list[tuple[str, Mapping[str, Any]]] = []
        before = len(problems)
        for n, result in enumerate(results, 1):
            at = f"{where}: region {n}"
            if isinstance(result, Mapping) and result.get("type") == "relation":
                continue
            if not isinstance(result, Mapping) or not isinstance(result.get("value"), Mapping):
                problems.append(f"{at}: a result must be an object with a 'value'")
                continue
            kind, value = result.get("type"), result["value"]
            if kind == "choices" and result.get("from_name") == VISIBILITY_CONTROL and self.task == "keypoints":
                if value.get("choices") == [OCCLUDED]:
                    occluded.add(str(result.get("id")))
                continue
            wanted = "rectanglelabels" if self.task == "detection" else "keypointlabels"
            if kind != wanted:
                problems.append(f"{at}: a {kind!r} result, but a {self.task} project reads {wanted} (the labeling "
                                "config learnloss wrote: exports/labelstudio-config.xml)")
                continue
            labels = value.get(wanted)
            if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
                problems.append(f"{at}: a region needs exactly one label, found {labels!r}")
                continue
            regions.append((at, result))
        for at, result in regions:
            value = result["value"]
            label = value[("rectanglelabels" if self.task == "detection" else "keypointlabels")][0]
            if self.task == "detection":
                numbers = [_number(value.get(key)) for key in ("x", "y", "width", "height")]
                if any(v is None for v in numbers):
                    problems.append(f"{at}: the {label!r} box needs numeric x, y, width and height")
                    continue
                rotation = _number(value.get("rotation", 0))
                if rotation is None or abs(rotation) % 360 > 1e-6:
                    problems.append(f"{at}: the {label!r} box is rotated ({value.get('rotation')}°); learnloss "
                                    "reads axis-aligned boxes: draw it without rotation")
                    continue
                x, y, w, h = (float(v) / 100.0 for v in numbers if v is not None)
                box = self.box(at, label, x, y, x + w, y + h, problems)
                boxes.extend([box] if box else [])
            else:
                x_, y_ = _number(value.get("x")), _number(value.get("y"))
                if x_ is None or y_ is None:
                    problems.append(f"{at}: keypoint {label!r} needs numeric x and y")
                    continue
                point = self.point(at, label, x_ / 100.0, y_ / 100.0,
                                   1 if str(result.get("id")) in occluded else 2, problems)
                points.extend([point] if point else [])
        if len(problems) > before:
            return None
        if self.task == "detection":
            return self.canonical({"boxes": boxes})
        target = self.keypoints(where, points, problems)
        return None if target is None else self.canonical(target)

    # ------------------------------------------------------------------------------------------- COCO

    def coco_categories(self) -> list[dict[str, Any]]:
        """COCO's ``categories``: one per class (ids from 1), or the one category of a keypoints project with its
        ``keypoints`` and 1-based ``skeleton``."""
        if self.task == "keypoints":
            index = {name: i + 1 for i, name in enumerate(self.names)}
            return [{"id": 1, "name": self.category, "supercategory": self.category, "keypoints": list(self.names),
                     "skeleton": [[index[a], index[b]] for a, b in self.skeleton]}]
        return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(self.names)]

    def coco_annotations(self, target: Any, image_id: int, width: int, height: int, first_id: int
                         ) -> list[dict[str, Any]]:
        """COCO ``annotations`` of one image's stored label, in pixels of its ``width`` × ``height``."""
        out: list[dict[str, Any]] = []
        if self.task == "detection":
            category = {name: i + 1 for i, name in enumerate(self.names)}
            for n, box in enumerate(target["boxes"]):
                x0, y0, x1, y1 = box["box"]
                bbox = [round(x0 * width, 6), round(y0 * height, 6), round((x1 - x0) * width, 6),
                        round((y1 - y0) * height, 6)]
                out.append({"id": first_id + n, "image_id": image_id, "category_id": category[box["label"]],
                            "bbox": bbox, "area": round(bbox[2] * bbox[3], 3), "iscrowd": 0})
            return out
        flat: list[float] = []
        xs, ys = [], []
        for name in self.names:
            x, y, v = target["keypoints"].get(name, (0.0, 0.0, 0))
            flat += [round(x * width, 6), round(y * height, 6), int(v)] if v else [0, 0, 0]
            if v:
                xs.append(x * width)
                ys.append(y * height)
        bbox = [round(min(xs), 3), round(min(ys), 3), round(max(xs) - min(xs), 3), round(max(ys) - min(ys), 3)] \
            if xs else [0, 0, 0, 0]
        return [{"id": first_id, "image_id": image_id, "category_id": 1, "keypoints": flat,
                 "num_keypoints": len(xs), "bbox": bbox, "area": round(bbox[2] * bbox[3], 3), "iscrowd": 0}]

    def from_coco(self, annotations: Sequence[Mapping[str, Any]], categories: Mapping[Any, Mapping[str, Any]],
                  width: float, height: float, where: str, problems: list[str]) -> Any:
        """The target of one COCO image's ``annotations`` (pixels of ``width`` × ``height``; ``categories`` by
        id), or None after adding its problems. Crowd annotations are the caller's to leave out."""
        before = len(problems)
        if self.task == "detection":
            boxes = []
            for annotation in annotations:
                at = f"{where}: annotation {annotation.get('id')}"
                category = categories.get(annotation.get("category_id"))
                bbox = annotation.get("bbox")
                numbers = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else []
                if category is None:
                    problems.append(f"{at}: category_id {annotation.get('category_id')!r} is not in 'categories'")
                    continue
                if len(numbers) != 4 or any(v is None for v in numbers):
                    problems.append(f"{at}: 'bbox' must be [x, y, width, height] in pixels")
                    continue
                x, y, w, h = (float(v) for v in numbers if v is not None)
                box = self.box(at, category.get("name"), x / width, y / height, (x + w) / width, (y + h) / height,
                               problems)
                boxes.extend([box] if box else [])
            return None if len(problems) > before else self.canonical({"boxes": boxes})
        if len(annotations) != 1:
            problems.append(f"{where}: {len(annotations)} figures with keypoints; a keypoints project holds one "
                            "figure per image")
            return None
        annotation = annotations[0]
        at = f"{where}: annotation {annotation.get('id')}"
        category = categories.get(annotation.get("category_id"))
        names = category.get("keypoints") if category is not None else None
        flat = annotation.get("keypoints")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            problems.append(f"{at}: its category lists no 'keypoints' names")
            return None
        if not isinstance(flat, list) or len(flat) != 3 * len(names) or any(_number(v) is None for v in flat):
            problems.append(f"{at}: 'keypoints' must be {3 * len(names)} numbers, x, y, v for each of "
                            f"{', '.join(names)}")
            return None
        points = []
        for k, name in enumerate(names):
            x, y, v = (float(n) for n in flat[3 * k:3 * k + 3])
            if v == 0:
                continue
            point = self.point(at, name, x / width, y / height, int(v) if v == int(v) else -1, problems)
            points.extend([point] if point else [])
        target = None if len(problems) > before else self.keypoints(at, points, problems)
        return None if target is None else self.canonical(target)
