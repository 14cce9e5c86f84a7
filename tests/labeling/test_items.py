"""Registering items (init and add): only images every later command can read and address, one colour mode."""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from learnloss.data.limits import ResourceLimitError
from learnloss.errors import DatasetFormatError, UsageError
from learnloss.labeling.workflow import add_items, export_labels, init_project, project_dataset, project_spec, query_project
from learnloss.project.exports import unescape_cell
from learnloss.project.importer import import_labels
from learnloss.project.store import ProjectStore, StoreBusyError

FAST = {"epochs": 2, "milestones": [], "stop_grad_epoch": 1, "image_size": 8, "batch_size": 8}
NFC_CAFE, NFD_CAFE = "caf\u00e9.png", "cafe\u0301.png"


def _grey(path, value, size=(10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(value).integers(0, 30, size)
    Image.fromarray((noise + value).astype(np.uint8), mode="L").save(path)


def _colour(path, rgb, size=(10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def _no_leftovers(tmp_path, name="proj"):
    assert not (tmp_path / name).exists(), "a refused init left a project behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")], "a staging folder was left behind"


def _snapshot(project):
    with ProjectStore(project) as store:
        return [list(store.db.execute(f"SELECT * FROM {table} ORDER BY 1"))
                for table in ("items", "labels", "classes", "meta", "cycles", "queries")]


def _png_header_only(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


# ------------------------------------------------------------------------------ names that work end to end

#: Names init accepts although spreadsheets, label files or Unicode treat them specially.
HOSTILE_BUT_FINE = ["=SUM(1).png", "+1.png", "-2.png", "@at.png", "'s-Hertogenbosch.png", 'x,y "q".png', NFD_CAFE,
                    "sub/=inner.png", "sp ace #1 ?.png", "\u732b.png"]


def test_names_a_spreadsheet_or_unicode_treats_specially_round_trip(tmp_path):
    """init → query → every export file filled in → label import, for every accepted kind of hostile name."""
    root = tmp_path / "photos"
    truth = {}
    for i in range(6):
        _grey(root / f"n{i}.png", 40 if i % 2 else 180)
        truth[f"n{i}.png"] = "dark" if i % 2 else "light"
    _grey(root / "=seed.png", 40)
    truth["=seed.png"] = "dark"
    for i, name in enumerate(HOSTILE_BUT_FINE):
        _grey(root / name, 40 if i % 2 else 180)
        truth[name.replace(NFD_CAFE, NFC_CAFE)] = "dark" if i % 2 else "light"
    seed = tmp_path / "seed.csv"  # a person's file: the formula-like name escaped as a spreadsheet would show it
    seed.write_text("path,label\n" + "".join(f"n{i}.png,{truth[f'n{i}.png']}\n" for i in range(6))
                    + "'=seed.png,dark\n", encoding="utf-8")
    result = init_project(tmp_path / "proj", images=root, classes=["dark", "light"], labels=seed, settings=FAST)
    assert (result["pool"], result["labeled"]) == (17, 7)
    with ProjectStore(tmp_path / "proj") as store:
        names = {source for _, source in store.items()}
    assert names == set(truth) and NFC_CAFE in names, "names are stored in NFC"

    outcome = query_project(tmp_path / "proj", k=len(HOSTILE_BUT_FINE), device="cpu")
    queried = {item.path for item in outcome.items}
    assert queried == set(truth) - {f"n{i}.png" for i in range(6)} - {"=seed.png"}

    # 1. query-0.json, filled in
    document = json.loads(outcome.files["json"].read_text(encoding="utf-8"))
    for item in document["items"]:
        item["label"] = truth[item["path"]]
    outcome.files["json"].write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    with ProjectStore(tmp_path / "proj") as store:
        assert import_labels(store, outcome.files["json"]).added == len(queried)
        # 2. query-0.csv, filled in by a spreadsheet that keeps every cell's text (ids and paths must agree)
        rows = list(csv.DictReader(outcome.files["csv"].open(encoding="utf-8", newline="")))
        assert {unescape_cell(row["path"]) for row in rows} == queried
        assert all(not row["path"].startswith(("=", "+", "-", "@")) for row in rows), "formula cells escaped"
        for row in rows:
            row["label"] = truth[unescape_cell(row["path"])]
        with outcome.files["csv"].open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        assert import_labels(store, outcome.files["csv"]).unchanged == len(queried)
        # 3. by path alone, as exported (escaped), with the NFD spelling of the café
        by_path = tmp_path / "by-path.csv"
        with by_path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows([row["path"].replace(NFC_CAFE, NFD_CAFE), row["label"]] for row in rows)
        assert import_labels(store, by_path).unchanged == len(queried)
        # 4. Label Studio: the tasks written by query, annotated
        tasks = json.loads(outcome.files["labelstudio"].read_text(encoding="utf-8"))
        for task in tasks:
            task["annotations"] = [{"result": [{"value": {"choices": [truth[task["data"]["path"]]]}}]}]
        studio = tmp_path / "studio-export.json"
        studio.write_text(json.dumps(tasks), encoding="utf-8")
        assert import_labels(store, studio).unchanged == len(queried)
        assert {source: store.current_labels()[item_id] for item_id, source in store.items()} == truth

    export_labels(tmp_path / "proj", tmp_path / "all.csv")
    exported = list(csv.DictReader((tmp_path / "all.csv").open(encoding="utf-8", newline="")))
    assert {unescape_cell(row["path"]): unescape_cell(row["label"]) for row in exported} == truth


# ----------------------------------------------------------------------------------- names refused up front


def test_init_refuses_every_unusable_file_at_once_and_creates_nothing(tmp_path):
    root = tmp_path / "photos"
    for i in range(4):
        _grey(root / f"ok{i}.png", 40 + 60 * i)
    offenders = {
        "back\\slash.png": "backslash", " lead.png": "whitespace", "dir /trail.png": "whitespace",
        "new\nline.png": "U+000A", "'=quote.png": "spreadsheet escape", "fake.png": "not a format Pillow knows",
        "huge.png": "LEARNLOSS_MAX_IMAGE_PIXELS", "link.png": "a symlink leads it outside the data root",
        NFC_CAFE: "2 files have this name once Unicode-normalised",
    }
    for name in offenders:
        if name not in ("fake.png", "huge.png", "link.png"):
            _grey(root / name, 90)
    _grey(root / NFD_CAFE, 100)
    (root / "fake.png").write_text("not an image")
    (root / "huge.png").write_bytes(_png_header_only(15000, 11000))
    _grey(tmp_path / "secret.png", 7)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    bad_bytes = os.fsencode(str(root)) + b"/bad\xff.png"
    with open(bad_bytes, "wb") as handle:
        handle.write((root / "ok0.png").read_bytes())
    with pytest.raises(UsageError) as info:
        init_project(tmp_path / "proj", images=root, classes=["a", "b"], settings=FAST)
    message = str(info.value)
    assert "\n" not in message and "nothing was created" in message
    assert "10 problem(s)" in message
    for name, fragment in offenders.items():
        assert ascii(name)[1:-1] in message or repr(name)[1:-1] in message, name
        assert fragment in message, fragment
    assert "not valid UTF-8" in message
    _no_leftovers(tmp_path)


def test_a_manifest_may_list_only_images_inside_the_root(tmp_path):
    root = tmp_path / "photos"
    for i in range(4):
        _grey(root / f"{i}.png", 40 + 60 * i)
    _grey(root / NFC_CAFE, 200)
    (root / "notes.txt").write_text("a note")
    _grey(tmp_path / "secret.png", 7)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    manifest = root / "manifest.csv"
    manifest.write_text("path,label\n0.png,a\n1.png,b\nnotes.txt,a\nlink.png,b\ngone.png,a\n"
                        f"{NFD_CAFE},a\n{NFC_CAFE},b\n2.png,a\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        init_project(tmp_path / "proj", manifest=manifest, settings=FAST)
    message = str(info.value)
    assert "4 problem(s), nothing was created" in message and "\n" not in message
    assert "manifest.csv row 4: 'notes.txt': cannot read the image" in message
    assert "manifest.csv row 5: 'link.png': a symlink leads it outside the data root" in message
    assert "manifest.csv row 6: 'gone.png': not a file under" in message
    assert f"manifest.csv row 8: {NFC_CAFE!r}: listed again (first at row 7)" in message
    _no_leftovers(tmp_path)
    manifest.write_text(f"path,label\n0.png,a\n1.png,b\n{NFD_CAFE},a\n2.png,b\n", encoding="utf-8")
    result = init_project(tmp_path / "proj", manifest=manifest, settings=FAST)
    assert result["labeled"] == 4
    with ProjectStore(tmp_path / "proj") as store:
        assert NFC_CAFE in {source for _, source in store.items()}


def test_many_offenders_are_listed_together_and_capped(tmp_path):
    root = tmp_path / "photos"
    for i in range(60):
        (root / f"{i:02d}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{i:02d}.png").write_bytes(b"")
    with pytest.raises(UsageError) as info:
        init_project(tmp_path / "proj", images=root, classes=["a", "b"])
    message = str(info.value)
    assert message.count("cannot read the image") == 1, "one reason, stated once for all its files"
    assert "'00.png', '01.png'" in message and "and 40 more: cannot read the image" in message
    assert "60 problem(s)" in message


# ------------------------------------------------------------------------------------------- class names


@pytest.mark.parametrize(("classes", "fragment"), [
    (["a", "a "], "same class once trimmed"), (["\u00e9", "e\u0301", "b"], "same class once trimmed"),
    (["", "b"], "an empty class name"), (["'=x", "b"], "starts with ' before a formula"),
    (["a\tb", "c"], "control character"),
])
def test_class_names_that_repeat_or_cannot_be_labeled_are_one_line(tmp_path, classes, fragment):
    root = tmp_path / "photos"
    for i in range(3):
        _grey(root / f"{i}.png", 50 * i)
    with pytest.raises(UsageError, match=fragment) as info:
        init_project(tmp_path / "proj", images=root, classes=classes)
    assert "\n" not in str(info.value)
    _no_leftovers(tmp_path)


def test_labels_match_classes_in_unicode_nfc(tmp_path):
    root = tmp_path / "photos"
    for i in range(4):
        _grey(root / f"{i}.png", 50 * i)
    manifest = root / "m.csv"
    manifest.write_text("path,label\n0.png,e\u0301t\u00e9\n1.png,hiver\n2.png, hiver \n3.png,\n", encoding="utf-8")
    result = init_project(tmp_path / "proj", manifest=manifest, classes=["\u00e9t\u00e9", "hiver"])
    assert result["labeled"] == 3
    with ProjectStore(tmp_path / "proj") as store:
        assert store.classes() == ["\u00e9t\u00e9", "hiver"]
        assert sorted(store.current_labels().values()) == ["hiver", "hiver", "\u00e9t\u00e9"]
    manifest.write_text("path,label\n0.png,e\u0301t\u00e9\n1.png,hiver\n", encoding="utf-8")
    result = init_project(tmp_path / "proj2", manifest=manifest)  # classes from the labels, normalised
    with ProjectStore(tmp_path / "proj2") as store:
        assert store.classes() == ["hiver", "\u00e9t\u00e9"]


# ---------------------------------------------------------------------------------------------- colour


def _mixed(root, grey, colour, first_grey=True):
    names = []
    for i in range(grey):
        _grey(root / f"{'a' if first_grey else 'z'}{i}.png", 40 + 40 * i)
        names.append(f"{'a' if first_grey else 'z'}{i}.png")
    for i in range(colour):
        _colour(root / f"m{i}.png", (200, 30 * i, 10))
        names.append(f"m{i}.png")
    return names


def _channels(project):
    with ProjectStore(project) as store:
        dataset, _ = project_dataset(store, project_spec(store))
    return dataset.x_train.shape[1]


def test_one_greyscale_first_image_no_longer_turns_the_project_grey(tmp_path):
    """The issue's trial: the first image (sorted) is greyscale, the others are colour."""
    _mixed(tmp_path / "photos", grey=1, colour=4)
    result = init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["a", "b"], settings=FAST)
    assert (result["color"], result["converted"]) == ("rgb", 1)
    assert _channels(tmp_path / "proj") == 3


def test_the_most_common_mode_wins_or_the_setting(tmp_path):
    _mixed(tmp_path / "photos", grey=3, colour=2, first_grey=False)
    result = init_project(tmp_path / "grey", images=tmp_path / "photos", classes=["a", "b"], settings=FAST)
    assert (result["color"], result["converted"]) == ("grey", 2) and _channels(tmp_path / "grey") == 1
    result = init_project(tmp_path / "rgb", images=tmp_path / "photos", classes=["a", "b"], settings=FAST,
                          color="rgb")
    assert (result["color"], result["converted"]) == ("rgb", 3) and _channels(tmp_path / "rgb") == 3
    result = init_project(tmp_path / "gray", images=tmp_path / "photos", classes=["a", "b"], color="gray")
    assert result["color"] == "grey"
    with pytest.raises(UsageError, match="colour setting must be one of auto, rgb, grey, got 'sepia'"):
        init_project(tmp_path / "bad", images=tmp_path / "photos", classes=["a", "b"], color="sepia")
    _no_leftovers(tmp_path, "bad")


def test_a_project_made_before_the_setting_probes_every_image(tmp_path):
    _mixed(tmp_path / "photos", grey=1, colour=2)
    init_project(tmp_path / "proj", images=tmp_path / "photos", classes=["a", "b"], settings=FAST, color="grey")
    assert _channels(tmp_path / "proj") == 1
    with ProjectStore(tmp_path / "proj") as store, store.transaction() as db:
        db.execute("DELETE FROM meta WHERE key = 'color'")  # as an older learnloss left it
    assert _channels(tmp_path / "proj") == 3  # most images are colour (the first one is not)


# ------------------------------------------------------------------------------------- images at query time


def test_a_truncated_image_stops_a_query_with_one_line_and_records_nothing(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # noise compresses badly: half of the file is half of the pixel data
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), mode="L").save(root / f"{i}.png")
    seed = tmp_path / "seed.csv"
    seed.write_text("path,label\n0.png,a\n1.png,b\n")
    init_project(tmp_path / "proj", images=root, classes=["a", "b"], labels=seed, settings=FAST)
    before = _snapshot(tmp_path / "proj")
    data = (root / "5.png").read_bytes()
    (root / "5.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=r"5.png: the image file is truncated .*replace it") as info:
        query_project(tmp_path / "proj", k=2, device="cpu")
    assert "\n" not in str(info.value)
    assert _snapshot(tmp_path / "proj") == before


def test_an_image_grown_past_the_pixel_limit_stops_a_query(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    for i in range(4):
        _grey(root / f"{i}.png", 50 * i)
    init_project(tmp_path / "proj", images=root, classes=["a", "b"], settings=FAST)
    (root / "2.png").write_bytes(_png_header_only(15000, 11000))
    with ProjectStore(tmp_path / "proj") as store:
        with pytest.raises(ResourceLimitError, match="2.png: .*LEARNLOSS_MAX_IMAGE_PIXELS"):
            project_dataset(store, project_spec(store))


# ------------------------------------------------------------------------------------------------- add


def _project(tmp_path, n=6):
    root = tmp_path / "photos"
    for i in range(n):
        _grey(root / f"{i}.png", 40 if i % 2 else 180)
    seed = tmp_path / "seed.csv"
    seed.write_text("path,label\n0.png,light\n1.png,dark\n")
    init_project(tmp_path / "proj", images=root, classes=["dark", "light"], labels=seed, settings=FAST)
    return root


def test_add_registers_new_images_of_a_folder_and_skips_known_ones(tmp_path):
    root = _project(tmp_path)
    for i in range(3):
        _grey(root / "batch2" / f"=new{i}.png", 90)
    _colour(root / "batch2" / "c.png", (200, 0, 0))
    result = add_items(tmp_path / "proj", images=root)
    assert result == {"added": 4, "pool": 4, "test": 0, "labeled": 0, "skipped": 6, "color": "grey", "converted": 1}
    with ProjectStore(tmp_path / "proj") as store:
        assert {"batch2/=new0.png", "batch2/c.png"} <= {source for _, source in store.items()}
        assert store.counts()["pool"] == 10
        dataset, pool_ids = project_dataset(store, project_spec(store))
    assert dataset.x_train.shape[:2] == (10, 1) and len(pool_ids) == 10
    with pytest.raises(UsageError, match="no new images under .*all 4 are registered already"):
        add_items(tmp_path / "proj", images=root / "batch2")


def test_add_from_a_manifest_with_labels_and_splits(tmp_path):
    root = _project(tmp_path)
    for i in range(3):
        _grey(root / "more" / f"{i}.png", 60)
    (root / "more" / "m.csv").write_text("path,label,split\n0.png,dark,pool\n1.png,,pool\n2.png,light,test\n")
    result = add_items(tmp_path / "proj", manifest=root / "more" / "m.csv")
    assert (result["added"], result["pool"], result["test"], result["labeled"]) == (3, 2, 1, 2)
    with ProjectStore(tmp_path / "proj") as store:
        ids = dict((source, item_id) for item_id, source in store.items())
        labels = store.current_labels()
        assert labels[ids["more/0.png"]] == "dark" and labels[ids["more/2.png"]] == "light"
        assert ids["more/1.png"] not in labels
        assert [h["source"] for h in store.label_history() if h["item_id"] == ids["more/0.png"]] == ["add"]


def test_add_refuses_known_items_unknown_classes_and_bad_files_and_changes_nothing(tmp_path):
    root = _project(tmp_path)
    _grey(root / "n" / "ok.png", 60)
    (root / "n" / "fake.png").write_text("no image")
    _grey(root / "0b.png", 30)
    (root / "n.csv").write_text("path,label\n0.png,dark\nn/ok.png,wolf\nn/fake.png,\n0b.png,dark\n")
    before = _snapshot(tmp_path / "proj")
    with pytest.raises(UsageError) as info:
        add_items(tmp_path / "proj", manifest=root / "n.csv")
    message = str(info.value)
    assert "3 problem(s), nothing was added" in message
    assert "n.csv row 2: '0.png': registered already" in message
    assert "n.csv row 3: 'n/ok.png': unknown class 'wolf'" in message
    assert "n.csv row 4: 'n/fake.png': cannot read the image" in message
    assert _snapshot(tmp_path / "proj") == before
    with pytest.raises(UsageError, match="not inside the project's data root"):
        add_items(tmp_path / "proj", images=tmp_path)
    _grey(tmp_path / "elsewhere" / "x.png", 3)
    (root / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="not inside the project's data root"):
        add_items(tmp_path / "proj", images=root / "out")
    with pytest.raises(UsageError, match="give exactly one of"):
        add_items(tmp_path / "proj")
    assert _snapshot(tmp_path / "proj") == before


def test_add_waits_for_the_project_lock(tmp_path):
    root = _project(tmp_path)
    _grey(root / "new.png", 60)
    with ProjectStore(tmp_path / "proj") as holder, holder.exclusive("query"):
        with pytest.raises(StoreBusyError, match="learnloss query .* run add again"):
            add_items(tmp_path / "proj", images=root, timeout=0.3)
    assert add_items(tmp_path / "proj", images=root)["added"] == 1


def test_add_never_brings_back_a_removed_item(tmp_path):
    root = _project(tmp_path)
    with ProjectStore(tmp_path / "proj") as store, store.transaction() as db:
        (item_id,) = [i for i, source in store.items() if source == "3.png"]
        store.retire_items(db, [item_id], "blurry")
    _grey(root / "new.png", 60)
    result = add_items(tmp_path / "proj", images=root)
    assert (result["added"], result["skipped"]) == (1, 6)
    (root / "m.csv").write_text("path\n3.png\n")
    with pytest.raises(UsageError, match=r"m.csv row 2: '3.png': registered already and removed from the project "
                                         r"since \(blurry\); delete the row"):
        add_items(tmp_path / "proj", manifest=root / "m.csv")
