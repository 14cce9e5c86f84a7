"""The active-learning loop: train, evaluate, score a subset of the pool, select, label — cycle after cycle.

Cycle ``c`` trains on the labeled set, evaluates on the test split (accuracy, and the LPM's ranking accuracy
and Spearman correlation on test pairs — Yoo & Kweon, CVPR 2019, Sec. 4.1), then, except after the last
cycle, scores a random subset of ``M`` unlabeled samples and labels the top ``K`` chosen by the strategy.

Distributed (``torchrun``, :mod:`learnloss.distributed`): every rank builds the same loop from the same seed and
takes every step; only the work is shared. Training runs under DistributedDataParallel, each rank on its share of
the labeled samples (:mod:`learnloss.training.stages`), and rank 0's weights, BatchNorm statistics and random
streams are copied to every rank after each stage, so the ranks never drift apart. Every pass over many samples —
the evaluation, the scoring of the candidates, the labeled embeddings — is dealt out batch by batch
(:mod:`learnloss.inference.sharded`): each sample is computed in the very batch it has in one process, the kept
values are gathered in the original candidate order, and every rank runs the strategy's selection on all of them,
with the same random streams — the selection one process makes for the same weights. A plain score strategy
(:class:`~learnloss.strategies.base.ScoreStrategy`) gathers only each rank's top ``K`` (and any non-finite score):
ordered by score, ties by candidate order, the global top ``K`` is among them, so the merge picks exactly what one
process picks. The evaluation gathers each test batch's outputs and updates the metrics batch by batch in order,
as one process does. A strategy that draws random numbers in its own passes (MC dropout, :attr:`Need.INPUTS`)
scores every candidate on every rank, since its masks depend on the batch order. Rank 0's selection is broadcast
and kept by all. Only rank 0 records steps in the journal (the store, the checkpoints); the others learn how each
record went, so a failure there stops every rank with rank 0's message, and a resumed run's state is sent from
rank 0 to the others.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from learnloss.active.oracle import GroundTruthOracle, Oracle
from learnloss.active.pool import Pool
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import Dataset
from learnloss.data.source import Inputs
from learnloss.distributed import Distributed, current
from learnloss.errors import BudgetError, LearnLossError, UsageError
from learnloss.inference import BatchOutputs, ModelView, Need, stream
from learnloss.inference.precision import Precision
from learnloss.inference.sharded import Shard, gather_shards, stream_shard, stream_sharded
from learnloss.lpm.attach import attach
from learnloss.lpm.taps import FeatureTaps
from learnloss.metrics import ranking_accuracy, spearman
from learnloss.strategies.base import QueryContext, ScoreStrategy, Strategy
from learnloss.tasks import build_task
from learnloss.tasks.base import Task
from learnloss.training.stages import CycleData, JointTraining, Stage
from learnloss.training.trainer import TrainConfig

RESET_POLICIES = ("warm", "reinit")
_PREDICTED, _TRUE = "__lpm_predicted", "__true_loss"  # values the loop keeps beside the strategy's own


class SnapshotError(LearnLossError, ValueError):
    """A snapshot does not fit the loop: other modules, parameter names or shapes, or malformed random-stream
    states. :meth:`ActiveLearningLoop.restore` checks all of it before changing anything."""


def check_oracle(strategy: Strategy, oracle: Oracle) -> None:
    """Refuse a strategy that reads what ``oracle`` cannot tell before the answer is needed: the true loss of
    unlabeled samples needs their targets at once, which only a simulation's ground truth has.

    Raises:
        UsageError: the strategy needs true losses and the oracle does not know the targets.
    """
    if Need.TRUE_LOSSES in strategy.needs and not getattr(oracle, "knows_targets", False):
        raise UsageError(f"{strategy.spec} ranks by the true loss of unlabeled samples, which only a simulation "
                         "knows; choose another strategy")


@dataclass
class LoopConfig:
    """Settings of the simulated loop.

    Attributes:
        initial: size of the random initial labeled set.
        query: ``K``, samples labeled per cycle.
        cycles: training cycles; ``cycles - 1`` queries are made (the paper: 10 cycles, 1k → 10k labels).
        subset: ``M``, unlabeled samples scored per cycle (None: all of them).
        seed: seed of every random choice (initial set, subsets, training order, augmentation, init).
        reset: ``warm`` keeps training the model of the previous cycle; ``reinit`` restores the initial
            weights of the model and the LPM before each cycle (docs/pitfalls.md §9).
        layers: layers tapped by the LPM.
        embedding_layer: layer whose pooled output is the embedding (core-set).
        lpm_width: width of each LPM level.
        attach_lpm: attach and train the LPM; None attaches it when the strategy needs LPM scores.
        eval_batch_size: batch size of scoring and evaluation.
        layouts: layout of tapped layers whose output the taps cannot read unambiguously (see
            :class:`~learnloss.lpm.taps.FeatureTaps`), by layer name.
        drop_easy: fraction of the labeled set, those with the lowest loss under the previous cycle's model, that
            the target model does not train on in the next cycle (stages that train the LPM alone still see them).
            The undocumented trick of the semi-supervised LPM's public code (Hwang, Choi & Choi, IEEE Access 2024),
            which drops about 1 %; 0 (off) by default. The first cycle drops nothing: no model has been trained.
    """

    initial: int
    query: int
    cycles: int
    layers: Sequence[str]
    embedding_layer: str
    subset: int | None = None
    seed: int = 0
    reset: str = "warm"
    lpm_width: int = 128
    attach_lpm: bool | None = None
    eval_batch_size: int = 512
    layouts: Mapping[str, Any] | None = None
    drop_easy: float = 0.0

    def validate(self, pool_size: int) -> None:
        """Check every count against the pool; raise a :class:`UsageError` naming the setting to change."""
        for name in ("initial", "query", "cycles", "lpm_width", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.subset is not None and self.subset <= 0:
            raise UsageError(f"--subset must be positive or 'all', got {self.subset}")
        if self.subset is not None and self.subset < self.query:
            raise UsageError(f"--subset ({self.subset}) must be at least --query ({self.query})")
        if not 0.0 <= self.drop_easy < 1.0:
            raise UsageError(f"--drop-easy must be a fraction in [0, 1), got {self.drop_easy}")
        if self.reset not in RESET_POLICIES:
            raise UsageError(f"--reset must be one of {', '.join(RESET_POLICIES)}, got {self.reset!r}")
        budget = self.initial + self.query * (self.cycles - 1)
        if budget > pool_size:
            raise BudgetError(
                f"the budget of {budget} labels (--initial {self.initial} + --query {self.query} × "
                f"{self.cycles - 1} queries) exceeds the pool of {pool_size} training samples; lower "
                "--initial, --query or --cycles"
            )


@dataclass
class CycleResult:
    """The outcome of one cycle; ``selected`` are the pool indices labeled at its end.

    ``metrics`` holds the task's test metrics by name (``{"accuracy": 0.93}``; NaN without a test split); a
    cycle of ``results.json`` carries each as ``test_<name>``. ``lpm_ranking_accuracy``/``lpm_spearman`` are the
    LPM's on the test split; ``candidate_ranking_accuracy``/``candidate_spearman`` its on the unlabeled candidates
    the cycle scored for its query (a simulation knows their true losses; None otherwise) — the data the LPM must
    actually rank, which the semi-supervised LPM (Hwang, Choi & Choi, IEEE Access 2024) trains it for.
    """

    cycle: int
    n_labeled: int
    metrics: dict[str, float]
    lpm_ranking_accuracy: float | None
    lpm_spearman: float | None
    train_seconds: float
    query_seconds: float
    selected: list[int]
    candidate_ranking_accuracy: float | None = None
    candidate_spearman: float | None = None

    @property
    def test_accuracy(self) -> float:
        """The test accuracy of a classification cycle (NaN for other tasks)."""
        return self.metrics.get("accuracy", math.nan)

    def to_dict(self) -> dict[str, Any]:
        """The cycle as a JSON-ready dict (the ``cycles`` entries of ``results.json``)."""
        return {
            "cycle": self.cycle, "n_labeled": self.n_labeled,
            **{f"test_{name}": value for name, value in self.metrics.items()},
            "lpm_ranking_accuracy": self.lpm_ranking_accuracy, "lpm_spearman": self.lpm_spearman,
            "candidate_ranking_accuracy": self.candidate_ranking_accuracy,
            "candidate_spearman": self.candidate_spearman,
            "train_seconds": self.train_seconds, "query_seconds": self.query_seconds, "selected": list(self.selected),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CycleResult:
        """A cycle from :meth:`to_dict`'s form."""
        metrics = {key[len("test_"):]: (math.nan if value is None else float(value))
                   for key, value in values.items() if key.startswith("test_") and key != "test_size"}
        return cls(
            cycle=int(values["cycle"]), n_labeled=int(values["n_labeled"]), metrics=metrics,
            lpm_ranking_accuracy=values.get("lpm_ranking_accuracy"), lpm_spearman=values.get("lpm_spearman"),
            train_seconds=float(values["train_seconds"]), query_seconds=float(values["query_seconds"]),
            selected=[int(i) for i in values.get("selected", [])],
            candidate_ranking_accuracy=values.get("candidate_ranking_accuracy"),
            candidate_spearman=values.get("candidate_spearman"),
        )


@dataclass
class QueryBatch:
    """A query: the pool indices chosen, most informative first, and the strategy's score of each (None when it
    ranks by no score). :meth:`predictions` runs the model over the chosen samples only when asked (the labeling
    workflow shows labelers the model's guess). In a simulation with an LPM, the LPM's ranking accuracy and
    Spearman correlation on all the scored candidates."""

    selected: np.ndarray
    scores: np.ndarray | None
    _predict: Callable[[np.ndarray], tuple[list[Any], list[float | None]]] = field(repr=False)
    candidate_ranking_accuracy: float | None = None
    candidate_spearman: float | None = None

    def predictions(self) -> tuple[list[Any], list[float | None]]:
        """The task's prediction and its confidence for each chosen sample, aligned with :attr:`selected`."""
        return self._predict(self.selected)


class ActiveLearningLoop:
    """Run active learning with any model, task and strategy; a simulation or people as the oracle.

    One path whatever the oracle: :meth:`step` trains a cycle (:meth:`train_cycle`), and, when asked, scores a
    random subset of the pool, selects, records the query in the journal and asks the oracle for targets
    (:meth:`query_batch`, :meth:`label`). :meth:`run` is the whole simulated run, step after step; the labeling
    workflow makes one step per ``learnloss query``, with a :class:`~learnloss.active.oracle.HumanOracle` whose
    targets arrive later through the project store.

    Args:
        model: the target model, freshly initialised (its weights are the "initial weights" of ``reinit``).
        dataset: train split = the pool, test split = evaluation.
        strategy: the query strategy.
        loop: loop settings.
        train: training settings of the default stage (the paper's joint training).
        task: per-sample loss, targets and metrics (by default the dataset's task).
        oracle: who labels queried samples (the dataset's ground truth by default).
        device: where the model runs.
        progress: show progress bars.
        stages: the cycle's training stages, in order (default: :class:`JointTraining` with ``train``).
        precision: autocast dtype and memory format of every pass.
        dist: this process's rank in a distributed run (default: :func:`learnloss.distributed.current`, one process
            unless a process group is initialised); see the module docstring.

    A model already wrapped in ``DistributedDataParallel`` (or ``DataParallel``) is unwrapped: the loop wraps it
    itself while it trains, and its checkpoints hold the inner module's names. Layer names given with the wrapper's
    ``module.`` prefix (``module.layer3``) are read without it.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        strategy: Strategy,
        loop: LoopConfig,
        train: TrainConfig,
        task: Task | None = None,
        oracle: Oracle | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
        stages: Sequence[Stage] | None = None,
        precision: Precision | None = None,
        dist: Distributed | None = None,
    ) -> None:
        loop.validate(dataset.x_train.shape[0])
        self.dist = dist if dist is not None else current()
        self.dataset, self.strategy, self.loop, self.train_config = dataset, strategy, loop, train
        self.task = task or build_task(dataset.task)
        self.oracle: Oracle = oracle or GroundTruthOracle(dataset.y_train)
        check_oracle(strategy, self.oracle)  # before the model is even moved: nothing trains for a refused query
        self.device = self.dist.device(torch.device(device))
        self.dataset = dataset = dataset.resident_on(self.device)  # on an accelerator: no host round trip per step
        precision = (precision or Precision()).resolve(self.device)
        precision.check(self.device)
        self.pool = Pool(dataset.x_train.shape[0], self.task, dataset.y_train)
        self.stages: list[Stage] = list(stages) if stages is not None else [JointTraining(train, progress=progress)]
        model, loop = _unwrapped(model, loop)
        self.loop = loop
        model = precision.prepare_model(model.to(self.device))
        example = dataset.to_float(dataset.x_train[:2]).to(self.device)
        wants_lpm = loop.attach_lpm if loop.attach_lpm is not None else Need.LPM_SCORES in strategy.needs
        if Need.LPM_SCORES in strategy.needs and not wants_lpm:
            raise UsageError(f"strategy {strategy.name} needs the loss prediction module; do not disable it")
        learning_loss = embedding_taps = None
        if wants_lpm:
            learning_loss = attach(model, loop.layers, example, width=loop.lpm_width, embedding_layer=loop.embedding_layer,
                                   layouts=loop.layouts)
        elif Need.EMBEDDINGS in strategy.needs:
            embedding_taps = FeatureTaps(
                model, [loop.embedding_layer],
                {k: v for k, v in (loop.layouts or {}).items() if k == loop.embedding_layer} or None,
            )
            embedding_taps.probe(example)
        self.view = ModelView(model, self.task, learning_loss, embedding_taps, precision)
        strategy.check(self.view)
        self._initial_state = [copy.deepcopy(module.state_dict()) for module in self.view.modules()]
        seeds = np.random.SeedSequence(loop.seed).spawn(3)
        self._initial_rng, self._subset_rng, self._strategy_rng = (np.random.default_rng(s) for s in seeds)
        self._generator = torch.Generator().manual_seed(loop.seed)
        self._trained = False  # whether a cycle of this loop has trained (drop_easy needs a trained model)

    # ------------------------------------------------------------------------------------------ batches

    def cycle_data(self, query: bool = True, easy: np.ndarray | None = None) -> CycleData:
        """What the training stages of this cycle read: the pool's labeled and unlabeled samples, whether a query
        follows, and the labeled samples the target model leaves out (``easy``)."""
        data = CycleData(self.dataset, self.pool.targets, self.pool.labeled_indices, self.pool.unlabeled_indices,
                         self.device, self._generator, query=query, dist=self.dist)
        return data if easy is None else dataclasses.replace(data, easy=easy)

    def easiest_labeled(self) -> np.ndarray:
        """The :attr:`LoopConfig.drop_easy` fraction of the labeled set with the lowest loss under the current
        model (sorted pool indices); empty when the option is off or no cycle of this loop has trained yet."""
        fraction, labeled = self.loop.drop_easy, self.pool.labeled_indices
        count = int(fraction * len(labeled))
        if count == 0 or not self._trained:
            return np.empty(0, dtype=np.int64)
        order, values = self._stream(self.eval_batches(self.dataset.x_train, self.pool.targets, labeled),
                                     lambda batch: {"loss": batch.true_losses}, "the labeled losses")
        return np.sort(order[np.argsort(values["loss"], kind="stable")[:count]])

    def eval_batches(self, x: Inputs, y: torch.Tensor | None, indices: np.ndarray) -> ArrayBatches:
        """Batches for scoring and evaluation: in order, never augmented (docs/pitfalls.md §6)."""
        return ArrayBatches(x, y, indices, self.loop.eval_batch_size, self.dataset.to_float, self.device)

    def _stream(self, batches: ArrayBatches, collect: Callable[[BatchOutputs], dict[str, torch.Tensor]],
                what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A pass over ``batches``, sharded over the ranks of a distributed run and gathered in order (what
        :func:`~learnloss.inference.stream` returns in one process)."""
        return stream_sharded(self.view, batches, collect, self.dist, what)

    # ------------------------------------------------------------------------------------------ distributed

    def _record(self, record: Callable[[], None], what: str) -> None:
        """Record a step (rank 0: in its journal); every rank learns whether it went, and fails with rank 0."""
        self.dist.on_main(record, f"rank 0 {what}")

    def _synchronise(self, what: str) -> None:
        """Copy rank 0's weights, buffers (BatchNorm statistics) and training random streams to every rank: after
        DistributedDataParallel the parameters agree but each rank's BatchNorm statistics saw its own batches."""
        if not self.dist.active:
            return
        for module in self.view.modules():
            self.dist.broadcast_module_(module, what)
        states = self.dist.broadcast((self._generator.get_state(), torch.get_rng_state()), what)
        self._generator.set_state(states[0])
        torch.set_rng_state(states[1])

    def _plain_top_k(self, strategy: Strategy, measure: bool) -> bool:
        """Whether a distributed query may gather only each rank's top ``K``: a strategy that ranks by its score
        alone (``ScoreStrategy``'s own ``collect`` and ``select``) and no diagnostic that needs every candidate."""
        kind = type(strategy)
        return (self.dist.active and not measure and isinstance(strategy, ScoreStrategy)
                and kind.select is ScoreStrategy.select and kind.collect is ScoreStrategy.collect)

    def _top_k_shard(self, shard: Shard, k: int) -> Shard:
        """The ``k`` best candidates of a rank's shard by score, ties by candidate order (as
        :func:`~learnloss.strategies.base.top_k` orders them), in candidate order, with every non-finite score
        (so the selection refuses them on every rank)."""
        scores = shard.values.get("score", np.empty(0))
        finite = np.flatnonzero(np.isfinite(scores))
        best = finite[np.lexsort((shard.positions[finite], -scores[finite]))[:k]]
        return shard.take(np.sort(np.concatenate([best, np.flatnonzero(~np.isfinite(scores))])))

    # ------------------------------------------------------------------------------------------ steps

    def label(self, indices: np.ndarray, cycle: int) -> torch.Tensor | None:
        """Ask the oracle for the targets of ``indices`` and record them in the pool as labeled in ``cycle``;
        returns them, or None when the oracle answers later (people)."""
        targets = self.oracle.label(indices)
        if targets is not None:
            self.pool.add_labels(indices, targets, cycle)
        return targets

    def evaluate(self) -> tuple[dict[str, float], float | None, float | None]:
        """The task's test metrics, and the LPM's ranking accuracy and Spearman correlation on the test split (Yoo
        & Kweon, CVPR 2019, Sec. 4.1); NaN metrics and None when the test split is empty."""
        data = self.dataset
        if len(data.y_test) == 0:
            return {name: math.nan for name in self.task.metrics}, None, None
        metrics = self.task.new_metrics()
        has_lpm = self.view.learning_loss is not None
        sharded = self.dist.active
        outputs: list[tuple[int, Any, torch.Tensor]] = []  # distributed: (first test index, output, targets) per batch

        def collect(batch: BatchOutputs) -> dict[str, torch.Tensor]:
            if sharded:
                assert batch.targets is not None  # the test split has its targets
                outputs.append((int(batch.indices[0]), _to_device(batch.output, torch.device("cpu")),
                                batch.targets.cpu()))
            else:
                for metric in metrics.values():
                    metric.update(batch.output, batch.targets)
            return {"loss": batch.true_losses, "predicted": batch.lpm_scores} if has_lpm else {}

        _, values = self._stream(self.eval_batches(data.x_test, data.y_test, np.arange(len(data.y_test))), collect,
                                 "the evaluation")
        if sharded:  # the metrics see every batch, in order, as in one process
            gathered = self.dist.all_gather(outputs, "gathering the evaluation's outputs")
            for _, output, targets in sorted((entry for part in gathered for entry in part), key=lambda e: e[0]):
                for metric in metrics.values():
                    metric.update(_to_device(output, self.device), targets.to(self.device))
        scores = {name: metric.compute() for name, metric in metrics.items()}
        if not has_lpm:
            return scores, None, None
        return scores, ranking_accuracy(values["predicted"], values["loss"]), spearman(values["predicted"], values["loss"])

    def _revealed_targets(self, indices: np.ndarray) -> torch.Tensor:
        """The oracle's targets of ``indices`` in a pool-sized container, for the true-loss diagnostic that only a
        simulation can afford."""
        targets = self.task.empty_targets(len(self.pool), self.dataset.y_train)
        revealed = self.oracle.label(indices)
        if revealed is None:
            raise UsageError(f"{self.strategy.spec} reads the true targets of unlabeled samples, which only a "
                             "simulation knows; choose another strategy")
        targets[torch.as_tensor(indices)] = torch.as_tensor(revealed).to(targets.dtype)
        return targets

    def query(self, k: int) -> np.ndarray:
        """Score a random subset of ``M`` unlabeled samples and return the strategy's ``k`` picks."""
        return self.query_batch(k).selected

    def query_scored(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`query`, with the strategy's score of each pick when it ranks by a score (else None)."""
        batch = self.query_batch(k)
        return batch.selected, batch.scores

    def query_batch(self, k: int) -> QueryBatch:
        """Score a random subset of ``M`` unlabeled samples in one streaming pass and select ``k`` of them."""
        strategy = self.strategy
        candidates = self.pool.sample_unlabeled(self.loop.subset, self._subset_rng)
        values: dict[str, np.ndarray] = {}
        x = self.dataset.x_train
        context = QueryContext(rng=self._strategy_rng, device=self.device)
        # In a simulation the LPM's ranking of the candidates is measured in the same pass (its true losses).
        measure = self.view.learning_loss is not None and getattr(self.oracle, "knows_targets", False)
        ranking: tuple[float | None, float | None] = (None, None)
        if strategy.needs or measure:
            reveal = measure or Need.TRUE_LOSSES in strategy.needs
            targets = self._revealed_targets(candidates) if reveal else None

            def collect(batch: BatchOutputs) -> dict[str, torch.Tensor]:
                kept = strategy.collect(batch)
                if measure:
                    kept = {**kept, _PREDICTED: batch.lpm_scores, _TRUE: batch.true_losses}
                return kept

            batches = self.eval_batches(x, targets, candidates)
            with strategy.scoring(self.view, context):
                if Need.INPUTS in strategy.needs:  # its own random passes depend on the batch order: not sharded
                    candidates, values = stream(self.view, batches, collect)
                elif self._plain_top_k(strategy, measure):  # each rank's top k holds the global top k
                    shard = self._top_k_shard(stream_shard(self.view, batches, collect, self.dist), k)
                    candidates, values = gather_shards(self.dist.all_gather(shard, "gathering the top candidates"))
                else:
                    candidates, values = self._stream(batches, collect, "the candidates' scores")
            if measure and len(candidates) > 1:
                predicted, true = values.pop(_PREDICTED), values.pop(_TRUE)
                ranking = ranking_accuracy(predicted, true), spearman(predicted, true)
        if Need.LABELED_EMBEDDINGS in strategy.needs:
            _, labeled = self._stream(self.eval_batches(x, None, self.pool.labeled_indices),
                                      lambda batch: {"embedding": batch.embeddings}, "the labeled embeddings")
            context.labeled_embeddings = labeled["embedding"]
        selected = strategy.query(candidates, values, k, context)
        scores = None
        if "score" in values:
            position = {int(index): i for i, index in enumerate(candidates)}
            scores = np.asarray([values["score"][position[int(i)]] for i in selected], dtype=np.float64)
        if self.dist.active:  # every rank selected the same; rank 0's is kept by all, whatever the arithmetic did
            selected, scores = self.dist.broadcast((selected, scores), "sharing the selection")
        return QueryBatch(selected, scores, self.predict, *ranking)

    def predict(self, indices: np.ndarray) -> tuple[list[Any], list[float | None]]:
        """The task's prediction and confidence for the pool samples ``indices`` (in eval mode, no augmentation)."""
        predictions: list[Any] = []
        confidences: list[float | None] = []

        def collect(batch: BatchOutputs) -> dict[str, torch.Tensor]:
            values, confidence = self.task.predict(batch.output)
            predictions.extend(values)
            confidences.extend(confidence)
            return {}

        stream(self.view, self.eval_batches(self.dataset.x_train, None, np.asarray(indices, dtype=np.int64)), collect)
        return predictions, confidences

    def snapshot(self) -> dict[str, Any]:
        """What the next step depends on besides the pool: the weights of the model and the LPM and the state
        of every random stream (numpy streams as JSON text, torch states as tensors), so a run resumed from a
        snapshot selects exactly what the uninterrupted run would have."""
        rngs = {"initial": self._initial_rng, "subset": self._subset_rng, "strategy": self._strategy_rng}
        snapshot: dict[str, Any] = {
            "modules": [module.state_dict() for module in self.view.modules()],
            "numpy": {name: json.dumps(rng.bit_generator.state) for name, rng in rngs.items()},
            "generator": self._generator.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            snapshot["cuda"] = torch.cuda.get_rng_state_all()
        return snapshot

    def check_snapshot(self, snapshot: Any) -> None:
        """Check that ``snapshot`` fits this loop — the same modules with the same parameter names and shapes, and
        well-formed random-stream states — without changing anything.

        Raises:
            SnapshotError: what does not fit, in a few words.
        """
        if not isinstance(snapshot, Mapping):
            raise SnapshotError(f"it holds a {type(snapshot).__name__}, not a snapshot")
        modules = list(self.view.modules())
        states = snapshot.get("modules")
        if not isinstance(states, (list, tuple)) or len(states) != len(modules):
            count = len(states) if isinstance(states, (list, tuple)) else "no"
            raise SnapshotError(f"it holds {count} module states, the loop has {len(modules)} "
                                f"({', '.join(type(m).__name__ for m in modules)})")
        for module, state in zip(modules, states):
            name = type(module).__name__
            expected = module.state_dict()
            if not isinstance(state, Mapping):
                raise SnapshotError(f"the state of {name} is a {type(state).__name__}")
            missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            if missing or unexpected:
                parts = ([f"missing {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else "")] if missing else [])
                parts += ([f"unexpected {', '.join(unexpected[:3])}" + (" …" if len(unexpected) > 3 else "")]
                          if unexpected else [])
                raise SnapshotError(f"{name}: {'; '.join(parts)}")
            for key, value in expected.items():
                given = state[key]
                if isinstance(value, torch.Tensor) and (not isinstance(given, torch.Tensor)
                                                        or given.shape != value.shape):
                    shape = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
                    raise SnapshotError(f"{name}.{key} is {shape} in the snapshot, {tuple(value.shape)} in the model")
        numpy_states = snapshot.get("numpy")
        for stream_name in ("initial", "subset", "strategy"):
            try:
                probe = np.random.default_rng()
                probe.bit_generator.state = json.loads(numpy_states[stream_name])  # type: ignore[index]
            except (KeyError, TypeError, ValueError) as error:
                raise SnapshotError(f"the {stream_name} random stream is malformed ({error})") from None
        try:
            torch.Generator().set_state(snapshot["generator"])
        except (KeyError, TypeError, RuntimeError) as error:
            raise SnapshotError(f"the training random stream is malformed ({error})") from None
        state = snapshot.get("torch")
        if (not isinstance(state, torch.Tensor) or state.dtype != torch.uint8
                or state.shape != torch.get_rng_state().shape):
            raise SnapshotError("torch's random state is malformed")
        cuda = snapshot.get("cuda")
        if cuda is not None and not (isinstance(cuda, (list, tuple)) and all(isinstance(c, torch.Tensor) for c in cuda)):
            raise SnapshotError("the CUDA random states are malformed")

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put the weights and random streams of :meth:`snapshot` back — all of them, or, when the snapshot does
        not fit (:meth:`check_snapshot`), none.

        Raises:
            SnapshotError: the snapshot does not fit this loop; nothing was changed.
        """
        self.check_snapshot(snapshot)
        for module, state in zip(self.view.modules(), snapshot["modules"]):
            module.load_state_dict(state)
        self._trained = True  # a snapshot is taken after training: its weights are a trained model's
        rngs = {"initial": self._initial_rng, "subset": self._subset_rng, "strategy": self._strategy_rng}
        for name, rng in rngs.items():
            rng.bit_generator.state = json.loads(snapshot["numpy"][name])
        self._generator.set_state(snapshot["generator"])
        torch.set_rng_state(snapshot["torch"])
        if "cuda" in snapshot and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(snapshot["cuda"])

    def train_cycle(self, cycle: int, query: bool = True) -> CycleResult:
        """Train (after the reset policy) through every stage, and evaluate; the result has no selection yet.
        ``query`` says whether a query follows (stages that only serve the selection skip a cycle without one)."""
        start = time.perf_counter()
        easy = self.easiest_labeled()  # measured by the previous cycle's model, before any reset
        if self.loop.reset == "reinit":
            for module, state in zip(self.view.modules(), self._initial_state):
                module.load_state_dict(state)
        data = self.cycle_data(query, easy)  # the pool does not change while a cycle trains
        for stage in self.stages:
            stage.run(self.view, data)
            self._synchronise(f"sharing rank 0's weights after the {stage.name} stage")
        self._trained = True
        train_seconds = time.perf_counter() - start
        metrics, rank_accuracy, rho = self.evaluate()
        return CycleResult(
            cycle=cycle, n_labeled=self.pool.n_labeled, metrics=metrics, lpm_ranking_accuracy=rank_accuracy,
            lpm_spearman=rho, train_seconds=train_seconds, query_seconds=0.0, selected=[],
        )

    def begin(self, journal: LoopJournal | None = None) -> ResumePoint:
        """Where the run stands: the journal's last recorded step, or — for a run never started — the initial
        random labeled set, labeled by the oracle and recorded."""
        point = self._resume(journal) if self.dist.active else journal.resume(self) if journal is not None else None
        if point is not None:
            return point
        initial = self._initial_rng.choice(len(self.pool), size=self.loop.initial, replace=False)
        targets = self.label(initial, 0)
        if targets is None:
            raise UsageError("the initial labeled set needs an oracle that answers at once; label it first")
        if journal is not None or self.dist.active:
            self._record(lambda: journal.labeled(initial, targets) if journal is not None else None,
                         "recording the initial labels")
        return ResumePoint()

    def _resume(self, journal: LoopJournal | None) -> ResumePoint | None:
        """A distributed :meth:`begin`'s resume: rank 0 (whose journal it is) resumes, then sends the other ranks
        where it stands — the resume point, the weights and random streams, the pool — and they take it up."""

        def resume() -> tuple[ResumePoint, dict[str, Any], torch.Tensor, np.ndarray, bool] | None:
            point = journal.resume(self) if journal is not None else None
            if point is None:
                return None
            return point, self.snapshot(), self.pool.targets, self.pool.labeled_at, self._trained

        state = self.dist.from_main(resume, "rank 0 resuming the run from its journal")
        if state is None:
            return None
        point, snapshot, targets, labeled_at, trained = state
        if not self.dist.is_main:
            self.restore(snapshot)
            self.pool.targets.copy_(targets)
            self.pool.labeled_at[:] = labeled_at
            self._trained = trained
        return point

    def step(self, cycle: int, journal: LoopJournal | None = None, trained: CycleResult | None = None,
             query: bool = True) -> CycleResult:
        """One cycle: train and evaluate (unless ``trained`` is the result of a cycle trained before a resume),
        then with ``query`` score, select ``K``, ask the oracle and record the query. The journal records each
        part once it is complete."""
        if trained is not None:
            result = trained
        else:
            result = self.train_cycle(cycle, query)
            if journal is not None or self.dist.active:
                self._record(lambda: journal.trained(result, self.snapshot()) if journal is not None else None,
                             f"recording cycle {cycle}'s training")
        if query:
            start = time.perf_counter()
            batch = self.query_batch(self.loop.query)
            targets = self.label(batch.selected, cycle + 1)
            result.selected = batch.selected.tolist()
            result.query_seconds = time.perf_counter() - start
            result.candidate_ranking_accuracy = batch.candidate_ranking_accuracy
            result.candidate_spearman = batch.candidate_spearman
            if journal is not None or self.dist.active:
                self._record(lambda: journal.queried(result, batch, targets, self.snapshot())
                             if journal is not None else None, f"recording cycle {cycle}'s query")
        return result

    def run(
        self, on_cycle: Callable[[CycleResult], None] | None = None, journal: LoopJournal | None = None
    ) -> list[CycleResult]:
        """Run every cycle and return their results (``on_cycle`` is called after each).

        With a ``journal``, every step is recorded as it completes — the initial labels, each trained cycle
        with a :meth:`snapshot`, each query with its labels and a snapshot — and a run the journal has seen
        before continues after its last recorded step instead of starting again.
        """
        point = self.begin(journal)
        results = list(point.results)
        pending = point.trained
        for cycle in range(len(results), self.loop.cycles):
            result = self.step(cycle, journal, pending, query=cycle < self.loop.cycles - 1)
            pending = None
            results.append(result)
            if on_cycle is not None:
                on_cycle(result)
        return results


@dataclass
class ResumePoint:
    """Where a journaled run continues: the finished cycles, and a cycle trained but not yet queried."""

    results: list[CycleResult] = field(default_factory=list)
    trained: CycleResult | None = None


def _unwrapped(model: nn.Module, loop: LoopConfig) -> tuple[nn.Module, LoopConfig]:
    """``model`` without a ``DistributedDataParallel``/``DataParallel`` wrapper, and ``loop`` with the layer names
    read without the wrapper's ``module.`` prefix (unless the inner model has a submodule of that name)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    names = dict(model.named_modules())
    given = [*loop.layers, loop.embedding_layer, *(loop.layouts or {})]
    if "module" in names or not any(str(name).startswith("module.") for name in given):
        return model, loop

    def inner(name: str) -> str:
        return name[len("module."):] if name.startswith("module.") and name not in names else name

    layouts = None if loop.layouts is None else {inner(str(key)): value for key, value in loop.layouts.items()}
    return model, dataclasses.replace(loop, layers=[inner(name) for name in loop.layers],
                                      embedding_layer=inner(loop.embedding_layer), layouts=layouts)


def _to_device(value: Any, device: torch.device) -> Any:
    """A model output (a tensor, or tuples, lists and dicts of them) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_to_device(item, device) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


class LoopJournal(Protocol):
    """A durable record of a run's steps (:mod:`learnloss.runs.journal` keeps it in a project store). Each method
    is called once its step is complete and must record it atomically."""

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint | None:
        """Restore ``loop`` (pool, weights, random streams) to the last recorded step; None if nothing is."""

    def labeled(self, indices: np.ndarray, targets: torch.Tensor) -> None:
        """The initial labeled set."""

    def trained(self, result: CycleResult, snapshot: dict[str, Any]) -> None:
        """A cycle trained and evaluated."""

    def queried(self, result: CycleResult, batch: QueryBatch, targets: torch.Tensor | None,
                snapshot: dict[str, Any]) -> None:
        """A cycle's query (``batch.selected``, most informative first) and the targets the oracle gave (None:
        they arrive later)."""
