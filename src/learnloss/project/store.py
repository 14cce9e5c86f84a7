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
corrupting anything. The schema version is SQLite's ``user_version``; :data:`MIGRATIONS` upgrades older
stores in place, one transaction per step.

The store opens only what it recognises. A new store is built in a temporary file and linked into place
complete, with SQLite's ``application_id`` set to :data:`APPLICATION_ID`; opening an existing file checks its
header, the application id, the schema version and SQLite's ``quick_check`` (or the full ``integrity_check``)
before anything is written, and never (re)initialises a file it did not just create. A store records its kind
(``labeling`` for ``learnloss init``, ``simulation`` for ``learnloss run --out``); a caller that names the kind
it needs is refused a store of the other kind. Every SQLite error that leaves the store is one
:class:`StoreError` line naming the file and what to do: damaged (:class:`StoreCorruptError`), out of space
(:class:`StoreDiskFullError`), not writable (:class:`StoreReadOnlyError`), busy (:class:`StoreBusyError`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from learnloss.atomic import fsync_dir
from learnloss.errors import LearnLossError, UsageError
from learnloss.jsonio import dumps

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
    "backup",
    "inspect_store",
    "project_lock",
]

DB_FILENAME = "learnloss.db"
LOCK_FILENAME = ".lock"

#: SQLite's ``PRAGMA application_id`` of every learnloss store (the ASCII bytes ``LNLS``, big-endian): tells a
#: learnloss store from any other SQLite database without reading its tables.
APPLICATION_ID = 0x4C4E4C53

#: The kinds of store: a labeling project (``learnloss init``) and a simulated run folder (``learnloss run --out``).
KINDS = ("labeling", "simulation")
Kind = Literal["labeling", "simulation"]
Check = Literal["quick", "full"]

#: The tables of schema version 1 and later; a database without them is not a learnloss store.
_TABLES = frozenset({"meta", "classes", "items", "imports", "cycles", "labels", "queries"})
_SQLITE_MAGIC = b"SQLite format 3\x00"

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
    # v3: items are retired, never deleted (retired_at and retired_reason; NULL = active), and a query of a
    # retired item is no longer open: queries.status may also be 'retired'.
    """
    ALTER TABLE items ADD COLUMN retired_at TEXT;
    ALTER TABLE items ADD COLUMN retired_reason TEXT;
    CREATE TABLE queries_v3 (
        cycle INTEGER NOT NULL REFERENCES cycles(cycle),
        item_id INTEGER NOT NULL REFERENCES items(id),
        score REAL,
        rank INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'labeled', 'retired')),
        prediction TEXT,
        confidence REAL,
        PRIMARY KEY (cycle, item_id)
    );
    INSERT INTO queries_v3 (cycle, item_id, score, rank, strategy, status, prediction, confidence)
        SELECT cycle, item_id, score, rank, strategy, status, prediction, confidence FROM queries;
    DROP INDEX queries_open;
    DROP TABLE queries;
    ALTER TABLE queries_v3 RENAME TO queries;
    CREATE INDEX queries_open ON queries(status);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


# ------------------------------------------------------------------------------------------------------ errors


class StoreError(LearnLossError):
    """The project's database failed at run time; the message names the file and what to do."""


class StoreBusyError(StoreError):
    """Another process held the project's database (or its lock) for longer than the timeout."""


class StoreCorruptError(StoreError):
    """The database is damaged: SQLite's integrity check fails, or a page cannot be read."""


class StoreIOError(StoreError):
    """The operating system refused to read or write the database. Exits with 74 (``EX_IOERR`` of
    ``sysexits.h``), like the command line's other refused reads and writes."""

    exit_code = 74


class StoreDiskFullError(StoreIOError):
    """No space was left on the device holding the database; the transaction was rolled back."""


class StoreReadOnlyError(StoreIOError):
    """The database cannot be written (a read-only file system, no permission) or opened."""


class StoreConstraintError(StoreError, sqlite3.IntegrityError):
    """A write broke a rule of the schema (a unique or foreign key, a check); it was rolled back. Also an
    :class:`sqlite3.IntegrityError`, so code that expects one still catches it."""


class StoreFormatError(UsageError):
    """The file is not a learnloss project database (empty, foreign, not SQLite), or one made by a newer
    learnloss."""


class StoreKindError(StoreFormatError):
    """The store is of the other kind: a run folder where a labeling project is needed, or the reverse."""


# SQLite's primary result codes (https://www.sqlite.org/rescode.html) that the store tells apart.
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 5, 6, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_FORMAT, _SQLITE_NOTADB = 13, 14, 19, 23, 24, 26


@dataclass(frozen=True)
class _Where:
    """What an error message names: the database file, its project folder, the busy timeout, and the file to
    name instead when the database is a copy being made (a backup's target)."""

    path: Path
    project: Path
    timeout: float
    subject: Path | None = None


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _busy_error(where: _Where) -> StoreBusyError:
    return StoreBusyError(
        f"another learnloss process is writing to {where.project} and did not finish within {where.timeout:g} s; "
        "run the command again when it is done"
    )


def _corrupt_error(where: _Where, detail: str) -> StoreCorruptError:
    return StoreCorruptError(
        f"{where.path} is damaged ({_one_line(detail)}); restore it from a backup (learnloss backup PROJECT FILE "
        f"makes one) or run learnloss doctor {where.project}"
    )


def _translate(error: sqlite3.Error, where: _Where) -> LearnLossError:
    """The one-line :class:`StoreError` of an SQLite error, by SQLite's result code (Python 3.11+) or, failing
    that, by its message."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(error)
    lowered = text.lower()
    target = where.subject or where.path
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in lowered or "busy" in lowered:
        return _busy_error(where)
    if primary == _SQLITE_FULL or "disk is full" in lowered:
        return StoreDiskFullError(f"no space left on the device holding {target}; free space and run the command "
                                  "again; nothing was written")
    if (primary in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN, _SQLITE_AUTH) or "readonly" in lowered
            or "unable to open" in lowered):
        return StoreReadOnlyError(
            f"{target} cannot be opened or written ({text}): a read-only file system or no permission; make it and "
            "its folder writable for you (or copy the project somewhere writable) and run the command again; "
            "nothing was written"
        )
    if primary == _SQLITE_IOERR or "i/o error" in lowered:
        return StoreIOError(f"reading or writing {target} failed in the operating system ({text}): the disk may be "
                            "full, failing or gone; check it and run the command again; nothing was written")
    if (primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_FORMAT) or "malformed" in lowered
            or "not a database" in lowered):
        return _corrupt_error(where, text)
    if isinstance(error, sqlite3.IntegrityError):
        return StoreConstraintError(f"a write to {target} broke a rule of the store ({text}); it was rolled back, "
                                    f"nothing was written; run learnloss doctor {where.project}")
    return StoreError(f"an operation on {target} failed ({text}); nothing was written; run learnloss doctor "
                      f"{where.project}, or restore it from a backup")


#: Errors that are mistakes in learnloss itself (wrong SQL use, a closed connection), not the user's: they keep
#: their type so the command line reports them as bugs.
_BUGS = (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError)


class _StoreCursor(sqlite3.Cursor):
    """A cursor whose every step turns SQLite errors into :class:`StoreError` lines (see :func:`_translate`)."""

    connection: _StoreConnection

    def _fail(self, error: sqlite3.Error) -> LearnLossError:
        return _translate(error, self.connection.where)

    def execute(self, sql: str, parameters: Any = (), /) -> _StoreCursor:  # type: ignore[override]
        try:
            super().execute(sql, parameters)
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise self._fail(error) from None
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> _StoreCursor:  # type: ignore[override]
        try:
            super().executemany(sql, seq_of_parameters)
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise self._fail(error) from None
        return self

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise self._fail(error) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise self._fail(error) from None

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size if size is not None else self.arraysize)
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise self._fail(error) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise self._fail(error) from None


class _StoreConnection(sqlite3.Connection):
    """The store's connection: ``execute``, ``executemany`` and ``commit`` (and iterating their cursors) raise
    a :class:`StoreError` line instead of an :class:`sqlite3.Error` — the one place where SQLite errors are
    translated."""

    where: _Where

    def cursor(self, factory: Any = _StoreCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> _StoreCursor:  # type: ignore[override]
        cursor: _StoreCursor = self.cursor()
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _StoreCursor:  # type: ignore[override]
        cursor: _StoreCursor = self.cursor()
        return cursor.executemany(sql, parameters)

    def commit(self) -> None:
        try:
            super().commit()
        except _BUGS:
            raise
        except sqlite3.Error as error:
            raise _translate(error, self.where) from None

    def rollback_quietly(self) -> None:
        """Roll back the open transaction, if SQLite has not already (it does after a full disk or an I/O
        error); an error doing so is left to the error that caused the rollback."""
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                sqlite3.Connection.execute(self, "ROLLBACK")


def _connect(where: _Where, mode: Literal["ro", "rw"] = "rw") -> _StoreConnection:
    """Connect to the existing file ``where.path`` (``mode=rw``/``ro``: SQLite never creates it), foreign keys
    on, ``synchronous=FULL``; nothing is written yet."""
    uri = f"file:{quote(str(where.path.absolute()))}?mode={mode}"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=where.timeout, isolation_level=None, factory=_StoreConnection)
    except sqlite3.Error as error:
        raise _translate(error, where) from None
    assert isinstance(db, _StoreConnection)
    db.where = where
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


def _check_file(where: _Where) -> None:
    """Refuse, before SQLite touches it, a path that is not a regular file, is empty, or is not an SQLite
    database (its first 16 bytes). Nothing is created or written.

    Raises:
        StoreFormatError: not a file, empty, or not SQLite.
        StoreReadOnlyError: the file cannot be read.
    """
    path = where.path
    if not path.is_file():
        raise StoreFormatError(f"{path} is not a file; a learnloss project keeps its database in a file named "
                               f"{DB_FILENAME}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(100)
    except OSError as error:
        raise StoreReadOnlyError(f"{path} cannot be read ({error.strerror}); make it readable for you and run the "
                                 "command again") from None
    if not head:
        raise StoreFormatError(
            f"{path} is empty (0 bytes), not a learnloss project database — probably cut short by a full disk or an "
            "interrupted copy; it was left as it is: restore it from a backup, or delete it and create the project "
            "again (learnloss init, or learnloss run --out)"
        )
    if not head.startswith(_SQLITE_MAGIC):
        raise StoreFormatError(
            f"{path} is not a readable learnloss project database (not an SQLite file: a foreign file, or a store "
            "damaged at its start); it was left as it is: restore it from a backup, or point learnloss at a project "
            "folder"
        )
    if len(head) < 100:
        raise _corrupt_error(where, f"only {len(head)} bytes, shorter than an SQLite header")


@dataclass(frozen=True)
class _Format:
    """What the header of a recognised store says: its application id and schema version, and whether it is a
    store made before learnloss set the application id (to be set when it is next opened for writing)."""

    application_id: int
    version: int
    legacy: bool


def _check_format(db: _StoreConnection) -> _Format:
    """Recognise a learnloss store by its application id (or, for a store made before learnloss set one, by
    its tables), reading only.

    Raises:
        StoreFormatError: an empty or foreign SQLite database, or one from a newer learnloss.
        StoreCorruptError: the header or the schema cannot be read, or tables are missing.
    """
    where = db.where
    path = where.path
    application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if application_id not in (0, APPLICATION_ID):
        raise StoreFormatError(
            f"{path} is an SQLite database of another application (application id {application_id:#010x}), not a "
            "learnloss project; it was left as it is: point learnloss at a project folder (learnloss init makes one)"
        )
    if application_id == 0 and not tables and version == 0:
        raise StoreFormatError(
            f"{path} is an empty SQLite database, not a learnloss project; learnloss does not initialise a file it "
            "did not create: delete it, or create the project in a new folder (learnloss init, or learnloss run --out)"
        )
    if application_id == 0 and (version == 0 or not _TABLES <= tables):
        raise StoreFormatError(
            f"{path} is an SQLite database but not a learnloss project (tables: {', '.join(sorted(tables)) or 'none'}); "
            "it was left as it is: point learnloss at a project folder (learnloss init makes one)"
        )
    if version > SCHEMA_VERSION:
        raise StoreFormatError(
            f"{path} has schema version {version}, newer than this learnloss understands ({SCHEMA_VERSION}); "
            "upgrade learnloss"
        )
    if version == 0:
        raise _corrupt_error(where, "it carries learnloss's application id but no schema version")
    missing = _TABLES - tables
    if missing:
        raise _corrupt_error(where, f"tables missing: {', '.join(sorted(missing))}")
    return _Format(application_id, version, legacy=application_id == 0)


def _integrity_problems(db: _StoreConnection, check: Check, limit: int = 20) -> list[str]:
    """SQLite's ``quick_check`` (pages, records, NOT NULL and CHECK constraints) or, with ``check="full"``,
    ``integrity_check`` (also that indexes match their tables and UNIQUE constraints hold): the problems found,
    at most ``limit``, or an empty list."""
    pragma = "quick_check" if check == "quick" else "integrity_check"
    rows = [str(row[0]) for row in db.execute(f"PRAGMA {pragma}({int(limit)})")]
    return [] if rows == ["ok"] else rows


def _raise_if_damaged(db: _StoreConnection, check: Check) -> None:
    problems = _integrity_problems(db, check)
    if problems:
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise _corrupt_error(db.where, f"{'quick' if check == 'quick' else 'integrity'} check: {problems[0]}{more}")


def now() -> str:
    """The current UTC time as ISO 8601, the format of every time in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------- the lock


_PID = re.compile(r"\(pid (\d+)\)")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (whose locks the kernel has released already)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _holder(text: str) -> str:
    """Who holds the lock, from the lock file's text — only when the process it names is alive: the text can be
    a dead process's when the current holder has not written its own yet."""
    match = _PID.search(text)
    if text and match and _alive(int(match.group(1))):
        return _one_line(text, 120)
    return "another process"


@contextmanager
def project_lock(project: str | Path, what: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold the lock of the project folder ``project`` (the file ``.lock`` in it) for a long operation that must
    not run twice at once (training and querying, removing items, repairs); waits up to ``timeout`` seconds. The
    operating system releases the lock when the process dies, so a killed process never leaves the project
    locked. ``what`` names the operation in the message another process gets.

    Raises:
        StoreBusyError: another process held the lock for the whole timeout; the message names it when it is
            known to be alive.
    """
    folder = Path(project)
    with open(folder / LOCK_FILENAME, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise StoreBusyError(
                        f"{_holder(handle.read().strip())} is running on {folder} and did not finish within "
                        f"{timeout:g} s; run {what} again when it is done"
                    ) from None
                time.sleep(0.1)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"learnloss {what} (pid {os.getpid()})")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------- the store


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
        self._where = _Where(self.path, self.project, timeout)
        if create:
            if os.path.lexists(self.path):
                raise UsageError(f"{self.project} is already a learnloss project; choose another folder")
            self.project.mkdir(parents=True, exist_ok=True)
            self._create(kind)
        elif not os.path.lexists(self.path):
            made_by = "learnloss run --out" if kind == "simulation" else "learnloss init"
            raise UsageError(f"{self.project} is not a learnloss project (no {DB_FILENAME}); create one with {made_by}")
        _check_file(self._where)
        self.db = _connect(self._where)
        try:
            self.format = _check_format(self.db)
            _raise_if_damaged(self.db, check)
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
            db = _connect(_Where(tmp, self.project, self.timeout, subject=self.path))
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
            _publish(tmp, self.path, lambda: UsageError(f"{self.project} is already a learnloss project; choose "
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
        return _busy_error(self._where)

    @staticmethod
    @contextmanager
    def _transaction(db: _StoreConnection) -> Iterator[_StoreConnection]:
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
    def _run_migration(db: _StoreConnection, migration: str) -> None:
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
                assert isinstance(db, _StoreConnection)
                if legacy:
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    legacy = False
                if version < SCHEMA_VERSION:
                    self._run_migration(db, MIGRATIONS[version])
                    version += 1
                    db.execute(f"PRAGMA user_version = {version}")
        self.format = _Format(APPLICATION_ID, version, legacy=False)

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
        return _integrity_problems(self.db, check)

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
            raise _corrupt_error(self._where, f"{what} is not the JSON learnloss wrote") from None

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

    def current_labels(self, db: sqlite3.Connection | None = None, include_retired: bool = False) -> dict[int, str]:
        """``item id -> class name`` of every (active, unless ``include_retired``) item's current (not superseded)
        class label."""
        active = "" if include_retired else " AND l.item_id NOT IN (SELECT id FROM items WHERE retired_at IS NOT NULL)"
        return dict((db or self.db).execute(
            "SELECT l.item_id, c.name FROM labels l JOIN classes c ON c.id = l.class_id WHERE l.current = 1" + active
        ))

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
                "target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.item_id, None if record.label is None else class_ids[record.label], record.cycle,
                 record.strategy, record.score, record.rank, record.source, import_id, created,
                 None if record.target is None else dumps(record.target)),
            )
            if old is not None:
                db.execute("UPDATE labels SET superseded_by = ? WHERE id = ?", (cursor.lastrowid, old[0]))
            db.execute("UPDATE queries SET status = 'labeled' WHERE item_id = ? AND status = 'open'",
                       (record.item_id,))

    def label_history(self) -> list[dict[str, Any]]:
        """Every label ever stored (retired items' included), oldest first, with its provenance and whether it is
        current."""
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


# ---------------------------------------------------------------------------------------------- backups


def _publish(tmp: Path, dest: Path, exists: Any) -> None:
    """Put the complete file ``tmp`` at ``dest`` without ever replacing a file there: a hard link (which fails
    if ``dest`` exists) or, where the file system has none, a rename after checking; then make it durable.
    ``exists()`` makes the error raised when ``dest`` exists. ``tmp`` is left for the caller to remove."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise exists() from None
    except OSError:  # no hard links here (some network and FAT file systems)
        if os.path.lexists(dest):
            raise exists() from None
        os.rename(tmp, dest)
    fsync_dir(dest.parent)


@dataclass(frozen=True)
class BackupInfo:
    """A backup made by :func:`backup`: its file, size in bytes, and the schema version it holds."""

    path: Path
    size: int
    schema_version: int


def backup(project: str | Path, dest: str | Path, timeout: float = 30.0) -> BackupInfo:
    """Copy the store of ``project`` to the new file ``dest`` with SQLite's online backup API, consistent even
    while another process writes.

    The source must pass SQLite's full ``integrity_check`` first (a backup of a damaged store is refused). The
    copy is written to a temporary file next to ``dest``, switched to a single self-contained file (rollback
    journal instead of write-ahead log), verified with ``integrity_check`` and linked into place only then — a
    backup is complete or absent, and an existing ``dest`` is never overwritten. The source is only read (an
    older store is copied as it is, and upgraded when a restored copy is next opened). To restore, replace
    ``PROJECT/learnloss.db`` with the backup (deleting ``learnloss.db-wal`` and ``learnloss.db-shm`` if present)
    while no learnloss process uses the project.

    Raises:
        UsageError: ``dest`` exists, or its folder does not; no store in ``project``.
        StoreFormatError: the source is not a learnloss store.
        StoreCorruptError: the source is damaged (nothing is written), or the copy failed its check.
        StoreError: disk full, read-only, busy — the temporary file is removed.
    """
    folder, dest = Path(project), Path(dest)
    source_path = folder / DB_FILENAME
    if os.path.lexists(dest):
        raise UsageError(f"{dest} already exists; a backup never overwrites a file: name a new one")
    if not dest.parent.is_dir():
        raise UsageError(f"the folder of {dest} does not exist; create it first or name another file")
    if not os.path.lexists(source_path):
        raise UsageError(f"{folder} is not a learnloss project (no {DB_FILENAME}); nothing to back up")
    where = _Where(source_path, folder, timeout)
    _check_file(where)
    source = _connect(where)
    try:
        found = _check_format(source)
        problems = _integrity_problems(source, "full")
        if problems:
            raise StoreCorruptError(
                f"{source_path} is damaged (integrity check: {_one_line(problems[0])}); a backup of it would be "
                f"damaged too, so none was made: restore an earlier backup or run learnloss doctor {folder}"
            )
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            copy = _connect(_Where(tmp, folder, timeout, subject=dest))
            try:
                try:
                    source.backup(copy)
                except _BUGS:
                    raise
                except sqlite3.Error as error:  # writing the copy failed (disk full: name dest), or reading the source
                    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
                    writing = code in (_SQLITE_FULL, _SQLITE_IOERR, _SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN)
                    raise _translate(error, copy.where if writing or "full" in str(error) else where) from None
                copy.execute("PRAGMA journal_mode = DELETE")
                copy_problems = _integrity_problems(copy, "full")
                copied = _check_format(copy)
                if copy_problems or (copied.application_id, copied.version) != (found.application_id, found.version):
                    detail = "; ".join(copy_problems) or "its header differs"
                    raise StoreCorruptError(f"the backup of {source_path} did not verify ({_one_line(detail)}); {dest} "
                                            "was not written — run the command again")
            finally:
                copy.close()
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            _publish(tmp, dest, lambda: UsageError(f"{dest} already exists; a backup never overwrites a file: name a "
                                                   "new one"))
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        source.close()
    return BackupInfo(dest, dest.stat().st_size, found.version)


# ---------------------------------------------------------------------------------------------- inspection


@dataclass
class StoreInspection:
    """What :func:`inspect_store` found, read-only: the refusal an ordinary open would give (``problem``), the
    header, the integrity and foreign key problems, and the rows ``learnloss doctor`` checks."""

    path: Path
    problem: str | None = None
    application_id: int | None = None
    schema_version: int | None = None
    kind: str | None = None
    data_root: str | None = None
    integrity: list[str] = field(default_factory=list)
    foreign_keys: list[str] = field(default_factory=list)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    items: list[tuple[int, str, str]] = field(default_factory=list)
    readable: bool = False


def inspect_store(project: str | Path, timeout: float = 30.0) -> StoreInspection:
    """Diagnose the store of ``project`` without writing to it (it only reads, never migrates): its
    header (application id, schema version), whether an ordinary open would refuse it and why, SQLite's full
    ``integrity_check`` and ``foreign_key_check``, its kind and data root, the checkpoint each cycle records and
    its active items. ``readable`` says whether the rows could be read (then ``checkpoints`` and ``items`` are
    complete); a damaged store is inspected as far as it can be read.

    Raises:
        UsageError: ``project`` holds no ``learnloss.db``.
    """
    folder = Path(project)
    path = folder / DB_FILENAME
    if not os.path.lexists(path):
        raise UsageError(f"{folder} is not a learnloss project (no {DB_FILENAME}); nothing to check")
    found = StoreInspection(path)
    where = _Where(path, folder, timeout)
    try:
        _check_file(where)
        try:  # read-write but only read: closing then tidies the write-ahead log as after any command
            db = _connect(where, "rw")
        except StoreReadOnlyError:
            db = _connect(where, "ro")
    except (StoreError, StoreFormatError) as error:
        found.problem = str(error)
        return found
    try:
        try:
            found.application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
            found.schema_version = int(db.execute("PRAGMA user_version").fetchone()[0])
            _check_format(db)
        except (StoreError, StoreFormatError) as error:
            found.problem = str(error)
            if found.schema_version is None or isinstance(error, StoreFormatError):
                return found
        try:
            found.integrity = _integrity_problems(db, "full", limit=100)
            found.foreign_keys = [f"{table} row {rowid} points at a missing row of {parent}"
                                  for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check")]
        except StoreError as error:
            found.integrity = found.integrity or [str(error)]
        try:
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('kind', 'data_root')"))
            kind, root = (json.loads(meta[key]) if key in meta else None for key in ("kind", "data_root"))
            found.kind = kind if isinstance(kind, str) else None
            found.data_root = root if isinstance(root, str) else None
            found.checkpoints = [(int(cycle), str(checkpoint)) for cycle, checkpoint in db.execute(
                "SELECT cycle, checkpoint FROM cycles WHERE checkpoint IS NOT NULL ORDER BY cycle")]
            columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            active = " WHERE retired_at IS NULL" if "retired_at" in columns else ""
            found.items = list(db.execute(f"SELECT id, source, split FROM items{active} ORDER BY id"))
            found.readable = True
        except (StoreError, ValueError, TypeError) as error:
            if found.problem is None:
                found.problem = _one_line(str(error))
    finally:
        db.close()
    return found
