"""The run journal: every step of a loop recorded in a project store, so a run continues after any crash.

Two journals implement :class:`~learnloss.active.loop.LoopJournal`, one per oracle:

* :class:`SimulationJournal` — a simulated run (``learnloss run``, ``bench``). The run folder is a project: its
  store holds the sampled items (pool indices), every target the ground-truth oracle gave with its provenance,
  a fingerprint of the data (:func:`data_fingerprint`), and per cycle the resolved specification, the metrics, the
  checkpoint (weights and random streams after training) and the random streams after the query. The last two
  cycles keep their checkpoint files. :meth:`SimulationJournal.resume` puts the loop back exactly at the last
  recorded step — same weights, same random streams — so the resumed run selects what the uninterrupted run would
  have and never repeats a query. When the latest checkpoint is damaged, missing or refused, the store is rolled
  back, in one transaction, to the latest point that can be restored (the previous cycle's, else the initial
  labeled set): the cycles after it are dropped with the labels their queries recorded, and trained and queried
  again — the oracle is the ground truth and every random stream is restored, so they come out the same.
* :class:`LabelingJournal` — a labeling project (``learnloss query``), whose oracle is people: the pool holds every
  label stored so far, a cycle trained on exactly these labels (same label fingerprint) is reused from its
  checkpoint (a damaged one is retrained), and a query is recorded as open; its labels arrive later through
  ``learnloss label``.

Each step is one transaction, written after its checkpoint is durable; a process killed at any moment leaves the
store at the end of some step. Checkpoint paths read from a store are confined to the project's real
``checkpoints/`` folder (:func:`~learnloss.project.checkpoint.confined_checkpoint`): nothing outside it is read or
deleted because of what a store says, and a resumed run removes from that folder only regular files of its own
naming that no cycle records (checkpoints and temporary files a killed process left behind).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.active.loop import ActiveLearningLoop, CycleResult, QueryBatch, ResumePoint, SnapshotError
from learnloss.data.dataset import Dataset
from learnloss.errors import UsageError
from learnloss.project.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_folder,
    confined_checkpoint,
    load_checkpoint,
    remove_in_folder,
    save_checkpoint,
)
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.store import LabelRecord, ProjectStore, StoreFormatError
from learnloss.runs.spec import RunSpec, spec_differences

__all__ = [
    "LabelingJournal",
    "SimulationJournal",
    "data_fingerprint",
    "fingerprint_differences",
    "label_fingerprint",
    "read_checkpoint",
    "restore_checkpoint",
]

ORACLE_SOURCE = "oracle:ground-truth"
_STREAMS = ("numpy", "generator", "torch", "cuda")
#: Rows of each split the data fingerprint hashes, evenly spaced: cheap for any pool, and any reordering,
#: resampling or other file shows.
FINGERPRINT_ROWS = 256
FINGERPRINT_VERSION = 1
#: A simulated run's checkpoints, and the temporary files :func:`learnloss.atomic.atomic_write` makes of them.
_CHECKPOINT_NAME = re.compile(r"cycle-[0-9]{1,9}\.pt")
_TEMPORARY_NAME = re.compile(r"\.cycle-[0-9]{1,9}\.pt\.[A-Za-z0-9_]{1,32}\.tmp")
_MAX_SHOWN = 4  # settings or data differences a message names before "and N more"


def label_fingerprint(labels: Mapping[int, Any]) -> str:
    """SHA-256 of a labeling (item id -> class, or boxes / keypoints as stored), independent of order: which
    checkpoint matches which labels."""
    return hashlib.sha256(json.dumps(sorted(labels.items()), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- data fingerprint

_SPLITS = (("x_train", "training inputs"), ("y_train", "training targets"), ("x_test", "test inputs"),
           ("y_test", "test targets"))


def _sample_rows(count: int) -> torch.Tensor:
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    rows = np.unique(np.linspace(0, count - 1, num=min(count, FINGERPRINT_ROWS)).round().astype(np.int64))
    return torch.from_numpy(rows)


def data_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a run's data cheaply, whatever its size: the shape and dtype of each split's inputs and
    targets, the class names, and a SHA-256 over all of these and :data:`FINGERPRINT_ROWS` evenly spaced rows of
    each split. Stored with a run, checked when it resumes (:func:`fingerprint_differences`)."""
    digest = hashlib.sha256(f"learnloss data fingerprint v{FINGERPRINT_VERSION}".encode())
    out: dict[str, Any] = {"version": FINGERPRINT_VERSION}
    for name, _ in _SPLITS:
        tensor = getattr(dataset, name)
        out[name] = {"shape": [int(size) for size in tensor.shape], "dtype": str(tensor.dtype).replace("torch.", "")}
        sample = tensor[_sample_rows(int(tensor.shape[0]))].detach().cpu().contiguous().reshape(-1)
        digest.update(json.dumps([name, out[name]]).encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    classes = json.dumps(list(dataset.classes)).encode()
    digest.update(classes)
    out["classes"] = {"count": len(dataset.classes), "sha256": hashlib.sha256(classes).hexdigest()}
    out["sha256"] = digest.hexdigest()
    return out


def _array_text(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "unknown"
    return f"{'×'.join(str(size) for size in entry.get('shape', [])) or 'scalar'} {entry.get('dtype', '?')}"


def _shown(parts: Sequence[str]) -> str:
    more = len(parts) - _MAX_SHOWN
    return "; ".join(list(parts[:_MAX_SHOWN]) + ([f"and {more} more"] if more > 0 else []))


def fingerprint_differences(stored: Any, current: dict[str, Any]) -> list[str]:
    """What differs between a stored :func:`data_fingerprint` and the current one, in a few words each (empty when
    they are the same data)."""
    if not isinstance(stored, dict):
        return ["the stored fingerprint is unreadable"]
    differ = [f"{label}: stored {_array_text(stored.get(name))}, now {_array_text(current[name])}"
              for name, label in _SPLITS if stored.get(name) != current[name]]
    have = stored.get("classes")
    if have != current["classes"]:
        count = have.get("count", "?") if isinstance(have, dict) else "?"
        differ.append(f"class names: stored {count}, now {current['classes']['count']} (or other names)")
    if not differ and stored.get("sha256") != current["sha256"]:
        differ.append("same shapes, but other values in the sampled rows")
    return differ


# ---------------------------------------------------------------------------------------------- checkpoints


def _encode_streams(snapshot: dict[str, Any]) -> dict[str, str]:
    """The random streams of a snapshot as JSON-ready text (a weights-only ``torch.save``, base64-encoded)."""
    buffer = io.BytesIO()
    torch.save({key: snapshot[key] for key in _STREAMS if key in snapshot}, buffer)
    return {"torch_save": base64.b64encode(buffer.getvalue()).decode("ascii")}


def _decode_streams(encoded: Any) -> dict[str, Any]:
    try:
        data = base64.b64decode(encoded["torch_save"], validate=True)
        streams = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (KeyError, TypeError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError):
        raise CheckpointError("the random streams recorded after its query are damaged") from None
    if not isinstance(streams, dict):
        raise CheckpointError("the random streams recorded after its query are damaged")
    return streams


def read_checkpoint(store: ProjectStore, cycle: dict[str, Any]) -> dict[str, Any]:
    """The snapshot a cycle row of ``store`` records, confined to ``checkpoints/`` (:func:`~learnloss.project.checkpoint.confined_checkpoint`) and
    verified against its recorded SHA-256.

    Raises:
        CheckpointError: the row records no checkpoint, or it is outside the folder, missing or damaged.
    """
    if not cycle.get("checkpoint") or not cycle.get("checkpoint_sha256"):
        raise CheckpointError(f"{store.project}: cycle {cycle.get('cycle')} records no checkpoint")
    return load_checkpoint(confined_checkpoint(store.project, cycle["checkpoint"]), cycle["checkpoint_sha256"])


def restore_checkpoint(loop: ActiveLearningLoop, store: ProjectStore, cycle: dict[str, Any],
                       streams: Any = None) -> None:
    """Put ``loop`` back where ``cycle``'s checkpoint left it (with the random ``streams`` recorded after its query,
    if given) — entirely, or not at all.

    Raises:
        CheckpointError: the checkpoint cannot be read or is damaged (or the streams are).
        CheckpointMismatchError: it passed its checksum but does not fit the loop's model.
    """
    snapshot = read_checkpoint(store, cycle)
    if streams is not None:
        snapshot.update(_decode_streams(streams))
    try:
        loop.restore(snapshot)
    except SnapshotError as error:
        raise CheckpointMismatchError(
            f"checkpoint {confined_checkpoint(store.project, cycle['checkpoint'])} does not fit the model this run builds "
            f"({error}): it was made by another learnloss version or for other data"
        ) from None


# ---------------------------------------------------------------------------------------------- journals


class _Journal:
    """What both journals share: a store, the class names, and recording a trained cycle's checkpoint."""

    def __init__(self, store: ProjectStore, spec: RunSpec, classes: Sequence[str]) -> None:
        self.store, self.spec, self.classes = store, spec, list(classes)
        self.settings = spec.comparable()  # as stored; where it runs may change between sessions

    def _record(self, indices: np.ndarray, targets: torch.Tensor, ids: dict[str, int], cycle: int,
                scores: np.ndarray | None, strategy: str) -> list[LabelRecord]:
        records = []
        for rank, (index, target) in enumerate(zip(indices, targets)):
            label, value = (self.classes[int(target)], None) if self.classes else (None, target.tolist())
            records.append(LabelRecord(
                ids[str(int(index))], label, ORACLE_SOURCE, cycle, strategy if cycle > 0 else "initial",
                None if scores is None else float(scores[rank]), rank + 1 if cycle > 0 else None, value,
            ))
        return records

    def _remove_checkpoint(self, recorded: str | None, keep: str | None = None) -> None:
        """Delete a checkpoint the store no longer records — only a regular file directly in ``checkpoints/``."""
        try:
            path = confined_checkpoint(self.store.project, recorded or "")
        except CheckpointError:
            return  # never delete a file outside the project because a store names it
        if path.name != keep:
            remove_in_folder(path.parent, path.name)


class SimulationJournal(_Journal):
    """Record a simulated run in ``store`` (see the module docstring).

    Args:
        store: the run folder's project store.
        spec: the run's specification; resuming with another one is refused, naming the settings that differ.
        classes: the dataset's class names (empty for tasks whose targets are not classes).
        data: the run's :func:`data_fingerprint`; resuming on other data is refused, naming what differs. A run
            stored without one (before fingerprints) gets this one.
        log: where a line about a recovery goes (a rolled-back damaged checkpoint); also kept in :attr:`recovered`.

    Raises:
        UsageError: the store holds a run of another specification or on other data (the store is opened with
            ``kind="simulation"``, which refuses a labeling project).
        CheckpointError: the run's ``checkpoints/`` is a symbolic link or not a folder.
        StoreFormatError: the store's settings are unreadable.
    """

    def __init__(self, store: ProjectStore, spec: RunSpec, classes: Sequence[str],
                 data: dict[str, Any] | None = None, log: Callable[[str], None] | None = None) -> None:
        super().__init__(store, spec, classes)
        self.say = log or (lambda line: None)
        self.recovered: list[str] = []
        checkpoint_folder(store.project)  # a symlinked checkpoints/ is refused before anything is read or written
        stored = store.meta("settings")
        if stored is None:
            if any(store.counts()[key] for key in ("pool", "labeled", "cycles")) or store.classes():
                raise self._damaged("it holds labels or cycles but no run settings")
            with store.transaction() as db:
                store.set_meta("settings", self.settings, db)
                if data is not None:
                    store.set_meta("data", data, db)
                store.add_classes(db, self.classes)
            return
        if not isinstance(stored, dict):
            raise self._damaged("its run settings are not a mapping")
        differ = spec_differences(stored, spec)
        if differ:
            raise UsageError(f"{store.project} holds a run with other settings ({_shown(differ)}); resume it with "
                             "the settings it was started with, or run into another --out")
        if store.classes() != self.classes:
            raise UsageError(f"{store.project} holds a run on other data (its class names differ); resume it with "
                             "the data it was made with (the same --dataset and --data-dir), or run into another --out")
        if data is None:
            return
        have = store.meta("data")
        if isinstance(have, dict) and have.get("version") == FINGERPRINT_VERSION:
            differ = fingerprint_differences(have, data)
            if differ:
                raise UsageError(f"{store.project} holds a run on other data ({_shown(differ)}); resume it with the "
                                 "data it was made with (the same --dataset and --data-dir), or run into another --out")
        else:  # stored before fingerprints (or by another fingerprint version): from now on this one is checked
            store.set_meta("data", data)

    def _checkpoint_path(self, cycle: int) -> Path:
        return checkpoint_folder(self.store.project, create=True) / f"cycle-{cycle}.pt"

    # ---------------------------------------------------------------------------------------------- record

    def _record_labels(self, db: Any, indices: np.ndarray, targets: torch.Tensor, cycle: int,
                       scores: np.ndarray | None = None) -> None:
        sources = [str(int(i)) for i in indices]
        self.store.add_items(db, sources)
        records = self._record(indices, torch.as_tensor(targets), self.store.item_ids(db, sources), cycle, scores,
                               self.spec.strategy)
        if cycle > 0:
            self.store.add_queries(db, cycle - 1, self.spec.strategy,
                                   [(r.item_id, r.score, r.rank or 0, None, None) for r in records])
        self.store.add_labels(db, records)

    def labeled(self, indices: np.ndarray, targets: torch.Tensor) -> None:
        with self.store.transaction() as db:
            self._record_labels(db, indices, targets, cycle=0)

    def trained(self, result: CycleResult, snapshot: dict[str, Any]) -> None:
        path = self._checkpoint_path(result.cycle)
        digest = save_checkpoint(path, snapshot)  # durable before the store points at it
        with self.store.transaction() as db:
            # the latest two checkpoints are kept: the previous one is the fallback when the latest is damaged
            older = self.store.drop_checkpoints(db, before=result.cycle - 1)
            self.store.add_trained_cycle(
                db, result.cycle, self.settings, result.to_dict(), label_fingerprint(self.store.current_labels()),
                path.relative_to(self.store.project).as_posix(), digest,
            )
        for name in older:
            self._remove_checkpoint(name, keep=path.name)

    def queried(self, result: CycleResult, batch: QueryBatch, targets: torch.Tensor | None,
                snapshot: dict[str, Any]) -> None:
        if targets is None:
            raise UsageError("a simulated run needs an oracle that answers at once")
        with self.store.transaction() as db:
            self.store.set_meta(f"streams:{result.cycle}", _encode_streams(snapshot), db)
            self.store.mark_queried(db, result.cycle, result.to_dict())
            self._record_labels(db, np.asarray(result.selected), targets, result.cycle + 1, batch.scores)

    # ---------------------------------------------------------------------------------------------- resume

    def _damaged(self, detail: str) -> StoreFormatError:
        return StoreFormatError(f"{self.store.path} is damaged ({detail}); it cannot be resumed — run into another "
                                "--out")

    def _check_cycles(self, cycles: list[dict[str, Any]]) -> list[CycleResult]:
        """The recorded cycles as results, refused unless they are 0, 1, … with every one but the last queried."""
        if [row["cycle"] for row in cycles] != list(range(len(cycles))):
            raise self._damaged(f"its cycles are {[row['cycle'] for row in cycles]}, not 0, 1, …")
        if any(row["status"] != "queried" for row in cycles[:-1]):
            raise self._damaged("a cycle before the last was never queried")
        try:
            return [CycleResult.from_dict(row["metrics"]) for row in cycles]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise self._damaged(f"unreadable metrics: {error!r}") from None

    def _restore_latest(self, loop: ActiveLearningLoop, cycles: list[dict[str, Any]]) -> tuple[int, list[str]]:
        """Restore the latest cycle whose checkpoint can be used; its index (-1: none, the initial labeled set),
        and why each later one could not."""
        failures = []
        for index in range(len(cycles) - 1, -1, -1):
            row = cycles[index]
            if not row["checkpoint"]:
                if index == len(cycles) - 1:
                    failures.append(f"cycle {row['cycle']} records no checkpoint")
                continue  # older cycles keep no checkpoint
            try:
                streams = self.store.meta(f"streams:{row['cycle']}") if row["status"] == "queried" else None
                if row["status"] == "queried" and streams is None:
                    raise CheckpointError("no random streams were recorded after its query")
                restore_checkpoint(loop, self.store, row, streams)
            except CheckpointMismatchError as error:
                raise CheckpointMismatchError(f"{error}; resume it with those, or run into another --out") from None
            except CheckpointError as error:
                failures.append(f"cycle {row['cycle']}: {error}")
                continue
            return index, failures
        return -1, failures

    def _roll_back(self, point: int, last: int, failures: list[str]) -> None:
        """Drop the cycles after ``point`` (-1: all of them) in one transaction, then their checkpoint files."""
        with self.store.transaction() as db:
            dropped = self.store.roll_back_from(db, point + 1)
        for name in dropped:
            self._remove_checkpoint(name)
        where = "the initial labeled set" if point < 0 else f"cycle {point}"
        again = f"cycle {last} is" if point + 1 == last else f"cycles {point + 1}–{last} are"
        line = (f"recovered {self.store.project}: {'; '.join(failures)}. Rolled the run back to {where}; {again} "
                "trained again, as the uninterrupted run would have been")
        self.recovered.append(line)
        self.say(line)

    def _clean_checkpoints(self, cycles: list[dict[str, Any]]) -> None:
        """Delete what killed processes left in ``checkpoints/``: temporary files of checkpoints and checkpoints no
        cycle records — regular files of our naming only, directly in the folder, never through a link."""
        folder = checkpoint_folder(self.store.project)
        recorded = {Path(row["checkpoint"]).name for row in cycles if row["checkpoint"]}
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if not entry.is_file(follow_symlinks=False):
                continue
            if _TEMPORARY_NAME.fullmatch(name) or (_CHECKPOINT_NAME.fullmatch(name) and name not in recorded):
                remove_in_folder(folder, name)

    def _fill_pool(self, loop: ActiveLearningLoop) -> None:
        """Put every stored label into the pool, cycle by cycle, after checking each against the dataset's own
        target: a simulation knows its ground truth, so a stored label that differs (an edited store, or data
        that changed under the same fingerprint) is refused, naming the item, rather than trained on."""
        labeled = self.store.labeled_items()
        index = {name: i for i, name in enumerate(self.classes)}
        batches: list[tuple[int, list[int], torch.Tensor]] = []
        try:
            for cycle in sorted({row[3] or 0 for row in labeled}):
                rows = [row for row in labeled if (row[3] or 0) == cycle]
                values = torch.as_tensor([index[row[2]] if self.classes else row[2] for row in rows])
                batches.append((cycle, [int(row[1]) for row in rows], values))
        except (KeyError, TypeError, ValueError) as error:
            raise self._damaged(f"its labels do not fit the pool: {error}") from None
        for cycle, indices, values in batches:
            self._check_truth(loop, indices, values)
        try:
            for cycle, indices, values in batches:
                loop.pool.add_labels(indices, values, cycle)
        except (KeyError, TypeError, ValueError) as error:  # UsageError is a ValueError: the pool refused them
            raise self._damaged(f"its labels do not fit the pool: {error}") from None

    def _check_truth(self, loop: ActiveLearningLoop, indices: list[int], values: torch.Tensor) -> None:
        """Refuse stored labels that differ from the dataset's targets at their indices (classes exactly; boxes,
        keypoints and other float targets to 1e-6, what their stored JSON keeps of a float32)."""
        truth = loop.dataset.y_train
        outside = [i for i in indices if not 0 <= i < len(truth)]
        if outside:
            raise self._damaged(f"its labels do not fit the pool: item {outside[0]} is not one of the dataset's "
                                f"{len(truth)} training samples")
        expected = torch.as_tensor(truth[torch.as_tensor(indices, dtype=torch.long)])
        if values.shape != expected.shape:
            raise self._damaged(f"its labels have shape {tuple(values.shape[1:])}, the dataset's targets "
                                f"{tuple(expected.shape[1:])}")
        if expected.dtype.is_floating_point or values.dtype.is_floating_point:
            same = torch.isclose(values.double(), expected.double(), rtol=0, atol=1e-6, equal_nan=True)
        else:
            same = values == expected
        same = same.reshape(len(indices), -1).all(1)
        if bool(same.all()):
            return
        n = int(torch.nonzero(~same)[0, 0])
        stored = self.classes[int(values[n])] if self.classes else values[n].tolist()
        actual = self.classes[int(expected[n])] if self.classes else expected[n].tolist()
        raise UsageError(f"{self.store.path}: the store disagrees with the dataset at item {indices[n]} (stored "
                         f"{stored!r}, the dataset's target is {actual!r}); the store was edited or the data changed "
                         "— restore the run folder from a backup, or run into another --out")

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint | None:
        store = self.store
        cycles = store.cycles()
        if not store.labeled_items():
            if cycles:
                raise self._damaged("cycles are recorded but no labels")
            return None
        results = self._check_cycles(cycles)
        point, failures = self._restore_latest(loop, cycles)
        if point < len(cycles) - 1:
            self._roll_back(point, len(cycles) - 1, failures)
            cycles, results = cycles[: point + 1], results[: point + 1]
        self._clean_checkpoints(cycles)
        self._fill_pool(loop)
        if not cycles:
            return ResumePoint()
        if cycles[-1]["status"] == "trained":
            return ResumePoint(results[:-1], trained=results[-1])
        return ResumePoint(results)


class LabelingJournal(_Journal):
    """Record a labeling project's cycles in its store (see the module docstring).

    Args:
        store: the project's store.
        spec: the project's specification (with this query's strategy).
        classes: the project's class names.
        pool_ids: the store's item id of each pool index.
        labels: the store's current labels (item id -> class, or boxes / keypoints) this query trains on; the
            loop's dataset holds them as its pool's targets (the workflow's ``ProjectImages.dataset``).
        schema: the project's task and names (:meth:`ProjectStore.annotation_schema`): how a prediction becomes the
            text a query stores (default: classes).
    """

    def __init__(self, store: ProjectStore, spec: RunSpec, classes: Sequence[str], pool_ids: Sequence[int],
                 labels: Mapping[int, Any], schema: AnnotationSchema | None = None) -> None:
        super().__init__(store, spec, classes)
        self.schema = schema or AnnotationSchema("classification", tuple(classes))
        self.pool_ids = list(pool_ids)
        self.labels = labels
        self.fingerprint = label_fingerprint(labels)
        self.cycle = 0
        self.reused = False

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint:
        """Put every current label of a pool item into the pool; reuse the checkpoint of a cycle trained on exactly
        these labels and never queried. :attr:`cycle` is then the cycle to train or query."""
        labeled = [position for position, item_id in enumerate(self.pool_ids) if item_id in self.labels]
        if not labeled:
            raise UsageError("no pool item is labeled yet; label a few first (learnloss label) or init with --labels")
        checkpoint_folder(self.store.project)  # a symlinked checkpoints/ is refused before anything trains
        # the project's dataset holds these labels as training targets already (unlabeled items: unknown)
        loop.pool.add_labels(labeled, loop.dataset.y_train[torch.as_tensor(labeled)], 0)
        last = self.store.last_cycle()
        # a cycle trained but never queried (the process died in between) is taken up again, not skipped
        self.cycle = 0 if last is None else last["cycle"] + (last["status"] == "queried")
        if last is not None and last["status"] == "trained" and last["label_fingerprint"] == self.fingerprint:
            try:
                restore_checkpoint(loop, self.store, last)  # all or nothing
            except CheckpointError:
                return ResumePoint()  # a damaged checkpoint is retrained; the store points at the new one once durable
            self.reused = True
            return ResumePoint(trained=CycleResult.from_dict(last["metrics"]))
        return ResumePoint()

    def labeled(self, indices: np.ndarray, targets: torch.Tensor) -> None:  # pragma: no cover - resume never says so
        raise UsageError("a labeling project's initial labels come from init --labels or learnloss label")

    def trained(self, result: CycleResult, snapshot: dict[str, Any]) -> None:
        path = checkpoint_folder(self.store.project, create=True) / f"cycle-{result.cycle}-{self.fingerprint[:12]}.pt"
        digest = save_checkpoint(path, snapshot)  # durable before the store points at it
        with self.store.transaction() as db:
            replaced = self.store.add_trained_cycle(db, result.cycle, self.spec.to_dict(), result.to_dict(),
                                                    self.fingerprint, path.relative_to(self.store.project).as_posix(),
                                                    digest)
        for name in replaced:  # a cycle trained on other labels and never queried: its checkpoint goes with it
            self._remove_checkpoint(name, keep=path.name)

    def queried(self, result: CycleResult, batch: QueryBatch, targets: torch.Tensor | None,
                snapshot: dict[str, Any]) -> None:
        predictions, confidences = batch.predictions()
        rows = []
        for rank, (index, prediction, confidence) in enumerate(zip(batch.selected, predictions, confidences)):
            name = self.schema.prediction(prediction)
            score = None if batch.scores is None else float(batch.scores[rank])
            rows.append((self.pool_ids[int(index)], score, rank + 1, name, confidence))
        with self.store.transaction() as db:
            if label_fingerprint(self.store.current_labels(db)) != self.fingerprint:
                raise UsageError("labels were imported while this query trained; run query again to use them")
            self.store.add_queries(db, result.cycle, self.spec.strategy, rows)
            self.store.mark_queried(db, result.cycle)
