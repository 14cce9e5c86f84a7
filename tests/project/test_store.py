"""The project store: schema, migrations, transactions, label history, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from learnloss.errors import UsageError
from learnloss.project.store import (
    DB_FILENAME,
    SCHEMA_VERSION,
    LabelRecord,
    ProjectStore,
    StoreBusyError,
    StoreFormatError,
)


def test_a_new_store_has_the_current_schema_wal_and_foreign_keys(store):
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.classes() == ["bird", "cat", "dog"]
    assert store.counts() == {"pool": 6, "test": 2, "labeled": 0, "relabels": 0, "open_queries": 0, "imports": 0,
                              "cycles": 0, "retired": 0}


def test_open_create_and_foreign_files(tmp_path, store):
    with pytest.raises(UsageError, match="already a learnloss project"):
        ProjectStore(store.project, create=True)
    with pytest.raises(UsageError, match="not a learnloss project.*learnloss init"):
        ProjectStore(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_FILENAME).write_bytes(b"this is no database" * 100)
    with pytest.raises(StoreFormatError, match="not a readable"):
        ProjectStore(tmp_path / "junk")
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / DB_FILENAME).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(StoreFormatError, match="not a learnloss project"):
        ProjectStore(other)


def test_a_store_from_a_newer_learnloss_is_refused(store):
    store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreFormatError, match="newer than this learnloss"):
        ProjectStore(store.project)


def test_reopening_keeps_everything(store):
    with store.transaction() as db:
        store.add_labels(db, [LabelRecord(1, "cat", "test")])
    with ProjectStore(store.project) as again:
        assert again.current_labels() == {1: "cat"}


def test_a_failed_transaction_writes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            store.add_labels(db, [LabelRecord(1, "cat", "test")])
            raise RuntimeError("crash in the middle")
    assert store.current_labels() == {}


def test_foreign_keys_refuse_labels_of_unknown_items(store):
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.execute("INSERT INTO labels(item_id, class_id, source, created_at) VALUES (999, 1, 'x', 'now')")


def test_relabel_supersedes_and_keeps_the_history(store):
    with store.transaction() as db:
        store.add_labels(db, [LabelRecord(1, "cat", "first")])
    with store.transaction() as db:
        store.add_labels(db, [LabelRecord(1, "dog", "second")])
    assert store.current_labels() == {1: "dog"}
    history = store.label_history()
    assert [(h["label"], h["current"], h["source"]) for h in history] == [("cat", False, "first"), ("dog", True, "second")]
    assert store.db.execute("SELECT superseded_by FROM labels WHERE id = ?", (history[0]["label_id"],)).fetchone()[0] \
        == history[1]["label_id"]
    with pytest.raises(sqlite3.IntegrityError):  # never two current labels for one item
        store.db.execute("UPDATE labels SET current = 1")


def _hold_lock(path, seconds):
    """Another process that holds the write lock for ``seconds``; returns once it holds it."""
    script = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2])); db.execute('COMMIT')\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_waits_then_fails_clearly(store):
    holder = _hold_lock(store.path, 3)
    with pytest.raises(StoreBusyError, match="another learnloss process is writing"):
        with ProjectStore(store.project, timeout=0.2).transaction():
            pass
    holder.wait()
    assert store.current_labels() == {}


def test_a_second_writer_proceeds_once_the_first_is_done(store):
    holder = _hold_lock(store.path, 0.5)
    with store.transaction() as db:  # waits (timeout 30 s) for the holder, then writes
        store.add_labels(db, [LabelRecord(2, "bird", "patient")])
    holder.wait()
    assert store.current_labels() == {2: "bird"}


def test_long_operations_are_exclusive_and_a_killed_holder_releases_the_lock(store):
    script = (
        "import sys, time\n"
        "from learnloss.project.store import ProjectStore\n"
        "store = ProjectStore(sys.argv[1])\n"
        "with store.exclusive('query'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(store.project)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreBusyError, match=r"learnloss query \(pid \d+\) is running on .* within 0.3 s; run query again"):
        with store.exclusive("query", timeout=0.3):
            pass
    holder.kill()
    holder.wait()
    with store.exclusive("query", timeout=5):  # the dead holder's lock is gone
        pass
