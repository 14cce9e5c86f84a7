"""The SQLite file underneath a project store: connecting to it, recognising it, checking it, and one line per error.

:func:`connect` opens only an existing file (SQLite never creates it), with foreign keys on and ``synchronous=FULL``
(a committed transaction survives a crash of the process or the machine). Before SQLite touches a file,
:func:`check_file` refuses one that is not a regular file, is empty or is not SQLite; :func:`check_format` then
recognises a learnloss store by its application id (or, for a store made before learnloss set one, by its tables) and
its schema version, reading only; :func:`integrity_problems` runs SQLite's ``quick_check`` or its full
``integrity_check``. A new database file is put into place complete and never over another file (:func:`publish`).

Every SQLite error that leaves a :class:`StoreConnection` is one :class:`StoreError` line naming the file and what to
do (:func:`translate`): damaged (:class:`StoreCorruptError`), out of space (:class:`StoreDiskFullError`), not
writable (:class:`StoreReadOnlyError`), busy (:class:`StoreBusyError`), a rule of the schema broken
(:class:`StoreConstraintError`). A file that is not a learnloss store is a :class:`StoreFormatError`. Errors that are
mistakes in learnloss itself (:data:`BUGS`) keep their SQLite type.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from learnloss.atomic import fsync_dir
from learnloss.errors import LearnLossError, UsageError
from learnloss.project.schema import APPLICATION_ID, SCHEMA_VERSION, TABLES

__all__ = [
    "BUGS",
    "DB_FILENAME",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_PERM",
    "SQLITE_READONLY",
    "Check",
    "Format",
    "StoreBusyError",
    "StoreConnection",
    "StoreConstraintError",
    "StoreCorruptError",
    "StoreDiskFullError",
    "StoreError",
    "StoreFormatError",
    "StoreIOError",
    "StoreKindError",
    "StoreReadOnlyError",
    "StoreTextError",
    "Where",
    "busy_error",
    "check_file",
    "check_format",
    "connect",
    "corrupt_error",
    "integrity_problems",
    "one_line",
    "publish",
    "raise_if_damaged",
    "translate",
]

#: The store's database file in a project folder.
DB_FILENAME = "learnloss.db"
#: How much of a store SQLite checks: ``quick_check`` or the full ``integrity_check`` (see :func:`integrity_problems`).
Check = Literal["quick", "full"]
_SQLITE_MAGIC = b"SQLite format 3\x00"


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


class StoreTextError(UsageError):
    """Text to be stored is not valid Unicode (it holds a lone surrogate, which UTF-8 cannot encode): refused
    before SQLite writes anything, and the transaction rolled back. Every text reaching the store passes here."""


# SQLite's primary result codes (https://www.sqlite.org/rescode.html) that the store tells apart; those without a
# leading underscore are also how a backup tells a failed write of its copy (learnloss.project.backup).
SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, _SQLITE_CORRUPT = 3, 5, 6, 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, _SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_FORMAT, _SQLITE_NOTADB = 13, 14, 19, 23, 24, 26


@dataclass(frozen=True)
class Where:
    """What an error message names: the database file, its project folder, the busy timeout, and the file to
    name instead when the database is a copy being made (a backup's target)."""

    path: Path
    project: Path
    timeout: float
    subject: Path | None = None


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (runs of whitespace made one space), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def busy_error(where: Where) -> StoreBusyError:
    """The error of a database another process kept busy beyond the timeout."""
    return StoreBusyError(
        f"another learnloss process is writing to {where.project} and did not finish within {where.timeout:g} s; "
        "run the command again when it is done"
    )


def corrupt_error(where: Where, detail: str) -> StoreCorruptError:
    """The error of a damaged database, with ``detail`` saying what was found."""
    return StoreCorruptError(
        f"{where.path} is damaged ({one_line(detail)}); restore it from a backup (learnloss backup PROJECT FILE "
        f"makes one) or run learnloss doctor {where.project}"
    )


def translate(error: sqlite3.Error, where: Where) -> LearnLossError:
    """The one-line :class:`StoreError` of an SQLite error, by SQLite's result code (Python 3.11+) or, failing
    that, by its message."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(error)
    lowered = text.lower()
    target = where.subject or where.path
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in lowered or "busy" in lowered:
        return busy_error(where)
    if primary == SQLITE_FULL or "disk is full" in lowered:
        return StoreDiskFullError(f"no space left on the device holding {target}; free space and run the command "
                                  "again; nothing was written")
    if (primary in (SQLITE_READONLY, SQLITE_PERM, SQLITE_CANTOPEN, _SQLITE_AUTH) or "readonly" in lowered
            or "unable to open" in lowered):
        return StoreReadOnlyError(
            f"{target} cannot be opened or written ({text}): a read-only file system or no permission; make it and "
            "its folder writable for you (or copy the project somewhere writable) and run the command again; "
            "nothing was written"
        )
    if primary == SQLITE_IOERR or "i/o error" in lowered:
        return StoreIOError(f"reading or writing {target} failed in the operating system ({text}): the disk may be "
                            "full, failing or gone; check it and run the command again; nothing was written")
    if (primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_FORMAT) or "malformed" in lowered
            or "not a database" in lowered or "could not decode to utf-8" in lowered):
        return corrupt_error(where, text)
    if isinstance(error, sqlite3.IntegrityError):
        return StoreConstraintError(f"a write to {target} broke a rule of the store ({text}); it was rolled back, "
                                    f"nothing was written; run learnloss doctor {where.project}")
    return StoreError(f"an operation on {target} failed ({text}); nothing was written; run learnloss doctor "
                      f"{where.project}, or restore it from a backup")


# ------------------------------------------------------------------------------------------------- connecting


#: Errors that are mistakes in learnloss itself (wrong SQL use, a closed connection), not the user's: they keep
#: their type so the command line reports them as bugs.
BUGS = (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError)


@contextmanager
def _translated(where: Where) -> Iterator[None]:
    """Turn an SQLite error raised inside the block into its :class:`StoreError` line (see :func:`translate`), and
    stored text that does not decode as UTF-8 into :class:`StoreCorruptError`; mistakes of learnloss itself
    (:data:`BUGS`) keep their type."""
    try:
        yield
    except BUGS:
        raise
    except sqlite3.Error as error:
        raise translate(error, where) from None
    except UnicodeDecodeError as error:  # text that is not UTF-8: a damaged page SQLite itself cannot see
        raise corrupt_error(where, f"it holds text that is not UTF-8 ({error.reason})") from None
    except UnicodeEncodeError as error:  # a parameter holding a lone surrogate (from JSON's "\udc00"): never stored
        char = error.object[error.start] if isinstance(error.object, str) and error.start < len(error.object) else "?"
        raise StoreTextError(f"text to store is not valid Unicode (it holds the lone surrogate U+{ord(char):04X}, "
                             "which UTF-8 cannot encode); nothing was written — send the text as UTF-8") from None


class _StoreCursor(sqlite3.Cursor):
    """A cursor whose every step turns SQLite errors into :class:`StoreError` lines (see :func:`translate`)."""

    connection: StoreConnection

    def execute(self, sql: str, parameters: Any = (), /) -> _StoreCursor:  # type: ignore[override]
        with _translated(self.connection.where):
            super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> _StoreCursor:  # type: ignore[override]
        with _translated(self.connection.where):
            super().executemany(sql, seq_of_parameters)
        return self

    def __next__(self) -> Any:
        with _translated(self.connection.where):
            return super().__next__()

    def fetchone(self) -> Any:
        with _translated(self.connection.where):
            return super().fetchone()

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        with _translated(self.connection.where):
            return super().fetchmany(size if size is not None else self.arraysize)

    def fetchall(self) -> list[Any]:
        with _translated(self.connection.where):
            return super().fetchall()


class StoreConnection(sqlite3.Connection):
    """The store's connection: ``execute``, ``executemany`` and ``commit`` (and iterating their cursors) raise
    a :class:`StoreError` line instead of an :class:`sqlite3.Error` — the one place where SQLite errors are
    translated."""

    where: Where

    def cursor(self, factory: Any = _StoreCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> _StoreCursor:  # type: ignore[override]
        cursor: _StoreCursor = self.cursor()
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _StoreCursor:  # type: ignore[override]
        cursor: _StoreCursor = self.cursor()
        return cursor.executemany(sql, parameters)

    def commit(self) -> None:
        with _translated(self.where):
            super().commit()

    def rollback_quietly(self) -> None:
        """Roll back the open transaction, if SQLite has not already (it does after a full disk or an I/O
        error); an error doing so is left to the error that caused the rollback."""
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                sqlite3.Connection.execute(self, "ROLLBACK")


def connect(where: Where, mode: Literal["ro", "rw"] = "rw") -> StoreConnection:
    """Connect to the existing file ``where.path`` (``mode=rw``/``ro``: SQLite never creates it), foreign keys
    on, ``synchronous=FULL``; nothing is written yet."""
    uri = f"file:{quote(str(where.path.absolute()))}?mode={mode}"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=where.timeout, isolation_level=None, factory=StoreConnection)
    except sqlite3.Error as error:
        raise translate(error, where) from None
    assert isinstance(db, StoreConnection)
    db.where = where
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


# ------------------------------------------------------------------------------------------ recognising, checking


def check_file(where: Where) -> None:
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
        raise corrupt_error(where, f"only {len(head)} bytes, shorter than an SQLite header")


@dataclass(frozen=True)
class Format:
    """What the header of a recognised store says: its application id and schema version, and whether it is a
    store made before learnloss set the application id (to be set when it is next opened for writing)."""

    application_id: int
    version: int
    legacy: bool


def check_format(db: StoreConnection) -> Format:
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
    if application_id == 0 and (version == 0 or not TABLES <= tables):
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
        raise corrupt_error(where, "it carries learnloss's application id but no schema version")
    missing = TABLES - tables
    if missing:
        raise corrupt_error(where, f"tables missing: {', '.join(sorted(missing))}")
    return Format(application_id, version, legacy=application_id == 0)


def integrity_problems(db: StoreConnection, check: Check, limit: int = 20) -> list[str]:
    """SQLite's ``quick_check`` (pages, records, NOT NULL and CHECK constraints) or, with ``check="full"``,
    ``integrity_check`` (also that indexes match their tables and UNIQUE constraints hold): the problems found,
    at most ``limit``, or an empty list."""
    pragma = "quick_check" if check == "quick" else "integrity_check"
    rows = [str(row[0]) for row in db.execute(f"PRAGMA {pragma}({int(limit)})")]
    return [] if rows == ["ok"] else rows


def raise_if_damaged(db: StoreConnection, check: Check) -> None:
    """Raise :class:`StoreCorruptError` naming the first problem of :func:`integrity_problems`, if any."""
    problems = integrity_problems(db, check)
    if problems:
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise corrupt_error(db.where, f"{'quick' if check == 'quick' else 'integrity'} check: {problems[0]}{more}")


# ------------------------------------------------------------------------------------------------- publishing


def publish(tmp: Path, dest: Path, exists: Any) -> None:
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
