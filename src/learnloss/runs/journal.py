"""A simulated run journaled in a project store, so ``learnloss run --resume`` continues after any crash.

The run folder is a project: its store holds the sampled items (pool indices), every label the ground-truth
oracle gave with its provenance, and per cycle the resolved settings, the metrics, the checkpoint (weights and
random streams after training; only the latest cycle keeps its file, which is all a resume needs) and the
random streams after the query. Each step is one transaction, written
after its checkpoint is durable; a process killed at any moment leaves the store at the end of some step, and
:meth:`StoreJournal.resume` puts the loop back exactly there — same weights, same random streams — so the
resumed run selects what the uninterrupted run would have and never repeats a query.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.active.loop import ActiveLearningLoop, CycleResult, LoopJournal, ResumePoint
from learnloss.errors import UsageError
from learnloss.project.checkpoint import load_checkpoint, save_checkpoint
from learnloss.project.store import LabelRecord, ProjectStore
from learnloss.runs.presets import LOCATION_SETTINGS

__all__ = ["StoreJournal", "label_fingerprint"]

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


class StoreJournal(LoopJournal):
    """Record a simulated run in ``store`` (see the module docstring).

    Args:
        store: the run folder's project store.
        settings: the run's resolved settings; resuming with other settings is refused.
        classes: the dataset's class names.
        strategy: the strategy's name, recorded with every query and label.
    """

    def __init__(self, store: ProjectStore, settings: dict[str, Any], classes: list[str], strategy: str) -> None:
        self.store, self.strategy = store, strategy
        # as stored (plain JSON); where it runs and where the data lives may change between sessions
        self.settings = json.loads(json.dumps({k: v for k, v in settings.items() if k not in LOCATION_SETTINGS}))
        self.classes = list(classes)
        stored = store.meta("settings")
        if stored is None:
            with store.transaction() as db:
                db.execute("INSERT INTO meta VALUES ('kind', ?), ('settings', ?)",
                           (json.dumps("simulation"), json.dumps(self.settings)))
                store.add_classes(db, self.classes)
        elif stored != self.settings:
            differ = sorted(k for k in stored.keys() | self.settings.keys() if stored.get(k) != self.settings.get(k))
            raise UsageError(
                f"{store.project} holds a run with other settings ({', '.join(differ)}); resume it with the same "
                "settings, or run into another --out"
            )

    def _checkpoint_path(self, cycle: int) -> Path:
        return self.store.project / "checkpoints" / f"cycle-{cycle}.pt"

    # ---------------------------------------------------------------------------------------------- record

    def _record_labels(self, db: Any, indices: np.ndarray, labels: np.ndarray, cycle: int,
                       scores: np.ndarray | None = None) -> None:
        sources = [str(int(i)) for i in indices]
        self.store.add_items(db, sources)
        ids = dict(db.execute(
            f"SELECT source, id FROM items WHERE source IN ({','.join('?' * len(sources))})", sources
        ))
        records = [
            LabelRecord(ids[source], self.classes[int(label)], ORACLE_SOURCE, cycle,
                        self.strategy if cycle > 0 else "initial", None if scores is None else float(scores[rank]),
                        rank + 1 if cycle > 0 else None)
            for rank, (source, label) in enumerate(zip(sources, labels))
        ]
        if cycle > 0:
            self.store.add_queries(db, cycle - 1, self.strategy,
                                   [(r.item_id, r.score, r.rank, None, None) for r in records])
        self.store.add_labels(db, records)

    def labeled(self, indices: np.ndarray, labels: np.ndarray) -> None:
        with self.store.transaction() as db:
            self._record_labels(db, indices, labels, cycle=0)

    def trained(self, result: CycleResult, snapshot: dict[str, Any]) -> None:
        path = self._checkpoint_path(result.cycle)
        digest = save_checkpoint(path, snapshot)  # durable before the store points at it
        with self.store.transaction() as db:
            # only the latest checkpoint is needed to resume; older ones are dropped once this one is recorded
            older = [row[0] for row in db.execute("SELECT checkpoint FROM cycles WHERE checkpoint IS NOT NULL")]
            db.execute("UPDATE cycles SET checkpoint = NULL, checkpoint_sha256 = NULL")
            self.store.add_trained_cycle(
                db, result.cycle, self.settings, result.to_dict(), label_fingerprint(self.store.current_labels()),
                path.relative_to(self.store.project).as_posix(), digest,
            )
        for name in older:
            (self.store.project / name).unlink(missing_ok=True)

    def queried(self, result: CycleResult, scores: np.ndarray | None, labels: np.ndarray, snapshot: dict[str, Any]) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO meta VALUES (?, ?)", (f"streams:{result.cycle}", json.dumps(_encode_streams(snapshot))))
            db.execute("UPDATE cycles SET status = 'queried', metrics = ? WHERE cycle = ?",
                       (json.dumps(result.to_dict()), result.cycle))
            self._record_labels(db, np.asarray(result.selected), labels, result.cycle + 1, scores)

    # ---------------------------------------------------------------------------------------------- resume

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint | None:
        store = self.store
        index = {name: i for i, name in enumerate(self.classes)}
        labeled = [(source, index[name], cycle) for source, name, cycle in store.db.execute(
            "SELECT i.source, c.name, l.cycle FROM labels l JOIN items i ON i.id = l.item_id "
            "JOIN classes c ON c.id = l.class_id WHERE l.current = 1 ORDER BY l.cycle, l.id"
        )]
        if not labeled:
            return None
        for cycle in sorted({row[2] for row in labeled}):
            rows = [row for row in labeled if row[2] == cycle]
            loop.pool.add_labels([int(r[0]) for r in rows], [int(r[1]) for r in rows], cycle)
        cycles = list(store.db.execute(
            "SELECT cycle, status, metrics, checkpoint, checkpoint_sha256 FROM cycles ORDER BY cycle"
        ))
        if not cycles:
            return ResumePoint()
        cycle, status, metrics, checkpoint, digest = cycles[-1]
        snapshot = load_checkpoint(store.project / checkpoint, digest)
        if status == "queried":
            snapshot.update(_decode_streams(store.meta(f"streams:{cycle}")))
        loop.restore(snapshot)
        results = [CycleResult(**json.loads(row[2])) for row in cycles]
        if status == "trained":
            return ResumePoint(results[:-1], trained=results[-1])
        return ResumePoint(results)
