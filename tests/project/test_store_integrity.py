"""Hostile and damaged stores: the store opens only what it recognises, and every SQLite failure is one line.

Real SQLite files throughout: empty, foreign and damaged databases (bytes flipped inside the b-tree pages of the
labels table), stores of the other kind, an older schema, a full disk, a read-only connection, backups, retired
items and the project lock.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from learnloss.errors import LearnLossError, UsageError
from learnloss.labeling.workflow import export_labels
from learnloss.project import database
from learnloss.project import store as store_module
from learnloss.project.importer import LabelFileError, import_labels
from learnloss.project.store import (
    APPLICATION_ID,
    DB_FILENAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    LabelRecord,
    ProjectStore,
    StoreBusyError,
    StoreConstraintError,
    StoreCorruptError,
    StoreDiskFullError,
    StoreFormatError,
    StoreKindError,
    StoreReadOnlyError,
    backup,
    inspect_store,
)

CLASSES = ["bird", "cat", "dog"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _side_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != DB_FILENAME)


def _labeled(folder: Path, kind: str | None = "labeling", labels: int = 15) -> Path:
    """A closed store with 20 items and ``labels`` labels; returns its folder."""
    with ProjectStore(folder, create=True, kind=kind) as store:  # type: ignore[arg-type]
        with store.transaction() as db:
            store.add_classes(db, CLASSES)
            store.add_items(db, [f"img/{i}.png" for i in range(20)])
            store.add_labels(db, [LabelRecord(i + 1, CLASSES[i % 3], "init") for i in range(labels)])
    return folder


def _flip_labels_pages(folder: Path) -> None:
    """Flip bits in the cell pointer array of the labels table's root b-tree page (past the 100-byte file
    header): the page's structure no longer holds."""
    path = folder / DB_FILENAME
    raw = sqlite3.connect(path)
    root, = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'labels'").fetchone()
    page_size, = raw.execute("PRAGMA page_size").fetchone()
    raw.close()
    assert root > 1
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    header = 8 if data[start] == 13 else 12  # a leaf table page has an 8-byte header
    cells = int.from_bytes(data[start + 3:start + 5], "big")
    assert cells == 15
    for offset in range(start + header, start + header + 2 * cells, 5):
        data[offset] ^= 0xA5
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ recognising a store


def test_a_new_store_carries_the_application_id_and_its_kind(tmp_path):
    folder = _labeled(tmp_path / "p")
    raw = sqlite3.connect(folder / DB_FILENAME)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    with ProjectStore(folder) as store:
        assert store.stored_kind == "labeling" and store.meta("kind") == "labeling"
        assert store.application_id == APPLICATION_ID and store.schema_version == SCHEMA_VERSION
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")], "creation left its temporary file"


def test_an_empty_file_is_refused_and_stays_empty(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / DB_FILENAME).write_bytes(b"")
    for kind in (None, "labeling"):
        with pytest.raises(StoreFormatError, match=r"learnloss.db is empty \(0 bytes\).*restore it from a backup"):
            ProjectStore(folder, kind=kind)  # type: ignore[arg-type]
    assert (folder / DB_FILENAME).stat().st_size == 0
    assert _side_files(folder) == [], "the refused open created files"
    with pytest.raises(UsageError, match="already a learnloss project"):
        ProjectStore(folder, create=True)
    assert (folder / DB_FILENAME).stat().st_size == 0


def test_opening_a_folder_without_a_store_creates_nothing(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    with pytest.raises(UsageError, match="not a learnloss project .no learnloss.db.; create one with learnloss init"):
        ProjectStore(folder, kind="labeling")
    with pytest.raises(UsageError, match="learnloss run --out"):
        ProjectStore(folder, kind="simulation")
    assert list(folder.iterdir()) == []


def test_foreign_sqlite_databases_are_refused_untouched(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    raw = sqlite3.connect(other / DB_FILENAME)
    raw.execute("PRAGMA application_id = 1234")
    raw.execute("CREATE TABLE things(x)")
    raw.commit()
    raw.close()
    before = _digest(other / DB_FILENAME)
    with pytest.raises(StoreFormatError, match=r"another application \(application id 0x000004d2\), not a learnloss"):
        ProjectStore(other)
    assert _digest(other / DB_FILENAME) == before and _side_files(other) == []

    empty = tmp_path / "empty"
    empty.mkdir()
    raw = sqlite3.connect(empty / DB_FILENAME)
    raw.execute("CREATE TABLE t(x)")
    raw.execute("DROP TABLE t")  # a valid SQLite file with no table at all
    raw.commit()
    raw.close()
    before = _digest(empty / DB_FILENAME)
    with pytest.raises(StoreFormatError, match="an empty SQLite database, not a learnloss project; learnloss does not "
                                               "initialise a file it did not create"):
        ProjectStore(empty)
    assert _digest(empty / DB_FILENAME) == before
    with sqlite3.connect(empty / DB_FILENAME) as check:
        assert check.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _v2_store(folder: Path) -> None:
    """A store as learnloss wrote it before schema version 3 and the application id: the first two migrations,
    with items, labels (one relabel) and an open and a labeled query."""
    folder.mkdir()
    raw = sqlite3.connect(folder / DB_FILENAME, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    for migration in MIGRATIONS[:2]:
        raw.executescript(migration)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("""INSERT INTO meta VALUES ('kind', '"labeling"')""")
    raw.executemany("INSERT INTO classes(name) VALUES (?)", [(c,) for c in CLASSES])
    raw.executemany("INSERT INTO items(source, split) VALUES (?, 'pool')", [(f"img/{i}.png",) for i in range(6)])
    raw.execute("INSERT INTO labels(item_id, class_id, source, created_at, current) VALUES (1, 1, 'init', 't0', 0)")
    raw.execute("INSERT INTO labels(item_id, class_id, source, created_at) VALUES (1, 2, 'import:csv', 't1')")
    raw.execute("INSERT INTO labels(item_id, class_id, source, created_at) VALUES (2, 3, 'init', 't0')")
    raw.execute("INSERT INTO cycles VALUES (0, 'queried', '{}', '{}', 'fp', NULL, NULL, 't2')")
    raw.execute("INSERT INTO queries VALUES (0, 3, 0.9, 1, 'entropy', 'open', 'cat', 0.6)")
    raw.execute("INSERT INTO queries VALUES (0, 2, 0.8, 2, 'entropy', 'labeled', 'dog', 0.7)")
    raw.close()


def test_a_v2_store_is_upgraded_in_place_and_keeps_everything(tmp_path):
    folder = tmp_path / "old"
    _v2_store(folder)
    found = inspect_store(folder)  # read only: no migration
    assert (found.application_id, found.schema_version, found.problem) == (0, 2, None)
    with ProjectStore(folder, kind="labeling") as store:
        assert store.schema_version == SCHEMA_VERSION and store.application_id == APPLICATION_ID
        assert store.current_labels() == {1: "cat", 2: "dog"}
        assert [(h["label"], h["current"]) for h in store.label_history()] == [("bird", False), ("cat", True),
                                                                                ("dog", True)]
        assert store.open_queries() == [(0, 3, "img/2.png", 0.9, 1)]
        assert store.query_items(0, None) == [(3, "img/2.png", 1, 0.9, "cat", 0.6), (2, "img/1.png", 2, 0.8, "dog", 0.7)]
        with store.transaction() as db:
            assert store.retire_items(db, [3], "blurry") == [3]
        assert store.open_queries() == [] and store.counts()["retired"] == 1
    with ProjectStore(folder) as again:  # upgraded once
        assert again.schema_version == SCHEMA_VERSION and again.counts()["pool"] == 5


def test_a_newer_schema_is_refused(tmp_path):
    folder = _labeled(tmp_path / "p")
    raw = sqlite3.connect(folder / DB_FILENAME)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(StoreFormatError, match="newer than this learnloss understands"):
        ProjectStore(folder)


# -------------------------------------------------------------------------------------------------- kinds


def test_a_run_folder_is_not_a_labeling_project_and_the_reverse(tmp_path):
    run = _labeled(tmp_path / "run", kind="simulation")
    with pytest.raises(StoreKindError, match=r"run is a simulated run folder \(learnloss run --out\), not a labeling "
                                             r"project; continue it with learnloss run --resume"):
        ProjectStore(run, kind="labeling")
    with pytest.raises(UsageError):  # exit code 2: the wrong folder for the command
        ProjectStore(run, kind="labeling")
    with ProjectStore(run, kind="simulation") as store:
        assert store.stored_kind == "simulation"
    project = _labeled(tmp_path / "project", kind="labeling")
    with pytest.raises(StoreKindError, match=r"is a labeling project \(learnloss init\), not a simulated run folder"):
        ProjectStore(project, kind="simulation")
    unmarked = _labeled(tmp_path / "unmarked", kind=None)  # as stores made before kinds were recorded
    for kind in ("labeling", "simulation", None):
        with ProjectStore(unmarked, kind=kind) as store:  # type: ignore[arg-type]
            assert store.stored_kind is None
    with pytest.raises(UsageError, match="kind is one of labeling, simulation"):
        ProjectStore(unmarked, kind="other")  # type: ignore[arg-type]


def test_a_store_of_the_other_kind_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "old"
    _v2_store(folder)  # a labeling project of schema version 2: opening it for writing would upgrade it
    before = _digest(folder / DB_FILENAME)
    with pytest.raises(StoreKindError, match="is a labeling project"):
        ProjectStore(folder, kind="simulation")
    assert _digest(folder / DB_FILENAME) == before and inspect_store(folder).schema_version == 2


# ---------------------------------------------------------------------------------------------- damage


def test_flipped_bytes_in_the_labels_pages_are_refused_and_nothing_changes(tmp_path):
    folder = _labeled(tmp_path / "p")
    _flip_labels_pages(folder)
    before = _digest(folder / DB_FILENAME)
    for check in ("quick", "full"):
        with pytest.raises(StoreCorruptError, match=r"learnloss.db is damaged \(.*\); restore it from a backup "
                                                    r"\(learnloss backup PROJECT FILE makes one\) or run learnloss "
                                                    r"doctor .*p$") as caught:
            ProjectStore(folder, check=check)  # type: ignore[arg-type]
        assert "\n" not in str(caught.value) and caught.value.exit_code == 1
    out = tmp_path / "labels.csv"
    with pytest.raises(StoreCorruptError):
        export_labels(folder, out)
    assert not out.exists(), "an export of a damaged store was written"
    labels = tmp_path / "new.csv"
    labels.write_text("path,label\nimg/17.png,cat\n")
    with pytest.raises(StoreCorruptError):
        with ProjectStore(folder, check="full") as store:
            import_labels(store, labels)
    assert _digest(folder / DB_FILENAME) == before and _side_files(folder) == []
    with pytest.raises(StoreCorruptError, match="a backup of it would be damaged too, so none was made"):
        backup(folder, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists() and not list(tmp_path.glob(".copy.db.*"))


def test_reads_of_a_damaged_page_are_one_line_too(tmp_path):
    folder = _labeled(tmp_path / "p")
    _flip_labels_pages(folder)
    where = database.Where(folder / DB_FILENAME, folder, 1.0)
    db = database.connect(where)  # no check on purpose: the read itself must fail cleanly
    try:
        with pytest.raises(StoreCorruptError, match="is damaged .database disk image is malformed"):
            list(db.execute("SELECT * FROM labels"))
    finally:
        db.close()


def test_stored_text_that_is_not_utf8_is_a_damaged_store_too(tmp_path):
    folder = _labeled(tmp_path / "p")
    raw = sqlite3.connect(folder / DB_FILENAME)  # a flipped bit inside a text value: pages and indexes stay sound
    raw.execute("UPDATE classes SET name = CAST(x'62c5' AS TEXT) WHERE id = 1")
    raw.commit()
    raw.close()
    with ProjectStore(folder) as store, pytest.raises(StoreCorruptError, match="Could not decode to UTF-8"):
        store.classes()
    data = bytearray((folder / DB_FILENAME).read_bytes())  # and inside the schema's own SQL text
    at = data.index(b"CREATE TABLE meta") + len("CREATE ")
    data[at:at + 2] = b"\xc5A"
    (folder / DB_FILENAME).write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="text that is not UTF-8"):
        ProjectStore(folder)


def test_an_index_that_disagrees_with_its_table_needs_the_full_check(tmp_path):
    folder = _labeled(tmp_path / "p")
    raw = sqlite3.connect(folder / DB_FILENAME)
    raw.execute("PRAGMA writable_schema = ON")  # the index now claims other rows than it holds
    raw.execute("UPDATE sqlite_master SET sql = replace(sql, 'current = 1', 'current = 0') "
                "WHERE name = 'labels_one_current'")
    raw.commit()
    raw.close()
    with ProjectStore(folder) as store:  # the quick check reads pages and records, not index contents
        assert store.verify("full")
    before = _digest(folder / DB_FILENAME)
    with pytest.raises(StoreCorruptError, match=r"integrity check: wrong # of entries in index labels_one_current"):
        ProjectStore(folder, check="full")
    assert _digest(folder / DB_FILENAME) == before


# ------------------------------------------------------------------------------------ SQLite errors, one line


def test_a_full_disk_is_one_line_and_rolls_back(tmp_path):
    folder = _labeled(tmp_path / "p", labels=3)
    with ProjectStore(folder) as store:
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL, as on a full device
        with pytest.raises(StoreDiskFullError, match=r"^no space left on the device holding .*learnloss.db; free "
                                                     r"space and run the command again; nothing was written$") as caught:
            with store.transaction() as db:
                store.add_items(db, [f"more/{i:05d}-{'x' * 200}.png" for i in range(2000)])
        assert caught.value.exit_code == 74
        assert store.counts()["pool"] == 20 and store.current_labels() == {1: "bird", 2: "cat", 3: "dog"}
        store.db.execute("PRAGMA max_page_count = 1073741823")
        with store.transaction() as db:  # usable again once there is room
            store.add_items(db, ["after.png"])
        assert store.counts()["pool"] == 21


def test_a_read_only_database_is_one_line(tmp_path):
    folder = _labeled(tmp_path / "p", labels=0)
    with ProjectStore(folder) as store:
        store.db.execute("PRAGMA query_only = ON")
        with pytest.raises(StoreReadOnlyError, match="cannot be opened or written .attempt to write a readonly "
                                                     "database.*nothing was written"):
            with store.transaction() as db:
                store.add_labels(db, [LabelRecord(1, "cat", "test")])
        assert store.current_labels() == {}


def test_constraint_violations_are_store_errors_and_still_integrity_errors(store):
    with pytest.raises(StoreConstraintError, match="UNIQUE constraint failed: items.source.*rolled back") as caught:
        with store.transaction() as db:
            store.add_items(db, ["img/0.png"])
    assert isinstance(caught.value, sqlite3.IntegrityError) and isinstance(caught.value, LearnLossError)


# ------------------------------------------------------------------------------------------------- backups


def test_a_backup_round_trips_and_never_overwrites(tmp_path):
    folder = _labeled(tmp_path / "p")
    with ProjectStore(folder) as store:
        with store.transaction() as db:
            store.add_labels(db, [LabelRecord(1, "dog", "relabel")])
        history = store.label_history()
    dest = tmp_path / "backups" / "p.db"
    dest.parent.mkdir()
    info = backup(folder, dest)
    assert info.path == dest and info.size == dest.stat().st_size and info.schema_version == SCHEMA_VERSION
    assert sorted(os.listdir(dest.parent)) == ["p.db"], "the backup left side files or its temporary file"
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / DB_FILENAME).write_bytes(dest.read_bytes())
    with ProjectStore(restored, kind="labeling") as again:
        assert again.label_history() == history

    (tmp_path / "taken.db").write_bytes(b"precious")
    with pytest.raises(UsageError, match="taken.db already exists; a backup never overwrites a file"):
        backup(folder, tmp_path / "taken.db")
    assert (tmp_path / "taken.db").read_bytes() == b"precious"
    with pytest.raises(UsageError, match="does not exist; create it first"):
        backup(folder, tmp_path / "nowhere" / "x.db")
    with pytest.raises(UsageError, match="not a learnloss project"):
        backup(tmp_path / "restored-not", tmp_path / "y.db")


def test_a_backup_of_an_old_store_leaves_it_as_it_is(tmp_path):
    folder = tmp_path / "old"
    _v2_store(folder)
    before = _digest(folder / DB_FILENAME)
    assert backup(folder, tmp_path / "old.db").schema_version == 2
    assert _digest(folder / DB_FILENAME) == before


# ----------------------------------------------------------------------------------------- retired items


def test_a_retired_item_keeps_its_history_and_is_never_used_again(store, tmp_path):
    with store.transaction() as db:
        store.add_labels(db, [LabelRecord(1, "cat", "init"), LabelRecord(2, "dog", "init")])
    with store.transaction() as db:
        store.add_labels(db, [LabelRecord(2, "bird", "relabel")])
        store.add_trained_cycle(db, 0, {}, {}, "fp", "checkpoints/c.pt", "sha")
        store.add_queries(db, 0, "entropy", [(3, 0.5, 1, "cat", 0.9), (4, 0.4, 2, "dog", 0.8)])
        store.mark_queried(db, 0)
    with store.transaction() as db:
        assert store.retire_items(db, [2, 3], "image deleted") == [2, 3]
    with store.transaction() as db:
        assert store.retire_items(db, [3], "again") == []  # the first retirement stays
    assert [source for _, source in store.items()] == ["img/0.png", "img/3.png", "img/4.png", "img/5.png",
                                                       "test/0.png", "test/1.png"]
    assert [row[0] for row in store.items_with_split()] == [1, 4, 5, 6, 7, 8]
    assert len(store.items(include_retired=True)) == 8
    with store.transaction() as db:
        assert store.item_ids(db, ["img/1.png", "img/2.png", "img/3.png"]) == {"img/3.png": 4}
        assert store.item_ids(db, ["img/1.png"], include_retired=True) == {"img/1.png": 2}
    assert store.current_labels() == {1: "cat"}
    assert store.current_labels(include_retired=True) == {1: "cat", 2: "bird"}
    assert [row[0] for row in store.labeled_items()] == [1]
    assert [(h["item_id"], h["label"], h["current"]) for h in store.label_history()] == [
        (1, "cat", True), (2, "dog", False), (2, "bird", True)]
    assert store.open_queries() == [(0, 4, "img/3.png", 0.4, 2)]
    assert [row[0] for row in store.query_items(0, "retired")] == [3]
    assert store.retired_items()[0][:2] == (2, "img/1.png") and store.retired_items()[0][3] == "image deleted"
    assert store.counts() == {"pool": 4, "test": 2, "labeled": 1, "relabels": 1, "open_queries": 1, "imports": 0,
                              "cycles": 1, "retired": 2}
    labels = tmp_path / "late.csv"
    labels.write_text("path,label\nimg/2.png,cat\n")
    with pytest.raises(LabelFileError, match=r"item 3 \('img/2.png'\) is retired .*image deleted.*learnloss add"):
        import_labels(store, labels)


# -------------------------------------------------------------------------------------------------- the lock


def test_the_lock_message_never_names_a_dead_process(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store.project / ".lock").write_text(f"learnloss query (pid {dead.pid})")  # a killed holder's stale text
    script = (
        "import fcntl, sys, time\n"
        "handle = open(sys.argv[1], 'a')\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"  # holds the lock, has not written its own text yet
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(store.project / ".lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match=r"^another process is running on .* within 0.2 s; run query again"):
            with store.exclusive("query", timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_creation_is_all_or_nothing(tmp_path, monkeypatch):
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ProjectStore(tmp_path / "p", create=True, kind="simulation")
    assert list((tmp_path / "p").iterdir()) == [], "an interrupted creation left a store or its temporary file"
