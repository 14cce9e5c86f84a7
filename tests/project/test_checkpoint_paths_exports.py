"""Checkpoints (atomic, checksummed, weights only), path safety, and the files written for labelers."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learnloss.errors import UsageError
from learnloss.project.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learnloss.project.exports import (
    QueriedItem, csv_records, escape_cell, read_table, unescape_cell, write_csv, write_query_batch,
)
from learnloss.project.importer import import_labels
from learnloss.project.labelstudio import LabelStudioSetup
from learnloss.project.paths import (
    AmbiguousNameError, ItemLocator, UnsafePathError, name_problem, resolve_inside, safe_relative,
)


def test_checkpoint_round_trip_and_checksum(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "meta": {"cycle": 3, "classes": ["a", "b"]}}
    digest = save_checkpoint(tmp_path / "ckpt" / "c3.pt", state)
    loaded = load_checkpoint(tmp_path / "ckpt" / "c3.pt", digest)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["meta"] == state["meta"]
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["c3.pt"], "no temporary file left behind"


def test_a_changed_or_missing_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    digest = save_checkpoint(path, {"w": torch.ones(3)})
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(path, digest)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "gone.pt", digest)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_checkpoint_with_code_in_it_is_never_unpickled(tmp_path):
    import hashlib

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(1), "payload": Evil()}, buffer)
    path = tmp_path / "evil.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="not a weights-only file"):
        load_checkpoint(path, hashlib.sha256(buffer.getvalue()).hexdigest())
    assert pickle  # the attack is a pickle; weights_only refuses it


@pytest.mark.parametrize("text", ["/etc/passwd", "../x.png", "a/../../x.png", "C:\\x.png", "", ".", "a\x00b"])
def test_unsafe_paths_are_refused(text):
    with pytest.raises(UnsafePathError):
        safe_relative(text, "row 3")


def test_safe_paths_are_normalised():
    assert safe_relative("./a//b\\c.png") == "a/b/c.png"


def test_symlinks_may_not_lead_outside_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "link").symlink_to(outside)
    (root / "inner").mkdir()
    (root / "ok").symlink_to(root / "inner")
    with pytest.raises(UnsafePathError, match="leads outside the data root"):
        resolve_inside(root, "link/secret.png")
    assert resolve_inside(root, "ok/x.png") == root / "ok" / "x.png"


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "-1.png"])
def test_formula_cells_are_escaped_and_unescaped(cell):
    assert escape_cell(cell) == "'" + cell
    assert unescape_cell(escape_cell(cell)) == cell
    assert escape_cell("cat.png") == "cat.png" and escape_cell(3) == 3


@pytest.mark.parametrize("number", ["-0.775617", "+3", "-1e-05", "-.5", "12"])
def test_plain_numbers_are_not_escaped(number):
    assert escape_cell(number) == number and unescape_cell(number) == number


def test_csv_export_escapes_formulas(tmp_path):
    write_csv(tmp_path / "x.csv", ("path", "label"), [("=cmd|' /C calc'!A0", "cat")])
    (row,) = list(csv.DictReader((tmp_path / "x.csv").open(encoding="utf-8")))
    assert row["path"].startswith("'=")


def test_the_query_batch_round_trips_through_the_importer(store, tmp_path):
    items = [QueriedItem(2, "img/1.png", 1, 3.5, "dog", 0.61), QueriedItem(5, "img/4.png", 2, 2.0, "cat", 0.9)]
    paths, _ = write_query_batch(tmp_path / "exports", 0, items, store.classes(), {"strategy": "learning-loss"},
                                 LabelStudioSetup.for_project(tmp_path / "images"))
    tasks = json.loads(paths["labelstudio"].read_text())
    assert tasks[0]["data"]["learnloss_id"] == 2 and tasks[0]["data"]["image"] == "/data/local-files/?d=images/img/1.png"
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["dog"]}
    assert '<Choice value="cat"/>' in paths["labelstudio_config"].read_text()
    text = paths["csv"].read_text().replace(",,dog", ",bird,dog").replace(",,cat", ",cat,cat")
    paths["csv"].write_text(text)  # what a labeler does in a spreadsheet
    summary = import_labels(store, paths["csv"])
    assert summary.added == 2 and store.current_labels() == {2: "bird", 5: "cat"}


def _strict_json(text):
    """Parse ``text`` as standard JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(token):
        raise ValueError(f"invalid JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_batch_without_scores_writes_valid_json_and_empty_cells(store, tmp_path):
    """A ``random`` query has no score: null in JSON, an empty CSV cell, no prediction score in Label Studio."""
    nan = float("nan")
    items = [QueriedItem(2, "img/1.png", 1, nan, "dog", 0.61), QueriedItem(5, "img/4.png", 2, nan, "cat", nan),
             QueriedItem(6, "img/5.png", 3, None, "bird", float("inf"))]
    paths, _ = write_query_batch(tmp_path / "exports", 0, items, store.classes(), {"strategy": "random", "x": nan},
                                 LabelStudioSetup.for_project(tmp_path / "images"))
    for kind in ("json", "labelstudio"):
        _strict_json(paths[kind].read_text(encoding="utf-8"))
    document = _strict_json(paths["json"].read_text(encoding="utf-8"))
    assert [item["score"] for item in document["items"]] == [None, None, None]
    assert [item["confidence"] for item in document["items"]] == [0.61, None, None]
    assert document["x"] is None
    tasks = _strict_json(paths["labelstudio"].read_text(encoding="utf-8"))
    assert [task["data"]["score"] for task in tasks] == [None, None, None]
    assert all("score" not in task["predictions"][0] for task in tasks)  # Label Studio sorts by the strategy's score
    assert [task["data"]["confidence"] for task in tasks] == [0.61, None, None]
    assert tasks[1]["predictions"][0]["result"][0]["value"] == {"choices": ["cat"]}
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    score = next(name for name in rows[0] if name.startswith("score"))
    assert score == "score (none: the strategy picks a set and scores no item on its own)"
    assert [row[score] for row in rows] == ["", "", ""]
    assert [row["confidence"] for row in rows] == ["0.6100", "", ""]
    assert "nan" not in paths["csv"].read_text().lower()


# ------------------------------------------------------------------------------------------ item names


@pytest.mark.parametrize(("name", "fragment"), [
    ("a\\b.png", "backslash"), (" a.png", "whitespace"), ("a.png ", "whitespace"), ("dir /a.png", "whitespace"),
    ("a\u00a0.png\u3000", "whitespace"), ("a\nb.png", "U+000A"), ("a\tb.png", "U+0009"), ("a\x7fb.png", "U+007F"),
    ("a\u2028b.png", "U+2028"), ("evil\u202egnp.exe", "U+202E"), ("a\udcffb.png", "not valid UTF-8"),
    ("'=x.png", "spreadsheet escape"), ("''+x.png", "spreadsheet escape"),
])
def test_names_no_command_could_address_are_explained(name, fragment):
    problem = name_problem(name)
    assert problem is not None and fragment in problem and "rename" in problem


@pytest.mark.parametrize("name", ["=a.png", "+b.png", "-c.png", "@d.png", "'s-Hertogenbosch.png", "x,y \"q\".png",
                                  "caf\u00e9.png", "cafe\u0301.png", "d\u00e9j\u00e0/vu #1 ?.png", "\u732b.png"])
def test_names_that_work_end_to_end_are_accepted(name):
    assert name_problem(name) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("'=+-@\t\rab,\" "), max_size=8))
def test_escaping_a_cell_is_undone_exactly(text):
    escaped = escape_cell(text)
    assert unescape_cell(escaped) == text
    assert not escaped.lstrip("'").startswith(("=", "+", "-", "@", "\t", "\r")) or escaped.startswith("'")


def test_the_locator_finds_files_whatever_their_normalisation(tmp_path):
    root = tmp_path / "root"
    (root / "cafe\u0301").mkdir(parents=True)  # NFD on disk, as macOS writes it
    (root / "cafe\u0301" / "e\u0301te\u0301.png").write_bytes(b"x")
    (root / "plain.png").write_bytes(b"x")
    locator = ItemLocator(root)
    found = locator.find("caf\u00e9/\u00e9t\u00e9.png")
    assert found.is_file() and found == root / "cafe\u0301" / "e\u0301te\u0301.png"
    assert locator.find("plain.png") == root / "plain.png"
    assert not locator.find("missing/x.png").exists()
    (root / "\u00e9.png").write_bytes(b"x")
    (root / "e\u0301.png").write_bytes(b"y")
    with pytest.raises(AmbiguousNameError, match="differ only in their Unicode normalisation; rename all but one"):
        ItemLocator(root).find("\u00e9.png", "item 3")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    (root / "link.png").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="leads outside the data root"):
        ItemLocator(root).find("link.png")


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path):
    text = 'path,label\n\na.png,x\n"b\nc.png",y\r\n\r\nd.png\n'
    assert [number for number, _ in csv_records(text)] == [1, 2, 3, 4, 5, 6]
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(("\ufeff" + text).encode("utf-8"))
    header, rows = read_table(manifest)
    assert header == ["path", "label"]
    assert rows == [(3, {"path": "a.png", "label": "x"}), (4, {"path": "b\nc.png", "label": "y"}),
                    (6, {"path": "d.png", "label": ""})]
    manifest.write_text("path,PATH\na,b\n")
    with pytest.raises(UsageError, match="row 1: the header repeats the column"):
        read_table(manifest)
