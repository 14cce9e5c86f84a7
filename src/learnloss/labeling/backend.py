"""A Label Studio ML backend for a labeling project: predictions sorted by the strategy's score, labels from
annotation events, retraining in the background.

Label Studio talks to an ML backend over HTTP (``label_studio/ml/api_connector.py`` of Label Studio): ``GET /health``,
``POST /setup`` (the project's labeling configuration; the answer names the model version), ``POST /predict`` (tasks
in, one prediction per task out, each with a ``score`` the Data Manager sorts by) and ``POST /webhook`` (annotation
events; ``START_TRAINING`` from the *Start training* button); older versions post ``/train`` with every annotated
task. :class:`LabelStudioBackend` implements that protocol without a web framework — :mod:`learnloss.serve` puts it
behind one — so every answer is a plain dictionary and every refusal a :class:`BackendError` with its HTTP status.

* **predict** answers each task with the model's predicted class as a ``choices`` result (in a detection or
  keypoints project: its boxes or keypoints as regions, :mod:`learnloss.project.annotations`) and, as the prediction's
  ``score``, the strategy's score of the item (:attr:`~learnloss.strategies.base.Strategy.score_meaning`; the LPM's
  predicted loss for ``learning-loss``), so sorting the Data Manager by prediction score, descending, puts first what
  the strategy would query first. A task names its item by ``data.learnloss_id`` (tasks learnloss wrote) or by its
  image URL (tasks Label Studio made by syncing the project's Local files storage).
* **annotation events** become labels through the same validated, all-or-nothing path as ``learnloss label``
  (:func:`~learnloss.project.importer.apply_label_rows`): a bad annotation — unknown item, unknown class, a label that
  contradicts the stored one on a new annotation — is refused with its reason (HTTP 422) and logged; nothing of it is
  written. An updated annotation relabels its item (the history keeps the old label); a cancelled (skipped) one
  is reported and ignored; a deleted one keeps the stored label.
* **retraining** runs in a background thread once ``retrain_every`` labels arrived since the model was trained, one at
  a time per project (the project's query lock, :meth:`~learnloss.project.store.ProjectStore.exclusive`): it is a
  ``learnloss query`` (train on the current labels, record the next batch), after which predictions carry the new
  model version (``learnloss-cycle-<N>``). Until it finishes, the previous model answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.data.images import read_images
from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, stream
from learnloss.project.annotations import LABEL_CONTROL
from learnloss.project.importer import ImportSummary, LabelFileError, LabelRow, apply_label_rows
from learnloss.project.labelstudio import (
    CONFIG_FROM_NAME, CONFIG_TO_NAME, ChoicesControl, LabelStudioSetup, choices_control,
)
from learnloss.project.paths import ItemLocator, nfc
from learnloss.project.store import ProjectStore
from learnloss.runs.evaluate import ProjectReader, TrainedRun, load_trained
from learnloss.strategies import build_strategy
from learnloss.strategies.base import QueryContext, Strategy

__all__ = ["BackendError", "LabelStudioBackend", "ServeConfig"]

log = logging.getLogger("learnloss.serve")

#: Model version Label Studio is told before the project has a trained cycle.
UNTRAINED = "learnloss-untrained"
#: Images decoded and scored at a time when Label Studio asks for many predictions at once.
_CHUNK = 512
_ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


class BackendError(LearnLossError):
    """A request the backend refuses: ``status`` is its HTTP status, the message says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeConfig:
    """Settings of :class:`LabelStudioBackend`.

    Attributes:
        retrain_every: retrain once this many labels arrived since the model was trained (0: never by count; the
            *Start training* button still does).
        query: size of the batch each retraining records (``learnloss query --k``); at most the unlabeled items.
        strategy: the strategy that scores and queries (default: the project's).
        device: where the model runs (``auto``, ``cpu``, ``cuda``).
        relabel: whether a *new* annotation may change a stored label (an *updated* one always may).
    """

    retrain_every: int = 20
    query: int = 20
    strategy: str | None = None
    device: str = "auto"
    relabel: bool = False

    def __post_init__(self) -> None:
        if self.retrain_every < 0:
            raise UsageError(f"--retrain-every must be 0 or more, got {self.retrain_every}")
        if self.query <= 0:
            raise UsageError(f"--k must be positive, got {self.query}")


@dataclass(frozen=True)
class _Model:
    trained: TrainedRun
    strategy: Strategy
    version: str
    n_labeled: int


def _task_data(task: Any, where: str) -> Mapping[str, Any]:
    data = task.get("data") if isinstance(task, Mapping) else None
    if not isinstance(data, Mapping):
        raise BackendError(400, f"{where}: a task needs a 'data' object")
    return data


class LabelStudioBackend:
    """The Label Studio ML backend of one labeling project (see the module docstring).

    Args:
        project: the project folder (``learnloss init``).
        config: the backend's settings.
        reader: how the project's specification and images are read (``ProjectReader(project_spec,
            project_dataset)`` of :mod:`learnloss.labeling.workflow`).
        query: the function that trains and records a query (``query_project`` of the workflow); called in the
            background with ``(project, k, strategy=, device=)``.
    """

    def __init__(self, project: str | Path, config: ServeConfig, reader: ProjectReader,
                 query: Callable[..., Any]) -> None:
        self.project = Path(project)
        self.config = config
        self._reader = reader
        self._query = query
        with ProjectStore(self.project, kind="labeling") as store:
            self.classes = store.classes()
            self.schema = store.annotation_schema()
            self.setup_ls = LabelStudioSetup.from_meta(store.meta("data_root"), store.meta("label_studio"))
            self.data_root = Path(store.meta("data_root"))
            self._strategy_name = config.strategy or self._reader.spec(store).strategy
        build_strategy(self._strategy_name)  # an unknown strategy fails before the server starts
        self._model: _Model | None = None
        self._model_lock = threading.Lock()
        self._score_lock = threading.Lock()  # the taps of one model hold one batch's features: one pass at a time
        self._train_lock = threading.Lock()
        self._trainer: threading.Thread | None = None
        self.last_training_error: str | None = None
        self._control = ChoicesControl(CONFIG_FROM_NAME, CONFIG_TO_NAME, tuple(self.classes))

    # ------------------------------------------------------------------------------------------- model

    @property
    def model_version(self) -> str:
        """The version of the model that answers now (``learnloss-cycle-<N>``), or ``learnloss-untrained``."""
        model = self._model
        return model.version if model is not None else UNTRAINED

    def load(self) -> bool:
        """Load the project's latest trained cycle, if it is newer than the one loaded; whether one is loaded."""
        with ProjectStore(self.project, kind="labeling") as store:
            cycles = [c for c in store.cycles() if c["checkpoint"]]
        if not cycles:
            return self._model is not None
        latest = cycles[-1]
        version = f"learnloss-cycle-{latest['cycle']}"
        if self._model is not None and self._model.version == version:
            return True
        trained = load_trained(self.project, self.config.device, project=self._reader)
        strategy = build_strategy(self._strategy_name)
        model = _Model(trained, strategy, f"learnloss-cycle-{trained.cycle['cycle']}",
                       int(trained.cycle["metrics"].get("n_labeled") or 0))
        with self._model_lock:
            self._model = model
        log.info("model %s loaded (%d labels)", model.version, model.n_labeled)
        return True

    def labels_since_training(self) -> int:
        """How many pool items are labeled beyond those the current model was trained on."""
        with ProjectStore(self.project, kind="labeling") as store:
            pool = {item_id for item_id, _ in store.items("pool")}
            labeled = sum(item_id in pool for item_id in store.current_labels())
        model = self._model
        return labeled - (model.n_labeled if model is not None else 0)

    @property
    def training(self) -> bool:
        """Whether a retraining is running."""
        return self._trainer is not None and self._trainer.is_alive()

    def maybe_retrain(self, force: bool = False) -> bool:
        """Start a retraining in the background when ``retrain_every`` labels arrived since the model was trained
        (or when ``force``, or when there is no model yet); whether one started."""
        with self._train_lock:
            if self.training:
                return False
            new = self.labels_since_training()
            due = force or self._model is None or (self.config.retrain_every and new >= self.config.retrain_every)
            if not due or (self._model is not None and new == 0 and not force):
                return False
            self._trainer = threading.Thread(target=self._retrain, name="learnloss-retrain", daemon=True)
            self._trainer.start()
            return True

    def wait_for_training(self, timeout: float | None = None) -> None:
        """Wait until a running retraining ends (for tests and for a clean shutdown)."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout)

    def _retrain(self) -> None:
        try:
            with ProjectStore(self.project, kind="labeling") as store:
                pool = {item_id for item_id, _ in store.items("pool")}
                unlabeled = len(pool - set(store.current_labels()))
            if unlabeled == 0:
                log.info("every pool item is labeled; nothing to query, so no retraining")
                return
            log.info("retraining on the current labels")
            self._query(self.project, min(self.config.query, unlabeled), strategy=self.config.strategy,
                        device=self.config.device)
            self.load()
            self.last_training_error = None
        except LearnLossError as error:  # busy project, no labels yet, damaged checkpoint: said, then retried later
            self.last_training_error = str(error)
            log.warning("retraining failed: %s", error)
        except Exception as error:  # noqa: BLE001 - a background thread must report, not die silently
            self.last_training_error = f"{type(error).__name__}: {error}"
            log.exception("retraining failed")

    def task_item(self, task: Any, where: str) -> tuple[int | None, str | None]:
        """The item a task names: ``(learnloss id, None)`` for tasks learnloss wrote (``data.learnloss_id``);
        ``(None, item path)`` for a task whose image URL lies under the project's Label Studio setup (tasks of a
        synced Local files storage); ``(None, None)`` when it names none.

        Raises:
            BackendError: the task has no ``data`` or a ``learnloss_id`` that is not a whole number.
        """
        data = _task_data(task, where)
        ident = data.get("learnloss_id")
        if isinstance(ident, str) and ident.strip().isdigit():
            ident = int(ident.strip())
        if ident is not None:
            if not isinstance(ident, int) or isinstance(ident, bool):
                raise BackendError(400, f"{where}: data.learnloss_id must be a whole number, got {ident!r}")
            return ident, None
        path = data.get("path")
        if isinstance(path, str) and path.strip():
            return None, nfc(path.strip())
        # the image URL: ``image`` in the configuration learnloss writes; a storage sync may store it under
        # another key (``$undefined$``)
        for key in sorted(data, key=lambda name: name != "image"):
            value = data[key]
            if isinstance(value, str) and (found := self.setup_ls.item_path(value)) is not None:
                return None, nfc(found)
        return None, None

    # ---------------------------------------------------------------------------------------- protocol

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return {"status": "UP", "model_class": "learnloss", "model_version": self.model_version,
                "training": self.training, "last_training_error": self.last_training_error}

    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /setup``: check that the Label Studio project's labeling configuration asks for this project's
        classes; answer the model version."""
        schema = payload.get("schema")
        if isinstance(schema, str) and schema.strip():
            self._control = self._check_config(schema)
        return {"model_version": self.model_version}

    def _check_config(self, config: str) -> ChoicesControl:
        if not self.schema.classes:
            return self._check_regions(config)
        try:
            control = choices_control(config)
        except UsageError as error:
            raise BackendError(400, str(error)) from None
        ours, theirs = {nfc(c) for c in self.classes}, {nfc(c) for c in control.choices}
        if ours != theirs:
            missing, extra = sorted(ours - theirs), sorted(theirs - ours)
            raise BackendError(400, "the Label Studio project's choices are not this project's classes ("
                               + "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                             f"unknown {', '.join(extra)}" if extra else "") if part)
                               + f"); use the labeling configuration {self.project / 'exports' / 'labelstudio-config.xml'}")
        return control

    def _check_regions(self, config: str) -> ChoicesControl:
        """The control of a detection or keypoints configuration (``RectangleLabels`` / ``KeyPointLabels``), checked
        to label this project's classes or keypoints."""
        tag = "RectangleLabels" if self.schema.task == "detection" else "KeyPointLabels"
        advice = f"use the labeling configuration {self.project / 'exports' / 'labelstudio-config.xml'}"
        try:
            root = ElementTree.fromstring(config)
        except ElementTree.ParseError as error:
            raise BackendError(400, f"the labeling configuration is not valid XML ({error})") from None
        controls = [element for element in root.iter() if element.tag == tag]
        if len(controls) != 1 or not controls[0].get("name") or not controls[0].get("toName"):
            raise BackendError(400, f"the labeling configuration needs exactly one <{tag}> control with a name and a "
                               f"toName for this {self.schema.task} project; {advice}")
        control = controls[0]
        labels = tuple(value for element in control.iter("Label") if (value := element.get("value")) is not None)
        if {nfc(name) for name in labels} != {nfc(name) for name in self.schema.names}:
            raise BackendError(400, f"the Label Studio project's <{tag}> labels ({', '.join(labels)}) are not this "
                               f"project's ({', '.join(self.schema.names)}); {advice}")
        return ChoicesControl(str(control.get("name")), str(control.get("toName")), labels)

    def predict(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /predict``: one prediction per task, in order: the predicted class and the strategy's score."""
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            raise BackendError(400, "the request needs a 'tasks' list")
        config = payload.get("label_config")
        control = self._check_config(config) if isinstance(config, str) and config.strip() else self._control
        if not self.load():
            self.maybe_retrain()
            raise BackendError(503, "no trained model yet: training on the project's labels has started; ask again "
                               "when it is done (GET /health says the model version)")
        model = self._model
        assert model is not None
        with ProjectStore(self.project, kind="labeling") as store:
            sources = dict(store.items(include_retired=True))
        by_path = {nfc(source): item_id for item_id, source in sources.items()}
        paths: list[str | None] = []
        for number, task in enumerate(tasks, start=1):
            ident, path = self.task_item(task, f"task {number}")
            if ident is None and path is not None:
                ident = by_path.get(path)
            paths.append(sources.get(ident) if ident is not None else None)
        known = [i for i, path in enumerate(paths) if path is not None]
        results: list[dict[str, Any]] = [{"result": [], "model_version": model.version} for _ in tasks]
        for unknown in sorted(set(range(len(tasks))) - set(known)):
            log.warning("task %s names no item of %s; no prediction", tasks[unknown].get("id"), self.project)
        for start in range(0, len(known), _CHUNK):
            chunk = known[start:start + _CHUNK]
            with self._score_lock:
                predictions, confidences, scores = self._score(model, [str(paths[i]) for i in chunk])
            for i, prediction, confidence, score in zip(chunk, predictions, confidences, scores):
                if self.schema.classes:
                    found = [{"from_name": control.from_name, "to_name": control.to_name, "type": "choices",
                              "value": {"choices": [prediction]}}]
                else:  # boxes or keypoints as regions, named by the project's configuration
                    found = [{**region, "from_name": control.from_name, "to_name": control.to_name}
                             if region["from_name"] == LABEL_CONTROL else region
                             for region in self.schema.label_studio_results(json.loads(prediction), True, "p")]
                entry: dict[str, Any] = {"result": found, "model_version": model.version}
                if score is not None and np.isfinite(score):
                    entry["score"] = float(score)
                results[i] = entry
        return {"results": results, "model_version": model.version}

    def _score(self, model: _Model, paths: Sequence[str]) -> tuple[list[str], list[float | None], list[float | None]]:
        """Predicted class, confidence and score of the items at ``paths`` (relative to the data root)."""
        loop = model.trained.loop
        x = loop.dataset.x_train
        mode = "L" if int(x.shape[1]) == 1 else "RGB"
        locator = ItemLocator(self.data_root)
        images = torch.from_numpy(read_images([locator.find(p, p) for p in paths], mode,
                                              (int(x.shape[3]), int(x.shape[2])), resize=True))
        strategy = model.strategy
        own = bool(strategy.describes_score)
        has_lpm = loop.view.learning_loss is not None
        predictions: dict[int, tuple[Any, float | None]] = {}

        def collect(batch: BatchOutputs) -> dict[str, torch.Tensor]:
            values, confidences = loop.task.predict(batch.output)
            for index, value, confidence in zip(batch.indices.tolist(), values, confidences):
                predictions[int(index)] = (value, confidence)
            if own:
                return {"score": strategy.collect(batch)["score"]}
            return {"score": batch.lpm_scores} if has_lpm else {}

        context = QueryContext(rng=np.random.default_rng(0), device=loop.device)
        with strategy.scoring(loop.view, context):
            order, kept = stream(loop.view, loop.eval_batches(images, None, np.arange(len(paths))), collect)
        scores = dict(zip(order.tolist(), kept["score"].tolist())) if "score" in kept else {}
        names = [self.schema.prediction(predictions[i][0]) for i in range(len(paths))]
        return names, [predictions[i][1] for i in range(len(paths))], [scores.get(i) for i in range(len(paths))]

    def score_meaning(self) -> str:
        """What the prediction score means for the strategy that answers."""
        strategy = build_strategy(self._strategy_name)
        if strategy.describes_score:
            return strategy.describes_score
        return "the LPM's predicted loss (the strategy picks sets, so its own score is not per item)"

    # ------------------------------------------------------------------------------------------ labels

    def webhook(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /webhook``: annotation events become labels; ``START_TRAINING`` retrains now."""
        action = payload.get("action")
        if action == "START_TRAINING":
            started = self.maybe_retrain(force=True)
            return {"status": "training" if started or self.training else "idle", "model_version": self.model_version}
        if action == "ANNOTATIONS_DELETED":
            log.info("annotations deleted in Label Studio; the labels stored in %s are kept (learnloss never deletes "
                     "a label; relabel it or retire the item)", self.project)
            return {"status": "kept"}
        if action not in _ANNOTATION_EVENTS:
            return {"status": "ignored", "action": action}
        annotations, tasks = payload.get("annotation"), payload.get("task")
        if not isinstance(annotations, list):
            annotations, tasks = [annotations], [tasks]
        if not isinstance(tasks, list) or len(tasks) != len(annotations):
            raise BackendError(400, f"{action}: the event needs one task per annotation")
        summary = self.apply(list(zip(tasks, annotations)), relabel=action == "ANNOTATION_UPDATED" or self.config.relabel,
                             origin=str(action))
        self.maybe_retrain()
        return {"status": "stored", "added": summary.added, "relabeled": summary.relabeled,
                "unchanged": summary.unchanged, "skipped": list(summary.skipped)}

    def train(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /train`` (Label Studio before the webhook protocol): every annotated task, then retrain."""
        tasks = payload.get("annotations")
        if not isinstance(tasks, list):
            raise BackendError(400, "the request needs an 'annotations' list of tasks")
        pairs = []
        for task in tasks:
            annotations = task.get("annotations") if isinstance(task, Mapping) else None
            for annotation in annotations if isinstance(annotations, list) else []:
                pairs.append((task, annotation))
        summary = self.apply(pairs, relabel=self.config.relabel, origin="train")
        started = self.maybe_retrain(force=True)
        return {"status": "training" if started or self.training else "idle", "added": summary.added,
                "skipped": list(summary.skipped)}

    def apply(self, pairs: Sequence[tuple[Any, Any]], relabel: bool, origin: str) -> ImportSummary:
        """Store the labels of ``(task, annotation)`` pairs all or nothing (the validated path of ``learnloss
        label``); cancelled or empty annotations are skipped and reported."""
        rows: list[LabelRow] = []
        skipped: list[str] = []
        problems: list[str] = []
        ids: list[str] = []
        for task, annotation in pairs:
            if not isinstance(annotation, Mapping):
                problems.append(f"{origin}: an annotation must be an object")
                continue
            where = f"task {task.get('id') if isinstance(task, Mapping) else '?'} annotation {annotation.get('id')}"
            ids.append(str(annotation.get("id")))
            try:
                ident, path = self.task_item(task, where)
            except BackendError as error:
                problems.append(str(error))
                continue
            if annotation.get("was_cancelled"):
                skipped.append(f"{where}: skipped in Label Studio (cancelled)")
                continue
            if not self.schema.classes:
                self._target_row(ident, path, annotation.get("result"), where, rows, skipped, problems)
                continue
            choice = self._choice(annotation.get("result"), where, problems)
            if choice is None:
                if not problems or not problems[-1].startswith(where):
                    skipped.append(f"{where}: no choice")
                continue
            if ident is None and path is None:
                problems.append(self._no_item(where))
                continue
            rows.append(LabelRow(where, ident, path, nfc(choice)))
        document = json.dumps([[t.get("id") if isinstance(t, Mapping) else None, a] for t, a in pairs],
                              sort_keys=True, default=str)
        digest = hashlib.sha256(document.encode()).hexdigest()
        name = f"label-studio {origin} annotation {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}"
        try:
            with ProjectStore(self.project, kind="labeling") as store:
                summary = apply_label_rows(store, rows, Path(name), digest, "labelstudio-webhook", relabel=relabel,
                                           problems=problems, skipped=skipped)
        except LabelFileError as error:
            log.warning("refused: %s", error)
            raise BackendError(422, str(error)) from None
        log.info("%s: %d added, %d relabeled, %d unchanged%s", name, summary.added, summary.relabeled,
                 summary.unchanged, f"; skipped: {'; '.join(summary.skipped)}" if summary.skipped else "")
        return summary

    def _no_item(self, where: str) -> str:
        """The problem of an annotated task that names no item of the project."""
        return (f"{where}: the task names no item (no data.learnloss_id, and its image URL is not under "
                f"{self.setup_ls.url_prefix})")

    def _target_row(self, ident: int | None, path: str | None, results: Any, where: str, rows: list[LabelRow],
                    skipped: list[str], problems: list[str]) -> None:
        """The boxes or keypoints of one annotation as a row (an annotation without a box labels an image holding
        no object; one without a keypoint is skipped)."""
        if not isinstance(results, list):
            problems.append(f"{where}: the annotation's 'result' must be a list")
            return
        target = self.schema.from_label_studio(results, where, problems)
        if target is None:
            return
        if self.schema.task == "keypoints" and not target["keypoints"]:
            skipped.append(f"{where}: no keypoint")
            return
        if ident is None and path is None:
            problems.append(self._no_item(where))
            return
        rows.append(LabelRow(where, ident, path, None, target))

    def _choice(self, results: Any, where: str, problems: list[str]) -> str | None:
        if not isinstance(results, list):
            problems.append(f"{where}: the annotation's 'result' must be a list")
            return None
        chosen = []
        for result in results:
            value = result.get("value") if isinstance(result, Mapping) else None
            choices = value.get("choices") if isinstance(value, Mapping) else None
            if choices is None:
                continue  # another control's result (a comment, a rating): not a label
            if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
                problems.append(f"{where}: the annotation does not choose exactly one class")
                return None
            chosen.append(choices[0])
        if len(set(chosen)) > 1:
            problems.append(f"{where}: the annotation chooses several classes ({', '.join(sorted(set(chosen)))})")
            return None
        return chosen[0] if chosen else None
