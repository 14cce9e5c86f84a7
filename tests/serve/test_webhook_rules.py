"""One set of Label Studio rules for the webhook and for ``learnloss label``: the same task with the same annotation is
stored, skipped or refused — with the same reason — whichever path it takes (FastAPI's test client over the real
application, ``learnloss label`` over a real export file, a real project store). Also the attacks on the webhook:
text that is not valid Unicode, ids in other scripts' digits, replayed older events, tasks whose id, path and image
URL disagree, retired items."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labelstudio"))

from lsclient import trained_photos_project  # noqa: E402
from tests_support import store_snapshot  # noqa: E402

from learnloss.cli.main import main  # noqa: E402
from learnloss.labeling.backend import LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402
from learnloss.serve.app import create_app  # noqa: E402

fastapi_testclient = pytest.importorskip("fastapi.testclient")

T1, T2, T3 = "2024-05-01T10:00:00.000000Z", "2024-05-02T10:00:00.000000Z", "2024-05-03T10:00:00.000000Z"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project of 18 images (6 labeled by init) after one query: a model that answers /predict."""
    base = tmp_path_factory.mktemp("rules")
    project, _ = trained_photos_project(base)
    return project


@pytest.fixture
def project(trained, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(trained, copy)
    return copy


def _client(project: Path):
    backend = LabelStudioBackend(project, ServeConfig(retrain_every=0), ProjectReader(project_spec, project_dataset),
                                 query_project)
    return fastapi_testclient.TestClient(create_app(backend), base_url="http://127.0.0.1"), backend


def _free(project: Path) -> list[tuple[int, str]]:
    with ProjectStore(project) as store:
        labels = store.current_labels()
        return [(item, source) for item, source in store.items("pool") if item not in labels]


def _data(item: int | None, path: str | None, url: str | None = "own") -> dict[str, Any]:
    data: dict[str, Any] = {}
    if url == "own" and path is not None:
        data["image"] = "/data/local-files/?d=photos/" + quote(path)
    elif url not in (None, "own"):
        data["image"] = url
    if item is not None:
        data["learnloss_id"] = item
    if path is not None:
        data["path"] = path
    return data


def _annotation(choice: str | None, annotation_id: Any = 7, at: str | None = T1, **extra: Any) -> dict[str, Any]:
    result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    annotation = {"id": annotation_id, "result": result, "was_cancelled": False, **extra}
    if at is not None:
        annotation["created_at"] = annotation["updated_at"] = at
    return annotation


def _post(client, payload: dict[str, Any], path: str = "/webhook"):
    """POST ``payload`` as JSON text in ASCII (a lone surrogate travels as the escape ``\\udc00``, as JSON allows)."""
    return client.post(path, content=json.dumps(payload).encode(), headers={"content-type": "application/json"})


def _event(data: dict[str, Any], annotation: dict[str, Any], action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    return {"action": action, "task": {"id": 1, "data": data}, "annotation": annotation}


def _label_file(tmp_path: Path, data: dict[str, Any], annotations: list[dict[str, Any]]) -> Path:
    """The task as Label Studio's JSON export writes it."""
    path = tmp_path / f"export-{len(list(tmp_path.glob('export-*')))}.json"
    path.write_text(json.dumps([{"id": 1, "data": data, "annotations": annotations}]))
    return path


def _both(project: Path, tmp_path: Path, data: dict[str, Any], annotation: dict[str, Any], capsys
          ) -> tuple[tuple[int, str], tuple[int, str]]:
    """The webhook's answer (status, text) for the event, and ``learnloss label``'s (exit code, stderr + stdout) for
    the same task in an export, each on its own copy of the project."""
    twin = tmp_path / "twin"
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(project, twin)
    client, _ = _client(project)
    response = _post(client, _event(data, annotation))
    capsys.readouterr()
    code = main(["label", str(twin), str(_label_file(tmp_path, data, [annotation]))])
    out = capsys.readouterr()
    return (response.status_code, response.text), (code, out.err + out.out)


# ------------------------------------------------------------------------------------- one rule for both paths


@pytest.mark.parametrize(("annotation", "webhook", "label"), [
    # a result of another control (a comment) is not a label: the annotation has no choice, and is skipped
    ({"result": [{"type": "textarea", "from_name": "note", "to_name": "image", "value": {"text": ["blurry"]}}]},
     (200, "annotated without a choice"), (0, "annotated without a choice")),
    # a comment beside the choice is ignored; the choice is stored
    ({"result": [{"type": "textarea", "value": {"text": ["ok"]}},
                 {"type": "choices", "from_name": "label", "to_name": "image", "value": {"choices": ["red"]}}]},
     (200, '"added":1'), (0, "1 added")),
    # skipped (Label Studio's Skip button) or cancelled: reported by both, stored by neither
    ({"skipped": True}, (200, "skipped in Label Studio"), (0, "skipped in Label Studio")),
    ({"was_cancelled": True}, (200, "skipped in Label Studio"), (0, "skipped in Label Studio")),
    # a flag that is not true or false, a region in a classification project: refused by both
    ({"was_cancelled": "no"}, (422, "'was_cancelled' must be true or false"),
     (2, "'was_cancelled' must be true or false")),
    ({"result": [{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5,
                                                        "rectanglelabels": ["red"]}}]},
     (422, "not a single choice (a 'rectanglelabels' region"), (2, "not a single choice (a 'rectanglelabels' region")),
])
def test_the_webhook_and_learnloss_label_read_an_annotation_alike(project, tmp_path, capsys, annotation, webhook,
                                                                  label):
    item, path = _free(project)[0]
    annotation = {**_annotation("red"), **annotation}
    (status, text), (code, said) = _both(project, tmp_path, _data(item, path), annotation, capsys)
    assert status == webhook[0] and webhook[1] in text, text
    assert code == label[0] and label[1] in said, said


def test_a_task_whose_id_path_and_url_disagree_is_refused_by_both(project, tmp_path, capsys):
    """M8: a task naming item 4 by id and another image by path (or an image of another project by URL) used to
    label item 4 through the webhook, while learnloss label refused it."""
    (item, path), (_, other) = _free(project)[:2]
    with ProjectStore(project) as store:
        before = store_snapshot(store)
    for data, fragment in [
        ({"learnloss_id": item, "path": other}, f"id {item} is '{path}', not '{other}'"),
        (_data(item, None, url="/data/local-files/?d=photos/" + quote(other)), f"id {item} is '{path}', not '{other}'"),
        (_data(item, path, url="/data/local-files/?d=elsewhere/" + quote(path)), "is not under this project's"),
        (_data(item, None, url="http://other.example/photos/" + quote(path)), "is not under this project's"),
        (_data(item, path, url="/data/local-files/?d=photos/" + quote(other)), "name different images"),
    ]:
        (status, text), (code, said) = _both(project, tmp_path, data, _annotation("red"), capsys)
        assert status == 422 and fragment in json.loads(text)["error"], (data, text)
        assert code == 2 and fragment in said, (data, said)
        with ProjectStore(project) as store:
            assert store_snapshot(store) == before


def test_a_task_named_by_its_own_url_alone_is_stored(project):
    (item, path) = _free(project)[0]
    client, _ = _client(project)
    response = _post(client, _event({"$undefined$": "/data/local-files/?d=photos/" + quote(path)}, _annotation("red")))
    assert response.status_code == 200 and response.json()["added"] == 1
    with ProjectStore(project) as store:
        assert store.current_labels()[item] == "red"


# ------------------------------------------------------------------------------------------------ the attacks


def test_text_that_is_not_valid_unicode_is_refused_with_one_line_and_never_stored(project):
    """M4: a lone surrogate (``"\\udc00"``, valid JSON) in an annotation's id used to fail the SQLite insert: 500."""
    item, path = _free(project)[0]
    client, _ = _client(project)
    with ProjectStore(project) as store:
        before = store_snapshot(store)
    for annotation, data in [(_annotation("red", "\udc00"), _data(item, path)),
                             (_annotation("red\udc00"), _data(item, path)),
                             (_annotation("red"), _data(item, path + "\udc00", url=None)),
                             (_annotation("red", 5, at="2024-05-01T10:00:00\udc00"), _data(item, path))]:
        response = _post(client, _event(data, annotation))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert "\n" not in error and error.encode("utf-8")
        with ProjectStore(project) as store:
            assert store_snapshot(store) == before and store.verify() == []
    assert "not valid Unicode" in _post(client, _event(_data(item, path), _annotation("red", "\udc00"))).json()["error"]
    # an unknown action holding one is ignored, and the answer is valid UTF-8
    response = _post(client, {"action": "X\udc00"})
    assert response.status_code == 200 and response.json()["status"] == "ignored"


@pytest.mark.parametrize("ident", ["²", "٣", "１", "+1", "1_0", " 1 2 ", "-1", True, False, 1.0, 10**30, -3, "9" * 40,
                                   [1], {"id": 1}])
def test_an_item_id_that_is_not_plain_digits_is_refused_on_every_route(project, ident):
    """M5/M6: ``"²"`` passes ``str.isdigit()`` and fails ``int()``: the webhook and /predict answered 500."""
    client, backend = _client(project)
    assert backend.load()
    with ProjectStore(project) as store:
        before = store_snapshot(store)
    webhook = _post(client, _event({"learnloss_id": ident}, _annotation("red")))
    predict = _post(client, {"tasks": [{"id": 1, "data": {"learnloss_id": ident}}]}, "/predict")
    for response in (webhook, predict):
        assert 400 <= response.status_code < 500, response.text
        assert "id" in response.json()["error"]
    with ProjectStore(project) as store:
        assert store_snapshot(store) == before


def test_an_older_annotation_delivered_later_never_reverts_the_label(project, tmp_path, capsys):
    """M7: ANNOTATION_UPDATED "red", then "green", then the older "red" replayed used to revert the label."""
    item, path = _free(project)[0]
    client, _ = _client(project)
    data = _data(item, path)
    assert _post(client, _event(data, _annotation("red", 7, T1))).json()["added"] == 1
    assert _post(client, _event(data, _annotation("green", 7, T2), "ANNOTATION_UPDATED")).json()["relabeled"] == 1
    answer = _post(client, _event(data, _annotation("red", 7, T1), "ANNOTATION_UPDATED")).json()
    assert answer["relabeled"] == 0 and "older than the stored label" in answer["skipped"][0]
    with ProjectStore(project) as store:
        assert store.current_labels()[item] == "green"
        assert store.label_annotations()[item] == ("7", "2024-05-02T10:00:00.000000+00:00")
    # the same older annotation in an export, through learnloss label: skipped alike
    code = main(["label", str(project), str(_label_file(tmp_path, data, [_annotation("red", 7, T1)])), "--relabel"])
    assert code == 0 and "older than the stored label" in capsys.readouterr().out
    # a newer one of another annotator relabels; created_at counts when there is no updated_at
    newer = {**_annotation("blue", 8, None), "created_at": T3}
    assert _post(client, _event(data, newer, "ANNOTATION_UPDATED")).json()["relabeled"] == 1
    # a time zone other than UTC is compared as the same instant (03:00 at -08:00 is 11:00 UTC, after T3's 10:00)
    later = _annotation("red", 9, "2024-05-03T03:00:00-08:00")
    assert _post(client, _event(data, later, "ANNOTATION_UPDATED")).json()["relabeled"] == 1
    # confirming the stored label with a newer time records it: an annotation between the two stays older
    _post(client, _event(data, _annotation("red", 10, "2024-05-05T00:00:00Z"), "ANNOTATION_UPDATED"))
    answer = _post(client, _event(data, _annotation("green", 11, "2024-05-04T00:00:00Z"), "ANNOTATION_UPDATED")).json()
    assert "older than the stored label" in answer["skipped"][0]
    with ProjectStore(project) as store:
        assert store.current_labels()[item] == "red" and store.verify() == []
    # a time that is not a time is refused
    response = _post(client, _event(data, _annotation("green", 12, "yesterday"), "ANNOTATION_UPDATED"))
    assert response.status_code == 422 and "'updated_at' is not an ISO 8601 time" in response.json()["error"]


def test_labeling_a_retired_item_says_it_is_retired_and_how_to_label_it_again(project, tmp_path, capsys):
    """m1: it used to say "unknown id 10: not an item of this project"."""
    item, path = _free(project)[0]
    assert main(["remove", str(project), str(item), "--reason", "blurry"]) == 0
    (status, text), (code, said) = _both(project, tmp_path, _data(item, path), _annotation("red"), capsys)
    for answer in (json.loads(text)["error"], said):
        assert f"item {item} ('{path}') is retired" in answer and "blurry" in answer and "learnloss add" in answer
    assert (status, code) == (422, 2)
    client, _ = _client(project)
    by_path = _post(client, _event({"path": path}, _annotation("red")))
    assert by_path.status_code == 422 and "is retired" in by_path.json()["error"]
