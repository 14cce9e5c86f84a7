"""Label import: every class of bad input is reported with nothing written; good files apply all or nothing."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnloss.project.importer import LabelFileError, import_labels
from learnloss.project.store import LabelRecord
from tests_support import store_snapshot, write_file


_snapshot, _write = store_snapshot, write_file


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
    ("bad.csv", "id,label\nx1,cat\n", "row 2: id 'x1' is not a whole number in plain digits 0-9"),
    ("bad.csv", "id,label\n+1,cat\n", "row 2: id '+1' is not a whole number in plain digits 0-9"),
    ("bad.csv", "id,label\n1_0,cat\n", "row 2: id '1_0' is not a whole number"),
    ("bad.csv", "id,label\n\u0661,cat\n", "row 2: id '\u0661' is not a whole number"),  # Arabic-Indic one
    ("bad.csv", "id,label\n\uff11,cat\n", "row 2: id '\uff11' is not a whole number"),  # fullwidth one
    ("bad.csv", "id,label\n1 0,cat\n", "row 2: id '1 0' is not a whole number"),
    ("bad.csv", "id,label\n-1,cat\n", "row 2: id '-1' is not a whole number"),
    ("bad.csv", "id,label\n" + "9" * 5000 + ",cat\n", "row 2: unknown id 99999999999999999999… (5000 digits)"),
    ("bad.csv", "id,label\n\n\n999,cat\n", "row 4: unknown id 999"),  # blank lines are rows in a spreadsheet
    ("bad.csv", "path,label\n\"img/0.png\",\"two\nlines\"\n999.png,cat\n", "row 3: unknown path '999.png'"),
    ("bad.csv", "id,label\n1,cat\n2,\"dog\n", "row 3: malformed CSV"),
    ("bad.json", json.dumps([{"id": 1.0, "label": "cat"}]), "entry 1: id '1.0' is not a whole number"),
    ("bad.json", json.dumps([{"id": -3, "label": "cat"}]), "entry 1: id '-3' is not a whole number"),
    ("bad.json", json.dumps([{"id": True, "label": "cat"}]), "entry 1: id, path and label must be text or numbers"),
    ("bad.json", "[" * 100_000 + "]" * 100_000, "malformed JSON: nested too deeply"),
    ("bad.json", '[{"id": ' + "1" * 5000 + ', "label": "cat"}]', "malformed JSON: it holds a number with thousands"),
    ("bad.json", json.dumps([{"id": 10**40, "label": "cat"}]), "entry 1: unknown id 10000000000000000000… (41 digits)"),
    ("bad.json", json.dumps({"cycle": 0, "items": [{"id": 1, "path": "img/0.png", "label": None}]}),
     "entry 1: no label; fill it in or delete the entry"),
    ("bad.csv", "id,label\n1,cat,extra\n", "row 2: too many cells"),
    ("bad.csv", "id,label\n1\n", "row 2: too few cells"),
    ("bad.csv", "name,class\n1,cat\n", "header: needs a 'label' column"),
    ("bad.csv", "", "header: needs a 'label' column"),
    ("bad.csv", "id,label\n", "the file holds no labels"),
    ("bad.csv", "path,label\n../secret.png,cat\n", "climbs out of the data root"),
    ("bad.csv", "path,label\n/etc/passwd,cat\n", "is absolute"),
    ("bad.json", "[{\"id\": 1, \"label\": \"cat\"}", "malformed JSON"),
    ("bad.json", "{\"id\": 1}", "must be a list"),
    ("bad.json", "{\"items\": 3}", "or the query-N.json that learnloss query wrote"),
    ("bad.json", "[]", "holds no labels"),
    ("bad.json", "[1, 2]", "entry 1: expected an object"),
    ("bad.json", "[{\"id\": [1], \"label\": \"cat\"}]", "entry 1: id, path and label must be text or numbers"),
    ("bad.json", json.dumps([{"data": {"learnloss_id": 1},
                              "annotations": [{"result": [{"value": {"choices": ["x"]}}]}]},
                             {"data": {"learnloss_id": 2}, "annotations": []}]), "task 1: unknown class 'x'"),
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


def test_ids_may_carry_surrounding_whitespace_as_any_cell(store, tmp_path):
    summary = import_labels(store, _write(tmp_path, "s.csv", "id,label\n 1 ,cat\n\t2\t, dog \n"))
    assert summary.added == 2 and store.current_labels() == {1: "cat", 2: "dog"}


def test_a_filled_in_query_json_is_importable(store, tmp_path):
    """``exports/query-N.json`` as ``learnloss query`` writes it, with its labels filled in."""
    from learnloss.project.exports import QueriedItem, write_query_batch
    from learnloss.project.labelstudio import LabelStudioSetup

    items = [QueriedItem(2, "img/1.png", 1, 3.5, "dog", 0.61), QueriedItem(5, "img/4.png", 2, None, "cat", None)]
    paths, _ = write_query_batch(tmp_path / "exports", 0, items, store.classes(), {"strategy": "learning-loss"},
                                 LabelStudioSetup.for_project(tmp_path / "images"))
    document = json.loads(paths["json"].read_text(encoding="utf-8"))
    for item, label in zip(document["items"], ("bird", "cat")):
        item["label"] = label
    paths["json"].write_text(json.dumps(document), encoding="utf-8")
    summary = import_labels(store, paths["json"])
    assert summary.added == 2 and store.current_labels() == {2: "bird", 5: "cat"}
    assert {h["source"] for h in store.label_history()} == {"import:json"}


def test_paths_and_labels_match_in_unicode_nfc(store, tmp_path):
    nfc_name, nfd_name = "caf\u00e9/\u00e9t\u00e9.png", "cafe\u0301/e\u0301te\u0301.png"
    with store.transaction() as db:
        store.add_items(db, [nfc_name])
        store.add_classes(db, ["\u00e9l\u00e9phant"])
    (item_id,) = [i for i, source in store.items() if source == nfc_name]
    import_labels(store, _write(tmp_path, "n.csv", f"path,label\n{nfd_name},e\u0301le\u0301phant\n"))
    assert store.current_labels() == {item_id: "\u00e9l\u00e9phant"}
    import_labels(store, _write(tmp_path, "n.json", json.dumps([{"id": item_id, "path": nfd_name,
                                                                 "label": "\u00e9l\u00e9phant"}])))
    assert len(store.label_history()) == 1


def test_a_store_with_two_spellings_of_one_path_refuses_the_path(store, tmp_path):
    """A store made before names were normalised may hold both spellings: the path alone cannot say which."""
    with store.transaction() as db:
        store.add_items(db, ["\u00e9.png", "e\u0301.png"])
    with pytest.raises(LabelFileError, match="row 2: path '\u00e9.png' names two items"):
        import_labels(store, _write(tmp_path, "a.csv", "path,label\ne\u0301.png,cat\n"))


_VALID = {
    "csv": "id,path,label,prediction\n1,img/0.png,cat,dog\n2,img/1.png,dog,\n,test/0.png,bird,cat\n6,,\"dog\",\n",
    "json": json.dumps({"strategy": "margin", "cycle": 0, "classes": ["bird", "cat", "dog"], "items": [
        {"id": 1, "path": "img/0.png", "label": "cat", "prediction": "dog", "score": 0.5},
        {"id": 2, "path": "img/1.png", "label": "dog", "prediction": "dog", "score": None},
        {"path": "test/0.png", "label": "bird"}, {"id": 6, "label": "dog"}]}, indent=1),
}


def _check_import_or_refusal(store, path, before):
    """The import of ``path`` is exactly what its rows say, or a LearnLossError that changed nothing."""
    from learnloss.errors import LearnLossError
    from learnloss.project.importer import parse_label_file

    try:
        summary = import_labels(store, path)
    except LearnLossError:
        assert _snapshot(store) == before
        return None
    _, rows, _, problems, skipped = parse_label_file(path)
    assert not skipped
    assert not problems
    by_path = {source: item_id for item_id, source in store.items()}
    labels = store.current_labels()
    for row in rows:
        assert labels[row.item_id if row.item_id is not None else by_path[row.path]] == row.label
    assert labels[1] == "cat" and len(labels) == 1 + summary.added and summary.relabeled == 0
    return summary


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_the_valid_files_of_the_fuzz_import_correctly(store, tmp_path, kind):
    before = _reset_to_one_label(store)
    summary = _check_import_or_refusal(store, _write(tmp_path, f"valid.{kind}", _VALID[kind]), before)
    assert summary is not None and (summary.added, summary.unchanged) == (3, 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["csv", "json"]), data=st.data())
def test_fuzz_bit_flips_of_a_valid_file_import_correctly_or_change_nothing(store, tmp_path, kind, data):
    before = _reset_to_one_label(store)
    content = bytearray(_VALID[kind].encode("utf-8"))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 7)), min_size=1,
                               max_size=6))
    for offset, bit in flips:
        content[offset] ^= 1 << bit
    _check_import_or_refusal(store, _write(tmp_path, f"flipped.{kind}", bytes(content)), before)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["csv", "json"]), prefix=st.binary(max_size=40), middle=st.binary(max_size=200),
       cut=st.integers(0, 400))
def test_fuzz_random_bytes_in_a_label_file_import_correctly_or_change_nothing(store, tmp_path, kind, prefix, middle,
                                                                              cut):
    before = _reset_to_one_label(store)
    valid = _VALID[kind].encode("utf-8")
    cut = min(cut, len(valid))
    content = prefix + valid[:cut] + middle + valid[cut:]
    _check_import_or_refusal(store, _write(tmp_path, f"random.{kind}", content), before)
    _check_import_or_refusal(store, _write(tmp_path, f"raw.{kind}", middle), _reset_to_one_label(store))
