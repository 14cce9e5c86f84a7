"""The active-learning loop: train, evaluate, score a subset of the pool, select, label — cycle after cycle.

Cycle ``c`` trains on the labeled set, evaluates on the test split (accuracy, and the LPM's ranking accuracy
and Spearman correlation on test pairs — Yoo & Kweon, CVPR 2019, Sec. 4.1), then, except after the last
cycle, scores a random subset of ``M`` unlabeled samples and labels the top ``K`` chosen by the strategy.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from learnloss.active.oracle import GroundTruthOracle, Oracle
from learnloss.active.pool import Pool
from learnloss.inference import BatchOutputs, ModelView, Need, stream
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import Dataset
from learnloss.errors import BudgetError, UsageError
from learnloss.lpm.attach import attach
from learnloss.lpm.taps import FeatureTaps
from learnloss.metrics import ranking_accuracy, spearman
from learnloss.strategies.base import QueryContext, Strategy
from learnloss.tasks.base import Task
from learnloss.tasks.classification import ClassificationTask
from learnloss.training.trainer import TrainConfig, Trainer

RESET_POLICIES = ("warm", "reinit")


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

    def validate(self, pool_size: int) -> None:
        """Check every count against the pool; raise a :class:`UsageError` naming the setting to change."""
        for name in ("initial", "query", "cycles", "lpm_width", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.subset is not None and self.subset <= 0:
            raise UsageError(f"--subset must be positive or 'all', got {self.subset}")
        if self.subset is not None and self.subset < self.query:
            raise UsageError(f"--subset ({self.subset}) must be at least --query ({self.query})")
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
    """The outcome of one cycle; ``selected`` are the pool indices labeled at its end."""

    cycle: int
    n_labeled: int
    test_accuracy: float
    lpm_ranking_accuracy: float | None
    lpm_spearman: float | None
    train_seconds: float
    query_seconds: float
    selected: list[int]

    def to_dict(self) -> dict:
        """The cycle as a JSON-ready dict (the ``cycles`` entries of ``results.json``)."""
        return asdict(self)


class ActiveLearningLoop:
    """Run simulated (or oracle-driven) active learning with any model, task and strategy.

    Args:
        model: the target model, freshly initialised (its weights are the "initial weights" of ``reinit``).
        dataset: train split = the pool, test split = evaluation.
        strategy: the query strategy.
        loop: loop settings.
        train: training settings.
        task: per-sample loss and metric (classification by default).
        oracle: who labels queried samples (the dataset's ground truth by default).
        device: where the model runs.
        progress: show progress bars.
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
    ) -> None:
        loop.validate(dataset.x_train.shape[0])
        self.dataset, self.strategy, self.loop, self.train_config = dataset, strategy, loop, train
        self.task = task or ClassificationTask()
        self.oracle = oracle or GroundTruthOracle(dataset.y_train.numpy())
        self.device = torch.device(device)
        self.pool = Pool(dataset.x_train.shape[0])
        self.trainer = Trainer(train, progress=progress)
        model = model.to(self.device)
        example = dataset.to_float(dataset.x_train[:2]).to(self.device)
        wants_lpm = loop.attach_lpm if loop.attach_lpm is not None else Need.LPM_SCORES in strategy.needs
        if Need.LPM_SCORES in strategy.needs and not wants_lpm:
            raise UsageError(f"strategy {strategy.name} needs the loss prediction module; do not disable it")
        learning_loss = embedding_taps = None
        if wants_lpm:
            learning_loss = attach(model, loop.layers, example, width=loop.lpm_width, embedding_layer=loop.embedding_layer)
        elif Need.EMBEDDINGS in strategy.needs:
            embedding_taps = FeatureTaps(model, [loop.embedding_layer])
            embedding_taps.probe(example)
        self.view = ModelView(model, self.task, learning_loss, embedding_taps)
        strategy.check(self.view)
        self._initial_state = [copy.deepcopy(module.state_dict()) for module in self.view.modules()]
        seeds = np.random.SeedSequence(loop.seed).spawn(3)
        self._initial_rng, self._subset_rng, self._strategy_rng = (np.random.default_rng(s) for s in seeds)
        self._generator = torch.Generator().manual_seed(loop.seed)

    def _train_batches(self) -> ArrayBatches:
        """Shuffled, augmented batches of the labeled samples with the pool's labels."""
        data = self.dataset
        return ArrayBatches(
            data.x_train, torch.as_tensor(self.pool.labels), self.pool.labeled_indices, self.train_config.batch_size,
            data.to_float, self.device, shuffle=self._generator,
            augment=data.augment if self.train_config.augment else None, merge_singleton=True,
        )

    def _eval_batches(self, x: torch.Tensor, y: torch.Tensor | None, indices: np.ndarray) -> ArrayBatches:
        """Batches for scoring and evaluation: in order, never augmented."""
        return ArrayBatches(x, y, indices, self.loop.eval_batch_size, self.dataset.to_float, self.device)

    def _revealed_labels(self, indices: np.ndarray) -> torch.Tensor:
        """The oracle's labels of ``indices`` as a pool-sized tensor, for the true-loss diagnostic that only a
        simulation can afford."""
        targets = torch.full((len(self.pool),), -1, dtype=torch.long)
        targets[torch.as_tensor(indices)] = torch.as_tensor(self.oracle.label(indices), dtype=torch.long)
        return targets

    def label(self, indices: np.ndarray, cycle: int) -> None:
        """Ask the oracle for the labels of ``indices`` and record them in the pool."""
        self.pool.add_labels(indices, self.oracle.label(indices), cycle)

    def evaluate(self) -> tuple[float, float | None, float | None]:
        """Test metric, and the LPM's ranking accuracy and Spearman correlation on the test split (NaN and
        None when the test split is empty)."""
        data = self.dataset
        if len(data.y_test) == 0:
            return math.nan, None, None
        metric = self.task.new_metric()
        has_lpm = self.view.learning_loss is not None

        def collect(batch: BatchOutputs) -> dict[str, torch.Tensor]:
            metric.update(batch.output, batch.targets)
            return {"loss": batch.true_losses, "predicted": batch.lpm_scores} if has_lpm else {}

        _, values = stream(self.view, self._eval_batches(data.x_test, data.y_test, np.arange(len(data.y_test))), collect)
        if not has_lpm:
            return metric.compute(), None, None
        return (
            metric.compute(),
            ranking_accuracy(values["predicted"], values["loss"]),
            spearman(values["predicted"], values["loss"]),
        )

    def query(self, k: int) -> np.ndarray:
        """Score a random subset of ``M`` unlabeled samples and return the strategy's ``k`` picks."""
        return self.query_scored(k)[0]

    def query_scored(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`query`, with the strategy's score of each pick when it ranks by a score (else None)."""
        strategy = self.strategy
        candidates = self.pool.sample_unlabeled(self.loop.subset, self._subset_rng)
        values: dict[str, np.ndarray] = {}
        x = self.dataset.x_train
        context = QueryContext(rng=self._strategy_rng, device=self.device)
        if strategy.needs:
            targets = self._revealed_labels(candidates) if Need.TRUE_LOSSES in strategy.needs else None
            with strategy.scoring(self.view, context):
                candidates, values = stream(self.view, self._eval_batches(x, targets, candidates), strategy.collect)
        if Need.LABELED_EMBEDDINGS in strategy.needs:
            _, labeled = stream(self.view, self._eval_batches(x, None, self.pool.labeled_indices),
                                lambda batch: {"embedding": batch.embeddings})
            context.labeled_embeddings = labeled["embedding"]
        selected = strategy.query(candidates, values, k, context)
        if "score" not in values:
            return selected, None
        position = {int(index): i for i, index in enumerate(candidates)}
        return selected, np.asarray([values["score"][position[int(i)]] for i in selected], dtype=np.float64)

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

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put the weights and random streams of :meth:`snapshot` back."""
        for module, state in zip(self.view.modules(), snapshot["modules"]):
            module.load_state_dict(state)
        rngs = {"initial": self._initial_rng, "subset": self._subset_rng, "strategy": self._strategy_rng}
        for name, rng in rngs.items():
            rng.bit_generator.state = json.loads(snapshot["numpy"][name])
        self._generator.set_state(snapshot["generator"])
        torch.set_rng_state(snapshot["torch"])
        if "cuda" in snapshot and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(snapshot["cuda"])

    def train_cycle(self, cycle: int) -> CycleResult:
        """Train (after the reset policy) and evaluate; the result has no selection yet."""
        if self.loop.reset == "reinit":
            for module, state in zip(self.view.modules(), self._initial_state):
                module.load_state_dict(state)
        start = time.perf_counter()
        self.trainer.fit(self.view, self._train_batches())
        train_seconds = time.perf_counter() - start
        accuracy, rank_accuracy, rho = self.evaluate()
        return CycleResult(
            cycle=cycle, n_labeled=self.pool.n_labeled, test_accuracy=accuracy, lpm_ranking_accuracy=rank_accuracy,
            lpm_spearman=rho, train_seconds=train_seconds, query_seconds=0.0, selected=[],
        )

    def run(
        self, on_cycle: Callable[[CycleResult], None] | None = None, journal: LoopJournal | None = None
    ) -> list[CycleResult]:
        """Run every cycle and return their results (``on_cycle`` is called after each).

        With a ``journal``, every step is recorded as it completes — the initial labels, each trained cycle
        with a :meth:`snapshot`, each query with its labels and a snapshot — and a run the journal has seen
        before continues after its last recorded step instead of starting again.
        """
        loop = self.loop
        point = journal.resume(self) if journal is not None else None
        if point is None:
            initial = self._initial_rng.choice(len(self.pool), size=loop.initial, replace=False)
            labels = np.asarray(self.oracle.label(initial), dtype=np.int64)
            self.pool.add_labels(initial, labels, 0)
            if journal is not None:
                journal.labeled(initial, labels)
            point = ResumePoint()
        results = list(point.results)
        pending = point.trained
        for cycle in range(len(results), loop.cycles):
            if pending is not None:
                result, pending = pending, None
            else:
                result = self.train_cycle(cycle)
                if journal is not None:
                    journal.trained(result, self.snapshot())
            if cycle < loop.cycles - 1:
                start = time.perf_counter()
                selected, scores = self.query_scored(loop.query)
                labels = np.asarray(self.oracle.label(selected), dtype=np.int64)
                self.pool.add_labels(selected, labels, cycle + 1)
                result.selected = selected.tolist()
                result.query_seconds = time.perf_counter() - start
                if journal is not None:
                    journal.queried(result, scores, labels, self.snapshot())
            results.append(result)
            if on_cycle is not None:
                on_cycle(result)
        return results


@dataclass
class ResumePoint:
    """Where a journaled run continues: the finished cycles, and a cycle trained but not yet queried."""

    results: list[CycleResult] = field(default_factory=list)
    trained: CycleResult | None = None


class LoopJournal(Protocol):
    """A durable record of a run's steps (:class:`learnloss.runs.journal.StoreJournal` keeps it in the
    project store). Each method is called once its step is complete and must record it atomically."""

    def resume(self, loop: ActiveLearningLoop) -> ResumePoint | None:
        """Restore ``loop`` (pool, weights, random streams) to the last recorded step; None if nothing is."""

    def labeled(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """The initial labeled set."""

    def trained(self, result: CycleResult, snapshot: dict[str, Any]) -> None:
        """A cycle trained and evaluated."""

    def queried(self, result: CycleResult, scores: np.ndarray | None, labels: np.ndarray, snapshot: dict[str, Any]) -> None:
        """A cycle's query (``result.selected``, most informative first) and the labels the oracle gave."""
