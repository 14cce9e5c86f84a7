"""The labeling workflow on a real image collection: init, query, label, status, export.

``init`` registers the images of a data root (a class-per-folder tree, a flat folder, or a CSV manifest) and
optional initial labels in a new project store. ``query`` trains on the current labels — or reuses the
checkpoint whose label fingerprint matches them — scores the unlabeled pool, records the query and writes the
batch for labelers. Every step is a transaction written after its checkpoint is durable, so a query killed at
any moment is simply run again: it reuses what was finished and never records a second query for the same
labels.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learnloss.active.oracle import HumanOracle
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.images import list_images, probe_images, read_images
from learnloss.errors import UsageError
from learnloss.project.exports import (
    QueriedItem, read_manifest, unescape_cell, write_csv, write_json, write_query_batch,
)
from learnloss.project.importer import import_labels
from learnloss.project.paths import UnsafePathError, resolve_inside, safe_relative
from learnloss.project.store import LabelRecord, ProjectStore
from learnloss.runs.builder import build_loop
from learnloss.runs.journal import LabelingJournal, label_fingerprint
from learnloss.runs.presets import resolve_spec
from learnloss.runs.spec import RunSpec

__all__ = [
    "EXPORT_FIELDS", "QueryOutcome", "export_labels", "init_project", "project_dataset", "project_spec", "project_status",
    "query_project",
]

# --------------------------------------------------------------------------------------------------- init


@dataclass(frozen=True)
class _Entry:
    path: str
    label: str | None
    split: str


def _scan_folder(root: Path) -> list[_Entry]:
    """A class-per-folder tree (``root/<class>/*``, optionally under ``train/`` and ``test/``) gives labels;
    any other layout gives unlabeled pool items."""
    images = list_images(root)
    if not images:
        raise UsageError(f"no images found under {root} (looked for {', '.join(sorted({'.png', '.jpg', '.jpeg'}))}, …)")
    relative = [image.relative_to(root) for image in images]
    top = {r.parts[0] for r in relative}
    if top <= {"train", "test"} and all(len(r.parts) == 3 for r in relative):
        return [_Entry(r.as_posix(), r.parts[1], "pool" if r.parts[0] == "train" else "test") for r in relative]
    if all(len(r.parts) == 2 for r in relative):
        return [_Entry(r.as_posix(), r.parts[0], "pool") for r in relative]
    return [_Entry(r.as_posix(), None, "pool") for r in relative]


def _read_manifest(manifest: Path, root: Path) -> list[_Entry]:
    reader, header = read_manifest(manifest)
    if "path" not in header:
        raise UsageError(f"{manifest}: needs a 'path' column (and optionally 'label' and 'split'), found {header}")
    entries: list[_Entry] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(reader, start=2):
        where = f"{manifest.name} row {number}"
        try:
            path = safe_relative(unescape_cell((row.get("path") or "").strip()), where)
            if not resolve_inside(root, path, where).is_file():
                problems.append(f"{where}: {path} is not a file under {root}")
                continue
        except UnsafePathError as error:
            problems.append(str(error))
            continue
        if path in seen:
            problems.append(f"{where}: {path} is listed again (first at row {seen[path]})")
            continue
        seen[path] = number
        split = (row.get("split") or "pool").strip().lower() or "pool"
        if split not in ("pool", "test"):
            problems.append(f"{where}: split must be pool or test, got {split!r}")
            continue
        label = unescape_cell((row.get("label") or "").strip()) or None
        entries.append(_Entry(path, label, split))
    if problems:
        raise UsageError(f"{manifest}: {len(problems)} problem(s), nothing was created: " + "; ".join(problems[:20]))
    if not entries:
        raise UsageError(f"{manifest}: lists no images")
    return entries


def init_project(
    project: str | Path,
    images: str | Path | None = None,
    manifest: str | Path | None = None,
    classes: list[str] | None = None,
    labels: str | Path | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Create the project ``project`` over the images of ``images`` (a folder) or ``manifest`` (a CSV with
    ``path[,label][,split]``, paths relative to the manifest's folder), with optional initial ``labels`` (a
    file :func:`~learnloss.project.importer.import_labels` reads). All of it is validated and built in a
    temporary folder that is renamed into place only when complete: a failed init leaves nothing behind.

    Returns the store's counts.

    Raises:
        UsageError: the project exists, the sources are missing or invalid, classes are missing or unknown.
    """
    project = Path(project)
    if (images is None) == (manifest is None):
        raise UsageError("give exactly one of --images DIR or --manifest FILE.csv")
    if project.exists() and (not project.is_dir() or any(project.iterdir())):
        raise UsageError(f"{project} already exists and is not an empty folder; choose a new project folder")
    root = (Path(images) if images is not None else Path(str(manifest)).parent).resolve()
    if not root.is_dir():
        raise UsageError(f"the data root {root} is not a folder")
    entries = _scan_folder(root) if images is not None else _read_manifest(Path(str(manifest)), root)
    found = sorted({e.label for e in entries if e.label is not None})
    names = list(classes) if classes else found
    if len(names) < 2:
        raise UsageError("a project needs at least two classes; give them with --classes a,b,c")
    if len(set(names)) != len(names):
        raise UsageError(f"--classes lists a class twice: {names}")
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise UsageError(f"the sources use classes not in --classes: {', '.join(unknown)}")
    spec = resolve_spec("labeling", settings)  # every setting checked before anything is created
    project.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{project.name}.", dir=project.parent))
    try:
        with ProjectStore(staging, create=True) as store:
            with store.transaction() as db:
                store.set_meta("kind", "labeling", db)
                store.set_meta("data_root", str(root), db)
                store.set_meta("settings", spec.to_dict(), db)
                store.add_classes(db, names)
                for split in ("pool", "test"):
                    store.add_items(db, [e.path for e in entries if e.split == split], split)
                ids = store.item_ids(db, [e.path for e in entries])
                store.add_labels(db, [LabelRecord(ids[e.path], e.label, "init") for e in entries if e.label])
            if labels is not None:
                import_labels(store, labels)
            counts = store.counts()
        if project.exists():
            project.rmdir()
        os.replace(staging, project)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


# -------------------------------------------------------------------------------------------------- query


@dataclass(frozen=True)
class QueryOutcome:
    """What ``query`` did: the cycle, whether it trained or reused a checkpoint, whether the query is new or the
    open one re-exported, and the files written."""

    cycle: int
    trained: bool
    new_query: bool
    items: list[QueriedItem]
    files: dict[str, Path]


def project_spec(store: ProjectStore, strategy: str | None = None) -> RunSpec:
    """The project's stored specification (settings a project made by an older learnloss lacks come from the
    ``labeling`` preset), with ``strategy`` replacing its strategy for one query."""
    stored = dict(store.meta("settings") or {})
    if strategy:
        stored["strategy"] = strategy
    known = RunSpec.__dataclass_fields__.keys()
    return resolve_spec("labeling", {key: value for key, value in stored.items() if key in known and key != "protocol"})


def project_dataset(store: ProjectStore, spec: RunSpec, labels: dict[int, str] | None = None
                    ) -> tuple[Dataset, list[int]]:
    """The project's images as a dataset — the pool items with their current labels (``-1``: unlabeled) and the
    labeled test items — and the store's item id of each pool index. ``labels`` are the store's current labels
    when the caller has read them already."""
    root = Path(store.meta("data_root"))
    rows = store.items_with_split()
    paths = [resolve_inside(root, source, f"item {item_id}") for item_id, source, _ in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} image(s) of the project are gone, e.g. {missing[0]}; restore them")
    _, mode = probe_images(paths[:1])
    size = spec.image_size or 32
    images = torch.from_numpy(read_images(paths, mode, (size, size), resize=True))
    classes = store.classes()
    labels = store.current_labels() if labels is None else labels
    class_index = {name: c for c, name in enumerate(classes)}
    pool = [i for i, row in enumerate(rows) if row[2] == "pool"]
    test = [i for i, row in enumerate(rows) if row[2] == "test" and row[0] in labels]
    pool_x = images[pool]
    test_x = images[test] if test else pool_x[:0]
    test_y = torch.tensor([class_index[labels[rows[i][0]]] for i in test], dtype=torch.long)
    pool_y = torch.tensor([class_index[labels[rows[i][0]]] if rows[i][0] in labels else -1 for i in pool],
                          dtype=torch.long)
    height, width = pool_x.shape[2:]
    dataset = Dataset("project", pool_x, pool_y, test_x, test_y, classes, AugmentSpec.for_unknown_images(height, width))
    return dataset, [rows[i][0] for i in pool]


def query_project(project: str | Path, k: int, strategy: str | None = None, device: str = "auto",
                  progress: bool = False) -> QueryOutcome:
    """Train (or reuse the matching checkpoint), score the unlabeled pool, record and export a query of ``k``.

    The project drives the same loop as a simulated run, one step per query, with people as the oracle
    (:class:`~learnloss.active.oracle.HumanOracle`) and its store as the journal
    (:class:`~learnloss.runs.journal.LabelingJournal`). If the last recorded query was made with the current
    labels, it is not repeated: its open items are exported again. Queries of one project run one at a time
    (:meth:`ProjectStore.exclusive`); imports may run meanwhile, and a query whose labels changed while it trained
    is not recorded.

    Raises:
        StoreBusyError: another query held the project beyond the timeout.
        UsageError: ``k`` is not positive, no pool item is labeled, or fewer than ``k`` are unlabeled.
        CheckpointError: a recorded checkpoint is damaged.
    """
    if k <= 0:
        raise UsageError(f"--k must be positive, got {k}")
    with ProjectStore(project) as store, store.exclusive("query"):
        spec = project_spec(store, strategy).replace(device=device)
        classes = store.classes()
        labels = store.current_labels()
        last = store.last_cycle()
        if last is not None and last["status"] == "queried" and last["label_fingerprint"] == label_fingerprint(labels):
            return _export(store, last["cycle"], classes, last["config"].get("strategy", spec.strategy), new=False)
        dataset, pool_ids = project_dataset(store, spec, labels)
        labeled = int((dataset.y_train >= 0).sum())
        if labeled == 0:
            raise UsageError("no pool item is labeled yet; label a few first (learnloss label) or init with --labels")
        if len(pool_ids) - labeled < k:
            raise UsageError(f"only {len(pool_ids) - labeled} pool items are unlabeled; lower --k")
        loop = build_loop(spec, dataset, oracle=HumanOracle(), initial=labeled, query=k, cycles=2, progress=progress)
        journal = LabelingJournal(store, spec, classes, pool_ids, labels)
        point = loop.begin(journal)
        loop.step(journal.cycle, journal, trained=point.trained, query=True)
        return _export(store, journal.cycle, classes, spec.strategy, new=True, trained=not journal.reused)


def _export(store: ProjectStore, cycle: int, classes: list[str], strategy: str, new: bool,
            trained: bool = False) -> QueryOutcome:
    """Write the open items of ``cycle``'s query for labelers (CSV, JSON, Label Studio tasks)."""
    items = [QueriedItem(item_id, source, rank, score, prediction or "", confidence)
             for item_id, source, rank, score, prediction, confidence in store.query_items(cycle)]
    files = write_query_batch(store.project / "exports", cycle, items, classes, {"strategy": strategy})
    return QueryOutcome(cycle, trained, new, items, files)


# --------------------------------------------------------------------------------------- status, export


def project_status(project: str | Path) -> dict[str, Any]:
    """Counts, classes, per-cycle metrics and open queries of ``project``."""
    with ProjectStore(project) as store:
        keep = ("n_labeled", "test_accuracy", "lpm_ranking_accuracy")
        cycles = [{"cycle": c["cycle"], "status": c["status"], **{k: v for k, v in c["metrics"].items() if k in keep}}
                  for c in store.cycles()]
        return {"project": str(store.project), "data_root": store.meta("data_root"), "classes": store.classes(),
                "counts": store.counts(), "cycles": cycles, "open_queries": store.open_per_cycle()}


EXPORT_FIELDS = ("item_id", "path", "label", "current", "cycle", "strategy", "score", "rank", "source", "file",
                 "created_at")


def export_labels(project: str | Path, out: str | Path, fmt: str | None = None) -> int:
    """Write every label ever stored, with its provenance, to ``out`` (CSV or JSON by suffix or ``fmt``);
    returns how many. CSV cells a spreadsheet would run as formulas are escaped."""
    out = Path(out)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "json"):
        raise UsageError(f"export format must be csv or json, got {fmt or '(none)'}; name the file .csv or .json")
    with ProjectStore(project) as store:
        history = store.label_history()
    if fmt == "csv":
        write_csv(out, EXPORT_FIELDS, [[entry[key] for key in EXPORT_FIELDS] for entry in history])
    else:
        write_json(out, [{key: entry[key] for key in EXPORT_FIELDS} for entry in history])
    return len(history)

