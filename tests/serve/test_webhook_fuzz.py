"""Random webhook and predict requests to the real application (FastAPI's test client over ``create_app``, a real
trained project, no retraining): the server answers 2xx or 4xx, never 5xx; the store passes SQLite's integrity and
foreign-key checks; and labels change only through well-formed events, exactly as a model of the rules says
(:mod:`learnloss.project.labelstudio_reader`: cancelled or skipped annotations and annotations without a choice are
skipped; a comment beside a choice is ignored; an event is applied all or nothing; a new annotation does not change
a stored label, an updated one does unless it is older than the annotation that set it)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labelstudio"))

from lsclient import CLASSES, trained_photos_project  # noqa: E402

from learnloss.labeling.backend import LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.database import DB_FILENAME  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402
from learnloss.serve.app import create_app  # noqa: E402

fastapi_testclient = pytest.importorskip("fastapi.testclient")

EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
OTHER_ACTIONS = ("ANNOTATIONS_DELETED", "PROJECT_UPDATED", "TASKS_CREATED", "annotation_created", "", None, 3, "X\udc00")
#: Annotation times (or none): Label Studio's format, another offset for the same kind of instant, and no time.
TIMES = ("2024-05-01T10:00:00Z", "2024-05-02T10:00:00.000000Z", "2024-05-02T12:00:00+02:00", "2024-05-03T10:00:00",
         None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A trained project (18 images, 6 labeled, one query), its pristine store, a backend that never retrains by
    count, the application's test client, and the items the events name."""
    base = tmp_path_factory.mktemp("fuzz")
    project, _ = trained_photos_project(base)
    pristine = base / "pristine.db"
    shutil.copyfile(project / DB_FILENAME, pristine)
    backend = LabelStudioBackend(project, ServeConfig(retrain_every=10**6), ProjectReader(project_spec, project_dataset),
                                 query_project)
    assert backend.load()
    with ProjectStore(project) as store:
        baseline = store.current_labels()
        pool = [(item, source) for item, source in store.items("pool")]
    chosen = [entry for entry in pool if entry[0] not in baseline][:5] + [e for e in pool if e[0] in baseline][:2]
    client = fastapi_testclient.TestClient(create_app(backend), base_url="http://127.0.0.1")
    return project, pristine, backend, client, baseline, chosen


def _reset(project: Path, pristine: Path) -> None:
    """Put the pristine store back (the backend opens the store afresh for every request)."""
    for suffix in ("-wal", "-shm"):
        (project / (DB_FILENAME + suffix)).unlink(missing_ok=True)
    shutil.copyfile(pristine, project / DB_FILENAME)


# -------------------------------------------------------------------------------------------- well-formed events

_choice = st.sampled_from(CLASSES)
_comment = {"type": "textarea", "from_name": "note", "to_name": "image", "value": {"text": ["a comment"]}}


@st.composite
def _pair(draw: Any, items: list[tuple[int, str]]) -> dict[str, Any]:
    """A well-formed (task, annotation) and what the rules make of it: ``item``, ``label`` (None: skipped) and
    ``at`` (the annotation's time)."""
    item, source = draw(st.sampled_from(items))
    data: dict[str, Any] = {}
    how = draw(st.sampled_from(["id", "id-string", "path", "url", "all", "undefined"]))
    if how in ("id", "all"):
        data["learnloss_id"] = item
    if how == "id-string":
        data["learnloss_id"] = f" {item} "
    if how in ("path", "all"):
        data["path"] = source
    if how in ("url", "all"):
        data["image"] = "/data/local-files/?d=photos/" + quote(source)
    if how == "undefined":
        data["$undefined$"] = "/data/local-files/?d=photos/" + quote(source)
    label = draw(st.none() | _choice)
    result = [] if label is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                        "value": {"choices": [label]}}]
    if draw(st.booleans()):
        result.insert(draw(st.integers(0, len(result))), _comment)
    annotation: dict[str, Any] = {"id": draw(st.integers(1, 50)), "result": result}
    at = draw(st.sampled_from(TIMES))
    if at is not None:
        annotation[draw(st.sampled_from(["updated_at", "created_at"]))] = at
    cancelled = draw(st.sampled_from([None, "was_cancelled", "skipped"]))
    if cancelled is not None:
        annotation[cancelled] = True
        label = None
    if draw(st.booleans()):
        annotation.setdefault("was_cancelled", False)
    return {"task": {"id": draw(st.integers(1, 99)), "data": data}, "annotation": annotation, "item": item,
            "label": label, "at": _utc(at)}


def _utc(at: str | None) -> str | None:
    from datetime import datetime, timezone

    if at is None:
        return None
    moment = datetime.fromisoformat(at)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------------- corruptions

_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 10**20) | st.floats(allow_nan=False)
    | st.text(max_size=4).filter(lambda text: text.strip() not in CLASSES) | st.just("\udc00") | st.just("²"),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "data", "learnloss_id", "path", "image", "result", "value", "choices", "type",
                         "was_cancelled", "skipped", "updated_at", "annotations", "task", "annotation"]),
        children, max_size=4),
    max_leaves=10,
)

_BAD_IDS = ("²", "٣", "１", True, False, 1.5, "+1", -1, 10**30, "1_0", "\udc00", [1], {"id": 1}, 10**9)


@st.composite
def _corrupt(draw: Any, pair: dict[str, Any], items: list[tuple[int, str]]) -> dict[str, Any]:
    """``pair`` (made to give a label first) broken in one place that the rules refuse."""
    task = json.loads(json.dumps(pair["task"]))
    annotation = json.loads(json.dumps(pair["annotation"]))
    annotation.pop("skipped", None)
    annotation["was_cancelled"] = False
    annotation["result"] = [{"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": [draw(_choice)]}}]
    data = task["data"]
    others = [entry for entry in items if entry[0] != pair["item"]]
    way = draw(st.sampled_from(["id", "path", "url", "class", "choices", "flag", "result", "time", "annotation",
                                "task", "annotation id", "region"]))
    if way == "id":
        data["learnloss_id"] = draw(st.sampled_from(_BAD_IDS))
    elif way == "path":
        data["learnloss_id"] = pair["item"]
        data["path"] = draw(st.sampled_from(others))[1]
    elif way == "url":
        data["image"] = draw(st.sampled_from(["/data/local-files/?d=elsewhere/x.png", "http://other.example/a.png",
                                              "/data/local-files/?d=photos/../../etc/passwd", "s3://bucket/x.png"]))
        data.setdefault("learnloss_id", pair["item"])
    elif way == "class":
        annotation["result"][0]["value"]["choices"] = [draw(st.sampled_from(["purple", "red\udc00", "", "RED"]))]
    elif way == "choices":
        annotation["result"][0]["value"]["choices"] = draw(st.sampled_from([["red", "green"], [], "red", [1], None]))
    elif way == "flag":
        annotation[draw(st.sampled_from(["was_cancelled", "skipped"]))] = draw(st.sampled_from(["yes", 1, 0, [], {}]))
    elif way == "result":
        annotation["result"] = draw(st.sampled_from(["x", {"a": 1}, [5], [{"value": 3}], [None]]))
    elif way == "time":
        annotation["updated_at"] = draw(st.sampled_from(["yesterday", 5, "2024-13-01T00:00:00", "\udc00", "9" * 60]))
    elif way == "annotation":
        annotation = draw(st.sampled_from(["x", 5, None, [1]]))
    elif way == "task":
        task = draw(st.sampled_from([{"id": 1}, {"data": "x"}, 5, None, {"data": [1]}]))
    elif way == "annotation id":
        annotation["id"] = draw(st.sampled_from([[1], {"x": 1}, True, "9" * 200]))
    else:
        annotation["result"] = [{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5,
                                                                      "rectanglelabels": ["red"]}}]
    return {"task": task, "annotation": annotation}


@st.composite
def _request(draw: Any, items: list[tuple[int, str]]) -> dict[str, Any]:
    """One request: a well-formed annotation event, a broken one, another action, junk, or a /predict."""
    kind = draw(st.sampled_from(["event", "event", "event", "broken", "other", "junk", "predict"]))
    if kind in ("event", "broken"):
        action = draw(st.sampled_from(EVENTS))
        pairs = draw(st.lists(_pair(items), min_size=1, max_size=3 if action == "ANNOTATIONS_CREATED" else 1))
        sent = [{"task": pair["task"], "annotation": pair["annotation"]} for pair in pairs]
        if kind == "broken":
            at = draw(st.integers(0, len(pairs) - 1))
            sent[at] = draw(_corrupt(pairs[at], items))
        if action == "ANNOTATIONS_CREATED":
            payload = {"action": action, "task": [p["task"] for p in sent], "annotation": [p["annotation"] for p in sent]}
        else:
            payload = {"action": action, **sent[0]}
        return {"kind": kind, "path": "/webhook", "payload": payload, "pairs": pairs, "action": action}
    if kind == "other":
        payload = {"action": draw(st.sampled_from(OTHER_ACTIONS)), "annotation": draw(_junk), "task": draw(_junk)}
        return {"kind": kind, "path": "/webhook", "payload": payload}
    if kind == "junk":
        payload = {"action": draw(st.sampled_from(EVENTS)), "annotation": draw(_junk), "task": draw(_junk)}
        return {"kind": kind, "path": "/webhook", "payload": payload}
    tasks = draw(st.lists(st.one_of(
        st.builds(lambda entry: {"id": 1, "data": {"learnloss_id": entry[0], "path": entry[1]}}, st.sampled_from(items)),
        st.builds(lambda ident: {"id": 2, "data": {"learnloss_id": ident}}, st.sampled_from(_BAD_IDS)),
        st.builds(lambda data: {"id": 3, "data": data}, _junk), _junk), max_size=4))
    return {"kind": kind, "path": "/predict", "payload": draw(st.sampled_from([{"tasks": tasks}, {"tasks": _first(tasks)}]))}


def _first(tasks: list[Any]) -> Any:
    return tasks[0] if tasks else None


# ----------------------------------------------------------------------------------------------- the model


def _expect(state: dict[int, tuple[str, str | None]], request: dict[str, Any]) -> dict[int, tuple[str, str | None]]:
    """The labels (item -> label, time of the annotation that set or last confirmed it) after a well-formed event,
    by the rules; an event with a problem changes nothing."""
    relabel = request["action"] == "ANNOTATION_UPDATED"
    after = dict(state)
    seen: set[int] = set()
    for pair in request["pairs"]:
        if pair["label"] is None:
            continue  # skipped: cancelled, skipped, or no choice
        item, label, at = pair["item"], pair["label"], pair["at"]
        if item in seen:
            return state  # the same item twice in one event: refused whole
        seen.add(item)
        stored = after.get(item)
        if stored is not None and stored[0] == label:
            if at is not None and (stored[1] is None or stored[1] < at):
                after[item] = (label, at)  # confirmed by a newer annotation
            continue
        if stored is not None and stored[1] is not None and at is not None and at < stored[1]:
            continue  # older than the stored label: skipped
        if stored is not None and not relabel:
            return state  # a new annotation contradicting a stored label: refused whole
        after[item] = (label, at)
    return after


def _stored(project: Path) -> dict[int, tuple[str, str | None]]:
    with ProjectStore(project) as store:
        times = store.label_annotations()
        return {item: (label, times[item][1] if item in times else None)
                for item, label in store.current_labels().items()}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_requests_never_fail_the_server_and_labels_follow_the_rules(served, data):
    project, pristine, backend, client, baseline, items = served
    _reset(project, pristine)
    state = {item: (label, None) for item, label in baseline.items()}
    requests = data.draw(st.lists(_request(items), min_size=1, max_size=6), label="requests")
    for request in requests:
        body = json.dumps(request["payload"]).encode()  # ASCII: lone surrogates travel as JSON escapes
        response = client.post(request["path"], content=body, headers={"content-type": "application/json"})
        assert 200 <= response.status_code < 500, (request["payload"], response.status_code, response.text)
        answer = response.json()
        if response.status_code >= 400:
            assert isinstance(answer.get("error"), str) and "\n" not in answer["error"]
        if request["kind"] == "event":
            assert (response.status_code == 200) == _applies(state, request), (request["payload"], response.text)
            state = _expect(state, request)
        assert _stored(project) == state, (request["payload"], response.text)
        assert not backend.training, "a request started a retraining"
    with ProjectStore(project) as store:
        assert store.verify() == [] and store.foreign_key_problems() == []


def _applies(state: dict[int, tuple[str, str | None]], request: dict[str, Any]) -> bool:
    """Whether a well-formed event that changes no label is accepted (200) rather than refused (422): it is refused
    only for the same item twice or a new annotation contradicting a stored label."""
    relabel = request["action"] == "ANNOTATION_UPDATED"
    seen: set[int] = set()
    after = dict(state)
    for pair in request["pairs"]:
        if pair["label"] is None:
            continue
        item, label, at = pair["item"], pair["label"], pair["at"]
        if item in seen:
            return False
        seen.add(item)
        stored = after.get(item)
        if stored is None or stored[0] == label:
            continue
        if stored[1] is not None and at is not None and at < stored[1]:
            continue
        if not relabel:
            return False
    return True
