"""Label import: every class of bad input is reported with nothing written; good files apply all or nothing."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnloss.project.importer import LabelFileError, import_labels
from learnloss.project.store import LabelRecord


def _snapshot(store):
    return [list(store.db.execute(f"SELECT * FROM {table} ORDER BY 1")) for table in ("labels", "imports", "queries")]


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_csv_by_id_and_by_path(store, tmp_path):
    path = _write(tmp_path, "batch.csv", "id,path,label,score\n1,img/0.png,cat,0.9\n,img/1.png,dog,\n3,,bird,\n")
    summary = import_labels(store, path)
    assert (summary.added, summary.relabeled, summary.unchanged) == (3, 0, 0)
    assert store.current_labels() == {1: "cat", 2: "dog", 3: "bird"}
    history = store.label_history()
    assert {h["file"] for h in history} == {"batch.csv"} and {h["source"] for h in history} == {"import:csv"}


def test_importing_the_same_file_again_changes_nothing(store, tmp_path):
    path = _write(tmp_path, "batch.csv", "id,label\n1,cat\n2,dog\n")
    import_labels(store, path)
    before = _snapshot(store)
    summary = import_labels(store, path)
    assert not summary.changed and summary.unchanged == 2
    assert _snapshot(store) == before


def test_query_provenance_is_copied_to_the_label(store, tmp_path):
    with store.transaction() as db:
        db.execute("INSERT INTO cycles VALUES (0, 'queried', '{}', '{}', 'x', NULL, NULL, 'now')")
        db.execute("INSERT INTO queries VALUES (0, 4, 2.5, 1, 'learning-loss', 'open', 'cat', 0.7)")
    import_labels(store, _write(tmp_path, "b.csv", "id,label\n4,dog\n"))
    (label,) = store.label_history()
    assert (label["cycle"], label["strategy"], label["score"], label["rank"]) == (0, "learning-loss", 2.5, 1)
    assert store.open_queries() == []


def test_label_studio_export(store, tmp_path):
    tasks = [
        {"id": 10, "data": {"image": "/data/local-files/?d=img/0.png", "learnloss_id": 1, "path": "img/0.png"},
         "annotations": [{"was_cancelled": False, "result": [{"type": "choices", "value": {"choices": ["cat"]}}]}]},
        {"id": 11, "data": {"learnloss_id": 2},
         "annotations": [{"was_cancelled": True, "result": [{"value": {"choices": ["bird"]}}]},
                         {"result": [{"value": {"choices": ["dog"]}}]}]},
    ]
    summary = import_labels(store, _write(tmp_path, "export.json", json.dumps(tasks)))
    assert summary.added == 2 and store.current_labels() == {1: "cat", 2: "dog"}
    assert {h["source"] for h in store.label_history()} == {"import:labelstudio"}


def test_plain_json(store, tmp_path):
    import_labels(store, _write(tmp_path, "l.json", json.dumps([{"id": 1, "label": "cat"}, {"path": "img/2.png", "label": "dog"}])))
    assert store.current_labels() == {1: "cat", 3: "dog"}


def test_relabel_needs_the_flag_and_is_recorded(store, tmp_path):
    import_labels(store, _write(tmp_path, "a.csv", "id,label\n1,cat\n"))
    changed = _write(tmp_path, "b.csv", "id,label\n1,dog\n2,bird\n")
    with pytest.raises(LabelFileError, match="row 2: item 1 is labeled 'cat', the file says 'dog'; pass --relabel"):
        import_labels(store, changed)
    assert store.current_labels() == {1: "cat"}, "the valid row 3 must not be applied either"
    summary = import_labels(store, changed, relabel=True)
    assert (summary.added, summary.relabeled) == (1, 1)
    assert store.current_labels() == {1: "dog", 2: "bird"}
    assert [(h["label"], h["current"]) for h in store.label_history() if h["item_id"] == 1] == [("cat", False), ("dog", True)]


BAD_FILES = [
    ("bad.csv", b"id,label\n1,cat\n2,\xff\xfedog\n", "line 3: not UTF-8 text (byte 0xff at offset 17)"),
    ("bad.csv", "id,label\n999,cat\n", "row 2: unknown id 999"),
    ("bad.csv", "path,label\nimg/9.png,cat\n", "row 2: unknown path 'img/9.png'"),
    ("bad.csv", "id,path,label\n1,img/3.png,cat\n", "row 2: id 1 is 'img/0.png', not 'img/3.png'"),
    ("bad.csv", "id,label\n1,cat\n1,cat\n", "row 3: item 1 is labeled again (first at row 2)"),
    ("bad.csv", "path,label\nimg/0.png,cat\n./img/0.png,dog\n", "row 3: item 1 is labeled again"),
    ("bad.csv", "id,label\n1,wolf\n", "row 2: unknown class 'wolf'; the classes are bird, cat, dog"),
    ("bad.csv", "id,label\n1,\n", "row 2: no label"),
    ("bad.csv", "id,label\n,\n", "row 2: empty row"),
    ("bad.csv", "id,label\nx1,cat\n", "row 2: id 'x1' is not a whole number"),
    ("bad.csv", "id,label\n1,cat,extra\n", "row 2: too many cells"),
    ("bad.csv", "id,label\n1\n", "row 2: too few cells"),
    ("bad.csv", "name,class\n1,cat\n", "header: needs a 'label' column"),
    ("bad.csv", "", "header: needs a 'label' column"),
    ("bad.csv", "id,label\n", "the file holds no labels"),
    ("bad.csv", "path,label\n../secret.png,cat\n", "climbs out of the data root"),
    ("bad.csv", "path,label\n/etc/passwd,cat\n", "is absolute"),
    ("bad.json", "[{\"id\": 1, \"label\": \"cat\"}", "malformed JSON"),
    ("bad.json", "{\"id\": 1}", "must be a list"),
    ("bad.json", "[]", "holds no labels"),
    ("bad.json", "[1, 2]", "entry 1: expected an object"),
    ("bad.json", "[{\"id\": [1], \"label\": \"cat\"}]", "entry 1: id, path and label must be text or numbers"),
    ("bad.json", json.dumps([{"data": {"learnloss_id": 1}, "annotations": []}]), "task 1: no annotation"),
    ("bad.json", json.dumps([{"data": {"learnloss_id": 1}, "annotations": [
        {"result": [{"value": {"choices": ["cat"]}}]}, {"result": [{"value": {"choices": ["dog"]}}]}]}]),
     "task 1: its annotations disagree (cat, dog)"),
    ("bad.json", json.dumps([{"data": {"learnloss_id": 1}, "annotations": [
        {"result": [{"value": {"choices": ["cat", "dog"]}}]}]}]), "not a single choice"),
]


@pytest.mark.parametrize(("name", "content", "fragment"), BAD_FILES)
def test_every_kind_of_bad_file_is_reported_and_changes_nothing(store, tmp_path, name, content, fragment):
    import_labels(store, _write(tmp_path, "good.csv", "id,label\n5,bird\n"))
    before = _snapshot(store)
    with pytest.raises(LabelFileError) as info:
        import_labels(store, _write(tmp_path, name, content))
    assert fragment in str(info.value) and "nothing was imported" in str(info.value)
    assert _snapshot(store) == before


def test_all_problems_are_listed_together(store, tmp_path):
    with pytest.raises(LabelFileError) as info:
        import_labels(store, _write(tmp_path, "b.csv", "id,label\n999,cat\n1,wolf\n2,dog\n2,dog\n"))
    assert len(info.value.problems) == 3
    assert str(info.value).startswith(f"{tmp_path / 'b.csv'}: 3 problems, nothing was imported: row 2: unknown id 999")


def test_an_unknown_file_type_is_refused(store, tmp_path):
    with pytest.raises(LabelFileError.__mro__[1], match="unknown label file type .xlsx"):
        import_labels(store, _write(tmp_path, "labels.xlsx", "x"))


def _reset_to_one_label(store):
    """Each fuzz example starts from a store holding one label (item 1: cat); returns its snapshot."""
    with store.transaction() as db:
        db.execute("DELETE FROM labels")
        db.execute("DELETE FROM imports")
        store.add_labels(db, [LabelRecord(1, "cat", "seed")])
    return _snapshot(store)


_cells = st.one_of(
    st.sampled_from(["1", "2", "7", "999", "-1", "x", "", "cat", "dog", "wolf", "img/0.png", "../a", "/abs", "1.5"]),
    st.text(alphabet=string.printable, max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.lists(st.sampled_from(["id", "path", "label", "score", "ID", ""]), min_size=0, max_size=4),
    rows=st.lists(st.lists(_cells, min_size=0, max_size=5), max_size=6),
    garbage=st.binary(max_size=8),
)
def test_fuzz_a_file_either_applies_entirely_or_changes_nothing(store, tmp_path, header, rows, garbage):
    """Property: after any import attempt, the store holds either the state before it or that state plus
    exactly the file's valid labels — never a part of a rejected file."""
    before = _reset_to_one_label(store)
    text = ",".join(header) + "\n" + "\n".join(",".join(row) for row in rows)
    path = _write(tmp_path, "fuzz.csv", text.encode("utf-8") + garbage)
    try:
        summary = import_labels(store, path)
    except LabelFileError:
        assert _snapshot(store) == before
        return
    labels = store.current_labels()
    assert labels[1] == "cat", "an import without --relabel changed a stored label"
    assert len(labels) == 1 + summary.added
    assert set(labels.values()) <= {"bird", "cat", "dog"}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 1000) | st.sampled_from(["cat", "dog", "wolf", "img/1.png", "", "../x"])
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "path", "label", "learnloss_id", "data", "annotations", "result", "value", "choices",
                         "was_cancelled", "labels"]), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_json_values)
def test_fuzz_json_and_label_studio_files_apply_entirely_or_change_nothing(store, tmp_path, document):
    before = _reset_to_one_label(store)
    path = _write(tmp_path, "fuzz.json", json.dumps(document))
    try:
        summary = import_labels(store, path)
    except LabelFileError:
        assert _snapshot(store) == before
        return
    labels = store.current_labels()
    assert labels[1] == "cat" and len(labels) == 1 + summary.added


@pytest.mark.parametrize("task", [{"annotations": True}, {"annotations": [{"result": 3}]},
                                  {"annotations": [{"result": [{"value": 5}]}]}, {"annotations": [{"result": [7]}]}])
def test_malformed_label_studio_tasks_are_reported(store, tmp_path, task):
    with pytest.raises(LabelFileError, match="task 1: "):
        import_labels(store, _write(tmp_path, "ls.json", json.dumps([{"data": {"learnloss_id": 1}, **task}])))
    assert store.current_labels() == {}
