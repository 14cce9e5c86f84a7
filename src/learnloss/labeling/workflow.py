"""The labeling workflow on a real image collection: init, query, label, status, export.

``init`` registers the images of a data root (a class-per-folder tree, a flat folder, or a CSV manifest) and
optional initial labels in a new project store; ``add`` registers more images of the same data root. Both register
only images every later command can read and address (see :func:`init_project`), all or nothing. ``query`` trains on the current labels — or reuses the
checkpoint whose label fingerprint matches them — scores the unlabeled pool, records the query and writes the
batch for labelers. Every step is a transaction written after its checkpoint is durable, so a query killed at
any moment is simply run again: it reuses what was finished and never records a second query for the same
labels.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from learnloss.active.oracle import HumanOracle
from learnloss.atomic import atomic_write
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.image_source import ImageSource
from learnloss.distributed import current
from learnloss.data.images import IMAGE_SUFFIXES, ImageHeader, read_header, scan_images
from learnloss.errors import LearnLossError, UsageError
from learnloss.project.exports import (
    QueriedItem, file_sha256, read_table, unescape_cell, write_csv, write_json, write_query_batch,
)
from learnloss.project.annotations import PROJECT_TASKS, AnnotationSchema
from learnloss.project.importer import ImportSummary, import_labels
from learnloss.project.labelstudio import LabelStudioSetup
from learnloss.project.paths import AmbiguousNameError, ItemLocator, UnsafePathError, name_problem, nfc, safe_relative
from learnloss.project.store import LabelRecord, ProjectStore
from learnloss.runs.builder import build_loop
from learnloss.runs.journal import LabelingJournal, label_fingerprint
from learnloss.runs.presets import LABELING_PRESETS, resolve_spec
from learnloss.runs.spec import RunSpec
from learnloss.strategies import build_strategy
from learnloss.tasks import build_task

__all__ = [
    "COLORS", "EXPORT_FIELDS", "EXPORT_FORMATS", "ProjectImages", "QueryOutcome", "add_items", "export_labels",
    "image_sizes", "init_project", "label_project", "project_dataset", "project_images",
    "project_label_studio", "project_spec", "project_status", "query_project",
]

#: The colour settings of a project: the most common mode of its images, or one for all.
COLORS = ("auto", "rgb", "grey")
_COLOR_ALIASES = {"gray": "grey", "greyscale": "grey", "grayscale": "grey", "color": "rgb", "colour": "rgb"}
#: How many offenders one refusal lists (the count says how many more there are).
MAX_LISTED = 20

# --------------------------------------------------------------------------------------------- registering


@dataclass(frozen=True)
class _Entry:
    """An image to register: its item name (relative to the data root, POSIX, NFC), label, split, and where it was
    listed (``manifest.csv row 3``; empty for a folder scan)."""

    path: str
    label: str | None
    split: str
    origin: str = ""

    @property
    def where(self) -> str:
        """How messages name the entry."""
        return f"{self.origin}: {self.path!r}" if self.origin else repr(self.path)


#: A problem of an image to register: where (its name or manifest row; empty when the reason says it) and why.
_Problem = tuple[str, str]


def _listed(problems: Sequence[_Problem]) -> str:
    """The problems on one line, those with one reason together (up to :data:`MAX_LISTED` names each), in order."""
    groups: dict[str, list[str]] = {}
    for where, reason in problems:
        groups.setdefault(reason, []).append(where)
    parts = []
    for reason, places in list(groups.items())[:MAX_LISTED]:
        named = [place for place in places if place]
        more = f" and {len(named) - MAX_LISTED} more" if len(named) > MAX_LISTED else ""
        parts.append(f"{', '.join(named[:MAX_LISTED])}{more}: {reason}" if named else reason)
    rest = len(groups) - MAX_LISTED
    return "; ".join(parts) + (f"; and {rest} more kinds of problem" if rest > 0 else "")


def _split(where: str, message: str) -> _Problem:
    """``message`` (an error's, starting with ``where: ``) as a problem."""
    return (where, message[len(where) + 2:]) if message.startswith(where + ": ") else ("", message)


def _scan_folder(root: Path, folder: Path, layout: bool, registered: frozenset[str] = frozenset(),
                 classes: bool = True) -> tuple[list[_Entry], list[_Problem], int]:
    """The images under ``folder`` (inside ``root``) as entries named relative to ``root``, the names that cannot
    be items, and how many images were skipped as ``registered`` already. With ``layout``, a class-per-folder tree
    (``<class>/*``, optionally under ``train/`` and ``test/``) gives labels; any other layout gives unlabeled pool
    items. Without ``classes`` (a project of boxes or keypoints) folders give no labels, and ``train/`` and
    ``test/`` at the top still give the split."""
    listing = scan_images(folder, inside=root)  # the one listing: links leading out of the root are problems
    images = listing.files
    if not images and not listing.outside:
        raise UsageError(f"no images found under {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    relative = [image.relative_to(folder) for image in images]
    top = {r.parts[0] for r in relative}
    found: list[tuple[str | None, str]]
    if layout and not classes:
        split_by_top = top <= {"train", "test"} and all(len(r.parts) >= 2 for r in relative)
        found = [(None, ("pool" if r.parts[0] == "train" else "test") if split_by_top else "pool") for r in relative]
    elif layout and top <= {"train", "test"} and all(len(r.parts) == 3 for r in relative):
        found = [(r.parts[1], "pool" if r.parts[0] == "train" else "test") for r in relative]
    elif layout and all(len(r.parts) == 2 for r in relative):
        found = [(r.parts[0], "pool") for r in relative]
    else:
        found = [(None, "pool") for _ in relative]
    entries: list[_Entry] = []
    problems: list[_Problem] = []
    for link in listing.outside:
        linked = link.relative_to(root).as_posix()
        problems.append((ascii(linked) if name_problem(linked) else repr(nfc(linked)),
                         f"a symlink leads it outside the data root {root}; copy the image into the data root or "
                         "leave it out"))
    skipped = 0
    for image, (label, split) in zip(images, found):
        name = image.relative_to(root).as_posix()
        if nfc(name) in registered:
            skipped += 1
            continue
        problem = name_problem(name)
        if problem:
            problems.append((ascii(name), problem))
            continue
        entries.append(_Entry(nfc(name), nfc(label) if label is not None else None, split))
    return entries, problems, skipped


def _read_manifest(manifest: Path, prefix: str) -> tuple[list[_Entry], list[_Problem]]:
    """The rows of a CSV manifest (``path[,label][,split]``, paths relative to its folder, which is ``prefix``
    under the data root) as entries, and the problems of its rows."""
    header, rows = read_table(manifest)
    if "path" not in header:
        raise UsageError(f"{manifest}: needs a 'path' column (and optionally 'label' and 'split'), found {header}")
    entries: list[_Entry] = []
    problems: list[_Problem] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        where = f"{manifest.name} row {number}"
        try:
            relative = safe_relative(unescape_cell(row.get("path", "").strip()), where)
        except UnsafePathError as error:
            problems.append(("", str(error)))
            continue
        problem = name_problem(relative)
        if problem:
            problems.append((f"{where}: {ascii(relative)}", problem))
            continue
        path = nfc(f"{prefix}/{relative}" if prefix else relative)
        if path in seen:
            problems.append((f"{where}: {path!r}", f"listed again (first at row {seen[path]})"))
            continue
        seen[path] = number
        split = (row.get("split") or "pool").strip().lower() or "pool"
        if split not in ("pool", "test"):
            problems.append((where, f"split must be pool or test, got {split!r}"))
            continue
        label = nfc(unescape_cell((row.get("label") or "").strip())) or None
        entries.append(_Entry(path, label, split, where))
    return entries, problems


def _check_files(root: Path, entries: list[_Entry], problems: list[_Problem], source: object, done: str
                 ) -> tuple[list[_Entry], list[ImageHeader]]:
    """Keep the entries whose file is an image inside ``root`` that Pillow can read (header only); refuse them all
    with the list of offenders (and the earlier ``problems``) otherwise.

    Raises:
        UsageError: one line: how many problems, that nothing was ``done``, the first :data:`MAX_LISTED`.
    """
    spellings: dict[str, int] = {}
    for entry in entries:
        spellings[entry.path] = spellings.get(entry.path, 0) + 1
    locator = ItemLocator(root)
    kept: list[_Entry] = []
    headers: list[ImageHeader] = []
    reported: set[str] = set()
    for entry in entries:
        if spellings[entry.path] > 1:  # a folder scan found two names that normalise alike
            if entry.path not in reported:
                reported.add(entry.path)
                problems.append((entry.where, f"{spellings[entry.path]} files have this name once Unicode-normalised "
                                              "(NFC); rename all but one"))
            continue
        try:
            path = locator.find(entry.path, entry.origin)
        except AmbiguousNameError as error:
            problems.append(("", str(error)))
            continue
        except UnsafePathError:  # names are relative and climb nowhere by now: a symlink leads out
            problems.append((entry.where, f"a symlink leads it outside the data root {root}; copy the image into the "
                                          "data root or leave it out"))
            continue
        if not path.is_file():
            problems.append((entry.where, f"not a file under {root}"))
            continue
        try:
            headers.append(read_header(path, entry.where))
        except LearnLossError as error:
            problems.append(_split(entry.where, str(error)))
            continue
        kept.append(entry)
    if problems:
        raise UsageError(f"{source}: {len(problems)} problem(s), nothing was {done}: {_listed(problems)}")
    return kept, headers


def _class_names(names: Sequence[str], what: str) -> list[str]:
    """``names`` trimmed and NFC-normalised; refused when one is empty, holds a control character, starts like an
    escaped formula, or repeats another once normalised (SQLite would refuse the second one)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    out: list[str] = []
    for raw in names:
        name = nfc(raw.strip())
        if not name:
            problems.append("an empty class name")
        elif any(unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in name):
            problems.append(f"{ascii(name)} holds a control character")
        elif unescape_cell(name) != name:
            problems.append(f"{name!r} starts with ' before a formula character, which label files read as a "
                            "spreadsheet escape")
        elif name in seen:
            problems.append(f"{ascii(seen[name])} and {ascii(raw)} are the same class once trimmed and "
                            "Unicode-normalised")
        else:
            seen[name] = raw
            out.append(name)
    if problems:
        raise UsageError(f"{what}: {'; '.join(problems[:MAX_LISTED])}; give each class once, by a plain name")
    return out


def _color_setting(color: str) -> str:
    setting = _COLOR_ALIASES.get(str(color).strip().lower(), str(color).strip().lower())
    if setting not in COLORS:
        raise UsageError(f"the colour setting must be one of {', '.join(COLORS)}, got {color!r}")
    return setting


def _decide_color(headers: Sequence[ImageHeader], setting: str = "auto") -> tuple[str, int]:
    """The colour mode of a project (``'grey'`` or ``'rgb'``: ``setting``, or with ``auto`` the mode most of
    ``headers`` have, colour on a tie) and how many of the images are converted to it."""
    grey = sum(header.grey for header in headers)
    colour = len(headers) - grey
    mode = setting if setting != "auto" else ("grey" if grey > colour else "rgb")
    return mode, colour if mode == "grey" else grey


def _register(store: ProjectStore, db: sqlite3.Connection, entries: Sequence[_Entry], class_names: dict[str, str],
              source: str) -> None:
    """Register ``entries`` and their labels inside the transaction ``db``."""
    for split in ("pool", "test"):
        store.add_items(db, [e.path for e in entries if e.split == split], split)
    ids = store.item_ids(db, [e.path for e in entries])
    store.add_labels(db, [LabelRecord(ids[e.path], class_names[e.label], source) for e in entries if e.label])


#: Why a manifest row of a project of boxes or keypoints may not carry a label.
_NO_LABEL_COLUMN = ("a {task} project takes its labels from --labels or learnloss label (Label Studio's JSON export "
                    "or COCO JSON), not from the manifest; leave the label column empty")


def _init_schema(task: str, classes: list[str] | None, keypoints: list[str] | None,
                 skeleton: list[tuple[str, str]] | None, category: str | None) -> AnnotationSchema | None:
    """The schema of a new project of ``task``, or None for classification (its classes are settled once the
    sources are read); every name checked as class names are."""
    if task not in PROJECT_TASKS:
        raise UsageError(f"--task must be one of {', '.join(PROJECT_TASKS)}, got {task!r}")
    if task != "keypoints" and (keypoints or skeleton or category):
        raise UsageError("--keypoints, --skeleton and --category belong to --task keypoints")
    if task == "classification":
        return None
    if task == "detection":
        if not classes:
            raise UsageError("a detection project needs its object classes: give them with --classes a,b,c")
        return AnnotationSchema("detection", tuple(_class_names(classes, "--classes")))
    if classes:
        raise UsageError("a keypoints project names its points with --keypoints a,b,c (and the figures with "
                         "--category), not --classes")
    if not keypoints:
        raise UsageError("a keypoints project needs its keypoint names, in order: give them with --keypoints a,b,c")
    names = tuple(_class_names(keypoints, "--keypoints"))
    edges = tuple((nfc(a.strip()), nfc(b.strip())) for a, b in skeleton or ())
    what = _class_names([category], "--category")[0] if category else "person"
    return AnnotationSchema("keypoints", names, edges, what)


def image_sizes(store: ProjectStore, known: dict[str, tuple[int, int]] | None = None
                ) -> Callable[[int], tuple[int, int]]:
    """The pixel size (width, height) of a project item's image by its id, read from the image's header (or from
    ``known``, item path -> size, for headers the caller has read already): what the pixel coordinates of a label
    file (COCO) are checked against."""
    root = Path(store.meta("data_root"))
    locator = ItemLocator(root)
    sources = dict(store.items(include_retired=True))

    def size(item_id: int) -> tuple[int, int]:
        if known is not None and sources[item_id] in known:
            return known[sources[item_id]]
        path = locator.find(sources[item_id], f"item {item_id}")
        if not path.is_file():
            raise UsageError(f"the image of item {item_id} ({sources[item_id]!r}) is gone from {root}; restore it")
        return read_header(path, sources[item_id]).size

    return size


def init_project(
    project: str | Path,
    images: str | Path | None = None,
    manifest: str | Path | None = None,
    classes: list[str] | None = None,
    labels: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    color: str = "auto",
    ls_document_root: str | Path | None = None,
    ls_url_prefix: str | None = None,
    task: str = "classification",
    keypoints: list[str] | None = None,
    skeleton: list[tuple[str, str]] | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """Create the project ``project`` over the images of ``images`` (a folder) or ``manifest`` (a CSV with
    ``path[,label][,split]``, paths relative to the manifest's folder), with optional initial ``labels`` (a
    file :func:`~learnloss.project.importer.import_labels` reads). All of it is validated and built in a
    temporary folder that is renamed into place only when complete: a failed init leaves nothing behind.

    ``task`` is what a label holds (:mod:`learnloss.project.annotations`): ``classification`` (a class per image;
    class folders or the manifest's ``label`` column give labels), ``detection`` (boxes of the ``classes``) or
    ``keypoints`` (the named ``keypoints``, joined by the ``skeleton``, of one figure of ``category`` per image).
    Boxes and keypoints come from ``labels`` (Label Studio's JSON export or COCO JSON), never from folders or the
    manifest; ``train/`` and ``test/`` folders at the top of ``images`` (or the manifest's ``split``) give the split.
    The project starts from the task's preset (``labeling``, ``labeling-detection``, ``labeling-keypoints``).

    Only images every later command can use are registered: each must be inside the data root (no symlink out of
    it), an image Pillow can read (its header is checked, pixel limit included) and a name that exports, spreadsheets
    and label files carry unchanged (:func:`~learnloss.project.paths.name_problem`); names are stored in Unicode
    NFC, and two files whose names normalise alike are refused. Any offender refuses the whole init, listing them.
    Every image is read in one colour mode, ``color``: ``'rgb'``, ``'grey'``, or ``'auto'`` (the mode most images
    have; colour on a tie), stored in the project. Label Studio finds the images under ``ls_document_root`` or
    ``ls_url_prefix`` (:meth:`LabelStudioSetup.for_project <learnloss.project.labelstudio.LabelStudioSetup.for_project>`;
    by default the data root's parent is Label Studio's document root), for the tasks every query writes.

    The Label Studio labeling configuration is written to ``exports/labelstudio-config.xml`` at once.

    Returns the store's counts (``pool``, ``test``, ``labeled``, …), ``color`` (``'grey'`` or ``'rgb'``),
    ``converted`` (how many images are read in the other mode than their own), ``label_studio`` (the setup) and
    ``skipped`` (tasks of a Label Studio ``labels`` export left out: cancelled or without a choice).

    Raises:
        UsageError: the project exists; the sources are missing or invalid (every offender listed); classes are
            missing, unknown or repeated; ``color`` is not a colour setting.
    """
    project = Path(project)
    if (images is None) == (manifest is None):
        raise UsageError("give exactly one of --images DIR or --manifest FILE.csv")
    setting = _color_setting(color)
    if project.exists() and (not project.is_dir() or any(project.iterdir())):
        raise UsageError(f"{project} already exists and is not an empty folder; choose a new project folder")
    root = (Path(images) if images is not None else Path(str(manifest)).parent).resolve()
    if not root.is_dir():
        raise UsageError(f"the data root {root} is not a folder")
    schema = _init_schema(task, classes, keypoints, skeleton, category)
    if images is not None:
        entries, problems, _ = _scan_folder(root, root, layout=True, classes=schema is None)
        source: object = root
    else:
        entries, problems = _read_manifest(Path(str(manifest)), "")
        source = manifest
        if not entries and not problems:
            raise UsageError(f"{manifest}: lists no images")
        if schema is not None:
            problems.extend((e.where, _NO_LABEL_COLUMN.format(task=task)) for e in entries if e.label is not None)
    entries, headers = _check_files(root, entries, problems, source, "created")
    if schema is None:
        found = sorted({e.label for e in entries if e.label is not None})
        names = _class_names(classes, "--classes") if classes else _class_names(found, "the class names of the sources")
        if len(names) < 2:
            raise UsageError("a project needs at least two classes; give them with --classes a,b,c")
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise UsageError(f"the sources use classes not in --classes: {', '.join(unknown)}")
        schema = AnnotationSchema("classification", tuple(names))
    names = list(schema.names)
    mode, converted = _decide_color(headers, setting)
    spec = resolve_spec(LABELING_PRESETS[schema.task], settings)  # every setting checked before anything is created
    label_studio = LabelStudioSetup.for_project(root, ls_document_root, ls_url_prefix)
    project.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{project.name}.", dir=project.parent))
    try:
        with ProjectStore(staging, create=True, kind="labeling") as store:
            with store.transaction() as db:
                store.set_meta("data_root", str(root), db)
                store.set_meta("settings", spec.to_dict(), db)
                store.set_meta("color", mode, db)
                store.set_meta("label_studio", label_studio.to_meta(), db)
                store.set_meta("annotation", schema.to_meta(), db)
                config = staging / "exports" / "labelstudio-config.xml"
                config.parent.mkdir()
                with atomic_write(config, root=staging) as handle:
                    handle.write(schema.label_studio_config())
                store.set_meta("exports", {config.name: file_sha256(config)}, db)
                store.add_classes(db, names)
                _register(store, db, entries, {name: name for name in names}, "init")
            skipped: tuple[str, ...] = ()
            if labels is not None:
                sizes = {entry.path: header.size for entry, header in zip(entries, headers)}  # read by _check_files
                skipped = import_labels(store, labels, image_size=image_sizes(store, sizes)).skipped
            counts: dict[str, Any] = dict(store.counts())
        if project.exists():
            project.rmdir()
        os.replace(staging, project)
    except sqlite3.IntegrityError as error:  # validated above; a store constraint is the last line of defence
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(f"{source}: the sources repeat an item or a class ({error}); nothing was created") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**counts, "color": mode, "converted": converted, "label_studio": label_studio, "skipped": list(skipped)}


def add_items(
    project: str | Path, images: str | Path | None = None, manifest: str | Path | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Register new images of the project's data root: the images under the folder ``images`` (the data root or a
    folder inside it; images registered already, or registered and removed since, are skipped), or those a CSV
    ``manifest`` lists (in a folder inside the data root; ``path[,label][,split]``, paths relative to its folder; an
    image registered already is refused, and labels must be known classes). They are validated like
    :func:`init_project`'s and added with their labels in one transaction, all or nothing, under the project's lock
    (never during a query; waits up to ``timeout`` seconds).

    Returns ``added``, ``pool``, ``test``, ``labeled`` (how many of them), ``skipped`` (registered already, removed
    ones included), the project's ``color`` and how many of the new images are ``converted`` to it.

    Raises:
        UsageError: not a labeling project; the sources are outside the data root, missing or invalid (every
            offender listed); nothing new to add.
        StoreBusyError: a query or another change held the project beyond ``timeout``.
    """
    if (images is None) == (manifest is None):
        raise UsageError("give exactly one of --images DIR or --manifest FILE.csv")
    with ProjectStore(project, timeout=timeout, kind="labeling") as store, store.exclusive("add", timeout):
        data_root = store.meta("data_root")
        if not isinstance(data_root, str):
            raise UsageError(f"{project} is not a labeling project (made by learnloss init); nothing was added")
        root = Path(data_root)
        if not root.is_dir():
            raise UsageError(f"the project's data root {root} is not a folder any more; restore it")
        base = (Path(images) if images is not None else Path(str(manifest)).parent).resolve()
        if not base.is_dir():
            raise UsageError(f"{base} is not a folder")
        real_root = root.resolve()
        if base != real_root and real_root not in base.parents:
            raise UsageError(f"{base} is not inside the project's data root {root}; move or copy the new images "
                             "under it first")
        registered = {nfc(source) for _, source, _ in store.items_with_split()}
        removed = {nfc(source): reason for _, source, _, reason in store.retired_items()}  # stay registered
        registered |= removed.keys()
        skipped = 0
        if images is not None:
            entries, problems, skipped = _scan_folder(root, base, layout=False, registered=frozenset(registered))
            if not entries and not problems:
                raise UsageError(f"no new images under {base}: all {skipped} are registered already")
            source: object = base
        else:
            prefix = base.relative_to(real_root).as_posix()
            entries, problems = _read_manifest(Path(str(manifest)), "" if prefix == "." else prefix)
            source = manifest
            if not entries and not problems:
                raise UsageError(f"{manifest}: lists no images")
            for entry in entries:
                if entry.path in removed:
                    why = f" ({removed[entry.path]})" if removed[entry.path] else ""
                    problems.append((entry.where, f"registered already and removed from the project since{why}; "
                                                  "delete the row"))
                elif entry.path in registered:
                    problems.append((entry.where, "registered already; delete the row"))
            entries = [e for e in entries if e.path not in registered]
        class_names = {nfc(name): name for name in store.classes()}
        schema = store.annotation_schema()
        if schema.classes:
            problems.extend((e.where, f"unknown class {e.label!r}; the classes are {', '.join(sorted(class_names))}")
                            for e in entries if e.label is not None and e.label not in class_names)
        else:
            problems.extend((e.where, _NO_LABEL_COLUMN.format(task=schema.task)) for e in entries if e.label is not None)
        entries, headers = _check_files(root, entries, problems, source, "added")
        mode, converted = _decide_color(headers, _project_color(store, root))
        try:
            with store.transaction() as db:
                _register(store, db, entries, class_names, "add")
        except sqlite3.IntegrityError as error:  # e.g. an image registered once and removed from the project since
            raise UsageError(f"{source}: an image is registered already ({error}); nothing was added") from None
    return {"added": len(entries), "pool": sum(e.split == "pool" for e in entries),
            "test": sum(e.split == "test" for e in entries), "labeled": sum(e.label is not None for e in entries),
            "skipped": skipped, "color": mode, "converted": converted}


def _project_color(store: ProjectStore, root: Path) -> str:
    """The project's colour mode (``'grey'`` or ``'rgb'``): stored by init, or for a project made before that,
    the mode most of its images have (from their headers)."""
    stored = store.meta("color")
    if stored in ("grey", "rgb"):
        return str(stored)
    locator = ItemLocator(root)
    paths = [locator.find(source, f"item {item_id}") for item_id, source, _ in store.items_with_split()]
    return _decide_color([read_header(path) for path in paths if path.is_file()])[0]


def label_project(project: str | Path, path: str | Path, relabel: bool = False) -> ImportSummary:
    """Import the label file ``path`` into ``project``, all or nothing
    (:func:`~learnloss.project.importer.import_labels`; pixel coordinates checked against the images' own sizes)."""
    with ProjectStore(project, kind="labeling", check="full") as store:
        return import_labels(store, path, relabel=relabel, image_size=image_sizes(store))


# -------------------------------------------------------------------------------------------------- query


@dataclass(frozen=True)
class QueryOutcome:
    """What ``query`` did: the cycle, whether it trained or reused a checkpoint, whether the query is new or the
    open one re-exported, the files written and the files kept."""

    cycle: int
    trained: bool
    new_query: bool
    items: list[QueriedItem]
    files: dict[str, Path]
    kept: dict[str, Path] = field(default_factory=dict)
    """Files of the batch changed after learnloss wrote them (labels filled in), kept as they are; the re-export
    went beside them (:attr:`files`)."""
    note: str | None = None
    """What the caller should know: e.g. that ``--k`` differs from the open batch it re-exports."""
    label_studio: LabelStudioSetup | None = None
    """Where Label Studio finds the images of the tasks written (:meth:`LabelStudioSetup.instructions`)."""


def project_spec(store: ProjectStore, strategy: str | None = None) -> RunSpec:
    """The project's stored specification (settings a project made by an older learnloss lacks come from its task's
    labeling preset), with ``strategy`` replacing its strategy for one query."""
    stored = dict(store.meta("settings") or {})
    if strategy:
        stored["strategy"] = strategy
    known = RunSpec.__dataclass_fields__.keys()
    preset = LABELING_PRESETS[store.annotation_schema().task]
    return resolve_spec(preset, {key: value for key, value in stored.items() if key in known and key != "protocol"})


@dataclass(frozen=True)
class ProjectImages:
    """What a labeling project's dataset is made of, read from its store once (a plain, picklable value: under
    ``torchrun`` rank 0 reads it and sends it to the other ranks). :meth:`dataset` opens the images."""

    paths: list[Path]
    """Every registered, unretired item's image, in the store's order."""
    item_ids: list[int]
    splits: list[str]
    labels: dict[int, Any]
    """Item id -> current label: a class name, or boxes / keypoints as stored."""
    schema: AnnotationSchema
    """The project's task and the names its labels use."""
    mode: str
    """PIL mode the images are read in: ``'L'`` or ``'RGB'``."""
    size: int

    @property
    def classes(self) -> list[str]:
        """The classes (classification, detection) or keypoints (keypoints) the model's outputs stand for."""
        return list(self.schema.names)

    def pool_counts(self) -> tuple[int, int]:
        """How many pool items are labeled, and how many are not."""
        pool = [item for item, split in zip(self.item_ids, self.splits) if split == "pool"]
        labeled = sum(item in self.labels for item in pool)
        return labeled, len(pool) - labeled

    def dataset(self) -> tuple[Dataset, list[int]]:
        """The pool items with their labels (``-1``: unlabeled) and the labeled test items, as a dataset whose
        images are decoded per batch, and the store's item id of each pool index (see :func:`project_dataset`)."""
        labels, size, schema = self.labels, self.size, self.schema
        pool = [i for i, split in enumerate(self.splits) if split == "pool"]
        test = [i for i, split in enumerate(self.splits) if split == "test" and self.item_ids[i] in labels]
        pool_x = ImageSource([self.paths[i] for i in pool], self.mode, (size, size), resize=True)
        test_x = ImageSource([self.paths[i] for i in test], self.mode, (size, size), resize=True)
        labeled = [n for n, i in enumerate(pool) if self.item_ids[i] in labels]
        # one encoding of both splits: boxes are padded to the most objects of any labeled image, train or test
        encoded = schema.encode([labels[self.item_ids[i]] for i in test]
                                + [labels[self.item_ids[pool[n]]] for n in labeled])
        test_y, known = encoded[:len(test)], encoded[len(test):]
        pool_y = build_task(schema.task).empty_targets(len(pool), known)
        pool_y[torch.as_tensor(labeled, dtype=torch.long)] = known
        height, width = pool_x.shape[2:]
        # images of unknown content are cropped after padding; boxes and keypoints would move with the crop
        augment = AugmentSpec.for_unknown_images(height, width) if schema.classes else AugmentSpec()
        dataset = Dataset("project", pool_x, pool_y, test_x, test_y, self.classes, augment, task=schema.task)
        return dataset, [self.item_ids[i] for i in pool]


def project_images(store: ProjectStore, spec: RunSpec, labels: dict[int, Any] | None = None) -> ProjectImages:
    """Read from the store what :func:`project_dataset` is made of; ``labels`` are the store's current labels
    when the caller has read them already.

    Raises:
        UsageError: an image of the project is gone from its data root (naming how to restore or retire it).
    """
    root = Path(store.meta("data_root"))
    rows = store.items_with_split()
    locator = ItemLocator(root)
    paths = [locator.find(source, f"item {item_id}") for item_id, source, _ in rows]
    missing = [(item_id, source) for (item_id, source, _), path in zip(rows, paths) if not path.is_file()]
    if missing:
        ids = " ".join(str(item_id) for item_id, _ in missing[:20]) + (" …" if len(missing) > 20 else "")
        raise UsageError(f"{len(missing)} image(s) of the project are gone from {root}, e.g. {missing[0][1]!r}; "
                         f"restore them, or retire them with learnloss remove {store.project} {ids}")
    return ProjectImages(
        paths=paths, item_ids=[row[0] for row in rows], splits=[row[2] for row in rows],
        labels=store.current_labels() if labels is None else labels, schema=store.annotation_schema(),
        mode="L" if _project_color(store, root) == "grey" else "RGB", size=spec.image_size or 32)


def project_dataset(store: ProjectStore, spec: RunSpec, labels: dict[int, Any] | None = None
                    ) -> tuple[Dataset, list[int]]:
    """The project's images as a dataset — the pool items with their current labels (``-1``: unlabeled) and the
    labeled test items — and the store's item id of each pool index. ``labels`` are the store's current labels
    when the caller has read them already. Every image is read in the project's colour mode (stored by init; for
    an older project, the mode most of its images have), resized to the specification's image size.

    Nothing is decoded up front: each split is an :class:`~learnloss.data.image_source.ImageSource` that decodes
    the rows a batch reads (in parallel, through a cache bounded in bytes), so memory does not grow with the
    number of images. The pool's channel statistics decode up to :data:`~learnloss.data.image_source.STATS_IMAGES`
    evenly spaced images once (every image of a smaller pool, which the cache then usually holds)."""
    return project_images(store, spec, labels).dataset()


def project_label_studio(store: ProjectStore) -> LabelStudioSetup:
    """Where Label Studio finds the project's images: the setup stored by init (or changed by a query since), or
    for a project made before that, the default for its data root."""
    return LabelStudioSetup.from_meta(store.meta("data_root"), store.meta("label_studio"))


def query_project(project: str | Path, k: int, strategy: str | None = None, device: str = "auto",
                  progress: bool = False, ls_document_root: str | Path | None = None,
                  ls_url_prefix: str | None = None) -> QueryOutcome:
    """Train (or reuse the matching checkpoint), score the unlabeled pool, record and export a query of ``k``.

    The project drives the same loop as a simulated run, one step per query, with people as the oracle
    (:class:`~learnloss.active.oracle.HumanOracle`) and its store as the journal
    (:class:`~learnloss.runs.journal.LabelingJournal`). If the last recorded query was made with the current
    labels, it is not repeated: its open items are exported again. Queries of one project run one at a time
    (:meth:`ProjectStore.exclusive`); imports may run meanwhile, and a query whose labels changed while it trained
    is not recorded. ``ls_document_root`` or ``ls_url_prefix`` change where Label Studio finds the images (stored
    for later queries; :meth:`LabelStudioSetup.for_project`).

    Under ``torchrun`` (:mod:`learnloss.distributed`) rank 0 alone opens the store: it reads the project and sends
    the specification, the labels and the image list to the other ranks; every rank trains (DDP), scores its shard
    of the pool and takes part in the selection, exactly as ``learnloss run`` does; rank 0 records the query and
    writes the files, and every rank returns the same outcome.

    Raises:
        StoreBusyError: another query held the project beyond the timeout.
        UsageError: ``k`` is not positive, no pool item is labeled, or fewer than ``k`` are unlabeled.
        CheckpointError: a recorded checkpoint is damaged.
    """
    if k <= 0:
        raise UsageError(f"--k must be positive, got {k}")
    dist = current()
    with ExitStack() as stack:
        held: list[ProjectStore] = []  # rank 0's: the store is its alone

        def prepare() -> QueryOutcome | tuple[RunSpec, ProjectImages]:
            store = stack.enter_context(ProjectStore(project, kind="labeling"))
            stack.enter_context(store.exclusive("query"))
            held.append(store)
            spec = project_spec(store, strategy).replace(device=device)
            if ls_document_root is not None or ls_url_prefix is not None:
                setup = LabelStudioSetup.for_project(store.meta("data_root"), ls_document_root, ls_url_prefix)
                store.set_meta("label_studio", setup.to_meta())
            labels = store.current_labels()
            last = store.last_cycle()
            if last is not None and last["status"] == "queried" and last["label_fingerprint"] == label_fingerprint(labels):
                return _reexport(store, last, k, spec)
            images = project_images(store, spec, labels)
            labeled, unlabeled = images.pool_counts()
            if labeled == 0:
                raise UsageError("no pool item is labeled yet; label a few first (learnloss label) or init with --labels")
            if unlabeled < k:
                raise UsageError(f"only {unlabeled} pool items are unlabeled; lower --k")
            return spec, images

        prepared = dist.from_main(prepare, "rank 0 reading the project")
        if isinstance(prepared, QueryOutcome):
            return prepared
        spec, images = prepared
        dataset, pool_ids = images.dataset()
        labeled, _ = images.pool_counts()
        loop = build_loop(spec, dataset, oracle=HumanOracle(), initial=labeled, query=k, cycles=2,
                          progress=progress and dist.is_main, dist=dist)
        journal = (LabelingJournal(held[0], spec, images.classes, pool_ids, images.labels, images.schema)
                   if held else None)
        point = loop.begin(journal)
        cycle = dist.broadcast(journal.cycle if journal is not None else 0, "sharing the cycle to query")
        loop.step(cycle, journal, trained=point.trained, query=True)

        def export() -> QueryOutcome:
            assert journal is not None
            return _export(held[0], cycle, images.schema, spec.strategy, new=True, trained=not journal.reused)

        return dist.from_main(export, "rank 0 writing the query's files")


def _reexport(store: ProjectStore, last: dict[str, Any], k: int, spec: RunSpec) -> QueryOutcome:
    """The open batch of ``last`` (queried with the current labels) written again, with a note when ``k`` differs."""
    outcome = _export(store, last["cycle"], store.annotation_schema(), last["config"].get("strategy", spec.strategy),
                      new=False)
    size = len(store.query_items(last["cycle"], status=None))
    if k != size:
        outcome = replace(outcome, note=(
            f"--k {k} is not used: the open batch of cycle {last['cycle']} was queried with --k {size} and no "
            "label arrived since; import its labels first (learnloss label), then query again"))
    return outcome


def _export(store: ProjectStore, cycle: int, schema: AnnotationSchema, strategy: str, new: bool,
            trained: bool = False) -> QueryOutcome:
    """Write the open items of ``cycle``'s query for labelers (CSV, JSON, Label Studio tasks)."""
    items = [QueriedItem(item_id, source, rank, score, prediction or "", confidence)
             for item_id, source, rank, score, prediction, confidence in store.query_items(cycle)]
    written = dict(store.meta("exports") or {})
    setup = project_label_studio(store)
    files, kept = write_query_batch(store.project / "exports", cycle, items, schema, {"strategy": strategy}, setup,
                                    written, score_meaning=build_strategy(strategy).describes_score)
    written.update({path.name: digest for path in files.values() if (digest := file_sha256(path)) is not None})
    store.set_meta("exports", written)
    return QueryOutcome(cycle, trained, new, items, files, kept, label_studio=setup)


# --------------------------------------------------------------------------------------- status, export


def project_status(project: str | Path) -> dict[str, Any]:
    """Task, counts, classes (or keypoints), per-cycle metrics and open queries of ``project``. Each cycle keeps
    ``n_labeled``, the LPM's ranking accuracy and every test metric (``test_accuracy``; ``test_map50`` and
    ``test_map`` for detection; ``test_pck`` and ``test_mean_error`` for keypoints)."""
    with ProjectStore(project, kind="labeling") as store:
        keep = ("n_labeled", "lpm_ranking_accuracy")
        cycles = [{"cycle": c["cycle"], "status": c["status"],
                   **{k: v for k, v in c["metrics"].items() if k in keep or k.startswith("test_")}}
                  for c in store.cycles()]
        return {"project": str(store.project), "data_root": store.meta("data_root"),
                "task": store.annotation_schema().task, "classes": store.classes(), "counts": store.counts(),
                "cycles": cycles, "open_queries": store.open_per_cycle()}


EXPORT_FIELDS = ("item_id", "path", "label", "current", "cycle", "strategy", "score", "rank", "source", "file",
                 "created_at")
#: What ``learnloss export`` writes: the label history (``csv``, ``json``), or the current labels as ``coco`` JSON
#: or as Label Studio tasks with their annotations (``labelstudio``).
EXPORT_FORMATS = ("csv", "json", "coco", "labelstudio")


def export_labels(project: str | Path, out: str | Path, fmt: str | None = None) -> int:
    """Write the labels of ``project`` to ``out``; returns how many labels it holds.

    ``fmt`` (default: the file's suffix, ``.csv`` or ``.json``) is one of :data:`EXPORT_FORMATS`: ``csv`` and
    ``json`` hold every label ever stored with its provenance (a project of boxes or keypoints adds a ``target``
    field: the label as stored, coordinates normalised to the image); ``coco`` holds the current labels of the
    active items as COCO JSON (pixels of each image, read from its header; :meth:`AnnotationSchema.coco_annotations
    <learnloss.project.annotations.AnnotationSchema.coco_annotations>`); ``labelstudio`` holds them as Label Studio
    tasks with one annotation each, to import into a Label Studio project that uses ``labelstudio-config.xml``. Both
    read back with ``learnloss label``. CSV cells a spreadsheet would run as formulas are escaped."""
    out = Path(out)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt or '(none)'}; name the "
                         "file .csv or .json, or give --format")
    with ProjectStore(project) as store:
        schema = store.annotation_schema()
        if fmt in ("coco", "labelstudio") and not isinstance(store.meta("data_root"), str):
            raise UsageError(f"{project} has no images (a simulated run folder); export --format {fmt} needs a labeling "
                             "project")
        if fmt in ("coco", "labelstudio"):
            current = store.current_labels()
            items = [(item_id, source) for item_id, source in store.items() if item_id in current]
            if fmt == "coco":
                write_json(out, _coco_document(schema, items, current, image_sizes(store)))
            else:
                setup = project_label_studio(store)
                write_json(out, [{"data": {"image": setup.image_url(source), "learnloss_id": item_id, "path": source},
                                  "annotations": [{"result": schema.label_studio_results(current[item_id])}]}
                                 for item_id, source in items])
            return len(items)
        history = store.label_history()
    fields = EXPORT_FIELDS if schema.classes else (*EXPORT_FIELDS[:3], "target", *EXPORT_FIELDS[3:])
    if fmt == "csv":
        write_csv(out, fields, [[json.dumps(entry[key]) if key == "target" else entry[key] for key in fields]
                                for entry in history])
    else:
        write_json(out, [{key: entry[key] for key in fields} for entry in history])
    return len(history)


def _coco_document(schema: AnnotationSchema, items: Sequence[tuple[int, str]], labels: dict[int, Any],
                   size: Callable[[int], tuple[int, int]]) -> dict[str, Any]:
    """COCO JSON of the labeled ``items``: an image per item (its id, path as ``file_name``, size in pixels) and its
    label's annotations; a class label becomes one box over the whole image, and an image labeled as holding no
    object says ``"no_objects": true``."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for item_id, source in items:
        width, height = size(item_id)
        images.append({"id": item_id, "file_name": source, "width": width, "height": height})
        label = labels[item_id]
        if schema.task == "detection" and not label["boxes"]:
            images[-1]["no_objects"] = True  # read back as labeled; COCO itself cannot tell it from unlabeled
        if schema.classes:
            label = {"boxes": [{"label": label, "box": [0.0, 0.0, 1.0, 1.0]}]}
            own = AnnotationSchema("detection", schema.names).coco_annotations(label, item_id, width, height,
                                                                               len(annotations) + 1)
        else:
            own = schema.coco_annotations(label, item_id, width, height, len(annotations) + 1)
        annotations.extend(own)
    return {"info": {"description": "learnloss labeling project", "version": "1.0"}, "images": images,
            "annotations": annotations, "categories": schema.coco_categories()}
