"""``learnloss serve`` connected to a real Label Studio as its ML backend: predictions with scores appear in Label
Studio, annotations made there arrive in the project store, and enough of them retrain the model, whose new version
the next predictions carry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsclient import CLASSES, HTTPFailure, free_port, make_images, request, stop_process

from learnloss.cli.main import main
from learnloss.project.store import ProjectStore


def _wait(condition, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what} within {timeout:.0f} s" + (f"; the server's log ends:\n{tail}" if tail else ""))


@pytest.fixture(scope="module")
def served(label_studio, tmp_path_factory):
    """A trained project over images inside Label Studio's document root, served by ``learnloss serve``."""
    images = label_studio.document_root / "backend-photos"
    if images.exists():
        shutil.rmtree(images)
    truth = make_images(images, seed=1)
    base = tmp_path_factory.mktemp("backend")
    seed_labels = base / "labels.csv"
    seed_labels.write_text("path,label\n" + "".join(
        f"{n},{label}\n" for n, label in truth.items() if int(n[4:6]) % 10 < 2))
    project = base / "project"
    assert main(["init", str(project), "--images", str(images), "--classes", ",".join(CLASSES), "--labels",
                 str(seed_labels), "--epochs", "2", "--image-size", "16", "--seed", "0"]) == 0
    assert main(["query", str(project), "--k", "3", "--quiet"]) == 0
    port = free_port()
    log = base / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "learnloss", "serve", str(project), "--port", str(port), "--retrain-every", "2",
             "--k", "3"], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"learnloss serve exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            return request("GET", url + "/health", timeout=5)
        except (OSError, HTTPFailure):
            return None

    try:
        health = _wait(up, 120, "learnloss serve did not answer", log)
        assert health["model_version"] == "learnloss-cycle-0"
        yield project, images, truth, url, log
    finally:
        stop_process(process)


def test_label_studio_gets_scored_predictions_and_sends_labels_back(label_studio, served):
    project, images, truth, url, log = served
    config = (project / "exports" / "labelstudio-config.xml").read_text()
    ls_project = label_studio.create_project("ml backend", config)
    storage = label_studio.add_local_storage(ls_project, images)
    label_studio.sync_storage(storage)  # every image becomes a task, named only by its URL
    tasks = _wait(lambda: [t for t in label_studio.tasks(ls_project)] if len(label_studio.tasks(ls_project)) == 30
                  else None, 60, "Label Studio did not make a task of every image")
    backend = label_studio.api("POST", "/api/ml", {"project": ls_project, "url": url, "title": "learnloss"})
    assert backend["state"] == "CO", backend  # connected: health and setup answered

    label_studio.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={ls_project}",
                     {"selectedItems": {"all": True, "excluded": []}})
    predictions = label_studio.api("GET", f"/api/predictions?project={ls_project}")
    assert len(predictions) == 30
    assert {p["model_version"] for p in predictions} == {"learnloss-cycle-0"}
    assert all(isinstance(p["score"], float) for p in predictions)  # the Data Manager sorts by it
    assert {p["result"][0]["value"]["choices"][0] for p in predictions} <= set(CLASSES)

    # annotations made in Label Studio arrive in the store through the webhook Label Studio made for the model
    with ProjectStore(project) as store:
        paths = dict(store.items())
        labeled_before = set(store.current_labels())
    unlabeled = [t for t in tasks if _item(t, paths) not in labeled_before]
    first, second = unlabeled[:2]
    for task in (first, second):
        label_studio.annotate(task["id"], truth[_path(task)])

    def stored():
        with ProjectStore(project) as store:
            labels = store.current_labels()
        return all(labels.get(_item(t, paths)) == truth[_path(t)] for t in (first, second))

    _wait(stored, 60, "the annotations did not arrive in the project store", log)
    # two new labels (--retrain-every 2): the model retrains, and the next predictions carry its version
    _wait(lambda: request("GET", url + "/health")["model_version"] == "learnloss-cycle-1", 240,
          "the model was not retrained", log)
    label_studio.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={ls_project}",
                     {"selectedItems": {"all": True, "excluded": []}})
    versions = {p["model_version"] for p in label_studio.api("GET", f"/api/predictions?project={ls_project}")}
    assert "learnloss-cycle-1" in versions


def _path(task) -> str:
    from urllib.parse import unquote

    url = next(v for v in task["data"].values() if isinstance(v, str) and "local-files" in v)
    return unquote(url.split("?d=", 1)[1]).split("/", 1)[1]


def _item(task, paths) -> int:
    by_path = {source: item for item, source in paths.items()}
    return by_path[_path(task)]
