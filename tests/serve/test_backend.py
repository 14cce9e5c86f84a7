"""The ML backend's protocol, in process (FastAPI's test client over the real application, a real project store):
what it answers, what it refuses, and that a refused annotation writes nothing."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labelstudio"))

from annotation_support import CLASSES as BOX_CLASSES  # noqa: E402
from annotation_support import TINY, box_images, seed_paths, write_coco  # noqa: E402
from lsclient import CLASSES, make_images, trained_photos_project  # noqa: E402
from tests_support import store_snapshot  # noqa: E402

from learnloss.cli.main import main  # noqa: E402
from learnloss.errors import UsageError  # noqa: E402
from learnloss.labeling.backend import UNTRAINED, BackendError, LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import init_project, project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.labelstudio import label_studio_config  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402
from learnloss.serve.app import check_binding, create_app  # noqa: E402

fastapi_testclient = pytest.importorskip("fastapi.testclient")

TOKEN = "a-token-of-enough-length-42"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    project, truth = trained_photos_project(base)
    return project, truth


@pytest.fixture
def project(trained, tmp_path):
    import shutil

    copy = tmp_path / "project"
    shutil.copytree(trained[0], copy)
    return copy, trained[1]


def _backend(project: Path, **settings) -> LabelStudioBackend:
    return LabelStudioBackend(project, ServeConfig(**settings), ProjectReader(project_spec, project_dataset),
                              query_project)


def _client(backend, token=None):
    # the server answers only to its loopback names (tests/serve/test_http_limits.py), not TestClient's "testserver"
    return fastapi_testclient.TestClient(create_app(backend, token), base_url="http://127.0.0.1")


def _items(project: Path) -> dict[str, int]:
    with ProjectStore(project) as store:
        return {source: item for item, source in store.items()}


def _task(item: int, path: str, task_id: int = 1) -> dict:
    return {"id": task_id, "data": {"image": f"/data/local-files/?d=photos/{path}", "learnloss_id": item, "path": path}}


def _annotation(choice: str | None, annotation_id: int = 7, cancelled: bool = False) -> dict:
    result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    return {"id": annotation_id, "result": result, "was_cancelled": cancelled}


def test_health_setup_and_predict_with_scores(project):
    path, truth = project
    backend = _backend(path)
    assert backend.load()
    client = _client(backend)
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"] == "learnloss-cycle-0"
    assert client.post("/setup", json={"schema": label_studio_config(CLASSES)}).json() == {
        "model_version": "learnloss-cycle-0"}
    items = _items(path)
    names = sorted(items)[:4]
    tasks = [_task(items[n], n, i) for i, n in enumerate(names)]
    # a task made by a storage sync names its item by URL only; one names nothing learnloss knows
    tasks.append({"id": 98, "data": {"$undefined$": "/data/local-files/?d=photos/" + names[0].replace(" ", "%20")}})
    tasks.append({"id": 99, "data": {"image": "/data/local-files/?d=elsewhere/x.png"}})
    answer = client.post("/predict", json={"tasks": tasks, "label_config": label_studio_config(CLASSES)}).json()
    results = answer["results"]
    assert len(results) == len(tasks) and answer["model_version"] == "learnloss-cycle-0"
    for entry in results[:5]:
        assert entry["model_version"] == "learnloss-cycle-0" and isinstance(entry["score"], float)
        (result,) = entry["result"]
        assert result["from_name"] == "label" and result["to_name"] == "image" and result["type"] == "choices"
        assert result["value"]["choices"][0] in CLASSES
    # the same item, named by id and by URL, is decoded and scored once: both tasks carry that one prediction, so
    # equality is exact by construction (two scorings could differ in the last bits: another batch position, another
    # CPU's kernels); in process, the very same score object
    assert results[4] == results[0]
    direct = backend.predict({"tasks": tasks})["results"]
    assert direct[4]["score"] is direct[0]["score"] and direct[4]["result"] == direct[0]["result"]
    assert results[5]["result"] == [] and "score" not in results[5]
    # the score is the learning-loss strategy's: the LPM's predicted loss, as the query recorded it. The query scored
    # the pool in other batches (other sizes, other positions), so float32 sums ran in another order: a relative
    # 1e-4 (hundreds of float32 ulps) covers that on any CPU and thread count, and still tells another model or
    # another score apart
    with ProjectStore(path) as store:
        recorded = {item: score for item, _, _, score, _, _ in store.query_items(0)}
    for task, entry in zip(tasks[:4], results[:4]):
        if task["data"]["learnloss_id"] in recorded:
            assert entry["score"] == pytest.approx(recorded[task["data"]["learnloss_id"]], rel=1e-4, abs=1e-5)


def test_setup_refuses_a_configuration_with_other_classes(project):
    client = _client(_backend(project[0]))
    response = client.post("/setup", json={"schema": label_studio_config(["red", "green", "purple"])})
    assert response.status_code == 400
    assert "missing blue" in response.json()["error"] and "unknown purple" in response.json()["error"]
    assert client.post("/setup", json={"schema": "<View><Image"}).status_code == 400


def test_annotation_events_store_labels_and_refuse_bad_ones_whole(project):
    path, truth = project
    backend = _backend(path, retrain_every=0)
    client = _client(backend)
    items = _items(path)
    with ProjectStore(path) as store:
        before = store.current_labels()
    free = [n for n in sorted(items) if items[n] not in before]
    good, other, cancelled = free[0], free[1], free[2]
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "task": _task(items[good], good),
                                           "annotation": _annotation(truth[good])})
    assert answer.status_code == 200 and answer.json()["added"] == 1
    # a batch event with one bad annotation (unknown class) is refused whole: the good one is not written either
    answer = client.post("/webhook", json={
        "action": "ANNOTATIONS_CREATED",
        "task": [_task(items[other], other, 2), _task(items[cancelled], cancelled, 3)],
        "annotation": [_annotation(truth[other], 8), _annotation("purple", 9)]})
    assert answer.status_code == 422 and "unknown class 'purple'" in answer.json()["error"]
    with ProjectStore(path) as store:
        labels = store.current_labels()
    assert labels == {**before, items[good]: truth[good]}
    # a skipped (cancelled) task is reported, not stored; an unknown item refuses
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "task": _task(items[cancelled], cancelled),
                                           "annotation": _annotation(None, 10, cancelled=True)}).json()
    assert answer["added"] == 0 and "cancelled" in answer["skipped"][0]
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "task": _task(999_999, "nope.png"),
                                           "annotation": _annotation("red", 11)})
    assert answer.status_code == 422 and "999999" in answer.json()["error"]
    # a new annotation may not silently change a label; an updated one relabels (the history keeps the old one)
    wrong = next(c for c in CLASSES if c != truth[good])
    event = {"task": _task(items[good], good), "annotation": _annotation(wrong, 12)}
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED", **event}).status_code == 422
    answer = client.post("/webhook", json={"action": "ANNOTATION_UPDATED", **event}).json()
    assert answer["relabeled"] == 1
    with ProjectStore(path) as store:
        assert store.current_labels()[items[good]] == wrong
        history = [h for h in store.label_history() if h["item_id"] == items[good]]
    assert [h["label"] for h in history] == [truth[good], wrong]
    # the same event delivered twice changes nothing; deletions keep the label; unknown actions are ignored
    assert client.post("/webhook", json={"action": "ANNOTATION_UPDATED", **event}).json()["unchanged"] == 1
    assert client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 12}]}).json() == {
        "status": "kept"}
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).json()["status"] == "ignored"
    assert client.post("/webhook", content=b"not json", headers={"content-type": "application/json"}).status_code \
        == 422


def test_enough_new_labels_retrain_in_the_background_and_bump_the_version(project):
    path, truth = project
    backend = _backend(path, retrain_every=2, query=2)
    assert backend.load() and backend.model_version == "learnloss-cycle-0"
    client = _client(backend)
    items = _items(path)
    with ProjectStore(path) as store:
        labeled = store.current_labels()
    free = [n for n in sorted(items) if items[n] not in labeled][:2]
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "task": _task(items[free[0]], free[0]),
                                  "annotation": _annotation(truth[free[0]], 1)})
    assert not backend.training  # one label: below the trigger
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "task": _task(items[free[1]], free[1]),
                                  "annotation": _annotation(truth[free[1]], 2)})
    backend.wait_for_training(timeout=300)
    assert backend.last_training_error is None
    assert backend.model_version == "learnloss-cycle-1"
    with ProjectStore(path) as store:
        cycle = store.last_cycle()
    assert cycle["cycle"] == 1 and cycle["metrics"]["n_labeled"] == len(labeled) + 2


def test_without_a_trained_model_predict_answers_503_and_training_starts(tmp_path):
    images = tmp_path / "documents" / "photos"
    truth = make_images(images, per_class=3)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in list(truth.items())[::3]))
    project = tmp_path / "project"
    assert main(["init", str(project), "--images", str(images), "--classes", ",".join(CLASSES), "--labels",
                 str(labels), "--epochs", "1", "--image-size", "16"]) == 0
    backend = _backend(project, query=2)
    assert not backend.load() and backend.model_version == UNTRAINED
    response = _client(backend).post("/predict", json={"tasks": [_task(1, "img 00.png")]})
    assert response.status_code == 503 and "training" in response.json()["error"]
    backend.wait_for_training(timeout=300)
    assert backend.model_version == "learnloss-cycle-0"


def test_a_token_guards_every_route(project):
    client = _client(_backend(project[0]), token=TOKEN)
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    assert client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"label-studio:{TOKEN}".encode()).decode()
    assert client.get("/health", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.post("/webhook", json={"action": "START_TRAINING"}).status_code == 401


def test_binding_beyond_this_machine_needs_a_token():
    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    check_binding("localhost", None)
    with pytest.raises(UsageError, match="set a token first"):
        check_binding("0.0.0.0", None)
    with pytest.raises(UsageError, match="at least 16 characters"):
        check_binding("0.0.0.0", "short")
    check_binding("0.0.0.0", TOKEN)


def test_serve_refuses_to_listen_on_all_addresses_without_a_token(project, capsys, monkeypatch):
    monkeypatch.delenv("LEARNLOSS_SERVE_TOKEN", raising=False)
    assert main(["serve", str(project[0]), "--host", "0.0.0.0"]) == 2
    assert "set a token first" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- a detection project

@pytest.fixture(scope="module")
def detection_trained(tmp_path_factory):
    """A detection project (COCO labels for 8 pool and 8 test images) after one query."""
    base = tmp_path_factory.mktemp("serve-detection")
    records = box_images(base / "data")
    coco = write_coco(base / "seed.json", records, "detection", seed_paths(records))
    project = base / "project"
    init_project(project, images=base / "data", labels=coco, task="detection", classes=list(BOX_CLASSES),
                 settings=TINY)
    query_project(project, 3, device="cpu")
    return project


@pytest.fixture
def detection(detection_trained, tmp_path):
    import shutil

    copy = tmp_path / "project"
    shutil.copytree(detection_trained, copy)
    return copy


def _dtask(item: int, path: str, task_id: int = 1) -> dict:
    """A task of the detection project, whose images Label Studio serves from its data root ``data``."""
    return {"id": task_id, "data": {"image": f"/data/local-files/?d=data/{path}", "learnloss_id": item, "path": path}}


def _unlabeled(project: Path) -> list[tuple[int, str]]:
    with ProjectStore(project) as store:
        labels = store.current_labels()
        return [(item, source) for item, source in store.items("pool") if item not in labels]


def _box(label: str, x: float, y: float, w: float, h: float, rotation: float = 0, region: str = "r1") -> dict:
    return {"id": region, "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 64,
            "original_height": 64, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                                             "rectanglelabels": [label]}}


def test_detection_setup_takes_the_projects_config_and_refuses_other_labels(detection):
    backend = _backend(detection)
    own = (detection / "exports" / "labelstudio-config.xml").read_text()
    assert backend.setup({"schema": own}) == {"model_version": UNTRAINED}
    control = backend._check_config(own)
    assert (control.from_name, control.to_name, set(control.choices)) == ("label", "image", set(BOX_CLASSES))
    renamed = own.replace('name="label"', 'name="boxes"').replace('toName="image"', 'toName="photo"')
    assert backend._check_config(renamed).from_name == "boxes"  # names are the configuration's own
    for config, fragment in [
        (own.replace('value="dog"', 'value="bird"'), "labels (cat, bird) are not this project's (cat, dog)"),
        (own.replace('    <Label value="dog"/>\n', ""), "labels (cat) are not this project's (cat, dog)"),
        (label_studio_config(list(BOX_CLASSES)), "needs exactly one <RectangleLabels> control"),
        (own.replace("RectangleLabels", "KeyPointLabels"), "needs exactly one <RectangleLabels> control"),
        ("<View><Image", "not valid XML"),
    ]:
        with pytest.raises(BackendError) as raised:
            backend.setup({"schema": config})
        assert raised.value.status == 400 and fragment in str(raised.value)
        assert "labelstudio-config.xml" in str(raised.value) or fragment == "not valid XML"
    response = _client(backend).post("/setup", json={"schema": own.replace('value="dog"', 'value="bird"')})
    assert response.status_code == 400 and "bird" in response.json()["error"]


def test_detection_annotations_store_boxes_and_refuse_a_rotated_box_whole(detection):
    backend = _backend(detection, retrain_every=0)
    (one, first), (two, second), (three, third) = _unlabeled(detection)[:3]
    summary = backend.apply([(_dtask(one, first, 1), {"id": 1, "result": [
        _box("dog", 12.5, 25, 50, 25), _box("cat", 0, 0, 100, 100, region="r2")]})], relabel=False, origin="test")
    assert (summary.added, summary.relabeled) == (1, 0)
    with ProjectStore(detection) as store:
        labels = store.current_labels()
    assert labels[one] == {"boxes": [{"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]},
                                     {"label": "dog", "box": [0.125, 0.25, 0.625, 0.5]}]}
    # no region: the image holds no object of the project's classes
    assert backend.apply([(_dtask(two, second, 2), {"id": 2, "result": []})], relabel=False, origin="test").added == 1
    with ProjectStore(detection) as store:
        assert store.current_labels()[two] == {"boxes": []}
        snapshot = store_snapshot(store)
    # a rotated box refuses the whole event: the good annotation beside it is not written either
    good = (_dtask(three, third, 3), {"id": 3, "result": [_box("cat", 10, 10, 20, 20)]})
    rotated = (_dtask(one, first, 1), {"id": 4, "result": [_box("dog", 12.5, 25, 50, 25, rotation=30)]})
    with pytest.raises(BackendError) as raised:
        backend.apply([good, rotated], relabel=True, origin="test")
    assert raised.value.status == 422 and "is rotated (30°)" in str(raised.value)
    with ProjectStore(detection) as store:
        assert store_snapshot(store) == snapshot
    # through the webhook too: 422, nothing written
    answer = _client(backend).post("/webhook", json={"action": "ANNOTATION_CREATED", "task": rotated[0],
                                                     "annotation": rotated[1]})
    assert answer.status_code == 422 and "rotated" in answer.json()["error"]
    with ProjectStore(detection) as store:
        assert store_snapshot(store) == snapshot


def test_detection_predict_answers_regions_with_the_model_version(detection):
    backend = _backend(detection)
    assert backend.load() and backend.model_version == "learnloss-cycle-0"
    items = _unlabeled(detection)[:3]
    tasks = [_dtask(item, source, n) for n, (item, source) in enumerate(items)]
    tasks.append({"id": 99, "data": {"image": "/data/local-files/?d=elsewhere/x.png"}})
    answer = backend.predict({"tasks": tasks})
    results = answer["results"]
    assert answer["model_version"] == "learnloss-cycle-0" and len(results) == 4
    for entry in results[:3]:
        assert entry["model_version"] == "learnloss-cycle-0" and isinstance(entry["score"], float)
        assert isinstance(entry["result"], list)
        for region in entry["result"]:
            assert region["type"] == "rectanglelabels" and region["value"]["rectanglelabels"][0] in BOX_CLASSES
            assert (region["from_name"], region["to_name"]) == ("label", "image") and region["score"] >= 0.3
    assert results[3] == {"result": [], "model_version": "learnloss-cycle-0"}
    # the scores are the query's (learning loss: the LPM's predicted loss), computed in other batches: the tolerance
    # of test_health_setup_and_predict_with_scores
    with ProjectStore(detection) as store:
        recorded = {item: score for item, _, _, score, _, _ in store.query_items(0)}
    for (item, _), entry in zip(items, results):
        if item in recorded:
            assert entry["score"] == pytest.approx(recorded[item], rel=1e-4, abs=1e-5)


def test_detection_predict_names_regions_by_the_label_studio_config(detection, monkeypatch):
    """Predicted boxes become regions of the configuration's own control names, in percent."""
    backend = _backend(detection)
    assert backend.load()
    boxes = '{"boxes": [{"label": "dog", "box": [0.25, 0.5, 0.75, 1.0], "score": 0.8}]}'
    monkeypatch.setattr(backend, "_score", lambda model, paths: ([boxes, '{"boxes": []}'][:len(paths)],
                                                                  [None] * len(paths), [2.5, 1.5][:len(paths)]))
    own = (detection / "exports" / "labelstudio-config.xml").read_text()
    renamed = own.replace('name="label"', 'name="boxes"').replace('toName="image"', 'toName="photo"')
    (one, first), (two, second) = _unlabeled(detection)[:2]
    answer = backend.predict({"tasks": [_dtask(one, first, 1), _dtask(two, second, 2)], "label_config": renamed})
    (region,) = answer["results"][0]["result"]
    assert (region["from_name"], region["to_name"], region["type"]) == ("boxes", "photo", "rectanglelabels")
    assert region["value"]["rectanglelabels"] == ["dog"] and region["value"]["rotation"] == 0
    assert [region["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([25, 50, 50, 50])
    assert region["score"] == 0.8 and answer["results"][0]["score"] == 2.5
    assert answer["results"][1] == {"result": [], "model_version": "learnloss-cycle-0", "score": 1.5}
