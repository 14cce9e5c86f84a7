"""Keeping a project usable: retiring items that can no longer be used, and checking a project folder.

:func:`remove_items` retires items of a labeling project (an image deleted, unreadable or not wanted any more):
they stay in the store with their labels and history, but are never trained on, scored, queried or matched by an
import again (:meth:`~learnloss.project.store.ProjectStore.retire_items`). :func:`doctor` checks a project or run
folder — the database (SQLite's ``integrity_check`` and ``foreign_key_check``, kind, schema version, application
id), files that interrupted commands left behind, and for labeling projects every item's image — and with
``fix=True`` removes only what is safe to remove: checkpoints no cycle records and leftovers of atomic writes, never
anything outside the project folder and never through a symbolic link. A symbolic link where a project keeps its own
files (``.lock``, ``exports/``, ``checkpoints/``) is a problem — every command refuses to write through it
(:mod:`learnloss.atomic`) — and ``fix=True`` removes the link itself, never what it points to.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learnloss.atomic import remove_file, remove_link
from learnloss.data.images import read_header
from learnloss.errors import LearnLossError, UsageError
from learnloss.project.backup import StoreInspection, inspect_store
from learnloss.project.checkpoint import remove_in_folder
from learnloss.project.database import DB_FILENAME, one_line
from learnloss.project.lock import LOCK_FILENAME, project_lock
from learnloss.project.paths import ItemLocator, UnsafePathError, nfc, safe_relative
from learnloss.project.schema import APPLICATION_ID, SCHEMA_VERSION
from learnloss.project.store import ProjectStore

__all__ = ["DoctorReport", "Finding", "RemovedItem", "UnknownItemsError", "doctor", "remove_items"]

# ------------------------------------------------------------------------------------------------- remove


class UnknownItemsError(UsageError):
    """Some of the items to remove are not in the project; nothing was removed."""


@dataclass(frozen=True)
class RemovedItem:
    """An item :func:`remove_items` retired now (``retired_now``) or found retired already (with the time and
    reason of its retirement)."""

    item_id: int
    source: str
    retired_now: bool
    retired_at: str
    reason: str


def _as_relative(text: str, root: str | None) -> str:
    """An item path as the store writes it: relative to the data root, ``/``-separated, NFC. An absolute path
    inside the data root is made relative to it.

    Raises:
        UnsafePathError: the path is absolute outside the data root, climbs out with ``..``, or is empty.
    """
    candidate = nfc(text).replace("\\", "/")
    if root and os.path.isabs(candidate):
        base = nfc(root).replace("\\", "/").rstrip("/") + "/"
        normalised = os.path.normpath(candidate).replace("\\", "/")
        if normalised.startswith(base):
            candidate = normalised[len(base):]
    return nfc(safe_relative(candidate))


def remove_items(project: str | Path, items: Sequence[str], reason: str = "removed",
                 timeout: float = 30.0) -> list[RemovedItem]:
    """Retire the items ``items`` of the labeling project ``project``, all or nothing, in one transaction.

    Each item is named by its id or by its path relative to the data root (as ``learnloss export`` lists it; an
    absolute path inside the data root is accepted too); path text is NFC-normalised before matching, so a name
    typed on one system finds the file registered on another. The project's lock is held meanwhile
    (:meth:`~learnloss.project.store.ProjectStore.exclusive`), so a removal never races a query; the store must
    pass SQLite's full ``integrity_check`` before anything is written.

    Returns one :class:`RemovedItem` per distinct item, in the order given; items already retired are reported
    as such (their first retirement is kept).

    Raises:
        UsageError: no items, or an empty reason.
        UnknownItemsError: some items are not in the project (all are listed); nothing was removed.
        StoreKindError: ``project`` is a simulated run folder, whose items are a dataset's, not files.
        StoreBusyError: a query (or another removal) held the project beyond ``timeout``.
    """
    names = [items] if isinstance(items, str) else list(items)
    if not names:
        raise UsageError("name at least one item to remove (its id or its path, as learnloss export lists them)")
    why = " ".join(str(reason).split())
    if not why:
        raise UsageError("give a reason for removing the items (it is kept with them)")
    with ProjectStore(project, timeout=timeout, kind="labeling", check="full") as store, store.exclusive("remove"):
        root = store.meta("data_root")
        with store.transaction() as db:
            by_id = dict(store.items(db=db, include_retired=True))
            by_path: dict[str, list[int]] = {}
            for item_id, source in by_id.items():
                by_path.setdefault(nfc(source), []).append(item_id)
            chosen: list[int] = []
            unknown: list[str] = []
            for name in names:
                text = str(name)
                number = int(text.strip()) if text.strip().isascii() and text.strip().isdigit() else None
                try:
                    path_ids = by_path.get(_as_relative(text, root), [])
                except UnsafePathError:
                    path_ids = []
                if number is not None and number in by_id:
                    if path_ids and path_ids != [number]:
                        unknown.append(f"{text!r} (ambiguous: item id {number} is {by_id[number]!r}, and item "
                                       f"{path_ids[0]} has the path {text!r}; give the path as ./{text})")
                        continue
                    found = [number]
                elif len(path_ids) == 1:
                    found = path_ids
                elif path_ids:
                    unknown.append(f"{text!r} (ambiguous: items {', '.join(map(str, path_ids))} have this path; "
                                   "give their ids)")
                    continue
                else:
                    unknown.append(repr(text))
                    continue
                if found[0] not in chosen:
                    chosen.append(found[0])
            if unknown:
                shown = ", ".join(unknown[:20]) + (f", … ({len(unknown) - 20} more)" if len(unknown) > 20 else "")
                raise UnknownItemsError(
                    f"{store.project}: {len(unknown)} item(s) are not in the project, so nothing was removed: {shown}; "
                    f"name items by id or by path relative to the data root {root} (learnloss export lists both)"
                )
            now_retired = set(store.retire_items(db, chosen, why))
            retired = {item_id: (at, because) for item_id, _, at, because in store.retired_items(db)}
    return [RemovedItem(item_id, by_id[item_id], item_id in now_retired, *retired[item_id]) for item_id in chosen]


# ------------------------------------------------------------------------------------------------- doctor

#: Temporary files of :func:`learnloss.atomic.atomic_write` and of the store (``.NAME.XXXXXXXX.tmp``, the
#: eight characters from :func:`tempfile.mkstemp`), and SQLite's side files of such a file.
_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(-journal|-wal|-shm)?$")
#: A temporary file modified this recently may still be being written (by a command that does not hold the
#: project's lock, e.g. an export into the project folder): it is reported, not removed.
TMP_GRACE_SECONDS = 60.0
_SHOW = 20  # findings of one kind shown in full by DoctorReport.lines()


@dataclass
class Finding:
    """One thing :func:`doctor` found: what (``kind``), a one-line ``message``, the file (relative to the project
    folder, or absolute outside it) or item concerned, what fixes it (a command, or ``learnloss doctor --fix``),
    whether ``doctor(fix=True)`` removes it (``fixable``) and whether it did (``fixed``)."""

    kind: str
    message: str
    path: str | None = None
    item_id: int | None = None
    fix: str | None = None
    fixable: bool = False
    fixed: bool = False


@dataclass
class DoctorReport:
    """What :func:`doctor` found in a project or run folder.

    ``store`` holds the database's problems (an open refused, ``integrity_check``, ``foreign_key_check``, a
    missing checkpoint), ``files`` the leftovers (orphan checkpoints, temporary files, interrupted inits,
    links), ``items`` the items that cannot be used. ``removed`` lists what ``fix=True`` deleted.
    """

    project: Path
    kind: str | None = None
    schema_version: int | None = None
    application_id: int | None = None
    store: list[Finding] = field(default_factory=list)
    files: list[Finding] = field(default_factory=list)
    items: list[Finding] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    items_checked: int = 0

    @property
    def findings(self) -> list[Finding]:
        """Every finding: the database's, then the files', then the items'."""
        return [*self.store, *self.files, *self.items]

    @property
    def remove_command(self) -> str | None:
        """The one ``learnloss remove`` command that retires every unusable item, or None when there are none."""
        ids = [str(f.item_id) for f in self.items if f.item_id is not None]
        return f"learnloss remove {shlex.quote(str(self.project))} {' '.join(ids)}" if ids else None

    @property
    def ok(self) -> bool:
        """True when nothing is left to fix (what ``fix=True`` removed does not count)."""
        return not any(not finding.fixed for finding in self.findings)

    def lines(self) -> list[str]:
        """The report as lines for the command line: a header, one line per finding (at most 20 of a kind, then
        how many more), and a verdict."""
        kind = {"labeling": "labeling project", "simulation": "simulated run folder"}.get(self.kind or "",
                                                                                         "learnloss store")
        header = f"{self.project}: {kind}"
        if self.schema_version is not None:
            header += f", schema version {self.schema_version}"
            if self.schema_version < SCHEMA_VERSION:
                header += f" (upgraded to {SCHEMA_VERSION} when a command next opens it)"
        if self.application_id is not None:
            header += (", application id learnloss" if self.application_id == APPLICATION_ID else
                       f", application id {self.application_id:#x}"
                       + (" (set when a command next opens it)" if self.application_id == 0 else ""))
        out = [header]
        if not self.store:
            out.append("  database: ok (integrity_check, foreign_key_check)")
        if self.kind == "labeling" and self.items_checked:
            out.append(f"  items: {self.items_checked} checked, {len(self.items)} unusable")
        shown: dict[str, int] = {}
        for finding in self.findings:
            shown[finding.kind] = shown.get(finding.kind, 0) + 1
            if shown[finding.kind] > _SHOW:
                continue
            status = "removed" if finding.fixed else (finding.fix or "")
            out.append(f"  {finding.kind.replace('_', ' ')}: {finding.message}" + (f" — {status}" if status else ""))
        for kind_, count in shown.items():
            if count > _SHOW:
                out.append(f"  … and {count - _SHOW} more {kind_.replace('_', ' ')} finding(s) (--json lists all)")
        command = self.remove_command
        if command is not None and len(self.items) > 1:
            out.append(f"  to retire all {len(self.items)} unusable items: "
                       + (command if len(self.items) <= 100 else "learnloss remove with the ids --json lists"))
        left = sum(not finding.fixed for finding in self.findings)
        if self.ok:
            out.append("ok" + (f": removed {len(self.removed)} leftover file(s)" if self.removed else ": nothing to fix"))
        else:
            out.append(f"{left} problem(s)" + (f"; removed {len(self.removed)} leftover file(s)" if self.removed else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (every finding, none elided)."""
        return {
            "project": str(self.project), "ok": self.ok, "kind": self.kind, "schema_version": self.schema_version,
            "application_id": self.application_id, "items_checked": self.items_checked,
            "store": [asdict(f) for f in self.store], "files": [asdict(f) for f in self.files],
            "items": [asdict(f) for f in self.items], "removed": [str(p) for p in self.removed],
            "remove_command": self.remove_command,
        }


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, with every symbolic link resolved, is ``folder`` (resolved) or inside it."""
    resolved = path.resolve()
    return resolved == folder or folder in resolved.parents


def _removable(path: Path, folder: Path) -> bool:
    """A regular file (not a link) whose resolved location is inside the resolved project folder."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and _inside(path, folder)


def _walk(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, not descending into linked folders."""
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            yield Path(top) / name


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


#: What a project keeps as its own real file or folders, written by learnloss: a symbolic link there is refused by every
#: command (:mod:`learnloss.atomic`), reported by doctor and removed (the link only) by ``doctor --fix``.
CONFINED = (LOCK_FILENAME, "exports", "checkpoints")
_LINKED = "link_in_project"


def _link_findings(folder: Path, names: Sequence[str]) -> list[Finding]:
    """A finding for each of ``names`` in ``folder`` that is a symbolic link (fixable: the link is removed), a
    ``.lock`` with other hard links (fixable: this name is removed) or not what it should be (a file or folder)."""
    out: list[Finding] = []
    for name in names:
        path = folder / name
        try:
            found = os.lstat(path)
        except OSError:
            continue
        shown = name if name == LOCK_FILENAME else f"{name}/"
        if stat.S_ISLNK(found.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            then = "" if name == LOCK_FILENAME else ", then put the files it held in a real folder there if you want them"
            out.append(Finding(_LINKED, f"{shown} is a symbolic link (to {target}); learnloss never writes through it, "
                               "so commands on this project refuse to run", name,
                               fix=f"learnloss doctor --fix removes the link, never what it points to{then}",
                               fixable=True))
        elif name == LOCK_FILENAME and stat.S_ISREG(found.st_mode) and found.st_nlink > 1:
            out.append(Finding(_LINKED, f"{shown} has {found.st_nlink - 1} other hard link(s), so it may be another "
                               "file; learnloss never writes to it", name,
                               fix="learnloss doctor --fix removes this name, never the other links", fixable=True))
        elif stat.S_ISDIR(found.st_mode) != (name != LOCK_FILENAME):
            what = "a file" if name == LOCK_FILENAME else "a folder"
            out.append(Finding(_LINKED, f"{shown} is not {what}; learnloss cannot use it", name,
                               fix="move it away and run the command again (doctor leaves it alone)"))
    return out


def _fix_links(findings: Sequence[Finding], folder: Path) -> list[Path]:
    """Remove what the fixable :func:`_link_findings` name — the link itself (or the hard-linked lock file's name),
    never what it points to; the paths removed."""
    removed = []
    for finding in findings:
        if finding.kind != _LINKED or not finding.fixable or finding.path is None or finding.fixed:
            continue
        path = folder / finding.path
        if remove_link(path, root=folder) or (finding.path == LOCK_FILENAME and remove_file(path, root=folder)):
            finding.fixed = True
            removed.append(path)
        else:
            finding.message += " (could not be removed)"
    return removed


def _store_findings(found: StoreInspection, folder: Path) -> list[Finding]:
    out = []
    if found.problem:  # the refusal's line says what to do
        out.append(Finding("store", found.problem, DB_FILENAME))
    for line in found.integrity:
        out.append(Finding("integrity", f"integrity_check: {' '.join(line.split())}", DB_FILENAME,
                           fix="restore the database from a backup (learnloss backup PROJECT FILE makes one)"))
    for line in found.foreign_keys:
        out.append(Finding("foreign_key", f"foreign_key_check: {line}", DB_FILENAME,
                           fix="restore the database from a backup"))
    if found.checkpoints and found.readable:
        cycle, recorded = found.checkpoints[-1]
        if not (folder / recorded).is_file():
            out.append(Finding("missing_checkpoint", f"cycle {cycle} records the checkpoint {recorded}, which is "
                               "missing", recorded, fix="a query retrains it; a simulated run cannot resume from it"))
    return out


def _file_findings(found: StoreInspection, folder: Path, real: Path) -> list[Finding]:
    out: list[Finding] = []
    now = time.time()
    for path in _walk(folder):
        if not _TMP.match(path.name):
            continue
        relative = _relative(path, folder)
        if not _removable(path, real):
            out.append(Finding("link", f"{relative} is a symbolic link or not a regular file; doctor never follows "
                               "or removes links", relative, fix="remove it yourself if you did not make it"))
            continue
        age = now - path.lstat().st_mtime
        if age < TMP_GRACE_SECONDS:
            out.append(Finding("tmp_leftover", f"{relative} (modified {age:.0f} s ago: it may still be being written)",
                               relative, fix="run learnloss doctor --fix again in a minute"))
        else:
            out.append(Finding("tmp_leftover", f"{relative} (a temporary file an interrupted write left behind)",
                               relative, fix="learnloss doctor --fix removes it", fixable=True))
    out.extend(_link_findings(folder, [name for name in CONFINED if name != LOCK_FILENAME]))
    checkpoints = folder / "checkpoints"
    if checkpoints.is_symlink() or (checkpoints.exists() and not _inside(checkpoints, real)):
        pass  # reported above; nothing in it is touched
    elif checkpoints.is_dir() and found.readable and not found.integrity and not found.problem:
        recorded = {(folder / name).resolve() for _, name in found.checkpoints}
        for path in sorted(checkpoints.iterdir()):
            relative = _relative(path, folder)
            if _TMP.match(path.name):
                continue  # reported above
            if path.is_symlink():
                out.append(Finding("link", f"{relative} is a symbolic link (to {os.readlink(path)}); doctor never "
                                   "follows or removes links", relative, fix="remove it yourself if you did not make it"))
            elif path.is_file() and path.resolve() not in recorded:
                out.append(Finding("orphan_checkpoint", f"{relative} (no cycle records it)", relative,
                                   fix="learnloss doctor --fix removes it", fixable=True))
    parent = real.parent
    with contextlib.suppress(OSError):
        for path in sorted(parent.glob(f".{glob.escape(real.name)}.*")):
            if path.is_dir() and not path.is_symlink() and re.fullmatch(rf"\.{re.escape(real.name)}\.[a-z0-9_]{{8}}",
                                                                         path.name):
                out.append(Finding("staging", f"{path} is left over from an interrupted learnloss init (outside the "
                                   "project: doctor leaves it alone)", str(path),
                                   fix=f"delete it if no init is running: rm -r {shlex.quote(str(path))}"))
    return out


def _item_findings(found: StoreInspection, project: Path) -> tuple[list[Finding], int]:
    root_text = found.data_root
    command = f"learnloss remove {shlex.quote(str(project))}"
    if not root_text or not Path(root_text).is_dir():
        return [Finding("data_root", f"the data root {root_text or '(none recorded)'} is not a folder, so no item "
                        "could be checked", root_text, fix="restore the images there (items were not checked)")], 0
    locator = ItemLocator(Path(root_text))  # finds a file whatever the Unicode normalisation of its name on disk
    out = []
    for item_id, source, _ in found.items:
        where = f"item {item_id}"
        try:
            path = locator.find(source, where)
        except UnsafePathError as error:  # escapes the data root, or two files on disk match the name
            out.append(Finding("unsafe_item", str(error), source, item_id,
                               fix=f"{command} {item_id}"))
            continue
        if not path.is_file():
            out.append(Finding("missing_item", f"item {item_id} {source}: the image is missing", source, item_id,
                               fix=f"restore it, or retire the item: {command} {item_id}"))
            continue
        try:  # the header only, through the one decoder: its formats, its pixel limit
            read_header(path, f"item {item_id} {source}")
        except LearnLossError as error:
            out.append(Finding("unreadable_item", one_line(str(error), 300), source, item_id,
                               fix=f"replace the file, or retire the item: {command} {item_id}"))
        except Exception as error:  # a hostile file may fail in any way a decoder can
            out.append(Finding("unreadable_item", f"item {item_id} {source}: not a readable image "
                               f"({type(error).__name__}: {' '.join(str(error).split())[:120]})", source, item_id,
                               fix=f"replace the file, or retire the item: {command} {item_id}"))
    return out, len(found.items)


def doctor(project: str | Path, fix: bool = False, timeout: float = 30.0, check_items: bool = True) -> DoctorReport:
    """Check the project or run folder ``project`` and report what is wrong (see the module docstring).

    Checked: the database (an open that would be refused and why, SQLite's full ``integrity_check`` and
    ``foreign_key_check``, the kind, schema version and application id, the latest cycle's checkpoint);
    checkpoints in ``checkpoints/`` that no cycle records (only when the database is intact, so a damaged
    store never makes a recorded checkpoint look orphaned); temporary files of interrupted atomic writes
    (``.NAME.XXXXXXXX.tmp``) anywhere in the folder; folders an interrupted ``learnloss init`` left next to it;
    and, for labeling projects with ``check_items``, every active item: its image must exist, stay inside the data
    root and be a readable image (its header is read, not decoded) — each unusable one with the
    ``learnloss remove`` command that retires it.

    A symbolic link at ``.lock``, ``exports/`` or ``checkpoints/`` (:data:`CONFINED`) is reported: every command
    refuses to write through it.

    With ``fix``, a link at ``.lock`` (or a ``.lock`` with other hard links) is removed first — the name only,
    never what it points to — since the lock cannot be taken through it; then the project's lock is held (no query
    or run can write a checkpoint meanwhile), links at ``exports/`` and ``checkpoints/`` are removed the same way,
    and orphan checkpoints and temporary files older than :data:`TMP_GRACE_SECONDS` are deleted: regular files only,
    whose resolved location is inside the project folder — never anything a link points to, never anything outside.
    Nothing else is changed; the database is only read.

    Raises:
        UsageError: ``project`` is not a folder holding a ``learnloss.db``.
        StoreBusyError: with ``fix``, another process held the project beyond ``timeout``.
    """
    folder = Path(project)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give a project folder (learnloss init) or a run folder "
                         "(learnloss run --out)")
    if not os.path.lexists(folder / DB_FILENAME):
        raise UsageError(f"{folder} is not a learnloss project (no {DB_FILENAME}); nothing to check")
    lock_findings = _link_findings(folder, [LOCK_FILENAME])
    removed = _fix_links(lock_findings, folder) if fix else []  # before the lock, which cannot be taken through it
    lock = project_lock(folder, "doctor --fix", timeout, folders=()) if fix else contextlib.nullcontext()
    with lock:
        found = inspect_store(folder, timeout)
        real = folder.resolve()
        report = DoctorReport(folder, found.kind, found.schema_version, found.application_id)
        report.store = _store_findings(found, folder)
        report.files = [*lock_findings, *_file_findings(found, folder, real)]
        report.removed.extend(removed)
        if check_items and found.kind == "labeling" and found.readable:
            report.items, report.items_checked = _item_findings(found, folder)
        if fix:
            report.removed.extend(_fix_links(report.files, folder))
            for finding in report.files:
                if not finding.fixable or finding.path is None or finding.kind == _LINKED:
                    continue
                path = folder / finding.path
                if not _removable(path, real):  # checked again just before deleting
                    continue
                if not remove_in_folder(path.parent, path.name):  # a regular file, never through a link
                    finding.message += " (could not be removed)"
                    continue
                finding.fixed = True
                report.removed.append(path)
    return report
