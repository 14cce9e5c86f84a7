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
* **annotation events** are read by the reader ``learnloss label`` reads Label Studio's export with
  (:mod:`learnloss.project.labelstudio_reader`: which item a task names — its id, path and image URL must agree —,
  cancelled or skipped annotations, results of other controls, event order) and become labels through the same
  validated, all-or-nothing path (:func:`~learnloss.project.importer.apply_label_rows`): a bad annotation — unknown
  or retired item, unknown class, an image URL of another project, a label that contradicts the stored one on a new
  annotation, text that is not valid Unicode — is refused with its reason (HTTP 422) and logged; nothing of it is
  written. An updated annotation relabels its item (the history keeps the old label) unless it is older than the
  annotation that set the stored label (a replayed event: skipped and reported); a cancelled or skipped one is
  reported and ignored; a deleted one keeps the stored label.
* **retraining** runs in a background thread once ``retrain_every`` labels arrived since the model was trained, one at
  a time per project (the project's query lock, :meth:`~learnloss.project.store.ProjectStore.exclusive`): it is a
  ``learnloss query`` (train on the current labels, record the next batch), after which predictions carry the new
  model version (``learnloss-cycle-<N>``). Until it finishes, the previous model answers. Labels that arrive while
  it trains make it run again when it ends (a query whose labels changed while it trained is not recorded), so the
  last retraining always sees every label.
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
from learnloss.project.importer import ImportSummary, LabelFileError, apply_label_rows
from learnloss.project.labelstudio import (
    CONFIG_FROM_NAME, CONFIG_TO_NAME, ChoicesControl, LabelStudioSetup, choices_control,
)
from learnloss.project.labelstudio_reader import AnnotationError, LabelRow, read_task, shown
from learnloss.project.labelstudio_reader import task_item as read_task_item
from learnloss.project.paths import ItemLocator, nfc
from learnloss.project.store import ProjectStore
from learnloss.runs.evaluate import ProjectReader, TrainedRun, load_trained
from learnloss.strategies import build_strategy
from learnloss.strategies.base import QueryContext, Strategy

__all__ = ["BackendError", "LabelStudioBackend", "ServeConfig", "model_version"]

log = logging.getLogger("learnloss.serve")

#: Model version Label Studio is told before the project has a trained cycle.
UNTRAINED = "learnloss-untrained"
#: Images decoded and scored at a time when Label Studio asks for many predictions at once.
_CHUNK = 512
_ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


class BackendError(LearnLossError):
    """A request the backend refuses: ``status`` is its HTTP status, the message says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(shown(message, 4000))  # one line of valid UTF-8, whatever text the request carried
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


def model_version(cycle: Mapping[str, Any]) -> str:
    """The version of the model a project's ``cycle`` trained, as Label Studio shows it on predictions:
    ``learnloss-cycle-<N>`` for a queried cycle, ``learnloss-cycle-<N>-<first 8 of its label fingerprint>`` for one
    trained but not queried (retrained again on other labels, it is another model of the same cycle number)."""
    version = f"learnloss-cycle-{cycle['cycle']}"
    if cycle.get("status") == "queried":
        return version
    return f"{version}-{str(cycle.get('label_fingerprint') or '')[:8]}"


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
        self._running = False  # a retraining runs (guarded by _train_lock)
        self._again = False  # run it again when it ends (guarded by _train_lock)
        self.last_training_error: str | None = None
        self._control = ChoicesControl(CONFIG_FROM_NAME, CONFIG_TO_NAME, tuple(self.classes))

    # ------------------------------------------------------------------------------------------- model

    @property
    def model_version(self) -> str:
        """The version of the model that answers now, or ``learnloss-untrained`` (:func:`model_version`)."""
        model = self._model
        return model.version if model is not None else UNTRAINED

    def load(self) -> bool:
        """Load the project's latest trained cycle, if it is another than the one loaded; whether one is loaded.

        A cycle trained but not queried counts: a retraining that labels arriving meanwhile kept from recording its
        query (:class:`~learnloss.runs.journal.LabelingJournal`) still trained a newer model, which answers until
        the next retraining — so that while people keep labeling, predictions keep improving."""
        with ProjectStore(self.project, kind="labeling") as store:
            cycles = [c for c in store.cycles() if c["checkpoint"]]
        if not cycles:
            return self._model is not None
        if self._model is not None and self._model.version == model_version(cycles[-1]):
            return True
        trained = load_trained(self.project, self.config.device, project=self._reader)
        strategy = build_strategy(self._strategy_name)
        model = _Model(trained, strategy, model_version(trained.cycle),
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
        """Whether a retraining is running (or about to run again for labels that arrived meanwhile)."""
        return self._running

    def maybe_retrain(self, force: bool = False) -> bool:
        """Start a retraining in the background when ``retrain_every`` labels arrived since the model was trained
        (or when ``force``, or when there is no model yet); whether one started. While one runs, a forced request
        (labels that arrived during it, the *Start training* button) makes it run again when it ends."""
        with self._train_lock:
            if self._running:
                self._again = self._again or force
                return False
            new = self.labels_since_training()
            due = force or self._model is None or (self.config.retrain_every and new >= self.config.retrain_every)
            if not due or (self._model is not None and new == 0 and not force):
                return False
            self._running = True
            self._trainer = threading.Thread(target=self._retrain, name="learnloss-retrain", daemon=True)
            self._trainer.start()
            return True

    def wait_for_training(self, timeout: float | None = None) -> None:
        """Wait until a running retraining ends (for tests and for a clean shutdown)."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout)

    def _last_label(self) -> int:
        """The latest label's id (it grows with every label stored), or -1 when the store cannot be read now."""
        try:
            with ProjectStore(self.project, kind="labeling") as store:
                return store.last_label_id()
        except LearnLossError as error:
            log.warning("cannot read the labels of %s: %s", self.project, error)
            return -1

    def _retrain(self) -> None:
        """Retrain until a retraining has seen every label: labels that arrived while one trained (which then
        refuses to record its query, :class:`~learnloss.runs.journal.LabelingJournal`) make it run again, so a
        retraining is never dropped. A retraining that fails for another reason is reported and tried again with
        the next labels."""
        try:
            while True:
                mark = self._last_label()
                error = self._retrain_once()
                with self._train_lock:
                    again = self._again or self._last_label() != mark
                    self._again = False
                    if not again:
                        self._running = False
                        if error is not None:
                            log.warning("retraining failed: %s", error)
                        return
                log.info("labels arrived while the model trained%s; retraining with them",
                         "" if error is None else f" ({error})")
        except BaseException:
            with self._train_lock:
                self._running = False
            raise

    def _retrain_once(self) -> str | None:
        """One retraining (a ``learnloss query``); what failed, if it did (also :attr:`last_training_error`)."""
        try:
            with ProjectStore(self.project, kind="labeling") as store:
                pool = {item_id for item_id, _ in store.items("pool")}
                unlabeled = len(pool - set(store.current_labels()))
            if unlabeled == 0:
                log.info("every pool item is labeled; nothing to query, so no retraining")
                return None
            log.info("retraining on the current labels")
            self._query(self.project, min(self.config.query, unlabeled), strategy=self.config.strategy,
                        device=self.config.device)
            self.load()
            self.last_training_error = None
            return None
        except LearnLossError as error:  # busy project, labels that arrived meanwhile, damaged checkpoint: said
            self.last_training_error = str(error)
            try:  # labels that arrived meanwhile refuse the query, not the training: its model answers until the next
                self.load()
            except LearnLossError as failed:
                log.warning("the retrained model was not loaded: %s", failed)
        except Exception as error:  # noqa: BLE001 - a background thread must report, not die silently
            self.last_training_error = f"{type(error).__name__}: {error}"
            log.exception("retraining failed")
        return self.last_training_error

    def task_item(self, task: Any, where: str) -> tuple[int | None, str | None]:
        """The item a task names (:func:`~learnloss.project.labelstudio_reader.task_item`, the reader ``learnloss
        label`` uses): ``(learnloss id, path)``, either None when the task does not give it — the path from
        ``data.path`` or from an image URL under the project's Label Studio setup (tasks of a synced Local files
        storage); ``(None, None)`` when it names none, or is refused (an image URL of another project, a path and
        a URL that disagree).

        Raises:
            BackendError: the task has no ``data``, a ``learnloss_id`` that is not an item id (plain ASCII digits, an
                int in range; never a bool), or a path that is not a safe relative path (HTTP 400).
        """
        data = _task_data(task, where)
        try:
            item = read_task_item(data, self.setup_ls, where)
        except AnnotationError as error:
            raise BackendError(400, str(error)) from None
        if item.refusal is not None:  # predict counts the tasks naming no item in one line
            log.debug("%s", item.refusal)
            return None, None
        return item.item_id, item.path

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
        """``POST /predict``: one prediction per task, in order: the predicted class and the strategy's score.

        A task names its item as ``learnloss label`` reads it (:func:`~learnloss.project.labelstudio_reader.task_item`;
        an id and a path or URL must agree). Each distinct item is decoded and scored once, however many tasks name
        it: the tasks naming it get the same prediction and the same score. Tasks that name no item of the project,
        or are refused (another project's image URL), get an empty prediction, reported in ONE log line per request
        (how many, the first few task ids, the first reason), so a request cannot flood the log.
        """
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
        naming: dict[int, list[int]] = {}  # item id -> the positions of the tasks naming it, in order
        unknown: list[int] = []
        reason: str | None = None  # why the first refused task was refused
        for number, task in enumerate(tasks, start=1):
            where = f"task {number}"
            try:
                named = read_task_item(_task_data(task, where), self.setup_ls, where)
            except AnnotationError as error:
                raise BackendError(400, str(error)) from None
            ident = named.item_id if named.item_id is not None else by_path.get(named.path or "")
            refusal = named.refusal
            if refusal is None and named.item_id in sources and named.path is not None \
                    and nfc(sources[named.item_id]) != named.path:
                refusal = (f"{where}: data.learnloss_id {named.item_id} and the path or image URL "
                           f"({shown(named.path)!r}) name different items")
            if refusal is None and ident is not None and ident in sources:
                naming.setdefault(ident, []).append(number - 1)
            else:
                unknown.append(number - 1)
                reason = reason or refusal
        results: list[dict[str, Any]] = [{"result": [], "model_version": model.version} for _ in tasks]
        if unknown:
            ids = ", ".join(shown(repr(tasks[i].get("id")), 40) for i in unknown[:5])
            log.warning("%d of %d tasks name no item of %s, so they get no prediction (task ids %s%s)%s", len(unknown),
                        len(tasks), self.project, ids, ", …" if len(unknown) > 5 else "",
                        f"; the first refused: {reason}" if reason else "")
        items = list(naming)
        for start in range(0, len(items), _CHUNK):
            chunk = items[start:start + _CHUNK]
            with self._score_lock:
                predictions, confidences, scores = self._score(model, [sources[item] for item in chunk])
            for item, prediction, confidence, score in zip(chunk, predictions, confidences, scores):
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
                for i in naming[item]:  # one scoring, one score object, shared by every task naming the item
                    results[i] = dict(entry)
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
            return {"status": "ignored", "action": shown(action)}
        annotations, tasks = payload.get("annotation"), payload.get("task")
        if not isinstance(annotations, list):
            annotations, tasks = [annotations], [tasks]
        if not isinstance(tasks, list) or len(tasks) != len(annotations):
            raise BackendError(400, f"{action}: the event needs one task per annotation")
        during = self.training  # labels that arrive while the model retrains make it retrain again when it ends
        summary = self.apply(list(zip(tasks, annotations)), relabel=action == "ANNOTATION_UPDATED" or self.config.relabel,
                             origin=shown(action))
        self.maybe_retrain(force=during and summary.changed)
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
        """Store the labels of ``(task, annotation)`` pairs all or nothing: each pair is read by
        :func:`~learnloss.project.labelstudio_reader.read_task` (the rules ``learnloss label`` reads Label Studio's
        export by: cancelled or skipped annotations and annotations without a choice are skipped and reported;
        results of other controls are ignored; the task's id, path and image URL must agree), then applied by the
        validated path of ``learnloss label`` (:func:`~learnloss.project.importer.apply_label_rows`: an annotation
        older than the one that set the stored label is skipped). Any problem refuses every pair (HTTP 422)."""
        rows: list[LabelRow] = []
        skipped: list[str] = []
        problems: list[str] = []
        ids: list[str] = []
        for task, annotation in pairs:
            if not isinstance(annotation, Mapping):
                problems.append(f"{origin}: an annotation must be an object")
                continue
            task_id = task.get("id") if isinstance(task, Mapping) else None
            where = f"task {shown(task_id, 24)} annotation {shown(annotation.get('id'), 24)}"
            ident = annotation.get("id")
            ids.append(ident if isinstance(ident, str) else shown(ident, 24))
            if not isinstance(task, Mapping):
                problems.append(f"{where}: a task must be an object with a 'data' object")
                continue
            reading = read_task(task.get("data"), [annotation], self.schema, self.setup_ls, where, problems)
            rows.extend([reading.row] if reading.row else [])
            skipped.extend([reading.skipped] if reading.skipped else [])
        document = json.dumps([[t.get("id") if isinstance(t, Mapping) else None, a] for t, a in pairs],
                              sort_keys=True, default=str).encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(document).hexdigest()
        name = f"label-studio {origin} annotation {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}"
        try:
            with ProjectStore(self.project, kind="labeling") as store:
                summary = apply_label_rows(store, rows, Path(name), digest, "labelstudio-webhook", relabel=relabel,
                                           problems=problems, skipped=skipped)
        except LabelFileError as error:
            message = shown(str(error), 2000)
            log.warning("refused: %s", message)
            raise BackendError(422, message) from None
        except UsageError as error:  # text the store refuses (a lone surrogate), a path it cannot hold
            message = shown(f"{origin}: {error}", 2000)
            log.warning("refused: %s", message)
            raise BackendError(422, message) from None
        log.info("%s: %d added, %d relabeled, %d unchanged%s", shown(name, 200), summary.added, summary.relabeled,
                 summary.unchanged, f"; skipped: {'; '.join(summary.skipped)}" if summary.skipped else "")
        return summary
