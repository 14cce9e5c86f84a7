"""The project store: one SQLite database, the single source of truth of a labeling project or a run folder.

It holds the items (an image path relative to the project's data root, or an array index), the classes,
every label with its provenance (cycle, strategy, score, rank, source file, time; a relabel keeps the old
label, marked superseded), the queries (cycle, item, score, rank; open, labeled or retired), the cycles
(resolved settings, metrics, checkpoint path and SHA-256) and the imported files. An item that can no longer be
used is *retired* (:meth:`ProjectStore.retire_items`), never deleted: its labels and history stay, but it is
no longer listed as an item, trained on, scored, queried or matched by an import.

Durability and concurrency come from SQLite itself: write-ahead logging, ``synchronous=FULL`` (a committed
label survives a crash of the process or the machine), foreign keys, and ``BEGIN IMMEDIATE`` transactions, so
a second writer waits up to ``timeout`` seconds and then fails with :class:`StoreBusyError` instead of
corrupting anything. The schema version is SQLite's ``user_version``; the store upgrades an older store in place
with :data:`MIGRATIONS`, one transaction per step.

The store opens only what it recognises. A new store is built in a temporary file and linked into place
complete, with SQLite's ``application_id`` set to :data:`APPLICATION_ID`; opening an existing file checks its
header, the application id, the schema version and SQLite's ``quick_check`` (or the full ``integrity_check``)
before anything is written, and never (re)initialises a file it did not just create. A store records its kind
(``labeling`` for ``learnloss init``, ``simulation`` for ``learnloss run --out``); a caller that names the kind
it needs is refused a store of the other kind. Every SQLite error that leaves the store is one
:class:`StoreError` line naming the file and what to do.

The pieces underneath have modules of their own, whose public names this module re-exports: the schema
(:mod:`learnloss.project.schema`), the SQLite file with its checks and errors (:mod:`learnloss.project.database`),
the project lock (:mod:`learnloss.project.lock`), and backups and inspection (:mod:`learnloss.project.backup`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from learnloss.errors import UsageError
from learnloss.jsonio import dumps
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.backup import BackupInfo, StoreInspection, backup, inspect_store
from learnloss.project.database import (
    DB_FILENAME,
    Check,
    Format,
    StoreBusyError,
    StoreConnection,
    StoreConstraintError,
    StoreCorruptError,
    StoreDiskFullError,
    StoreError,
    StoreFormatError,
    StoreIOError,
    StoreKindError,
    StoreReadOnlyError,
    StoreTextError,
    Where,
    busy_error,
    check_file,
    check_format,
    connect,
    corrupt_error,
    integrity_problems,
    publish,
    raise_if_damaged,
)
from learnloss.project.lock import LOCK_FILENAME, project_lock
from learnloss.project.schema import APPLICATION_ID, KINDS, MIGRATIONS, SCHEMA_VERSION, Kind

__all__ = [
    "APPLICATION_ID",
    "DB_FILENAME",
    "KINDS",
    "LOCK_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackupInfo",
    "LabelRecord",
    "ProjectStore",
    "StoreBusyError",
    "StoreConstraintError",
    "StoreCorruptError",
    "StoreDiskFullError",
    "StoreError",
    "StoreFormatError",
    "StoreIOError",
    "StoreInspection",
    "StoreKindError",
    "StoreReadOnlyError",
    "StoreTextError",
    "backup",
    "inspect_store",
    "project_lock",
]


def now() -> str:
    """The current UTC time as ISO 8601, the format of every time in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LabelRecord:
    """A label to store, with its provenance: a class name (``label``) or, for tasks whose targets are not
    classes, a JSON-ready ``target`` (with ``label`` None); a label from Label Studio also names the ``annotation``
    that gave it and that annotation's time ``annotated_at`` (ISO 8601 in UTC;
    :func:`~learnloss.project.labelstudio_reader.annotation_time`)."""

    item_id: int
    label: str | None
    source: str
    cycle: int | None = None
    strategy: str | None = None
    score: float | None = None
    rank: int | None = None
    target: Any = None
    annotation: str | None = None
    annotated_at: str | None = None


def _kind_error(project: Path, stored: str, wanted: str) -> StoreKindError:
    if stored == "simulation":
        return StoreKindError(
            f"{project} is a simulated run folder (learnloss run --out), not a labeling project; continue it with "
            f"learnloss run --resume --out {project} or read it with learnloss evaluate, and make a labeling project "
            "with learnloss init"
        )
    if stored == "labeling":
        return StoreKindError(
            f"{project} is a labeling project (learnloss init), not a simulated run folder; work on it with learnloss "
            "query, label, status and export, and give learnloss run a new --out folder"
        )
    return StoreKindError(f"{project} holds a store of kind {stored!r}, not a {wanted} store; point learnloss at "
                          f"a {'labeling project' if wanted == 'labeling' else 'run folder'}")


class ProjectStore:
    """Open (or, with ``create=True``, create) the store of the project folder ``project``.

    Args:
        project: the project folder; the database is ``project/learnloss.db``.
        create: create the folder and a new store; refused when a file of that name already exists there. The
            store is built in a temporary file and linked into place complete, so a process killed meanwhile
            leaves no ``learnloss.db`` (at most a ``.learnloss.db.*.tmp`` file that ``learnloss doctor --fix``
            removes).
        timeout: seconds a writer waits for another process's transaction before :class:`StoreBusyError`.
        kind: the kind of store the caller needs (``"labeling"`` or ``"simulation"``): recorded (meta key
            ``kind``) when creating; when opening, a store of the other kind is refused (one without the key is
            accepted). None accepts either.
        check: ``"quick"`` runs SQLite's ``quick_check`` on opening (every page, record and NOT NULL / CHECK
            constraint); ``"full"`` runs ``integrity_check``, which also verifies that every index matches its
            table and UNIQUE constraints hold — what a command that is about to write labels should ask for.

    Raises:
        UsageError: no store exists (and ``create`` is false), or one exists (and ``create`` is true), or a bad
            ``kind`` / ``check``.
        StoreFormatError: the file is empty, not SQLite, another application's database, or from a newer
            learnloss; it is left untouched.
        StoreKindError: the store is of the other kind.
        StoreCorruptError: the check found damage; nothing was written.
        StoreError: another SQLite failure (busy, disk full, read-only), one line.
    """

    def __init__(self, project: str | Path, create: bool = False, timeout: float = 30.0, kind: Kind | None = None,
                 check: Check = "quick") -> None:
        if kind is not None and kind not in KINDS:
            raise UsageError(f"a store's kind is one of {', '.join(KINDS)}, not {kind!r}")
        if check not in ("quick", "full"):
            raise UsageError(f"a store's check is 'quick' or 'full', not {check!r}")
        self.project = Path(project)
        self.path = self.project / DB_FILENAME
        self.timeout = timeout
        self._where = Where(self.path, self.project, timeout)
        if create:
            if os.path.lexists(self.path):
                raise UsageError(f"{self.project} is already a learnloss project; choose another folder")
            self.project.mkdir(parents=True, exist_ok=True)
            self._create(kind)
        elif not os.path.lexists(self.path):
            made_by = "learnloss run --out" if kind == "simulation" else "learnloss init"
            raise UsageError(f"{self.project} is not a learnloss project (no {DB_FILENAME}); create one with {made_by}")
        check_file(self._where)
        self.db = connect(self._where)
        try:
            self.format = check_format(self.db)
            raise_if_damaged(self.db, check)
            stored = self.stored_kind  # refused before anything is written (the meta table is in every version)
            if kind is not None and stored is not None and stored != kind:
                raise _kind_error(self.project, stored, kind)
            self.db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except BaseException:
            self.db.close()
            raise

    def _create(self, kind: Kind | None) -> None:
        """Build a new store in a temporary file next to ``learnloss.db`` (schema, application id, kind) and link
        it into place only when complete; refused if a ``learnloss.db`` appeared meanwhile."""
        fd, name = tempfile.mkstemp(prefix=f".{DB_FILENAME}.", suffix=".tmp", dir=self.project)
        os.close(fd)
        tmp = Path(name)
        try:
            db = connect(Where(tmp, self.project, self.timeout, subject=self.path))
            try:
                db.execute("PRAGMA journal_mode = MEMORY")  # a temporary file: no side files to leave behind
                with self._transaction(db):
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    for migration in MIGRATIONS:
                        self._run_migration(db, migration)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    if kind is not None:
                        self.set_meta("kind", kind, db)
            finally:
                db.close()
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a store gets ordinary permissions
            publish(tmp, self.path, lambda: UsageError(f"{self.project} is already a learnloss project; choose "
                                                          "another folder"))
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the connection (committed data is already durable)."""
        self.db.close()

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- transactions

    def _busy(self) -> StoreBusyError:
        return busy_error(self._where)

    @staticmethod
    @contextmanager
    def _transaction(db: StoreConnection) -> Iterator[StoreConnection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.rollback_quietly()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing write: ``BEGIN IMMEDIATE`` (waiting up to the timeout for other writers), then
        ``COMMIT``, or ``ROLLBACK`` on any exception (a failed ``COMMIT`` included).

        Raises:
            StoreBusyError: another process kept the database busy beyond the timeout.
            StoreError: SQLite failed (disk full, read-only, damaged); nothing was written.
        """
        with self._transaction(self.db) as db:
            yield db

    @staticmethod
    def _run_migration(db: StoreConnection, migration: str) -> None:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)

    def _migrate(self) -> None:
        """Upgrade an older store in place, one transaction per step; a store made before learnloss set the
        application id gets it in the first of them (or on its own)."""
        version = self.format.version
        legacy = self.format.legacy
        while version < SCHEMA_VERSION or legacy:
            with self.transaction() as db:
                assert isinstance(db, StoreConnection)
                if legacy:
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    legacy = False
                if version < SCHEMA_VERSION:
                    self._run_migration(db, MIGRATIONS[version])
                    version += 1
                    db.execute(f"PRAGMA user_version = {version}")
        self.format = Format(APPLICATION_ID, version, legacy=False)

    @contextmanager
    def exclusive(self, what: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the project's lock for a long operation (training and querying) that must not run twice at
        once; waits up to ``timeout`` (the store's by default). See :func:`project_lock`.

        Raises:
            StoreBusyError: another process held the lock for the whole timeout.
        """
        with project_lock(self.project, what, self.timeout if timeout is None else timeout):
            yield

    def verify(self, check: Check = "full") -> list[str]:
        """Run SQLite's ``integrity_check`` (``"full"``) or ``quick_check`` now: the problems found (at most 20),
        or an empty list."""
        return integrity_problems(self.db, check)

    def foreign_key_problems(self) -> list[str]:
        """Rows that point at a row that does not exist (``PRAGMA foreign_key_check``), one line each."""
        return [f"{table} row {rowid} points at a missing row of {parent}"
                for table, rowid, parent, _ in self.db.execute("PRAGMA foreign_key_check")]

    @property
    def stored_kind(self) -> str | None:
        """The kind recorded in the store (``"labeling"``, ``"simulation"``), or None for a store that records
        none."""
        kind = self.meta("kind")
        return kind if isinstance(kind, str) else None

    @property
    def schema_version(self) -> int:
        """The store's schema version (SQLite's ``user_version``)."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @property
    def application_id(self) -> int:
        """The store's SQLite ``application_id`` (:data:`APPLICATION_ID` once opened by this learnloss)."""
        return int(self.db.execute("PRAGMA application_id").fetchone()[0])

    # ------------------------------------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any, db: sqlite3.Connection | None = None) -> None:
        """Store ``value`` (JSON) under ``key``, inside the caller's transaction ``db`` or in one of its own."""
        if db is not None:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, dumps(value)))
            return
        with self.transaction() as own:
            own.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else self._decode(row[0], f"meta {key!r}")

    def _decode(self, text: Any, what: str) -> Any:
        """Decode a JSON text the store wrote; text that is not JSON means the database was damaged."""
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise corrupt_error(self._where, f"{what} is not the JSON learnloss wrote") from None

    # ----------------------------------------------------------------------------------- classes and items

    def classes(self, db: sqlite3.Connection | None = None) -> list[str]:
        """Class names in the order they were registered (their index is the model's class index)."""
        return [name for (name,) in (db or self.db).execute("SELECT name FROM classes ORDER BY id")]

    def add_classes(self, db: sqlite3.Connection, names: Sequence[str]) -> None:
        """Register new class names (inside the caller's transaction)."""
        db.executemany("INSERT INTO classes(name) VALUES (?)", [(name,) for name in names])

    def add_items(self, db: sqlite3.Connection, sources: Sequence[str], split: str = "pool") -> None:
        """Register items by their source (a path relative to the data root), inside the caller's transaction."""
        db.executemany("INSERT INTO items(source, split) VALUES (?, ?)", [(source, split) for source in sources])

    def item_ids(self, db: sqlite3.Connection, sources: Sequence[str], include_retired: bool = False
                 ) -> dict[str, int]:
        """``source -> id`` of the items ``sources`` (inside the caller's transaction); retired items are left
        out unless ``include_retired``."""
        active = "" if include_retired else " AND retired_at IS NULL"
        ids: dict[str, int] = {}
        for start in range(0, len(sources), 500):  # SQLite limits the number of bound parameters
            part = list(sources[start:start + 500])
            ids.update(db.execute(
                f"SELECT source, id FROM items WHERE source IN ({','.join('?' * len(part))}){active}", part))
        return ids

    def items_with_split(self, db: sqlite3.Connection | None = None, include_retired: bool = False
                         ) -> list[tuple[int, str, str]]:
        """``(id, source, split)`` of every item (retired ones only with ``include_retired``), by id."""
        where = "" if include_retired else " WHERE retired_at IS NULL"
        return list((db or self.db).execute(f"SELECT id, source, split FROM items{where} ORDER BY id"))

    def items(self, split: str | None = None, db: sqlite3.Connection | None = None, include_retired: bool = False
              ) -> list[tuple[int, str]]:
        """``(id, source)`` of every item (of ``split``; retired ones only with ``include_retired``), by id."""
        conditions = ([] if split is None else ["split = ?"]) + ([] if include_retired else ["retired_at IS NULL"])
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return list((db or self.db).execute(f"SELECT id, source FROM items{where} ORDER BY id",
                                            () if split is None else (split,)))

    def retired_items(self, db: sqlite3.Connection | None = None) -> list[tuple[int, str, str, str]]:
        """``(id, source, retired_at, reason)`` of every retired item, by id."""
        return list((db or self.db).execute(
            "SELECT id, source, retired_at, coalesce(retired_reason, '') FROM items WHERE retired_at IS NOT NULL "
            "ORDER BY id"))

    def retire_items(self, db: sqlite3.Connection, item_ids: Sequence[int], reason: str) -> list[int]:
        """Retire the items ``item_ids`` inside the caller's transaction: they stay in the store with their labels
        and history, but are no longer listed by :meth:`items`, :meth:`items_with_split`, :meth:`item_ids`,
        :meth:`current_labels` and :meth:`labeled_items` — so never trained on, scored, queried or matched by an
        import — and their open queries become ``retired``. Returns the ids retired now (items already retired
        keep their first time and reason; unknown ids are ignored: the caller checks them)."""
        retired: list[int] = []
        stamp = now()
        for start in range(0, len(item_ids), 500):
            part = [int(item_id) for item_id in item_ids[start:start + 500]]
            marks = ",".join("?" * len(part))
            retired += [row[0] for row in db.execute(
                f"SELECT id FROM items WHERE id IN ({marks}) AND retired_at IS NULL ORDER BY id", part)]
            db.execute(f"UPDATE items SET retired_at = ?, retired_reason = ? WHERE id IN ({marks}) "
                       "AND retired_at IS NULL", [stamp, reason, *part])
            db.execute(f"UPDATE queries SET status = 'retired' WHERE item_id IN ({marks}) AND status = 'open'", part)
        return retired

    # -------------------------------------------------------------------------------------------- labels

    def current_labels(self, db: sqlite3.Connection | None = None, include_retired: bool = False) -> dict[int, Any]:
        """``item id -> label`` of every (active, unless ``include_retired``) item's current (not superseded) label:
        its class name, or the decoded target of a label that is not a class (boxes, keypoints)."""
        active = "" if include_retired else " AND l.item_id NOT IN (SELECT id FROM items WHERE retired_at IS NOT NULL)"
        rows = (db or self.db).execute(
            "SELECT l.item_id, c.name, l.target FROM labels l LEFT JOIN classes c ON c.id = l.class_id "
            "WHERE l.current = 1" + active)
        return {item_id: name if name is not None else self._decode(target, f"the target of item {item_id}")
                for item_id, name, target in rows}

    def annotation_schema(self, db: sqlite3.Connection | None = None) -> AnnotationSchema:
        """The project's task and the names its labels use (a store made before projects had tasks: classes)."""
        row = (db or self.db).execute("SELECT value FROM meta WHERE key = 'annotation'").fetchone()
        stored = None if row is None else self._decode(row[0], "meta 'annotation'")
        return AnnotationSchema.from_meta(stored, self.classes(db))

    def labeled_items(self) -> list[tuple[int, str, Any, int | None]]:
        """``(item id, source, label, cycle)`` of every current label of an active item, by cycle then by when it
        was stored; the label is the class name, or the decoded target of a label that is not a class."""
        rows = self.db.execute(
            "SELECT i.id, i.source, c.name, l.target, l.cycle FROM labels l JOIN items i ON i.id = l.item_id "
            "LEFT JOIN classes c ON c.id = l.class_id WHERE l.current = 1 AND i.retired_at IS NULL "
            "ORDER BY l.cycle, l.id"
        )
        return [(item_id, source, name if name is not None else self._decode(target, f"the target of item {item_id}"),
                 cycle) for item_id, source, name, target, cycle in rows]

    def add_labels(
        self, db: sqlite3.Connection, records: Sequence[LabelRecord], import_id: int | None = None
    ) -> None:
        """Store ``records`` inside the caller's transaction; a record for an already labeled item supersedes
        its current label (the caller decides whether relabeling is allowed). Open queries of the labeled items
        are marked labeled."""
        class_ids = dict(db.execute("SELECT name, id FROM classes"))
        created = now()
        for record in records:
            old = db.execute("SELECT id FROM labels WHERE item_id = ? AND current = 1", (record.item_id,)).fetchone()
            if old is not None:  # free the "one current label" slot before inserting the new one
                db.execute("UPDATE labels SET current = 0 WHERE id = ?", (old[0],))
            cursor = db.execute(
                "INSERT INTO labels(item_id, class_id, cycle, strategy, score, rank, source, import_id, created_at, "
                "target, annotation_id, annotated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.item_id, None if record.label is None else class_ids[record.label], record.cycle,
                 record.strategy, record.score, record.rank, record.source, import_id, created,
                 None if record.target is None else dumps(record.target), record.annotation, record.annotated_at),
            )
            if old is not None:
                db.execute("UPDATE labels SET superseded_by = ? WHERE id = ?", (cursor.lastrowid, old[0]))
            db.execute("UPDATE queries SET status = 'labeled' WHERE item_id = ? AND status = 'open'",
                       (record.item_id,))

    def last_label_id(self) -> int:
        """The id of the latest label stored (0 for none): it grows with every label added or relabeled, so a
        change means labels arrived."""
        return int(self.db.execute("SELECT coalesce(max(id), 0) FROM labels").fetchone()[0])

    def label_annotations(self, db: sqlite3.Connection | None = None) -> dict[int, tuple[str | None, str]]:
        """``item id -> (annotation id, annotation time)`` of every current label that a Label Studio annotation of
        known time gave (or confirmed since: :meth:`note_annotation`), retired items' included."""
        return {item_id: (annotation, at) for item_id, annotation, at in (db or self.db).execute(
            "SELECT item_id, annotation_id, annotated_at FROM labels WHERE current = 1 AND annotated_at IS NOT NULL")}

    def note_annotation(self, db: sqlite3.Connection, item_id: int, annotation: str | None, at: str) -> None:
        """Record, inside the caller's transaction, that the Label Studio annotation ``annotation`` of time ``at``
        gave ``item_id`` its current label again (the label is unchanged): a later but older annotation must not
        replace it either. Only a newer time is recorded."""
        db.execute("UPDATE labels SET annotation_id = ?, annotated_at = ? WHERE item_id = ? AND current = 1 "
                   "AND (annotated_at IS NULL OR annotated_at < ?)", (annotation, at, item_id, at))

    def label_history(self) -> list[dict[str, Any]]:
        """Every label ever stored (retired items' included), oldest first, with its provenance and whether it is
        current; ``label`` is its class (None for boxes or keypoints), ``target`` its boxes or keypoints (None for a
        class)."""
        rows = self.db.execute(
            "SELECT l.id, i.id, i.source, c.name, l.cycle, l.strategy, l.score, l.rank, l.source, imp.file_name, "
            "l.created_at, l.target, l.current = 1 FROM labels l JOIN items i ON i.id = l.item_id "
            "LEFT JOIN classes c ON c.id = l.class_id LEFT JOIN imports imp ON imp.id = l.import_id ORDER BY l.id"
        )
        keys = ("label_id", "item_id", "path", "label", "cycle", "strategy", "score", "rank", "source", "file",
                "created_at", "target")
        return [{**dict(zip(keys, row[:-2])), "target": None if row[-2] is None else
                 self._decode(row[-2], f"the target of label {row[0]}"), "current": bool(row[-1])} for row in rows]

    # ------------------------------------------------------------------------------------------ imports

    def imported(self, sha256: str) -> bool:
        """Whether a file with this content was already imported."""
        return self.db.execute("SELECT 1 FROM imports WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def add_import(self, db: sqlite3.Connection, file_name: str, sha256: str, fmt: str, rows: int) -> int:
        """Record an imported file inside the caller's transaction; returns its id."""
        cursor = db.execute(
            "INSERT INTO imports(file_name, sha256, format, rows, created_at) VALUES (?, ?, ?, ?, ?)",
            (file_name, sha256, fmt, rows, now()),
        )
        assert cursor.lastrowid is not None  # an INSERT always sets it
        return int(cursor.lastrowid)

    # ------------------------------------------------------------------------------------ cycles, queries

    _CYCLE_COLUMNS = ("cycle", "status", "config", "metrics", "label_fingerprint", "checkpoint", "checkpoint_sha256",
                      "created_at")

    def _cycle_rows(self, order: str, limit: str = "") -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT {', '.join(self._CYCLE_COLUMNS)} FROM cycles ORDER BY cycle {order} {limit}")
        out = []
        for row in rows:
            cycle = dict(zip(self._CYCLE_COLUMNS, row))
            where = f"cycle {cycle['cycle']}"
            cycle["config"] = self._decode(cycle["config"], f"the settings of {where}")
            cycle["metrics"] = self._decode(cycle["metrics"], f"the metrics of {where}")
            out.append(cycle)
        return out

    def last_cycle(self) -> dict[str, Any] | None:
        """The latest cycle row as a dict (config and metrics decoded), or None."""
        rows = self._cycle_rows("DESC", "LIMIT 1")
        return rows[0] if rows else None

    def cycles(self) -> list[dict[str, Any]]:
        """Every cycle row, by cycle, as dicts (``config`` and ``metrics`` decoded)."""
        return self._cycle_rows("ASC")

    def drop_checkpoints(self, db: sqlite3.Connection, before: int) -> list[str]:
        """Forget the checkpoints of the cycles before ``before`` (inside the caller's transaction) and return their
        paths, for the caller to delete once the transaction has committed."""
        older = [row[0] for row in db.execute(
            "SELECT checkpoint FROM cycles WHERE cycle < ? AND checkpoint IS NOT NULL", (before,))]
        db.execute("UPDATE cycles SET checkpoint = NULL, checkpoint_sha256 = NULL WHERE cycle < ?", (before,))
        return older

    def roll_back_from(self, db: sqlite3.Connection, first: int) -> list[str]:
        """Remove, inside the caller's transaction, everything a simulated run recorded from cycle ``first`` on:
        those cycles, their queries, the labels those queries gave (cycle ``first + 1`` and later) and the items
        only they named, and the random streams recorded after those queries. Returns the dropped cycles'
        checkpoint paths, for the caller to delete once the transaction has committed."""
        dropped = [row[0] for row in db.execute(
            "SELECT checkpoint FROM cycles WHERE cycle >= ? AND checkpoint IS NOT NULL", (first,))]
        db.execute("DELETE FROM queries WHERE cycle >= ?", (first,))
        db.execute("DELETE FROM labels WHERE cycle > ?", (first,))
        db.execute("DELETE FROM items WHERE id NOT IN (SELECT item_id FROM labels) "
                   "AND id NOT IN (SELECT item_id FROM queries)")
        db.execute("DELETE FROM cycles WHERE cycle >= ?", (first,))
        for (key,) in db.execute("SELECT key FROM meta WHERE key LIKE 'streams:%'").fetchall():
            suffix = key[len("streams:"):]
            if not suffix.isdigit() or int(suffix) >= first:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
        return dropped

    def mark_queried(self, db: sqlite3.Connection, cycle: int, metrics: dict[str, Any] | None = None) -> None:
        """Mark ``cycle`` queried (and replace its metrics), inside the caller's transaction."""
        if metrics is None:
            db.execute("UPDATE cycles SET status = 'queried' WHERE cycle = ?", (cycle,))
        else:
            db.execute("UPDATE cycles SET status = 'queried', metrics = ? WHERE cycle = ?", (dumps(metrics), cycle))

    def add_trained_cycle(
        self, db: sqlite3.Connection, cycle: int, config: dict[str, Any], metrics: dict[str, Any], fingerprint: str,
        checkpoint: str, sha256: str,
    ) -> list[str]:
        """Record a trained cycle and its (already durable) checkpoint, inside the caller's transaction; a cycle
        trained before with other labels and never queried is replaced. Returns the replaced cycle's checkpoint path
        (when it is another file), for the caller to delete once the transaction has committed, so that no
        checkpoint is left that no cycle records."""
        replaced = [row[0] for row in db.execute(
            "SELECT checkpoint FROM cycles WHERE cycle = ? AND status = 'trained' AND checkpoint IS NOT NULL "
            "AND checkpoint != ?", (cycle, checkpoint))]
        db.execute("DELETE FROM cycles WHERE cycle = ? AND status = 'trained'", (cycle,))
        db.execute(
            "INSERT INTO cycles(cycle, status, config, metrics, label_fingerprint, checkpoint, checkpoint_sha256, "
            "created_at) VALUES (?, 'trained', ?, ?, ?, ?, ?, ?)",
            (cycle, dumps(config), dumps(metrics), fingerprint, checkpoint, sha256, now()),
        )
        return replaced

    def add_queries(
        self, db: sqlite3.Connection, cycle: int, strategy: str,
        rows: Sequence[tuple[int, float | None, int, str | None, float | None]],
    ) -> None:
        """Record open queries ``(item id, score, rank, prediction, confidence)`` of ``cycle``, inside the
        caller's transaction."""
        db.executemany(
            "INSERT INTO queries(cycle, item_id, score, rank, strategy, status, prediction, confidence) "
            "VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
            [(cycle, item_id, score, rank, strategy, prediction, confidence)
             for item_id, score, rank, prediction, confidence in rows],
        )

    def query_items(self, cycle: int, status: str | None = "open") -> list[tuple[int, str, int, float | None, str | None,
                                                                              float | None]]:
        """``(item id, source, rank, score, prediction, confidence)`` of ``cycle``'s queried items (of ``status``:
        ``open``, ``labeled`` or ``retired``; all if None), by rank."""
        sql = ("SELECT q.item_id, i.source, q.rank, q.score, q.prediction, q.confidence FROM queries q "
               "JOIN items i ON i.id = q.item_id WHERE q.cycle = ?")
        if status is None:
            return list(self.db.execute(sql + " ORDER BY q.rank", (cycle,)))
        return list(self.db.execute(sql + " AND q.status = ? ORDER BY q.rank", (cycle, status)))

    def queried_provenance(self, db: sqlite3.Connection) -> dict[int, tuple[int, str, float | None, int]]:
        """``item id -> (cycle, strategy, score, rank)`` of the latest query of each queried item."""
        return {item_id: (cycle, strategy, score, rank) for item_id, cycle, strategy, score, rank in db.execute(
            "SELECT item_id, cycle, strategy, score, rank FROM queries ORDER BY cycle")}

    def open_per_cycle(self) -> dict[int, int]:
        """How many queried items of each cycle are still open."""
        return dict(self.db.execute(
            "SELECT cycle, count(*) FROM queries WHERE status = 'open' GROUP BY cycle ORDER BY cycle"))

    def open_queries(self) -> list[tuple[int, int, str, float | None, int]]:
        """``(cycle, item id, source, score, rank)`` of every queried item not labeled yet."""
        return list(self.db.execute(
            "SELECT q.cycle, q.item_id, i.source, q.score, q.rank FROM queries q JOIN items i ON i.id = q.item_id "
            "WHERE q.status = 'open' ORDER BY q.cycle, q.rank"
        ))

    def counts(self) -> dict[str, int]:
        """Active items per split, labeled active items, superseded labels, open queries, imports, cycles and
        retired items."""
        one = lambda sql: int(self.db.execute(sql).fetchone()[0])  # noqa: E731
        return {
            "pool": one("SELECT count(*) FROM items WHERE split = 'pool' AND retired_at IS NULL"),
            "test": one("SELECT count(*) FROM items WHERE split = 'test' AND retired_at IS NULL"),
            "labeled": one("SELECT count(*) FROM labels l JOIN items i ON i.id = l.item_id "
                           "WHERE l.current = 1 AND i.retired_at IS NULL"),
            "relabels": one("SELECT count(*) FROM labels WHERE current = 0"),
            "open_queries": one("SELECT count(*) FROM queries WHERE status = 'open'"),
            "imports": one("SELECT count(*) FROM imports"),
            "cycles": one("SELECT count(*) FROM cycles"),
            "retired": one("SELECT count(*) FROM items WHERE retired_at IS NOT NULL"),
        }
