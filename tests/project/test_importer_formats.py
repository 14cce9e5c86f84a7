"""Label Studio's JSON, JSON-MIN and CSV exports: keyed by ``learnloss_id`` (never Label Studio's ``id``), tasks
that are not labeled skipped and reported, everything else all or nothing; semicolon-separated CSV gets a hint.

The JSON-MIN and CSV texts below are byte for byte what Label Studio 1.23.2's converter
(``label_studio_sdk.converter.Converter.convert_to_json_min`` / ``convert_to_csv``) writes for this full export:

* task 1 (learnloss_id 3, ``img/2.png``): one annotation, ``dog`` — Label Studio's ``id`` 1 is item 1's id too;
* task 2 (learnloss_id 1, ``img/0.png``): two annotations, both ``cat`` (one entry / row each, newest first);
* task 3 (learnloss_id 4): its only annotation cancelled (skipped in Label Studio) — left out of JSON-MIN and CSV;
* task 4 (learnloss_id 5): no annotation;
* task 5 (learnloss_id 6): an annotation without a choice (its ``score`` is ``null``);
* task 6 (learnloss_id 7, ``test/0.png``): ``bird``.

Where Label Studio is installed (``.lsvenv``, as the README's test command makes it, or the Python that
``LEARNLOSS_LABEL_STUDIO_PYTHON`` names) the tasks are also converted with Label Studio's own converter and what it
writes is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnloss.errors import LearnLossError, UsageError
from learnloss.project.exports import read_table
from learnloss.project.labelstudio import label_studio_config
from learnloss.project.importer import LabelFileError, ImportSummary, import_labels, parse_label_file
from learnloss.project.store import LabelRecord
from tests_support import store_snapshot, write_file


_snapshot, _write = store_snapshot, write_file


_DAY1, _DAY2 = "2024-05-01T10:00:00.000000Z", "2024-05-02T10:00:00.000000Z"


def _annotation(annotation_id, choices, cancelled=False, created=_DAY1):
    result = [] if choices is None else [{"id": f"r{annotation_id}", "type": "choices", "value": {"choices": choices},
                                          "origin": "manual", "to_name": "image", "from_name": "label"}]
    return {"id": annotation_id, "completed_by": 1, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": created, "updated_at": created, "lead_time": 3.2}


def _task(task_id, learnloss_id, path, annotations, score=0.5):
    return {"id": task_id, "annotations": annotations, "predictions": [],
            "data": {"image": f"/data/local-files/?d={path}", "learnloss_id": learnloss_id, "path": path,
                     "rank": task_id, "score": score}}


FULL = [
    _task(1, 3, "img/2.png", [_annotation(11, ["dog"])]),
    _task(2, 1, "img/0.png", [_annotation(12, ["cat"]), _annotation(13, ["cat"], created=_DAY2)]),
    _task(3, 4, "img/3.png", [_annotation(14, ["bird"], cancelled=True)]),
    _task(4, 5, "img/4.png", []),
    _task(5, 6, "img/5.png", [_annotation(15, None)], score=None),
    _task(6, 7, "test/0.png", [_annotation(16, ["bird"])]),
]

_META = ('"annotator": 1,\n  "annotation_id": {},\n  "created_at": "{}",\n  "updated_at": "{}",\n  "lead_time": 3.2')


def _min_entry(learnloss_id, path, rank, score, task_id, label, meta):
    """An entry as Label Studio's converter writes it (``json.dump(indent=2)`` of ujson, which escapes ``/``)."""
    escaped = path.replace("/", "\\/")
    fields = (f'  "image": "\\/data\\/local-files\\/?d={escaped}",\n  "learnloss_id": {learnloss_id},\n'
              f'  "path": "{escaped}",\n  "rank": {rank},\n  "score": {score},\n  "id": {task_id},\n')
    return "{\n" + fields + (f'  "label": "{label}",\n' if label else "") + "  " + meta + "\n}"


_NO_META = ('"annotator": null,\n  "annotation_id": null,\n  "created_at": null,\n  "updated_at": null,\n'
            '  "lead_time": null')
JSON_MIN = "[\n" + ",\n".join([
    _min_entry(3, "img/2.png", 1, "0.5", 1, "dog", _META.format(11, _DAY1, _DAY1)),
    _min_entry(1, "img/0.png", 2, "0.5", 2, "cat", _META.format(13, _DAY2, _DAY2)),
    _min_entry(1, "img/0.png", 2, "0.5", 2, "cat", _META.format(12, _DAY1, _DAY1)),
    _min_entry(5, "img/4.png", 4, "0.5", 4, None, _NO_META),
    _min_entry(6, "img/5.png", 5, "null", 5, None, _META.format(15, _DAY1, _DAY1)),
    _min_entry(7, "test/0.png", 6, "0.5", 6, "bird", _META.format(16, _DAY1, _DAY1)),
]) + "\n]"

CSV = (
    '"annotation_id","annotator","created_at","id","image","label","lead_time","learnloss_id","path","rank","score",'
    '"updated_at"\r\n'
    '11,"1","2024-05-01T10:00:00.000000Z",1,"/data/local-files/?d=img/2.png","dog",3.2,3,"img/2.png",1,0.5,'
    '"2024-05-01T10:00:00.000000Z"\r\n'
    '13,"1","2024-05-02T10:00:00.000000Z",2,"/data/local-files/?d=img/0.png","cat",3.2,1,"img/0.png",2,0.5,'
    '"2024-05-02T10:00:00.000000Z"\r\n'
    '12,"1","2024-05-01T10:00:00.000000Z",2,"/data/local-files/?d=img/0.png","cat",3.2,1,"img/0.png",2,0.5,'
    '"2024-05-01T10:00:00.000000Z"\r\n'
    '"","","",4,"/data/local-files/?d=img/4.png","","",5,"img/4.png",4,0.5,""\r\n'
    '15,"1","2024-05-01T10:00:00.000000Z",5,"/data/local-files/?d=img/5.png","",3.2,6,"img/5.png",5,"",'
    '"2024-05-01T10:00:00.000000Z"\r\n'
    '16,"1","2024-05-01T10:00:00.000000Z",6,"/data/local-files/?d=test/0.png","bird",3.2,7,"test/0.png",6,0.5,'
    '"2024-05-01T10:00:00.000000Z"\r\n'
)

#: What each export holds: item 3 (Label Studio's task 1) is a dog, item 1 (task 2) a cat, item 7 a bird.
LABELS = {1: "cat", 3: "dog", 7: "bird"}
SKIPPED = {
    "labelstudio": ("task 3 (learnloss_id 4): skipped in Label Studio (cancelled)",
                    "task 4 (learnloss_id 5): no annotation yet",
                    "task 5 (learnloss_id 6): annotated without a choice"),
    "labelstudio-min": ("entry 4 (learnloss_id 5): no annotation yet",
                        "entry 5 (learnloss_id 6): annotated without a choice"),
    "labelstudio-csv": ("row 5 (learnloss_id 5): no annotation yet",
                        "row 6 (learnloss_id 6): annotated without a choice"),
}
EXPORTS = {"labelstudio": ("export.json", json.dumps(FULL, indent=2)), "labelstudio-min": ("export.json", JSON_MIN),
           "labelstudio-csv": ("export.csv", CSV)}


def test_the_json_min_text_is_what_label_studio_writes():
    """The hand-written JSON-MIN text holds exactly the entries Label Studio's converter makes of ``FULL``."""
    entries = json.loads(JSON_MIN)
    assert [entry["id"] for entry in entries] == [1, 2, 2, 4, 5, 6]
    assert entries[0] == {"image": "/data/local-files/?d=img/2.png", "learnloss_id": 3, "path": "img/2.png", "rank": 1,
                          "score": 0.5, "id": 1, "label": "dog", "annotator": 1, "annotation_id": 11,
                          "created_at": _DAY1, "updated_at": _DAY1, "lead_time": 3.2}
    assert "label" not in entries[3] and entries[3]["annotation_id"] is None
    assert "label" not in entries[4] and entries[4]["annotation_id"] == 15 and entries[4]["score"] is None


@pytest.mark.parametrize("fmt", sorted(EXPORTS))
def test_a_label_studio_export_imports_by_learnloss_id_and_reports_skipped_tasks(store, tmp_path, fmt):
    name, content = EXPORTS[fmt]
    path = _write(tmp_path, name, content)
    parsed = parse_label_file(path)
    assert (parsed.fmt, parsed.problems, tuple(parsed.skipped)) == (fmt, [], SKIPPED[fmt])
    summary = import_labels(store, path)
    assert summary == ImportSummary(name, 3, 0, 0, SKIPPED[fmt])
    assert store.current_labels() == LABELS, "Label Studio's task ids 1 and 2 are not items 1 and 2"
    assert {h["source"] for h in store.label_history()} == {f"import:{fmt}"}
    assert list(store.db.execute("SELECT file_name, format, rows FROM imports")) == [(name, fmt, 3)]
    again = import_labels(store, path)
    assert (again.added, again.unchanged, again.skipped) == (0, 3, SKIPPED[fmt])


def test_label_studio_id_is_never_an_item_id(store, tmp_path):
    """An entry naming its item only by Label Studio's ``id`` is refused: that id is no item id."""
    entry = {"id": 2, "label": "cat", "annotator": 1, "annotation_id": 9, "created_at": _DAY1, "updated_at": _DAY1,
             "lead_time": 1.0}
    with pytest.raises(LabelFileError, match="entry 1: no learnloss_id or path says which item is labeled 'cat'"):
        import_labels(store, _write(tmp_path, "min.json", json.dumps([entry])))
    csv_text = 'annotation_id,annotator,id,label\n9,"1",2,"cat"\n'
    with pytest.raises(LabelFileError, match="header: Label Studio's CSV export needs the tasks' 'learnloss_id'"):
        import_labels(store, _write(tmp_path, "min.csv", csv_text))
    assert store.current_labels() == {}


def test_learnloss_id_wins_over_id_in_our_own_files_too(store, tmp_path):
    import_labels(store, _write(tmp_path, "a.csv", "id,learnloss_id,label\n1,3,dog\n"))
    import_labels(store, _write(tmp_path, "b.json", json.dumps([{"id": 2, "learnloss_id": 4, "label": "cat"}])))
    assert store.current_labels() == {3: "dog", 4: "cat"}


def test_the_columns_of_a_label_studio_csv_may_come_in_any_order_and_unquoted(store, tmp_path):
    text = ("image,id,label,annotation_id,annotator,created_at,updated_at,lead_time,learnloss_id,path,rank,score\n"
            "/data/local-files/?d=img/1.png,1,cat,21,1,t,t,2.0,2,img/1.png,1,0.3\n"
            '/data/local-files/?d=img/2.png,2,"{""choices"": [""dog""]}",22,1,t,t,2.0,3,img/2.png,2,0.2\n'
            "/data/local-files/?d=img/3.png,3,,,,,,,4,img/3.png,3,\n")
    summary = import_labels(store, _write(tmp_path, "project-1-at-2024.csv", text))
    assert (summary.added, summary.skipped) == (2, ("row 4 (learnloss_id 4): no annotation yet",))
    assert store.current_labels() == {2: "cat", 3: "dog"}


def _min(entries):
    meta = {"annotator": 1, "created_at": _DAY1, "updated_at": _DAY1, "lead_time": 1.0}
    return json.dumps([{**meta, **entry} for entry in entries])


REFUSED = [
    ("wrong learnloss_id", "export.json", JSON_MIN.replace('"learnloss_id": 7', '"learnloss_id": 999'),
     "entry 6: unknown id 999: not an item of this project"),
    ("wrong learnloss_id", "export.csv", CSV.replace('3.2,7,"test/0.png"', '3.2,999,"test/0.png"'),
     "row 7: unknown id 999"),
    ("wrong path", "export.json", JSON_MIN.replace('"path": "test\\/0.png"', '"path": "img\\/1.png"'),
     "entry 6: id 7 is 'test/0.png', not 'img/1.png'"),
    ("unknown class", "export.csv", CSV.replace('"bird",3.2', '"wolf",3.2'), "row 7: unknown class 'wolf'"),
    ("annotations disagree", "export.json", JSON_MIN.replace('"label": "cat",\n  "annotator": 1,\n  '
                                                             '"annotation_id": 12', '"label": "dog",\n  "annotator": '
                                                             '1,\n  "annotation_id": 12'),
     "entry 2: the annotations of Label Studio task 2 disagree (cat, dog; also at entry 3); resolve them first"),
    ("annotations disagree", "export.json", json.dumps([_task(1, 1, "img/0.png", [_annotation(1, ["cat"]),
                                                                                   _annotation(2, ["dog"])])]),
     "task 1: its annotations disagree (cat, dog)"),
    ("several choices", "export.json", _min([{"id": 1, "learnloss_id": 2, "label": {"choices": ["cat", "dog"]},
                                              "annotation_id": 5}]),
     "entry 1: more than one choice (cat, dog); choose one class per task"),
    ("several choices", "export.csv", 'annotation_id,id,label,learnloss_id\n5,1,"{""choices"":[""cat"",""dog""]}",2\n',
     "row 2: more than one choice (cat, dog)"),
    ("not a choice", "export.json", _min([{"id": 1, "learnloss_id": 2, "label": {"text": ["cat"]},
                                           "annotation_id": 5}]),
     "entry 1: the 'label' value is not a choice of a class"),
    ("one item in two tasks", "export.json", _min([{"id": 1, "learnloss_id": 2, "label": "cat", "annotation_id": 5},
                                                   {"id": 9, "learnloss_id": 2, "label": "cat", "annotation_id": 6}]),
     "entry 2: item 2 is labeled again (first at entry 1)"),
    ("a renamed control", "export.json", _min([{"id": 1, "learnloss_id": 2, "class": "cat", "annotation_id": 5}]),
     "entries: no task has a 'label' choice, but there is 'class'; learnloss reads the Choices control named"),
    ("a renamed control", "export.csv", "annotation_id,class,id,learnloss_id\n5,cat,1,2\n",
     "header: no task has a 'label' choice, but there is 'class'"),
    ("relabel without the flag", "export.csv", CSV, "row 2: item 3 is labeled 'cat', the file says 'dog'; pass "
     "--relabel"),
]


@pytest.mark.parametrize(("case", "name", "content", "fragment"), REFUSED, ids=[case[0] for case in REFUSED])
def test_every_other_problem_still_refuses_the_whole_file(store, tmp_path, case, name, content, fragment):
    with store.transaction() as db:
        store.add_labels(db, [LabelRecord(3, "cat", "seed")])
    before = _snapshot(store)
    with pytest.raises(LabelFileError) as info:
        import_labels(store, _write(tmp_path, name, content))
    assert fragment in str(info.value) and "nothing was imported" in str(info.value)
    assert _snapshot(store) == before


def test_a_file_whose_every_task_is_skipped_imports_nothing_and_records_nothing(store, tmp_path):
    entries = [entry for entry in json.loads(JSON_MIN) if "label" not in entry]
    before = _snapshot(store)
    summary = import_labels(store, _write(tmp_path, "none.json", json.dumps(entries)))
    assert (summary.added, summary.relabeled, summary.unchanged, summary.changed) == (0, 0, 0, False)
    assert summary.skipped == ("entry 1 (learnloss_id 5): no annotation yet",
                               "entry 2 (learnloss_id 6): annotated without a choice")
    assert _snapshot(store) == before
    full = [_task(1, 1, "img/0.png", [_annotation(1, ["cat"], cancelled=True)]), _task(2, 2, "img/1.png", [])]
    summary = import_labels(store, _write(tmp_path, "none-full.json", json.dumps(full)))
    assert summary.skipped == ("task 1 (learnloss_id 1): skipped in Label Studio (cancelled)",
                               "task 2 (learnloss_id 2): no annotation yet")
    nothing_labeled = 'annotation_id,annotator,id,learnloss_id,path\n"","",1,1,"img/0.png"\n'
    summary = import_labels(store, _write(tmp_path, "none.csv", nothing_labeled))
    assert summary.skipped == ("row 2 (learnloss_id 1): no annotation yet",)
    assert _snapshot(store) == before


def test_an_empty_label_stays_a_problem_in_our_own_files(store, tmp_path):
    with pytest.raises(LabelFileError, match="row 2: no label; fill it in or delete the row"):
        import_labels(store, _write(tmp_path, "a.csv", "learnloss_id,label\n1,\n"))
    with pytest.raises(LabelFileError, match="entry 1: no label"):
        import_labels(store, _write(tmp_path, "a.json", json.dumps([{"learnloss_id": 1, "label": ""}])))


def test_a_single_choice_given_as_json_in_a_csv_cell_is_understood(store, tmp_path):
    text = 'annotation_id,id,label,learnloss_id\n5,1,"{""choices"": [""cat""]}",2\n6,2,"[x]",3\n'
    with pytest.raises(LabelFileError, match="row 3: unknown class '\\[x\\]'"):  # not JSON: a class name
        import_labels(store, _write(tmp_path, "a.csv", text))
    import_labels(store, _write(tmp_path, "b.csv", text.replace('"[x]"', "dog")))
    assert store.current_labels() == {2: "cat", 3: "dog"}


SEPARATED = [
    ("id;path;label\r\n1;img/0.png;cat\r\n", "header: the file seems to be separated by ';', not ','; save it as "
     "CSV with commas (in LibreOffice: Save As → Text CSV, field delimiter ',')"),
    ('"id";"label"\n"1";"cat"\n', "header: the file seems to be separated by ';', not ','"),
    ("id;path;prediction;confidence;label\n1;img/0.png;cat;0,61;cat\n", "separated by ';'"),
    ("id\tlabel\n1\tcat\n", "header: the file seems to be separated by tabs, not ','; save it as CSV with commas"),
    (CSV.replace(",", "\t"), "header: the file seems to be separated by tabs, not ',' (Label Studio's TSV export); "
     "export the project from Label Studio as CSV or JSON-MIN instead"),
]


@pytest.mark.parametrize(("content", "fragment"), SEPARATED)
def test_a_csv_separated_by_semicolons_or_tabs_gets_a_hint(store, tmp_path, content, fragment):
    with pytest.raises(LabelFileError) as info:
        import_labels(store, _write(tmp_path, "labels.csv", content))
    assert len(info.value.problems) == 1 and fragment in info.value.problems[0]
    assert store.current_labels() == {}


def test_a_header_without_label_and_no_other_delimiter_gets_no_hint(store, tmp_path):
    with pytest.raises(LabelFileError) as info:
        import_labels(store, _write(tmp_path, "labels.csv", "id;x,name\n1,cat\n"))
    assert "needs a 'label' column" in str(info.value) and "separated" not in str(info.value)


@pytest.mark.parametrize(("content", "shown"), [("path;label\nimg/0.png;cat\n", "';'"),
                                                ('"path";"label"\n"a.png";"cat"\n', "';'"),
                                                ("path\tlabel\na.png\tcat\n", "tabs")])
def test_a_manifest_separated_by_semicolons_gets_the_hint(tmp_path, content, shown):
    manifest = _write(tmp_path, "manifest.csv", content)
    with pytest.raises(UsageError, match=f"manifest.csv row 1: the file seems to be separated by {shown}, not ','; "
                                         "save it as CSV with commas"):
        read_table(manifest)
    _write(tmp_path, "one.csv", "path\nimg/a;b.png\n")
    assert read_table(tmp_path / "one.csv") == (["path"], [(2, {"path": "img/a;b.png"})])


def _reset(store):
    with store.transaction() as db:
        db.execute("DELETE FROM labels")
        db.execute("DELETE FROM imports")
        store.add_labels(db, [LabelRecord(2, "cat", "seed")])
    return _snapshot(store)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(EXPORTS)), data=st.data())
def test_fuzz_bit_flips_of_an_export_import_exactly_its_labels_or_change_nothing(store, tmp_path, fmt, data):
    """Property: a damaged export either imports exactly the labels it holds — none of a skipped task — or is
    refused with nothing written."""
    before = _reset(store)
    name, text = EXPORTS[fmt]
    content = bytearray(text.encode("utf-8"))
    for offset, bit in data.draw(st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 7)),
                                          min_size=1, max_size=4)):
        content[offset] ^= 1 << bit
    path = _write(tmp_path, name, bytes(content))
    try:
        summary = import_labels(store, path)
    except LearnLossError:
        assert _snapshot(store) == before
        return
    parsed = parse_label_file(path)
    assert not parsed.problems and summary.skipped == tuple(parsed.skipped)
    by_path = {source: item_id for item_id, source in store.items()}
    expected = {2: "cat", **{row.item_id if row.item_id is not None else by_path[row.path]: row.label
                             for row in parsed.rows}}
    assert store.current_labels() == expected and summary.added == len(expected) - 1 and summary.relabeled == 0


_LSVENV_PYTHON = Path(__file__).resolve().parents[2] / ".lsvenv" / "bin" / "python"
_LABEL_STUDIO = os.environ.get("LEARNLOSS_LABEL_STUDIO_PYTHON") or (str(_LSVENV_PYTHON) if _LSVENV_PYTHON.exists()
                                                                   else None)
_CONVERT = """
import sys
from label_studio_sdk.converter import Converter
converter = Converter(config=open(sys.argv[1]).read(), project_dir=None)
converter.convert(sys.argv[2], sys.argv[3] + "/min", "JSON_MIN", is_dir=False)
converter.convert(sys.argv[2], sys.argv[3] + "/csv", "CSV", is_dir=False)
"""


@pytest.mark.skipif(not _LABEL_STUDIO, reason="no Label Studio: run the README's test command (.lsvenv) or set "
                    "LEARNLOSS_LABEL_STUDIO_PYTHON")
def test_what_label_studios_own_converter_writes_imports(store, tmp_path):
    config = _write(tmp_path, "labelstudio-config.xml", label_studio_config(store.classes()))
    full = _write(tmp_path, "full.json", json.dumps(FULL))
    done = subprocess.run([str(_LABEL_STUDIO), "-c", _CONVERT, str(config), str(full), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    converted = {"labelstudio-min": tmp_path / "min" / "result.json",
                 "labelstudio-csv": tmp_path / "csv" / "result.csv"}
    assert converted["labelstudio-min"].read_bytes().decode("utf-8") == JSON_MIN
    assert converted["labelstudio-csv"].read_bytes().decode("utf-8") == CSV
    for fmt, path in converted.items():
        parsed = parse_label_file(Path(path))
        assert (parsed.fmt, parsed.problems, tuple(parsed.skipped)) == (fmt, [], SKIPPED[fmt])
    summary = import_labels(store, converted["labelstudio-csv"])
    assert summary.added == 3 and store.current_labels() == LABELS
