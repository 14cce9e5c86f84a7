"""The run journal: every step of a loop recorded in a project store, so a run continues after any crash.

Two journals implement :class:`~learnloss.active.loop.LoopJournal`, one per oracle:

* :class:`SimulationJournal` — a simulated run (``learnloss run``, ``bench``). The run folder is a project: its
  store holds the sampled items (pool indices), every target the ground-truth oracle gave with its provenance,
  and per cycle the resolved specification, the metrics, the checkpoint (weights and random streams after
  training; only the latest cycle keeps its file, which is all a resume needs) and the random streams after the
  query. :meth:`SimulationJournal.resume` puts the loop back exactly at the last recorded step — same weights,
  same random streams — so the resumed run selects what the uninterrupted run would have and never repeats a
  query.
* :class:`LabelingJournal` — a labeling project (``learnloss query``), whose oracle is people: the pool holds every
  label stored so far, a cycle trained on exactly these labels (same label fingerprint) is reused from its
  checkpoint, and a query is recorded as open; its labels arrive later through ``learnloss label``.

Each step is one transaction, written after its checkpoint is durable; a process killed at any moment leaves the
store at the end of some step. Checkpoint paths read from a store are confined to the project's ``checkpoints/``
folder: nothing outside it is read or deleted because of what a store says.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.active.loop import ActiveLearningLoop, CycleResult, QueryBatch, ResumePoint
from learnloss.errors import UsageError
from learnloss.project.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learnloss.project.store import LabelRecord, ProjectStore
from learnloss.runs.spec import RunSpec, spec_differences

__all__ = ["LabelingJournal", "SimulationJournal", "checkpoint_file", "label_fingerprint", "read_checkpoint"]

ORACLE_SOURCE = "oracle:ground-truth"
_STREAMS = ("numpy", "generator", "torch", "cuda")


def label_fingerprint(labels: dict[int, str]) -> str:
    """SHA-256 of a labeling (item id -> class), independent of order: which checkpoint matches which labels."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()


def _encode_streams(snapshot: dict[str, Any]) -> dict[str, str]:
    """The random streams of a snapshot as JSON-ready text (a weights-only ``torch.save``, base64-encoded)."""
    buffer = io.BytesIO()
    torch.save({key: snapshot[key] for key in _STREAMS if key in snapshot}, buffer)
    return {"torch_save": base64.b64encode(buffer.getvalue()).decode("ascii")}


def _decode_streams(encoded: dict[str, str]) -> dict[str, Any]:
    data = base64.b64decode(encoded["torch_save"])
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def checkpoint_file(store: ProjectStore, recorded: str) -> Path:
    """The checkpoint a store records as ``recorded``, refused unless it names a file directly inside the
    project's ``checkpoints/`` folder (a damaged or crafted store must not point anywhere else).

    Raises:
        CheckpointError: the recorded path leads elsewhere.
    """
    folder = (store.project / "checkpoints").resolve()
    path = (store.project / recorded).resolve()
    if path.parent != folder:
        raise CheckpointError(f"{store.path} records a checkpoint outside {folder} ({recorded!r}); the store is "
                              "damaged — it is not followed")
    return path


def read_checkpoint(store: ProjectStore, cycle: dict[str, Any]) -> dict[str, Any]:
    """The snapshot a cycle row of ``store`` records, confined to ``checkpoints/`` (:func:`checkpoint_file`) and
    verified against its recorded SHA-256.

    Raises:
        CheckpointError: the row records no checkpoint, or it is outside the folder, missing or damaged.
    """
    return load_checkpoint(checkpoint_file(store, cycle["checkpoint"] or ""), cycle["checkpoint_sha256"] or "")


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


class SimulationJournal(_Journal):
    """Record a simulated run in ``store`` (see the module docstring).

    Args:
        store: the run folder's project store.
        spec: the run's specification; resuming with another one is refused, naming the settings that differ.
        classes: the dataset's class names (empty for tasks whose targets are not classes).

    Raises:
        UsageError: the store holds a run of another specification.
    """

    def __init__(self, store: ProjectStore, spec: RunSpec, classes: Sequence[str]) -> None:
        super().__init__(store, spec, classes)
        stored = store.meta("settings")
        if stored is None:
            with store.transaction() as db:
                store.set_meta("kind", "simulation", db)
                store.set_meta("settings", self.settings, db)
                store.add_classes(db, self.classes)
        else:
            differ = spec_differences(stored, spec)
            if differ:
                raise UsageError(
                    f"{store.project} holds a run with other settings ({'; '.join(differ)}); resume it with the "
                    "same settings, or run into another --out"
                )

    def _checkpoint_path(self, cycle: int) -> Path:
        return self.store.project / "checkpoints" / f"cycle-{cycle}.pt"

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
            # only the latest checkpoint is needed to resume; older ones are dropped once this one is recorded
            older = self.store.drop_checkpoints(db)
            self.store.add_trained_cycle(
                db, result.cycle, self.settings, result.to_dict(), label_fingerprint(self.store.current_labels()),
                path.relative_to(self.store.project).as_posix(), digest,
            )
        for name in older:
            try:
                stale = checkpoint_file(self.store, name)
            except CheckpointError:
                continue  # never delete a file outside the project because a store names it
            if stale != path.resolve():
                stale.unlink(missing_ok=True)

    def queried(self, result: CycleResult, batch: QueryBatch, targets: torch.Tensor | None,
                snapshot: dict[str, Any]) -> None:
        if targets is None:
            raise UsageError("a simulated run needs an oracle that answers at once")
        with self.store.transaction() as db:
            self.store.set_meta(f"streams:{result.cycle}", _encode_streams(snapshot), db)
            self.store.mark_queried(db, result.cycle, result.to_dict())
            self._record_labels(db, np.asarray(result.selected), targets, result.cycle + 1, batch.scores)

    # ---------------------------------------------------------------------------------------------- resume

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint | None:
        store = self.store
        labeled = store.labeled_items()
        if not labeled:
            return None
        index = {name: i for i, name in enumerate(self.classes)}
        for cycle in sorted({row[3] or 0 for row in labeled}):
            rows = [row for row in labeled if (row[3] or 0) == cycle]
            values = [index[row[2]] if self.classes else row[2] for row in rows]
            loop.pool.add_labels([int(row[1]) for row in rows], torch.as_tensor(values), cycle)
        cycles = store.cycles()
        if not cycles:
            return ResumePoint()
        last = cycles[-1]
        snapshot = read_checkpoint(store, last)
        if last["status"] == "queried":
            snapshot.update(_decode_streams(store.meta(f"streams:{last['cycle']}")))
        loop.restore(snapshot)
        results = [CycleResult.from_dict(row["metrics"]) for row in cycles]
        if last["status"] == "trained":
            return ResumePoint(results[:-1], trained=results[-1])
        return ResumePoint(results)


class LabelingJournal(_Journal):
    """Record a labeling project's cycles in its store (see the module docstring).

    Args:
        store: the project's store.
        spec: the project's specification (with this query's strategy).
        classes: the project's class names.
        pool_ids: the store's item id of each pool index.
        labels: the store's current labels (item id -> class) this query trains on.
    """

    def __init__(self, store: ProjectStore, spec: RunSpec, classes: Sequence[str], pool_ids: Sequence[int],
                 labels: dict[int, str]) -> None:
        super().__init__(store, spec, classes)
        self.pool_ids = list(pool_ids)
        self.labels = labels
        self.fingerprint = label_fingerprint(labels)
        self.cycle = 0
        self.reused = False

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint:
        """Put every current label of a pool item into the pool; reuse the checkpoint of a cycle trained on exactly
        these labels and never queried. :attr:`cycle` is then the cycle to train or query."""
        labels = self.labels
        index = {name: i for i, name in enumerate(self.classes)}
        labeled = [(position, index[labels[item_id]]) for position, item_id in enumerate(self.pool_ids)
                   if item_id in labels]
        if not labeled:
            raise UsageError("no pool item is labeled yet; label a few first (learnloss label) or init with --labels")
        loop.pool.add_labels([p for p, _ in labeled], torch.as_tensor([c for _, c in labeled]), 0)
        last = self.store.last_cycle()
        # a cycle trained but never queried (the process died in between) is taken up again, not skipped
        self.cycle = 0 if last is None else last["cycle"] + (last["status"] == "queried")
        if last is not None and last["status"] == "trained" and last["label_fingerprint"] == self.fingerprint:
            try:
                loop.restore(read_checkpoint(self.store, last))
            except CheckpointError:
                return ResumePoint()  # a damaged checkpoint is retrained; the store points at the new one once durable
            self.reused = True
            return ResumePoint(trained=CycleResult.from_dict(last["metrics"]))
        return ResumePoint()

    def labeled(self, indices: np.ndarray, targets: torch.Tensor) -> None:  # pragma: no cover - resume never says so
        raise UsageError("a labeling project's initial labels come from init --labels or learnloss label")

    def trained(self, result: CycleResult, snapshot: dict[str, Any]) -> None:
        path = self.store.project / "checkpoints" / f"cycle-{result.cycle}-{self.fingerprint[:12]}.pt"
        digest = save_checkpoint(path, snapshot)  # durable before the store points at it
        with self.store.transaction() as db:
            self.store.add_trained_cycle(db, result.cycle, self.spec.to_dict(), result.to_dict(), self.fingerprint,
                                         path.relative_to(self.store.project).as_posix(), digest)

    def queried(self, result: CycleResult, batch: QueryBatch, targets: torch.Tensor | None,
                snapshot: dict[str, Any]) -> None:
        predictions, confidences = batch.predictions()
        rows = []
        for rank, (index, prediction, confidence) in enumerate(zip(batch.selected, predictions, confidences)):
            name = self.classes[int(prediction)] if self.classes else json.dumps(prediction)
            score = None if batch.scores is None else float(batch.scores[rank])
            rows.append((self.pool_ids[int(index)], score, rank + 1, name, confidence))
        with self.store.transaction() as db:
            if label_fingerprint(self.store.current_labels(db)) != self.fingerprint:
                raise UsageError("labels were imported while this query trained; run query again to use them")
            self.store.add_queries(db, result.cycle, self.spec.strategy, rows)
            self.store.mark_queried(db, result.cycle)
