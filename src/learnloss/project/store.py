"""The project store: one SQLite database, the single source of truth of a labeling project.

It holds the items (an image path relative to the project's data root, or an array index), the classes,
every label with its provenance (cycle, strategy, score, rank, source file, time; a relabel keeps the old
label, marked superseded), the queries (cycle, item, score, rank, open or labeled), the cycles (resolved
settings, metrics, checkpoint path and SHA-256) and the imported files.

Durability and concurrency come from SQLite itself: write-ahead logging, ``synchronous=FULL`` (a committed
label survives a crash of the process or the machine), foreign keys, and ``BEGIN IMMEDIATE`` transactions, so
a second writer waits up to ``timeout`` seconds and then fails with :class:`StoreBusyError` instead of
corrupting anything. The schema version is SQLite's ``user_version``; :data:`MIGRATIONS` upgrades older
stores in place, one transaction per step.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from learnloss.errors import LearnLossError, UsageError
from learnloss.jsonio import dumps

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "LabelRecord",
    "ProjectStore",
    "StoreBusyError",
    "StoreFormatError",
]

DB_FILENAME = "learnloss.db"
LOCK_FILENAME = ".lock"

#: ``MIGRATIONS[v]`` takes a store from schema version ``v`` to ``v + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        split TEXT NOT NULL CHECK (split IN ('pool', 'test'))
    );
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        file_name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        format TEXT NOT NULL,
        rows INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE cycles (
        cycle INTEGER PRIMARY KEY CHECK (cycle >= 0),
        status TEXT NOT NULL CHECK (status IN ('trained', 'queried')),
        config TEXT NOT NULL,
        metrics TEXT NOT NULL,
        label_fingerprint TEXT NOT NULL,
        checkpoint TEXT,
        checkpoint_sha256 TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        class_id INTEGER NOT NULL REFERENCES classes(id),
        cycle INTEGER,
        strategy TEXT,
        score REAL,
        rank INTEGER,
        source TEXT NOT NULL,
        import_id INTEGER REFERENCES imports(id),
        created_at TEXT NOT NULL,
        current INTEGER NOT NULL DEFAULT 1 CHECK (current IN (0, 1)),
        superseded_by INTEGER REFERENCES labels(id)
    );
    CREATE UNIQUE INDEX labels_one_current ON labels(item_id) WHERE current = 1;
    CREATE TABLE queries (
        cycle INTEGER NOT NULL REFERENCES cycles(cycle),
        item_id INTEGER NOT NULL REFERENCES items(id),
        score REAL,
        rank INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'labeled')),
        prediction TEXT,
        confidence REAL,
        PRIMARY KEY (cycle, item_id)
    );
    CREATE INDEX queries_open ON queries(status);
    """,
    # v2: targets that are not a class (a regression vector; later boxes, keypoints) are stored as JSON in
    # labels.target, so class_id becomes optional; every label has one or the other.
    """
    CREATE TABLE labels_v2 (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        class_id INTEGER REFERENCES classes(id),
        cycle INTEGER,
        strategy TEXT,
        score REAL,
        rank INTEGER,
        source TEXT NOT NULL,
        import_id INTEGER REFERENCES imports(id),
        created_at TEXT NOT NULL,
        current INTEGER NOT NULL DEFAULT 1 CHECK (current IN (0, 1)),
        superseded_by INTEGER REFERENCES labels_v2(id),
        target TEXT,
        CHECK (class_id IS NOT NULL OR target IS NOT NULL)
    );
    INSERT INTO labels_v2 (id, item_id, class_id, cycle, strategy, score, rank, source, import_id, created_at,
                           current, superseded_by)
        SELECT id, item_id, class_id, cycle, strategy, score, rank, source, import_id, created_at, current,
               superseded_by FROM labels;
    DROP INDEX labels_one_current;
    DROP TABLE labels;
    ALTER TABLE labels_v2 RENAME TO labels;
    CREATE UNIQUE INDEX labels_one_current ON labels(item_id) WHERE current = 1;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreBusyError(LearnLossError):
    """Another process held the project's database for longer than the timeout."""


class StoreFormatError(UsageError):
    """The file is not a learnloss project database, or one made by a newer learnloss."""


@dataclass(frozen=True)
class LabelRecord:
    """A label to store, with its provenance: a class name (``label``) or, for tasks whose targets are not
    classes, a JSON-ready ``target`` (with ``label`` None)."""

    item_id: int
    label: str | None
    source: str
    cycle: int | None = None
    strategy: str | None = None
    score: float | None = None
    rank: int | None = None
    target: Any = None


def now() -> str:
    """The current UTC time as ISO 8601, the format of every time in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ProjectStore:
    """Open (or, with ``create=True``, create) the store of the project folder ``project``.

    Args:
        project: the project folder; the database is ``project/learnloss.db``.
        create: create the folder and an empty store; refused when a store already exists there.
        timeout: seconds a writer waits for another process's transaction before :class:`StoreBusyError`.

    Raises:
        UsageError: no store exists (and ``create`` is false), or one exists (and ``create`` is true).
        StoreFormatError: the file is not a learnloss store, or comes from a newer learnloss.
    """

    def __init__(self, project: str | Path, create: bool = False, timeout: float = 30.0) -> None:
        self.project = Path(project)
        self.path = self.project / DB_FILENAME
        self.timeout = timeout
        if create and self.path.exists():
            raise UsageError(f"{self.project} is already a learnloss project; choose another folder")
        if not create and not self.path.is_file():
            raise UsageError(f"{self.project} is not a learnloss project (no {DB_FILENAME}); create one with learnloss init")
        if create:
            self.project.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise self._busy() from None
            raise StoreFormatError(f"{self.path} is not a readable learnloss project database ({error})") from None

    def close(self) -> None:
        """Close the connection (committed data is already durable)."""
        self.db.close()

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- transactions

    def _busy(self) -> StoreBusyError:
        return StoreBusyError(
            f"another learnloss process is writing to {self.project} and did not finish within {self.timeout:g} s; "
            "run the command again when it is done"
        )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing write: ``BEGIN IMMEDIATE`` (waiting up to the timeout for other writers), then
        ``COMMIT``, or ``ROLLBACK`` on any exception."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise self._busy() from None
            raise
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreFormatError(
                f"{self.path} has schema version {version}, newer than this learnloss understands ({SCHEMA_VERSION}); "
                "upgrade learnloss"
            )
        if version == 0 and self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreFormatError(f"{self.path} is an SQLite database but not a learnloss project")
        while version < SCHEMA_VERSION:
            with self.transaction() as db:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def exclusive(self, what: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the project's lock for a long operation (training and querying) that must not run twice at
        once; waits up to ``timeout`` (the store's by default). The operating system releases the lock when
        the process dies, so a killed process never leaves the project locked.

        Raises:
            StoreBusyError: another process held the lock for the whole timeout.
        """
        limit = self.timeout if timeout is None else timeout
        with open(self.project / LOCK_FILENAME, "a+") as handle:
            deadline = time.monotonic() + limit
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise StoreBusyError(
                            f"{holder} is running on {self.project} and did not finish within {limit:g} s; "
                            f"run {what} again when it is done"
                        ) from None
                    time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(f"learnloss {what} (pid {os.getpid()})")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any, db: sqlite3.Connection | None = None) -> None:
        """Store ``value`` (JSON) under ``key``, inside the caller's transaction ``db`` or in one of its own."""
        if db is not None:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, dumps(value)))
            return
        with self.transaction() as own:
            own.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

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

    def item_ids(self, db: sqlite3.Connection, sources: Sequence[str]) -> dict[str, int]:
        """``source -> id`` of the items ``sources`` (inside the caller's transaction)."""
        ids: dict[str, int] = {}
        for start in range(0, len(sources), 500):  # SQLite limits the number of bound parameters
            part = list(sources[start:start + 500])
            ids.update(db.execute(f"SELECT source, id FROM items WHERE source IN ({','.join('?' * len(part))})", part))
        return ids

    def items_with_split(self, db: sqlite3.Connection | None = None) -> list[tuple[int, str, str]]:
        """``(id, source, split)`` of every item, by id."""
        return list((db or self.db).execute("SELECT id, source, split FROM items ORDER BY id"))

    def items(self, split: str | None = None, db: sqlite3.Connection | None = None) -> list[tuple[int, str]]:
        """``(id, source)`` of every item (of ``split``), by id."""
        if split is None:
            return list((db or self.db).execute("SELECT id, source FROM items ORDER BY id"))
        return list(self.db.execute("SELECT id, source FROM items WHERE split = ? ORDER BY id", (split,)))

    # -------------------------------------------------------------------------------------------- labels

    def current_labels(self, db: sqlite3.Connection | None = None) -> dict[int, str]:
        """``item id -> class name`` of every item's current (not superseded) class label."""
        return dict((db or self.db).execute(
            "SELECT l.item_id, c.name FROM labels l JOIN classes c ON c.id = l.class_id WHERE l.current = 1"
        ))

    def labeled_items(self) -> list[tuple[int, str, Any, int | None]]:
        """``(item id, source, label, cycle)`` of every current label, by cycle then by when it was stored; the
        label is the class name, or the decoded target of a label that is not a class."""
        rows = self.db.execute(
            "SELECT i.id, i.source, c.name, l.target, l.cycle FROM labels l JOIN items i ON i.id = l.item_id "
            "LEFT JOIN classes c ON c.id = l.class_id WHERE l.current = 1 ORDER BY l.cycle, l.id"
        )
        return [(item_id, source, name if name is not None else json.loads(target), cycle)
                for item_id, source, name, target, cycle in rows]

    def add_labels(
        self, db: sqlite3.Connection, records: Sequence[LabelRecord], import_id: int | None = None
    ) -> None:
        """Store ``records`` inside the caller's transaction; a record for an already labeled item supersedes
        its current label (the caller decides whether relabeling is allowed). Queries of the labeled items are
        marked labeled."""
        class_ids = dict(db.execute("SELECT name, id FROM classes"))
        created = now()
        for record in records:
            old = db.execute("SELECT id FROM labels WHERE item_id = ? AND current = 1", (record.item_id,)).fetchone()
            if old is not None:  # free the "one current label" slot before inserting the new one
                db.execute("UPDATE labels SET current = 0 WHERE id = ?", (old[0],))
            cursor = db.execute(
                "INSERT INTO labels(item_id, class_id, cycle, strategy, score, rank, source, import_id, created_at, "
                "target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.item_id, None if record.label is None else class_ids[record.label], record.cycle,
                 record.strategy, record.score, record.rank, record.source, import_id, created,
                 None if record.target is None else dumps(record.target)),
            )
            if old is not None:
                db.execute("UPDATE labels SET superseded_by = ? WHERE id = ?", (cursor.lastrowid, old[0]))
            db.execute("UPDATE queries SET status = 'labeled' WHERE item_id = ?", (record.item_id,))

    def label_history(self) -> list[dict[str, Any]]:
        """Every label ever stored, oldest first, with its provenance and whether it is current."""
        rows = self.db.execute(
            "SELECT l.id, i.id, i.source, c.name, l.cycle, l.strategy, l.score, l.rank, l.source, imp.file_name, "
            "l.created_at, l.current = 1 FROM labels l JOIN items i ON i.id = l.item_id "
            "LEFT JOIN classes c ON c.id = l.class_id LEFT JOIN imports imp ON imp.id = l.import_id ORDER BY l.id"
        )
        keys = ("label_id", "item_id", "path", "label", "cycle", "strategy", "score", "rank", "source", "file",
                "created_at", "current")
        return [dict(zip(keys, row[:-1] + (bool(row[-1]),))) for row in rows]

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
            cycle["config"], cycle["metrics"] = json.loads(cycle["config"]), json.loads(cycle["metrics"])
            out.append(cycle)
        return out

    def last_cycle(self) -> dict[str, Any] | None:
        """The latest cycle row as a dict (config and metrics decoded), or None."""
        rows = self._cycle_rows("DESC", "LIMIT 1")
        return rows[0] if rows else None

    def cycles(self) -> list[dict[str, Any]]:
        """Every cycle row, by cycle, as dicts (``config`` and ``metrics`` decoded)."""
        return self._cycle_rows("ASC")

    def drop_checkpoints(self, db: sqlite3.Connection) -> list[str]:
        """Forget every recorded checkpoint (inside the caller's transaction) and return their paths, for the
        caller to delete once the transaction that records a newer one has committed."""
        older = [row[0] for row in db.execute("SELECT checkpoint FROM cycles WHERE checkpoint IS NOT NULL")]
        db.execute("UPDATE cycles SET checkpoint = NULL, checkpoint_sha256 = NULL")
        return older

    def mark_queried(self, db: sqlite3.Connection, cycle: int, metrics: dict[str, Any] | None = None) -> None:
        """Mark ``cycle`` queried (and replace its metrics), inside the caller's transaction."""
        if metrics is None:
            db.execute("UPDATE cycles SET status = 'queried' WHERE cycle = ?", (cycle,))
        else:
            db.execute("UPDATE cycles SET status = 'queried', metrics = ? WHERE cycle = ?", (dumps(metrics), cycle))

    def add_trained_cycle(
        self, db: sqlite3.Connection, cycle: int, config: dict[str, Any], metrics: dict[str, Any], fingerprint: str,
        checkpoint: str, sha256: str,
    ) -> None:
        """Record a trained cycle and its (already durable) checkpoint, inside the caller's transaction; a cycle
        trained before with other labels and never queried is replaced."""
        db.execute("DELETE FROM cycles WHERE cycle = ? AND status = 'trained'", (cycle,))
        db.execute(
            "INSERT INTO cycles(cycle, status, config, metrics, label_fingerprint, checkpoint, checkpoint_sha256, "
            "created_at) VALUES (?, 'trained', ?, ?, ?, ?, ?, ?)",
            (cycle, dumps(config), dumps(metrics), fingerprint, checkpoint, sha256, now()),
        )

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
        """``(item id, source, rank, score, prediction, confidence)`` of ``cycle``'s queried items (of ``status``;
        all if None), by rank."""
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
        """Items per split, labeled items, open queries, imports and cycles."""
        one = lambda sql: int(self.db.execute(sql).fetchone()[0])  # noqa: E731
        return {
            "pool": one("SELECT count(*) FROM items WHERE split = 'pool'"),
            "test": one("SELECT count(*) FROM items WHERE split = 'test'"),
            "labeled": one("SELECT count(*) FROM labels WHERE current = 1"),
            "relabels": one("SELECT count(*) FROM labels WHERE current = 0"),
            "open_queries": one("SELECT count(*) FROM queries WHERE status = 'open'"),
            "imports": one("SELECT count(*) FROM imports"),
            "cycles": one("SELECT count(*) FROM cycles"),
        }
