"""``learnloss serve`` never drops a retraining: annotations posted to a real server (uvicorn on a free port, real
threads, a real project) while the model retrains make it retrain again when it ends, so that once labeling stops
the model answering was trained on every label; a retraining cancelled because labels arrived leaves nothing
behind (``learnloss doctor`` finds no orphan checkpoint and exits 0).

Before, labels arriving during a retraining cancelled it ("labels were imported while this query trained") and
nothing retried: ``/health`` kept the old model version, and the cancelled cycle's checkpoint was orphaned once a
later query replaced that cycle."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labelstudio"))

from lsclient import CLASSES, free_port, make_images  # noqa: E402

from learnloss.cli.main import main  # noqa: E402
from learnloss.labeling.backend import LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402
from learnloss.serve.app import create_app  # noqa: E402

uvicorn = pytest.importorskip("uvicorn")


def _post(base: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(base + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _get(base: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + path, timeout=60) as response:
        return json.loads(response.read())


def _event(item: int, path: str, label: str, number: int) -> dict[str, Any]:
    return {"action": "ANNOTATION_CREATED",
            "task": {"id": number, "data": {"image": "/data/local-files/?d=photos/" + quote(path), "learnloss_id": item,
                                            "path": path}},
            "annotation": {"id": number, "was_cancelled": False, "created_at": "2024-05-01T10:00:00Z",
                           "updated_at": "2024-05-01T10:00:00Z",
                           "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                       "value": {"choices": [label]}}]}}


def test_labels_arriving_while_the_model_retrains_are_trained_on_and_nothing_is_left_behind(tmp_path, capsys):
    images = tmp_path / "documents" / "photos"
    truth = make_images(images, per_class=12)
    seed = tmp_path / "labels.csv"
    seed.write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items() if int(n[4:6]) % 12 < 2))
    project = tmp_path / "project"
    assert main(["init", str(project), "--images", str(images), "--classes", ",".join(CLASSES), "--labels", str(seed),
                 "--epochs", "2", "--image-size", "16", "--seed", "0"]) == 0
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 0
    backend = LabelStudioBackend(project, ServeConfig(retrain_every=3, query=2, device="cpu"),
                                 ProjectReader(project_spec, project_dataset), query_project)
    assert backend.load() and backend.model_version == "learnloss-cycle-0"
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        with ProjectStore(project) as store:
            labeled = store.current_labels()
            free = [(item, source) for item, source in store.items("pool") if item not in labeled]
        events = iter(enumerate(free, start=1))
        for number, (item, source) in [next(events) for _ in range(3)]:  # the third starts a retraining
            assert _post(base, "/webhook", _event(item, source, truth[source], number))["added"] == 1
        assert _get(base, "/health")["training"]
        during = 0
        for number, (item, source) in events:  # annotations arriving throughout the retraining
            if not backend.training or number > 14:
                break
            assert _post(base, "/webhook", _event(item, source, truth[source], number))["added"] == 1
            during += 1
            time.sleep(0.2)
        assert during >= 1, "no annotation arrived while the model retrained"
        deadline = time.monotonic() + 600
        while _get(base, "/health")["training"]:  # labeling has stopped; retraining settles
            assert time.monotonic() < deadline, "the retraining never ended"
            time.sleep(0.2)
        health = _get(base, "/health")
    finally:
        server.should_exit = True
        thread.join(30)
    with ProjectStore(project) as store:
        cycle = store.last_cycle()
        pool = {item for item, _ in store.items("pool")}
        stored = sum(item in pool for item in store.current_labels())
        recorded = {Path(c["checkpoint"]).name for c in store.cycles() if c["checkpoint"]}
    assert health["last_training_error"] is None
    assert cycle["status"] == "queried" and cycle["cycle"] >= 1
    assert health["model_version"] == f"learnloss-cycle-{cycle['cycle']}"
    assert cycle["metrics"]["n_labeled"] == stored == len(labeled) + 3 + during, "the last retraining missed labels"
    assert {path.name for path in (project / "checkpoints").iterdir()} == recorded, "a checkpoint no cycle records"
    capsys.readouterr()
    assert main(["doctor", str(project)]) == 0, capsys.readouterr().out


def test_while_labels_keep_arriving_each_interrupted_retraining_still_publishes_its_model(tmp_path):
    """People label without pause: every retraining is kept from recording its query by the labels that arrived
    meanwhile, yet the model it trained answers from then on (``learnloss-cycle-1-<labels>``), so predictions
    improve while labeling goes on; once labeling stops, the last retraining queries and the version is the cycle's."""
    images = tmp_path / "documents" / "photos"
    truth = make_images(images, per_class=12)
    seed = tmp_path / "labels.csv"
    seed.write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items() if int(n[4:6]) % 12 < 2))
    project = tmp_path / "project"
    assert main(["init", str(project), "--images", str(images), "--classes", ",".join(CLASSES), "--labels", str(seed),
                 "--epochs", "2", "--image-size", "16", "--seed", "0"]) == 0
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 0
    backend = LabelStudioBackend(project, ServeConfig(retrain_every=10**6, query=2, device="cpu"),
                                 ProjectReader(project_spec, project_dataset), query_project)
    assert backend.load() and backend.model_version == "learnloss-cycle-0"
    with ProjectStore(project) as store:
        labeled = store.current_labels()
        free = [(item, source) for item, source in store.items("pool") if item not in labeled]
    assert backend.maybe_retrain(force=True)
    published = None
    for number, (item, source) in enumerate(free, start=1):  # a label every 50 ms while the model retrains
        assert backend.webhook(_event(item, source, truth[source], number))["added"] == 1
        if backend.model_version.startswith("learnloss-cycle-1-"):
            published = backend.model_version, backend.labels_since_training()
            break
        time.sleep(0.05)
    assert published is not None, "no interrupted retraining published its model"
    assert published[1] > 0  # it was trained on fewer labels than are stored: the labels that interrupted it
    backend.wait_for_training(600)
    with ProjectStore(project) as store:
        cycle = store.last_cycle()
        stored = len(store.current_labels())
    assert cycle["status"] == "queried" and backend.model_version == f"learnloss-cycle-{cycle['cycle']}"
    assert cycle["metrics"]["n_labeled"] == stored and backend.labels_since_training() == 0
