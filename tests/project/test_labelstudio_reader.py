"""The Label Studio reader's rules, one by one (:mod:`learnloss.project.labelstudio_reader`), and what the store
does with what it reads: item ids, choices and other controls, cancelled and skipped annotations, annotation times,
which item a task names, text that is not valid Unicode, the schema version that records annotation times."""

from __future__ import annotations

import json
import sqlite3

import pytest

from learnloss.project.database import DB_FILENAME
from learnloss.project.importer import LabelFileError, import_labels
from learnloss.project.labelstudio import LabelStudioSetup
from learnloss.project.labelstudio_reader import (
    AnnotationError, annotation_time, is_cancelled, parse_item_id, read_choice, read_task, shown, task_item,
)
from learnloss.project.schema import MIGRATIONS, SCHEMA_VERSION
from learnloss.project.store import LabelRecord, ProjectStore, StoreTextError
from tests_support import store_snapshot, write_file


@pytest.mark.parametrize(("value", "expected"), [(4, 4), ("4", 4), (" 17 ", 17), ("0", 0), (10**18 - 1, 10**18 - 1),
                                                 ("000123", 123)])
def test_an_item_id_is_an_int_or_plain_ascii_digits(value, expected):
    assert parse_item_id(value, "task 1") == expected


@pytest.mark.parametrize(("value", "fragment"), [
    ("²", "id '²' is not a whole number in plain digits"), ("٣", "plain digits"), ("１", "plain digits"),
    ("+1", "plain digits"), ("1_0", "plain digits"), ("-1", "plain digits"), (-1, "plain digits"), ("", "plain digits"),
    (True, "a true/false value"), (False, "a true/false value"), (1.0, "plain digits"), ([1], "plain digits"),
    (None, "plain digits"), ("9" * 19, "unknown id 9999999999999999999… (19 digits)"),
    (10**30, "unknown id 10000000000000000000… (31 digits)"), pytest.param(10**5000, "unknown id (a number of about 5001 digits)", id="5001-digits"),
    ("\udc00", "id '\\\\udc00'"),
])
def test_anything_else_is_not_an_item_id(value, fragment):
    with pytest.raises(AnnotationError) as raised:
        parse_item_id(value, "task 1")
    assert fragment in str(raised.value) and str(raised.value).startswith("task 1: ")
    str(raised.value).encode("utf-8")  # always valid UTF-8


def test_shown_text_is_valid_utf8_and_short():
    assert shown("a\udc00b") == "a\\udc00b" and shown("x" * 50, 10) == "x" * 10 + "…" and shown(3) == "3"


def _choice(*names: str) -> dict:
    return {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": list(names)}}


def test_choices_results_are_the_label_and_other_controls_are_ignored():
    comment = {"type": "textarea", "value": {"text": ["blurry"]}}
    rating = {"type": "rating", "value": {"rating": 4}}
    relation = {"type": "relation", "from_id": "a", "to_id": "b"}
    assert read_choice([comment, _choice("cat"), rating, relation], "t") == "cat"
    assert read_choice([comment, rating], "t") is None and read_choice([], "t") is None
    assert read_choice([_choice("cat"), _choice("cat")], "t") == "cat"
    assert read_choice([_choice("Cafe\u0301")], "t") == "Caf\u00e9"  # compared in NFC
    for results, fragment in [
        ([_choice("cat", "dog")], "not a single choice (2 choices)"), ([_choice()], "not a single choice (0 choices)"),
        ([{"value": {"choices": "cat"}}], "not a single choice (not a list)"),
        ([_choice("cat"), _choice("dog")], "chooses several classes (cat, dog)"),
        ([7], "not a single choice (not an object)"), ([{"value": 5}], "its 'value' is not an object"),
        ([{"type": "rectanglelabels", "value": {"rectanglelabels": ["cat"]}}], "a 'rectanglelabels' region"),
        ([{"value": {"keypointlabels": ["nose"], "x": 1, "y": 1}}], "a 'keypointlabels' region"),
    ]:
        with pytest.raises(AnnotationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            read_choice(results, "t")


def test_cancelled_or_skipped_annotations_are_not_labels_and_flags_are_booleans():
    assert not is_cancelled({}, "t") and not is_cancelled({"was_cancelled": False, "skipped": None}, "t")
    assert is_cancelled({"was_cancelled": True}, "t") and is_cancelled({"skipped": True, "was_cancelled": False}, "t")
    for value in ("false", 0, 1, [], {}):
        with pytest.raises(AnnotationError, match="must be true or false"):
            is_cancelled({"skipped": value}, "t")


def test_an_annotations_time_is_its_update_else_its_creation_in_utc():
    assert annotation_time({"updated_at": "2024-05-02T10:00:00.123456Z", "created_at": "2024-05-01T10:00:00Z"},
                           "t") == "2024-05-02T10:00:00.123456+00:00"
    assert annotation_time({"created_at": "2024-05-01T12:00:00+02:00"}, "t") == "2024-05-01T10:00:00.000000+00:00"
    assert annotation_time({"updated_at": None, "created_at": "2024-05-01T10:00:00"}, "t") \
        == "2024-05-01T10:00:00.000000+00:00"
    assert annotation_time({}, "t") is None
    for value in ("yesterday", 5, "2024-13-01T00:00:00", "9" * 60, "0001-01-01T00:00:00+01:00"):
        with pytest.raises(AnnotationError, match="'updated_at' is"):
            annotation_time({"updated_at": value}, "t")


def test_a_task_names_its_item_by_id_path_and_url_which_must_agree(tmp_path):
    root = tmp_path / "documents" / "photos"
    root.mkdir(parents=True)
    local = LabelStudioSetup.for_project(root)
    served = LabelStudioSetup.for_project(root, url_prefix="https://images.example/p/")
    own = "/data/local-files/?d=photos/a%20b.png"
    assert task_item({"learnloss_id": 4, "path": "a b.png", "image": own}, local, "t") == task_item(
        {"learnloss_id": "4", "path": "a b.png"}, local, "t")
    assert task_item({"$undefined$": own}, local, "t").path == "a b.png"
    assert task_item({"image": "https://images.example/p/a%20b.png"}, served, "t").path == "a b.png"
    assert task_item({"prediction": "cat", "learnloss_id": 4}, local, "t").named  # other text is not an image URL
    for data, setup, fragment in [
        ({"learnloss_id": 4, "image": "/data/local-files/?d=other/a.png"}, local, "is not under this project's"),
        ({"learnloss_id": 4, "image": "https://images.example/q/a.png"}, served, "is not under this project's"),
        ({"learnloss_id": 4, "image": own}, served, "is not under this project's"),
        ({"path": "c.png", "image": own}, local, "data.path 'c.png' and the image URL ('a b.png') name different"),
        ({"image": "/data/local-files/?d=photos/../../etc/passwd"}, local, "climbs out"),
    ]:
        item = task_item(data, setup, "t")
        assert not item.named and fragment in str(item.refusal), (data, item)
    for data, fragment in [({"learnloss_id": "²"}, "plain digits"), ({"path": 5}, "data.path must be text"),
                           ({"path": "../x.png"}, "climbs out"), ({"learnloss_id": True}, "true/false")]:
        with pytest.raises(AnnotationError, match=fragment):
            task_item(data, local, "t")
    # without a setup (a store without images) the URL is not read
    assert task_item({"learnloss_id": 4, "image": "anything"}, None, "t").named


def test_a_task_reading_skips_what_is_not_a_label_and_keeps_the_newest_time():
    problems: list[str] = []
    data = {"learnloss_id": 3}
    cancelled = {"id": 1, "was_cancelled": True, "result": [_choice("cat")]}
    reading = read_task(data, [cancelled], None, None, "task 1", problems)
    assert reading.skipped == "task 1 (learnloss_id 3): skipped in Label Studio (cancelled)" and not problems
    assert read_task(data, [], None, None, "task 1", problems).skipped == "task 1 (learnloss_id 3): no annotation yet"
    comment = {"id": 2, "result": [{"type": "textarea", "value": {"text": ["?"]}}]}
    assert read_task(data, [comment], None, None, "task 1", problems).skipped.endswith("annotated without a choice")
    older = {"id": 5, "result": [_choice("cat")], "updated_at": "2024-05-01T10:00:00Z"}
    newer = {"id": 6, "result": [_choice("cat")], "updated_at": "2024-05-03T10:00:00Z"}
    row = read_task(data, [newer, older, cancelled], None, None, "task 1", problems).row
    assert (row.item_id, row.label, row.annotation, row.annotated_at) == (3, "cat", "6", "2024-05-03T10:00:00.000000+00:00")
    assert not problems
    read_task(data, [older, {**newer, "result": [_choice("dog")]}], None, None, "task 1", problems)
    assert problems == ["task 1: its annotations disagree (cat, dog); resolve them first"]


# --------------------------------------------------------------------------------------------------- the store


def test_text_that_is_not_valid_unicode_never_reaches_the_store(store):
    before = store_snapshot(store)
    for write in (lambda db: store.add_import(db, "a\udc00.json", "0" * 64, "json", 1),
                  lambda db: store.add_labels(db, [LabelRecord(1, "cat", "import:x", annotation="\udc00",
                                                               annotated_at="2024-05-01T10:00:00.000000+00:00")]),
                  lambda db: store.set_meta("note", "\udc00", db)):
        with pytest.raises(StoreTextError) as raised:
            with store.transaction() as db:
                store.add_labels(db, [LabelRecord(2, "dog", "import:x")])  # written first, rolled back with the rest
                write(db)
        assert "lone surrogate U+DC00" in str(raised.value) and "\n" not in str(raised.value)
        assert store_snapshot(store) == before and store.meta("note") is None
    assert store.verify() == []


def test_an_older_annotation_in_an_export_does_not_replace_the_stored_label(store, tmp_path):
    def export(choice: str, at: str, annotation: int) -> str:
        return json.dumps([{"id": 1, "data": {"learnloss_id": 2}, "annotations": [
            {"id": annotation, "updated_at": at, "result": [_choice(choice)]}]}])

    import_labels(store, write_file(tmp_path, "a.json", export("cat", "2024-05-02T10:00:00Z", 7)))
    summary = import_labels(store, write_file(tmp_path, "b.json", export("dog", "2024-05-01T10:00:00Z", 6)),
                            relabel=True)
    assert summary.relabeled == 0 and "older than the stored label" in summary.skipped[0]
    assert store.current_labels() == {2: "cat"} and store.label_annotations() == {
        2: ("7", "2024-05-02T10:00:00.000000+00:00")}
    summary = import_labels(store, write_file(tmp_path, "c.json", export("dog", "2024-05-03T10:00:00Z", 6)),
                            relabel=True)
    assert summary.relabeled == 1 and store.current_labels() == {2: "dog"}
    # a label file without times (a CSV) relabels as before
    assert import_labels(store, write_file(tmp_path, "d.csv", "id,label\n2,bird\n"), relabel=True).relabeled == 1


def test_an_export_naming_an_image_of_another_project_is_refused(store, tmp_path):
    root = tmp_path / "documents" / "img"
    root.mkdir(parents=True)
    setup = LabelStudioSetup.for_project(root.parent)  # the store's items are img/N.png under the data root
    store.set_meta("data_root", str(root.parent))
    store.set_meta("label_studio", setup.to_meta())
    own = setup.image_url("img/0.png")
    good = [{"data": {"learnloss_id": 1, "image": own}, "annotations": [{"result": [_choice("cat")]}]}]
    assert import_labels(store, write_file(tmp_path, "good.json", json.dumps(good))).added == 1
    bad = [{"data": {"learnloss_id": 2, "image": "/data/local-files/?d=other/img/1.png"},
            "annotations": [{"result": [_choice("cat")]}]}]
    with pytest.raises(LabelFileError, match="task 1: the image URL .* is not under this project's"):
        import_labels(store, write_file(tmp_path, "bad.json", json.dumps(bad)))
    assert store.current_labels() == {1: "cat"}


def test_a_v3_store_opens_and_records_annotation_times_from_then_on(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    raw = sqlite3.connect(folder / DB_FILENAME, isolation_level=None)
    for migration in MIGRATIONS[:3]:
        raw.executescript(migration)
    raw.execute("PRAGMA user_version = 3")
    raw.execute("""INSERT INTO meta VALUES ('kind', '"labeling"')""")
    raw.executemany("INSERT INTO classes(name) VALUES (?)", [("cat",), ("dog",)])
    raw.executemany("INSERT INTO items(source, split) VALUES (?, 'pool')", [("a.png",), ("b.png",)])
    raw.execute("INSERT INTO labels(item_id, class_id, source, created_at) VALUES (1, 1, 'init', 't0')")
    raw.close()
    with ProjectStore(folder, kind="labeling") as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        assert store.current_labels() == {1: "cat"} and store.label_annotations() == {}
        with store.transaction() as db:
            store.add_labels(db, [LabelRecord(2, "dog", "import:x", annotation="9", annotated_at="2024-05-01T10:00:00"
                                                                                               ".000000+00:00")])
            store.note_annotation(db, 2, "8", "2024-04-01T10:00:00.000000+00:00")  # older: not recorded
        assert store.label_annotations() == {2: ("9", "2024-05-01T10:00:00.000000+00:00")}
        assert store.verify() == [] and store.foreign_key_problems() == []


def test_replacing_a_trained_cycle_hands_back_its_checkpoint(store):
    with store.transaction() as db:
        assert store.add_trained_cycle(db, 0, {}, {}, "fp1", "checkpoints/cycle-0-a.pt", "0" * 64) == []
    with store.transaction() as db:
        assert store.add_trained_cycle(db, 0, {}, {}, "fp2", "checkpoints/cycle-0-b.pt", "0" * 64) == [
            "checkpoints/cycle-0-a.pt"]
    with store.transaction() as db:  # the same file recorded again is not handed back for deletion
        assert store.add_trained_cycle(db, 0, {}, {}, "fp2", "checkpoints/cycle-0-b.pt", "0" * 64) == []


def test_flat_exports_follow_the_same_url_and_time_rules(store, tmp_path):
    """JSON-MIN entries and CSV rows carry the task's image URL and the annotation's times: checked alike."""
    root = tmp_path / "documents" / "img"
    root.mkdir(parents=True)
    setup = LabelStudioSetup.for_project(root.parent)
    store.set_meta("data_root", str(root.parent))
    store.set_meta("label_studio", setup.to_meta())

    def entry(item: int, image: str, label: str, at: str, annotation: int) -> dict:
        return {"image": image, "learnloss_id": item, "id": item, "label": label, "annotator": 1,
                "annotation_id": annotation, "created_at": at, "updated_at": at, "lead_time": 1.0}

    newer = [entry(1, setup.image_url("img/0.png"), "cat", "2024-05-02T10:00:00Z", 4)]
    assert import_labels(store, write_file(tmp_path, "a.json", json.dumps(newer))).added == 1
    older = [entry(1, setup.image_url("img/0.png"), "dog", "2024-05-01T10:00:00Z", 3)]
    summary = import_labels(store, write_file(tmp_path, "b.json", json.dumps(older)), relabel=True)
    assert summary.relabeled == 0 and "older than the stored label" in summary.skipped[0]
    foreign = [entry(2, "/data/local-files/?d=other/img/1.png", "cat", "2024-05-01T10:00:00Z", 5)]
    with pytest.raises(LabelFileError, match="entry 1: the image URL .* is not under this project's"):
        import_labels(store, write_file(tmp_path, "c.json", json.dumps(foreign)))
    mismatch = [entry(2, setup.image_url("img/3.png"), "cat", "2024-05-01T10:00:00Z", 5)]
    with pytest.raises(LabelFileError, match="entry 1: id 2 is 'img/1.png', not 'img/3.png'"):
        import_labels(store, write_file(tmp_path, "d.json", json.dumps(mismatch)))
    assert store.current_labels() == {1: "cat"}
