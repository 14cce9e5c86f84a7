"""The ML backend's protocol, in process (FastAPI's test client over the real application, a real project store):
what it answers, what it refuses, and that a refused annotation writes nothing."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labelstudio"))

from lsclient import CLASSES, make_images  # noqa: E402

from learnloss.cli.main import main  # noqa: E402
from learnloss.errors import UsageError  # noqa: E402
from learnloss.labeling.backend import UNTRAINED, LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.labelstudio import label_studio_config  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402
from learnloss.serve.app import check_binding, create_app  # noqa: E402

fastapi_testclient = pytest.importorskip("fastapi.testclient")

TOKEN = "a-token-of-enough-length-42"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    images = base / "documents" / "photos"
    truth = make_images(images, per_class=6)
    labels = base / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items() if int(n[4:6]) % 6 < 2))
    project = base / "project"
    assert main(["init", str(project), "--images", str(images), "--classes", ",".join(CLASSES), "--labels",
                 str(labels), "--epochs", "1", "--image-size", "16", "--seed", "0"]) == 0
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 0
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
    return fastapi_testclient.TestClient(create_app(backend, token))


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
    assert results[4] == results[0]  # the same item, named by URL: the same prediction and score
    assert results[5]["result"] == [] and "score" not in results[5]
    # the score is the learning-loss strategy's: the LPM's predicted loss, as the query recorded it
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
