"""Reading a store from outside: consistent backups and read-only inspection.

:func:`backup` copies a store with SQLite's online backup API, consistent even while another process writes: a
damaged store is refused, and the copy is verified and linked into place complete, never over an existing file.
:func:`inspect_store` diagnoses a store without writing to it (it never migrates), as far as it can be read — what
``learnloss doctor`` reports.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from learnloss.errors import UsageError
from learnloss.project.database import (
    BUGS,
    DB_FILENAME,
    SQLITE_CANTOPEN,
    SQLITE_FULL,
    SQLITE_IOERR,
    SQLITE_PERM,
    SQLITE_READONLY,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    StoreReadOnlyError,
    Where,
    check_file,
    check_format,
    connect,
    integrity_problems,
    one_line,
    publish,
    translate,
)

__all__ = ["BackupInfo", "StoreInspection", "backup", "inspect_store"]

# ---------------------------------------------------------------------------------------------- backups


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
    where = Where(source_path, folder, timeout)
    check_file(where)
    source = connect(where)
    try:
        found = check_format(source)
        problems = integrity_problems(source, "full")
        if problems:
            raise StoreCorruptError(
                f"{source_path} is damaged (integrity check: {one_line(problems[0])}); a backup of it would be "
                f"damaged too, so none was made: restore an earlier backup or run learnloss doctor {folder}"
            )
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            copy = connect(Where(tmp, folder, timeout, subject=dest))
            try:
                try:
                    source.backup(copy)
                except BUGS:
                    raise
                except sqlite3.Error as error:  # writing the copy failed (disk full: name dest), or reading the source
                    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
                    writing = code in (SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, SQLITE_PERM, SQLITE_CANTOPEN)
                    raise translate(error, copy.where if writing or "full" in str(error) else where) from None
                copy.execute("PRAGMA journal_mode = DELETE")
                copy_problems = integrity_problems(copy, "full")
                copied = check_format(copy)
                if copy_problems or (copied.application_id, copied.version) != (found.application_id, found.version):
                    detail = "; ".join(copy_problems) or "its header differs"
                    raise StoreCorruptError(f"the backup of {source_path} did not verify ({one_line(detail)}); {dest} "
                                            "was not written — run the command again")
            finally:
                copy.close()
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            publish(tmp, dest, lambda: UsageError(f"{dest} already exists; a backup never overwrites a file: name a "
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
    where = Where(path, folder, timeout)
    try:
        check_file(where)
        try:  # read-write but only read: closing then tidies the write-ahead log as after any command
            db = connect(where, "rw")
        except StoreReadOnlyError:
            db = connect(where, "ro")
    except (StoreError, StoreFormatError) as error:
        found.problem = str(error)
        return found
    try:
        try:
            found.application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
            found.schema_version = int(db.execute("PRAGMA user_version").fetchone()[0])
            check_format(db)
        except (StoreError, StoreFormatError) as error:
            found.problem = str(error)
            if found.schema_version is None or isinstance(error, StoreFormatError):
                return found
        try:
            found.integrity = integrity_problems(db, "full", limit=100)
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
                found.problem = one_line(str(error))
    finally:
        db.close()
    return found
