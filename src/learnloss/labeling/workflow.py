"""The labeling workflow on a real image collection: init, query, label, status, export.

``init`` registers the images of a data root (a class-per-folder tree, a flat folder, or a CSV manifest) and
optional initial labels in a new project store. ``query`` trains on the current labels — or reuses the
checkpoint whose label fingerprint matches them — scores the unlabeled pool, records the query and writes the
batch for labelers. Every step is a transaction written after its checkpoint is durable, so a query killed at
any moment is simply run again: it reuses what was finished and never records a second query for the same
labels.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.active.loop import ActiveLearningLoop, LoopConfig
from learnloss.active.oracle import Oracle
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.images import list_images, probe_images, read_images
from learnloss.device import resolve_device
from learnloss.errors import UsageError
from learnloss.models import default_taps, embedding_layer, model_builder
from learnloss.project.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learnloss.project.exports import QueriedItem, unescape_cell, write_csv, write_json, write_query_batch
from learnloss.project.importer import import_labels
from learnloss.project.paths import UnsafePathError, resolve_inside, safe_relative
from learnloss.runs.journal import label_fingerprint
from learnloss.project.store import LabelRecord, ProjectStore
from learnloss.strategies import build_strategy
from learnloss.training.trainer import TrainConfig

__all__ = ["DEFAULT_SETTINGS", "EXPORT_FIELDS", "QueryOutcome", "export_labels", "init_project", "project_status", "query_project"]

#: Training and model settings of a new project (``learnloss init`` flags override them). The LPM learns on
#: detached features from the first epoch (``stop_grad_epoch`` 0): on the ``fmnist-cpu`` benchmark the paper's
#: joint training lowered the target's accuracy at small label budgets, and cutting the LPM's gradient from the
#: start raised learning loss's AUBC in every seed (+0.016, p = 0.005; benchmarks/results/fmnist-cpu/report.md).
DEFAULT_SETTINGS: dict[str, Any] = {
    "model": "small-cnn", "image_size": 32, "epochs": 30, "batch_size": 32, "lr": 0.05, "momentum": 0.9,
    "weight_decay": 5e-4, "milestones": [24], "gamma": 0.1, "lpm_weight": 1.0, "margin": 1.0, "lpm_loss": "ranking",
    "stop_grad_epoch": 0, "lpm_width": 128, "dropout": 0.0, "strategy": "learning-loss", "seed": 0,
}


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
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise UsageError(f"cannot read the manifest {manifest}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{manifest}: not UTF-8 text; save it as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in reader.fieldnames or []]
    if "path" not in header:
        raise UsageError(f"{manifest}: needs a 'path' column (and optionally 'label' and 'split'), found {header}")
    reader.fieldnames = header
    entries, problems, seen = [], [], {}
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
    root = Path(images if images is not None else Path(manifest).parent).resolve()
    if not root.is_dir():
        raise UsageError(f"the data root {root} is not a folder")
    entries = _scan_folder(root) if images is not None else _read_manifest(Path(manifest), root)
    found = sorted({e.label for e in entries if e.label is not None})
    names = list(classes) if classes else found
    if len(names) < 2:
        raise UsageError("a project needs at least two classes; give them with --classes a,b,c")
    if len(set(names)) != len(names):
        raise UsageError(f"--classes lists a class twice: {names}")
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise UsageError(f"the sources use classes not in --classes: {', '.join(unknown)}")
    merged = {**DEFAULT_SETTINGS, **(settings or {})}
    model_builder(merged["model"])
    build_strategy(merged["strategy"])
    project.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{project.name}.", dir=project.parent))
    try:
        with ProjectStore(staging, create=True) as store:
            with store.transaction() as db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("kind", json.dumps("labeling")), ("data_root", json.dumps(str(root))),
                    ("settings", json.dumps(merged)),
                ])
                store.add_classes(db, names)
                for split in ("pool", "test"):
                    store.add_items(db, [e.path for e in entries if e.split == split], split)
                ids = dict(db.execute("SELECT source, id FROM items"))
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


class _NoOracle(Oracle):
    """Labels come from people through ``learnloss label``; the workflow never asks an oracle."""

    def label(self, indices: np.ndarray) -> np.ndarray:  # pragma: no cover - never called
        raise RuntimeError("the labeling workflow has no oracle")


@dataclass(frozen=True)
class QueryOutcome:
    """What ``query`` did: the cycle, whether it trained or reused a checkpoint, whether the query is new or the
    open one re-exported, and the files written."""

    cycle: int
    trained: bool
    new_query: bool
    items: list[QueriedItem]
    files: dict[str, Path]


def _load_images(store: ProjectStore, settings: dict[str, Any]) -> tuple[list[tuple[int, str, str]], torch.Tensor]:
    root = Path(store.meta("data_root"))
    rows = list(store.db.execute("SELECT id, source, split FROM items ORDER BY id"))
    paths = [resolve_inside(root, source, f"item {item_id}") for item_id, source, _ in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} image(s) of the project are gone, e.g. {missing[0]}; restore them")
    _, mode = probe_images(paths[:1])
    size = (settings["image_size"], settings["image_size"])
    return rows, torch.from_numpy(read_images(paths, mode, size, resize=True))


def _train_config(settings: dict[str, Any]) -> TrainConfig:
    stop = settings["stop_grad_epoch"]
    return TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"], momentum=settings["momentum"],
        weight_decay=settings["weight_decay"], milestones=settings["milestones"], gamma=settings["gamma"],
        lpm_weight=settings["lpm_weight"], margin=settings["margin"], lpm_loss=settings["lpm_loss"],
        stop_grad_epoch=None if stop == "never" else stop, augment=True,
    )


def query_project(project: str | Path, k: int, strategy: str | None = None, device: str = "auto",
                  progress: bool = False) -> QueryOutcome:
    """Train (or reuse the matching checkpoint), score the unlabeled pool, record and export a query of ``k``.

    If the last recorded query was made with the current labels, it is not repeated: its open items are
    exported again. Queries of one project run one at a time (:meth:`ProjectStore.exclusive`); imports may run
    meanwhile, and a query whose labels changed while it trained is not recorded.

    Raises:
        StoreBusyError: another query held the project beyond the timeout.
        UsageError: ``k`` is not positive, no pool item is labeled, or fewer than ``k`` are unlabeled.
        CheckpointError: a recorded checkpoint is damaged.
    """
    if k <= 0:
        raise UsageError(f"--k must be positive, got {k}")
    with ProjectStore(project) as store, store.exclusive("query"):
        settings = {**store.meta("settings"), **({"strategy": strategy} if strategy else {})}
        classes = store.classes()
        labels = store.current_labels()
        fingerprint = label_fingerprint(labels)
        last = store.last_cycle()
        if last is not None and last["status"] == "queried" and last["label_fingerprint"] == fingerprint:
            return _reexport(store, last, classes)
        rows, images = _load_images(store, settings)
        pool_rows = [(i, r) for i, r in enumerate(rows) if r[2] == "pool"]
        test_rows = [(i, r) for i, r in enumerate(rows) if r[2] == "test" and r[0] in labels]
        class_index = {name: c for c, name in enumerate(classes)}
        pool_x = images[[i for i, _ in pool_rows]]
        test_x = images[[i for i, _ in test_rows]] if test_rows else pool_x[:0]
        test_y = torch.tensor([class_index[labels[r[0]]] for _, r in test_rows], dtype=torch.long)
        pool_y = torch.tensor([class_index.get(labels.get(r[0]), -1) for _, r in pool_rows], dtype=torch.long)
        labeled = np.flatnonzero(pool_y.numpy() >= 0)
        if len(labeled) == 0:
            raise UsageError("no pool item is labeled yet; label a few first (learnloss label) or init with --labels")
        if len(pool_rows) - len(labeled) < k:
            raise UsageError(f"only {len(pool_rows) - len(labeled)} pool items are unlabeled; lower --k")
        height, width = pool_x.shape[2:]
        dataset = Dataset("project", pool_x, pool_y, test_x, test_y, classes, AugmentSpec.for_unknown_images(height, width))
        dev = resolve_device(device)
        torch.manual_seed(settings["seed"])
        model = model_builder(settings["model"])(dataset.in_channels, len(classes), dropout=settings["dropout"])
        loop = ActiveLearningLoop(
            model, dataset, build_strategy(settings["strategy"]),
            LoopConfig(initial=len(labeled), query=k, cycles=2, layers=list(default_taps(model)),
                       embedding_layer=embedding_layer(model), seed=settings["seed"], lpm_width=settings["lpm_width"]),
            _train_config(settings), oracle=_NoOracle(), device=dev, progress=progress,
        )
        loop.pool.add_labels(labeled, pool_y.numpy()[labeled], 0)
        # a cycle trained but never queried (the process died in between) is taken up again, not skipped
        cycle = 0 if last is None else last["cycle"] + (last["status"] == "queried")
        trained = True
        if last is not None and last["status"] == "trained" and last["label_fingerprint"] == fingerprint:
            try:
                loop.restore(load_checkpoint(store.project / last["checkpoint"], last["checkpoint_sha256"]))
                cycle, trained = last["cycle"], False
            except CheckpointError:
                pass  # a damaged checkpoint is retrained, and the store points at the new one once it is durable
        if trained:
            result = loop.train_cycle(cycle)
            path = store.project / "checkpoints" / f"cycle-{cycle}-{fingerprint[:12]}.pt"
            digest = save_checkpoint(path, loop.snapshot())
            with store.transaction() as db:
                db.execute("DELETE FROM cycles WHERE cycle = ? AND status = 'trained'", (cycle,))
                store.add_trained_cycle(db, cycle, settings, result.to_dict(), fingerprint,
                                        path.relative_to(store.project).as_posix(), digest)
        selected, scores = loop.query_scored(k)
        probabilities = _probabilities(loop, selected)
        pool_ids = [r[0] for _, r in pool_rows]
        items = [
            QueriedItem(pool_ids[int(i)], pool_rows[int(i)][1][1], rank + 1,
                        float("nan") if scores is None else float(scores[rank]),
                        classes[int(probabilities[rank].argmax())], float(probabilities[rank].max()))
            for rank, i in enumerate(selected)
        ]
        with store.transaction() as db:
            if label_fingerprint(store.current_labels()) != fingerprint:
                raise UsageError("labels were imported while this query trained; run query again to use them")
            store.add_queries(db, cycle, settings["strategy"], [
                (item.item_id, None if scores is None else item.score, item.rank, item.prediction, item.confidence)
                for item in items
            ])
            db.execute("UPDATE cycles SET status = 'queried' WHERE cycle = ?", (cycle,))
        files = write_query_batch(store.project / "exports", cycle, items, classes, {"strategy": settings["strategy"]})
        return QueryOutcome(cycle, trained, True, items, files)


def _probabilities(loop: ActiveLearningLoop, selected: np.ndarray) -> np.ndarray:
    from learnloss.inference import stream

    _, values = stream(loop.view, loop._eval_batches(loop.dataset.x_train, None, selected),
                       lambda batch: {"p": batch.probabilities})
    return values["p"]


def _reexport(store: ProjectStore, last: dict[str, Any], classes: list[str]) -> QueryOutcome:
    """The last query is still current: write its open items again instead of querying twice."""
    cycle = last["cycle"]
    rows = list(store.db.execute(
        "SELECT q.item_id, i.source, q.rank, q.score, q.prediction, q.confidence FROM queries q "
        "JOIN items i ON i.id = q.item_id WHERE q.cycle = ? AND q.status = 'open' ORDER BY q.rank", (cycle,),
    ))
    items = [QueriedItem(item_id, source, rank, float("nan") if score is None else score, prediction, confidence)
             for item_id, source, rank, score, prediction, confidence in rows]
    files = write_query_batch(store.project / "exports", cycle, items, classes, {"strategy": last["config"]["strategy"]})
    return QueryOutcome(cycle, False, False, items, files)


# --------------------------------------------------------------------------------------- status, export


def project_status(project: str | Path) -> dict[str, Any]:
    """Counts, classes, per-cycle metrics and open queries of ``project``."""
    with ProjectStore(project) as store:
        cycles = [
            {"cycle": c, "status": s, **{k: v for k, v in json.loads(m).items() if k in ("n_labeled", "test_accuracy",
                                                                                        "lpm_ranking_accuracy")}}
            for c, s, m in store.db.execute("SELECT cycle, status, metrics FROM cycles ORDER BY cycle")
        ]
        open_per_cycle = dict(store.db.execute(
            "SELECT cycle, count(*) FROM queries WHERE status = 'open' GROUP BY cycle ORDER BY cycle"
        ))
        return {"project": str(store.project), "data_root": store.meta("data_root"), "classes": store.classes(),
                "counts": store.counts(), "cycles": cycles, "open_queries": open_per_cycle}


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

