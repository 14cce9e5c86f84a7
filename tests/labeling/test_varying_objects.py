"""Box and keypoint projects whose images hold different numbers of objects (or labeled keypoints), in both splits:
init → query through the command line, and the ML backend's retraining after annotations with more boxes than any
stored label. Every real detection project looks like this; one padding encodes the targets of both splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from annotation_support import CLASSES, KEYPOINTS  # noqa: E402

from learnloss.cli.main import main  # noqa: E402
from learnloss.labeling.backend import LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402

SIZE = 64
TINY_FLAGS = ["--epochs", "1", "--image-size", "32"]


def _images(root: Path, counts: dict[str, list[int]], seed: int = 0) -> list[dict[str, Any]]:
    """Grey PNGs under ``root/<split>``; image ``i`` of a split holds ``counts[split][i]`` bright rectangles. One
    record per image: ``path``, ``split``, ``boxes`` (class, COCO ``[x, y, w, h]``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    records = []
    for split, per_image in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, count in enumerate(per_image):
            pixels = np.zeros((SIZE, SIZE), np.uint8)
            boxes = []
            for k in range(count):
                x, y = (int(v) for v in rng.integers(0, SIZE // 2, 2))
                w, h = (int(v) for v in rng.integers(SIZE // 8, SIZE // 2, 2))
                cls = CLASSES[(i + k) % 2]
                pixels[y:y + h, x:x + w] = 220 if cls == "cat" else 120
                boxes.append((cls, [x, y, w, h]))
            path = f"{split}/{i:03d}.png"
            Image.fromarray(pixels, mode="L").save(root / path)
            records.append({"path": path, "split": split, "boxes": boxes})
    return records


def _coco(records: list[dict[str, Any]], task: str, labeled: set[str]) -> dict[str, Any]:
    """COCO JSON of every record's image, annotating those in ``labeled``: one annotation per box (detection), or
    one figure whose first ``len(boxes)`` keypoints are labeled, at the boxes' corners (keypoints)."""
    images, annotations = [], []
    for n, record in enumerate(records, start=1):
        images.append({"id": n, "file_name": record["path"], "width": SIZE, "height": SIZE})
        if record["path"] not in labeled:
            continue
        if task == "detection":
            for cls, bbox in record["boxes"]:
                annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": CLASSES.index(cls) + 1,
                                    "bbox": bbox, "iscrowd": 0})
        else:
            flat: list[int] = []
            for k, _ in enumerate(KEYPOINTS):
                if k < len(record["boxes"]):
                    x, y, _w, _h = record["boxes"][k][1]
                    flat += [x, y, 2]
                else:
                    flat += [0, 0, 0]
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": 1, "keypoints": flat,
                                "num_keypoints": sum(v > 0 for v in flat[2::3]), "iscrowd": 0})
    categories = ([{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)] if task == "detection" else
                  [{"id": 1, "name": "figure", "keypoints": list(KEYPOINTS)}])
    return {"images": images, "annotations": annotations, "categories": categories}


def _init(base: Path, task: str, counts: dict[str, list[int]], labeled_train: int, label_test: bool) -> Path:
    records = _images(base / "data", counts)
    train = [r["path"] for r in records if r["split"] == "train"][:labeled_train]
    test = [r["path"] for r in records if r["split"] == "test"] if label_test else []
    coco = base / "seed.json"
    coco.write_text(json.dumps(_coco(records, task, set(train) | set(test))))
    names = ["--classes", ",".join(CLASSES)] if task == "detection" else ["--keypoints", ",".join(KEYPOINTS)]
    project = base / "proj"
    assert main(["init", str(project), "--images", str(base / "data"), "--task", task, *names, "--labels", str(coco),
                 *TINY_FLAGS]) == 0
    return project


# a train image with 3 boxes and test images with 1 (the attack: every query failed with "train targets (3, 5) and
# test targets (1, 5) differ in shape"); then the reverse, test images holding more boxes than any train image
TRAIN_MORE = {"train": [3, 1, 2, 1, 0, 2, 1, 1, 2, 1, 1, 1], "test": [1, 1, 1, 1]}
TEST_MORE = {"train": [1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1], "test": [3, 1, 0, 2]}


@pytest.mark.parametrize("task", ["detection", "keypoints"])
@pytest.mark.parametrize("counts", [TRAIN_MORE, TEST_MORE], ids=["train-more", "test-more"])
def test_init_label_and_query_with_varying_objects_in_both_splits(tmp_path, capsys, task, counts):
    project = _init(tmp_path, task, counts, labeled_train=8, label_test=True)
    capsys.readouterr()
    assert main(["query", str(project), "--k", "2", "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err
    with ProjectStore(project) as store:
        assert store.last_cycle()["cycle"] == 0
        labels = store.current_labels()
    if task == "detection":
        assert len({len(label["boxes"]) for label in labels.values()}) >= 3  # 0..3 boxes: really varying
    else:
        assert len({len(label["keypoints"]) for label in labels.values()}) >= 2
    dataset, _ = project_dataset(ProjectStore(project), project_spec(ProjectStore(project)))
    assert dataset.y_train.shape[1:] == dataset.y_test.shape[1:]


def test_a_detection_project_without_test_labels_queries(tmp_path, capsys):
    """No labeled test image: the empty test split takes the pool's padding, not a padding of its own."""
    project = _init(tmp_path, "detection", TRAIN_MORE, labeled_train=8, label_test=False)
    capsys.readouterr()
    assert main(["query", str(project), "--k", "2", "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err


def _box(label: str, x: float, y: float, w: float, h: float, region: str) -> dict[str, Any]:
    """A Label Studio rectangle region as the UI posts it (percent of a 64 × 64 image)."""
    return {"id": region, "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": SIZE,
            "original_height": SIZE, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                               "rectanglelabels": [label]}}


def test_the_backends_retraining_takes_annotations_with_more_boxes_than_any_stored(tmp_path):
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from learnloss.serve.app import create_app

    project = _init(tmp_path, "detection", TRAIN_MORE, labeled_train=8, label_test=True)
    query_project(project, 2, device="cpu")
    backend = LabelStudioBackend(project, ServeConfig(retrain_every=2, query=2, device="cpu"),
                                 ProjectReader(project_spec, project_dataset), query_project)
    assert backend.load()
    client = fastapi_testclient.TestClient(create_app(backend, None), base_url="http://127.0.0.1")
    with ProjectStore(project) as store:
        labels = store.current_labels()
        free = [(item, source) for item, source in store.items("pool") if item not in labels][:2]
    for n, (item, source) in enumerate(free, start=1):
        regions = [_box(CLASSES[k % 2], 5 + 10 * k, 5 + 10 * k, 20, 20, f"r{k}") for k in range(3 + n)]  # 4, 5 boxes
        response = client.post("/webhook", json={
            "action": "ANNOTATION_CREATED", "task": {"id": n, "data": {"learnloss_id": item, "path": source}},
            "annotation": {"id": 100 + n, "result": regions}})
        assert response.status_code == 200, response.text
    backend.wait_for_training(timeout=300)
    assert backend.last_training_error is None
    assert backend.model_version == "learnloss-cycle-1"
    with ProjectStore(project) as store:
        assert max(len(label["boxes"]) for label in store.current_labels().values()) == 5
