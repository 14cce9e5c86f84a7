"""Evaluate and use a trained run or labeling project: ``learnloss evaluate`` and ``learnloss predict``.

A run folder (``learnloss run --out``) and a labeling project (``learnloss init``/``query``) both keep their
cycles and checkpoints in a :class:`~learnloss.project.store.ProjectStore`. :func:`load_trained` reads the
folder's latest checkpoint (verified against the SHA-256 its store recorded), rebuilds the loop the stored
specification describes with the one builder (:func:`~learnloss.runs.builder.build_loop`) and puts the trained
weights back (:meth:`~learnloss.active.loop.ActiveLearningLoop.restore`). :func:`evaluate_checkpoint` then measures
the task's metrics and the LPM's ranking accuracy on a test split; :func:`predict_images` scores a folder of
images — prediction, confidence and the LPM's predicted loss — into a CSV or JSON file. Every pass runs in eval
mode without augmentation (:meth:`~learnloss.active.loop.ActiveLearningLoop.eval_batches`,
:func:`~learnloss.inference.stream`).

A labeling project's specification and images are read by the labeling layer (``project_spec`` and
``project_dataset`` of :mod:`learnloss.labeling.workflow`), which sits above this one (ARCHITECTURE.md): the
caller passes them as a :class:`ProjectReader`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from learnloss.active.loop import ActiveLearningLoop
from learnloss.data.dataset import Dataset
from learnloss.data.images import list_images, read_images
from learnloss.data.registry import load_dataset
from learnloss.errors import UsageError
from learnloss.inference import BatchOutputs, stream
from learnloss.jsonio import write_json
from learnloss.project.checkpoint import CheckpointError
from learnloss.project.exports import read_table, unescape_cell, write_csv
from learnloss.project.paths import UnsafePathError, resolve_inside, safe_relative
from learnloss.project.store import DB_FILENAME, ProjectStore
from learnloss.reports.results import RESULTS_FILENAME, read_results_document
from learnloss.runs.builder import build_loop
from learnloss.runs.journal import read_checkpoint
from learnloss.runs.spec import RunSpec

__all__ = [
    "PREDICTION_FIELDS",
    "ProjectReader",
    "TrainedRun",
    "evaluate_checkpoint",
    "load_trained",
    "predict_images",
]

#: Columns of a ``learnloss predict`` file, in order.
PREDICTION_FIELDS = ("path", "prediction", "confidence", "predicted_loss")

#: Images decoded and scored at a time by :func:`predict_images` (bounds memory on large folders).
_CHUNK = 1024

_MODES = {1: "L", 3: "RGB"}


@dataclass(frozen=True)
class ProjectReader:
    """How a labeling project's specification and images are read.

    Pass ``ProjectReader(project_spec, project_dataset)`` from :mod:`learnloss.labeling.workflow`: the labeling
    layer sits above ``runs``, so these functions cannot be imported here.

    Attributes:
        spec: the project's stored specification (``project_spec``).
        dataset: the project's images as a dataset — pool and labeled test items — and the store's item id of
            each pool index (``project_dataset``).
    """

    spec: Callable[[ProjectStore], RunSpec]
    dataset: Callable[[ProjectStore, RunSpec], tuple[Dataset, list[int]]]


class TrainedRun(NamedTuple):
    """A loop with the trained weights of a folder's latest checkpoint restored.

    Attributes:
        loop: the loop, built from the stored specification over the run's (or project's) data.
        spec: the specification it was built from (with the requested device).
        kind: ``"simulation"`` (a run folder) or ``"labeling"`` (a labeling project).
        cycle: the store's row of the restored cycle (``cycle``, ``status``, ``metrics``, ``checkpoint``, …).
    """

    loop: ActiveLearningLoop
    spec: RunSpec
    kind: str
    cycle: dict[str, Any]


# ----------------------------------------------------------------------------------------------- loading


def _open_store(folder: Path) -> ProjectStore:
    if not (folder / DB_FILENAME).is_file():
        raise UsageError(f"{folder} holds no run or labeling project (no {DB_FILENAME}); give a folder made by "
                         "learnloss run --out or learnloss init")
    return ProjectStore(folder)


def _kind(store: ProjectStore) -> str:
    """``labeling`` for a project made by ``learnloss init`` (which records its data root), else
    ``simulation``."""
    return "labeling" if store.stored_kind == "labeling" else "simulation"


def _results_config(folder: Path) -> dict[str, Any]:
    """``results.json``'s ``config`` (where the run found its data), or an empty dict when there is none."""
    path = folder / RESULTS_FILENAME
    if not path.is_file():
        return {}
    document = read_results_document(path)  # hostile content is refused with one line naming the file
    config = document.get("config") if isinstance(document, dict) else None
    return config if isinstance(config, dict) else {}


def _simulation_spec(store: ProjectStore, folder: Path, data_dir: str | Path | None) -> RunSpec:
    """The run's stored settings over its protocol's preset; where its data lives from ``results.json`` unless
    ``data_dir`` says otherwise."""
    stored = store.meta("settings")
    if not isinstance(stored, dict):
        raise UsageError(f"{folder} records no run settings; it is not a finished or started learnloss run")
    config = _results_config(folder)
    location: dict[str, Any] = {key: config[key] for key in ("data_dir", "download") if key in config}
    if data_dir is not None:
        location["data_dir"] = str(data_dir)
    # the store holds every setting but where the run executes; one it lacks (written before the setting
    # existed) is its default, as spec_differences reads it
    return RunSpec.from_dict({**stored, **location})


def _latest_cycle(store: ProjectStore, folder: Path) -> dict[str, Any]:
    cycles = store.cycles()
    if not cycles:
        raise UsageError(f"{folder} has no trained cycle yet; train one first (learnloss run or learnloss query)")
    last = cycles[-1]
    if not last["checkpoint"] or not last["checkpoint_sha256"]:
        raise CheckpointError(f"{folder}: cycle {last['cycle']} records no checkpoint; the store is damaged — "
                              "train again (learnloss run --resume or learnloss query)")
    return last


def _read_checkpoint(store: ProjectStore, folder: Path, cycle: dict[str, Any]) -> dict[str, Any]:
    try:
        return read_checkpoint(store, cycle)
    except CheckpointError as error:
        raise CheckpointError(f"cannot use cycle {cycle['cycle']} of {folder}: {error}") from None


def _open_trained(
    folder: Path, data_dir: str | Path | None, project: ProjectReader | None
) -> tuple[RunSpec, Dataset, str, dict[str, Any], dict[str, Any]]:
    """Specification, dataset, kind, latest cycle row and its verified snapshot of ``folder``."""
    with _open_store(folder) as store:
        kind = _kind(store)
        cycle = _latest_cycle(store, folder)
        snapshot = _read_checkpoint(store, folder, cycle)  # a damaged checkpoint fails before any data is read
        if kind == "labeling":
            if data_dir is not None:
                raise UsageError("--data-dir is for a simulated run; a labeling project reads its images from its "
                                 "data root")
            if project is None:
                raise UsageError(f"{folder} is a labeling project: pass project=ProjectReader(project_spec, "
                                 "project_dataset) from learnloss.labeling.workflow to read its images")
            spec = project.spec(store)
            dataset = project.dataset(store, spec)[0]
        else:
            spec = _simulation_spec(store, folder, data_dir)
            dataset = load_dataset(spec.dataset, spec.data_dir, download=spec.download)
    return spec, dataset, kind, cycle, snapshot


def _restore(folder: Path, spec: RunSpec, dataset: Dataset, device: str, kind: str, cycle: dict[str, Any],
             snapshot: dict[str, Any]) -> TrainedRun:
    spec = spec.replace(device=device)
    # one sample and no query: only the model and its attachments matter, not the labeling budget
    loop = build_loop(spec, dataset, initial=1, query=1, cycles=1)
    try:
        loop.restore(snapshot)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"the checkpoint of cycle {cycle['cycle']} of {folder} does not fit the model its "
                              f"settings build ({first}); was the dataset changed (--data-dir)?") from None
    return TrainedRun(loop, spec, kind, cycle)


def load_trained(
    folder: str | Path,
    device: str = "auto",
    *,
    data_dir: str | Path | None = None,
    project: ProjectReader | None = None,
) -> TrainedRun:
    """The loop of ``folder``'s latest trained cycle, its weights restored from the verified checkpoint.

    ``folder`` is a run folder (``learnloss run --out``: its store's last cycle) or a labeling project (its last
    trained cycle; ``project`` reads its images). The loop is built by :func:`~learnloss.runs.builder.build_loop`
    from the stored specification (a run's settings over its protocol's preset, where its data lives from
    ``results.json`` or ``data_dir``; a project's ``project_spec``) on ``device``.

    Raises:
        UsageError: ``folder`` holds no run or project, has no trained cycle, ``data_dir`` is given for a project,
            or the data cannot be loaded.
        CheckpointError: the checkpoint is missing, damaged, outside ``checkpoints/``, or does not fit the model.
    """
    folder = Path(folder)
    spec, dataset, kind, cycle, snapshot = _open_trained(folder, data_dir, project)
    return _restore(folder, spec, dataset, device, kind, cycle, snapshot)


# -------------------------------------------------------------------------------------- labeled images


def _image_mode(dataset: Dataset, why: str) -> tuple[str, tuple[int, int]]:
    """The colour mode and ``(width, height)`` images are read in to match ``dataset``; refused when its inputs
    are not ``uint8`` images."""
    x = dataset.x_train
    if x.dim() != 4 or x.dtype != torch.uint8 or int(x.shape[1]) not in _MODES:
        raise UsageError(f"{why}: the run's data ({dataset.name}, inputs {tuple(x.shape[1:])} {str(x.dtype)[6:]}) "
                         "are not greyscale or RGB images")
    return _MODES[int(x.shape[1])], (int(x.shape[3]), int(x.shape[2]))


def _read(paths: Sequence[Path], dataset: Dataset, why: str) -> torch.Tensor:
    """``paths`` decoded as the run's inputs: resized to its H×W and converted to its channel count (Pillow,
    bilinear — as a labeling project reads its images)."""
    mode, size = _image_mode(dataset, why)
    return torch.from_numpy(read_images(paths, mode, size, resize=True))


def _class_folders(root: Path) -> list[tuple[Path, str]]:
    """``(image, class)`` of a class-per-folder tree ``root/<class>/…``: the images of ``root`` as ``init`` lists
    them (:func:`~learnloss.data.images.list_images`, which refuses a symbolic link leading out of ``root``)."""
    if not root.is_dir():
        raise UsageError(f"--images {root} is not a folder")
    images = list_images(root)
    if not images:
        raise UsageError(f"no images found under {root}")
    loose = [image for image in images if len(image.relative_to(root).parts) < 2]
    if loose:
        raise UsageError(f"--images needs one folder per class ({root}/<class>/<image>), but {loose[0]} is not in "
                         "a class folder")
    return [(image, image.relative_to(root).parts[0]) for image in images]


def _manifest(manifest: Path) -> list[tuple[Path, str]]:
    """``(image, class)`` of a CSV manifest with ``path,label`` columns (paths relative to its folder)."""
    header, rows = read_table(manifest)
    if "path" not in header or "label" not in header:
        raise UsageError(f"{manifest}: needs 'path' and 'label' columns, found {header}")
    root = manifest.parent.resolve()
    entries, problems = [], []
    for number, row in rows:
        where = f"{manifest.name} row {number}"
        label = unescape_cell((row.get("label") or "").strip())
        try:
            path = resolve_inside(root, safe_relative(unescape_cell((row.get("path") or "").strip()), where), where)
        except UnsafePathError as error:
            problems.append(str(error))
            continue
        if not path.is_file():
            problems.append(f"{where}: {path} is not a file")
        elif not label:
            problems.append(f"{where}: the label is empty")
        else:
            entries.append((path, label))
    if problems:
        raise UsageError(f"{manifest}: {len(problems)} problem(s): " + "; ".join(problems[:5]))
    if not entries:
        raise UsageError(f"{manifest}: lists no images")
    return entries


def _labeled_images(dataset: Dataset, entries: list[tuple[Path, str]], source: str) -> Dataset:
    """``dataset`` with ``entries`` (image, class name) as its test split; every class must be the run's."""
    if dataset.task != "classification":
        raise UsageError(f"{source} gives class labels, but the run's task is {dataset.task}; evaluate it on its "
                         "own test split")
    index = {name: c for c, name in enumerate(dataset.classes)}
    unknown = sorted({label for _, label in entries if label not in index})
    if unknown:
        raise UsageError(f"{source} uses class(es) the run does not know: {', '.join(map(repr, unknown))}; its "
                         f"classes are {', '.join(dataset.classes)}")
    x = _read([path for path, _ in entries], dataset, source)
    y = torch.tensor([index[label] for _, label in entries], dtype=torch.long)
    return dataclasses.replace(dataset, x_test=x, y_test=y)


# ------------------------------------------------------------------------------------------- evaluate


def evaluate_checkpoint(
    folder: str | Path,
    *,
    images: str | Path | None = None,
    manifest: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    project: ProjectReader | None = None,
) -> dict[str, Any]:
    """Evaluate the latest trained cycle of ``folder`` (see :func:`load_trained`) on a test split.

    The test split is the run's dataset test split (a simulation; ``data_dir`` points the dataset elsewhere) or
    the project's labeled test items (a labeling project), or labeled images: ``images`` (a class-per-folder tree
    ``DIR/<class>/*``) or ``manifest`` (a CSV with ``path,label``), whose classes must be the run's.

    Returns a JSON-ready dict: ``folder``, ``kind``, ``cycle``, ``status``, ``n_labeled``, ``checkpoint``,
    ``device``, ``test`` (``source`` and ``size``), ``primary_metric``, ``metrics`` (the task's, by name),
    ``lpm_ranking_accuracy`` and ``lpm_spearman`` (None without an LPM).

    Raises:
        UsageError: as :func:`load_trained`; both ``images`` and ``manifest``; an image folder or manifest that
            is unreadable or names a class the run does not know; an empty test split.
        CheckpointError: as :func:`load_trained`.
    """
    folder = Path(folder)
    if images is not None and manifest is not None:
        raise UsageError("give at most one of --images DIR or --manifest FILE.csv")
    entries = None
    if images is not None:
        entries, source = _class_folders(Path(images)), str(images)
    elif manifest is not None:
        entries, source = _manifest(Path(manifest)), str(manifest)
    spec, dataset, kind, cycle, snapshot = _open_trained(folder, data_dir, project)
    if entries is not None:
        dataset = _labeled_images(dataset, entries, source)
    else:
        source = "the dataset's test split" if kind == "simulation" else "the project's labeled test items"
    if len(dataset.y_test) == 0:
        raise UsageError(f"{folder} has no labeled test items to evaluate on; label some test images, or give "
                         "--images DIR or --manifest FILE.csv")
    trained = _restore(folder, spec, dataset, device, kind, cycle, snapshot)
    loop = trained.loop
    metrics, ranking, rho = loop.evaluate()
    return {
        "folder": str(folder),
        "kind": kind,
        "cycle": int(cycle["cycle"]),
        "status": cycle["status"],
        "n_labeled": cycle["metrics"].get("n_labeled"),
        "checkpoint": cycle["checkpoint"],
        "device": str(loop.device),
        "test": {"source": source, "size": int(len(dataset.y_test))},
        "primary_metric": loop.task.primary_metric,
        "metrics": dict(metrics),
        "lpm_ranking_accuracy": ranking,
        "lpm_spearman": rho,
    }


# -------------------------------------------------------------------------------------------- predict


def _output_format(out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("csv", "json"):
        raise UsageError(f"--out must end in .csv or .json, got {out.name!r}")
    return fmt


def predict_images(
    folder: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    data_dir: str | Path | None = None,
    project: ProjectReader | None = None,
) -> int:
    """Score every image under ``images`` (recursively, in sorted path order) with the latest trained cycle of
    ``folder`` and write one row per image to ``out`` (``.csv`` or ``.json``); returns how many.

    Images are read as the run's inputs (Pillow; resized to its H×W, converted to its channel count — a project's
    ``image_size``). Each row holds ``path`` (relative to ``images``), ``prediction`` (a class name for
    classification, the predicted values otherwise), ``confidence`` and ``predicted_loss`` (the LPM's score;
    empty / null when the run has no LPM). CSV cells a spreadsheet would run as formulas are escaped; JSON is
    written by :mod:`learnloss.jsonio` (non-finite numbers are null). Nothing under ``images`` is written.
    ``out`` is a file the user named, outside any project: it is replaced atomically in its own folder
    (:func:`learnloss.atomic.atomic_write` with that folder as the root), so a symbolic link at its name is replaced
    by the file, never written through.

    Raises:
        UsageError: ``out`` is not ``.csv``/``.json`` or lies under ``images``; ``images`` is not a folder or
            holds no images, or a symbolic link in it leads outside it (as ``init`` refuses); the run's data are
            not images; as :func:`load_trained`.
        CheckpointError: as :func:`load_trained`.
    """
    root, out = Path(images), Path(out)
    fmt = _output_format(out)
    if not root.is_dir():
        raise UsageError(f"--images {root} is not a folder")
    base = root.resolve()
    target = out.resolve()
    if base == target or base in target.parents:
        raise UsageError(f"--out {out} lies under --images {root}; nothing under the image folder is written, "
                         "choose another --out")
    paths = list_images(root)
    if not paths:
        raise UsageError(f"no images found under {root}")
    trained = load_trained(folder, device, data_dir=data_dir, project=project)
    loop = trained.loop
    dataset = loop.dataset
    _image_mode(dataset, f"cannot predict images with {folder}")
    classes = list(dataset.classes) if loop.task.name == "classification" else None
    has_lpm = loop.view.learning_loss is not None
    rows: list[list[Any]] = []
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        x = _read(chunk, dataset, f"cannot predict images with {folder}")
        predictions: dict[int, tuple[Any, float | None]] = {}

        def collect(batch: BatchOutputs) -> dict[str, torch.Tensor]:
            values, confidences = loop.task.predict(batch.output)
            for index, value, confidence in zip(batch.indices.tolist(), values, confidences):
                predictions[int(index)] = (value, confidence)
            return {"predicted_loss": batch.lpm_scores} if has_lpm else {}

        visited, kept = stream(loop.view, loop.eval_batches(x, None, np.arange(len(chunk))), collect)
        losses = dict(zip(visited.tolist(), kept["predicted_loss"].tolist())) if has_lpm else {}
        for i, path in enumerate(chunk):
            value, confidence = predictions[i]
            prediction = classes[int(value)] if classes is not None else value
            # a missing or non-finite number is an empty CSV cell / JSON null (write_csv, jsonio)
            rows.append([path.relative_to(root).as_posix(), prediction, confidence, losses.get(i)])
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        write_csv(out, PREDICTION_FIELDS, [
            [cell if not isinstance(cell, list) else json.dumps(cell) for cell in row] for row in rows
        ])
    else:
        write_json(out, {
            "folder": str(folder), "kind": trained.kind, "cycle": int(trained.cycle["cycle"]), "images": str(root),
            "classes": classes, "count": len(rows),
            "predictions": [dict(zip(PREDICTION_FIELDS, row)) for row in rows],
        })
    return len(rows)
