"""The active-learning loop: train, evaluate, score a subset of the pool, select, label — cycle after cycle.

Cycle ``c`` trains on the labeled set, evaluates on the test split (accuracy, and the LPM's ranking accuracy
and Spearman correlation on test pairs — Yoo & Kweon, CVPR 2019, Sec. 4.1), then, except after the last
cycle, scores a random subset of ``M`` unlabeled samples and labels the top ``K`` chosen by the strategy.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from learnloss.active.oracle import GroundTruthOracle, Oracle
from learnloss.active.pool import Pool
from learnloss.active.scoring import BatchOutputs, ModelView, Need, stream
from learnloss.data.batches import ArrayBatches
from learnloss.data.dataset import Dataset
from learnloss.errors import BudgetError, UsageError
from learnloss.lpm.attach import attach
from learnloss.lpm.taps import FeatureTaps
from learnloss.reports.metrics import ranking_accuracy, spearman
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
            weights of the model and the LPM before each cycle (METHOD.md §3.9).
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
        """Test metric, and the LPM's ranking accuracy and Spearman correlation on the test split."""
        data = self.dataset
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
        return strategy.query(candidates, values, k, context)

    def run(self, on_cycle: Callable[[CycleResult], None] | None = None) -> list[CycleResult]:
        """Run every cycle and return their results (``on_cycle`` is called after each)."""
        loop = self.loop
        self.label(self._initial_rng.choice(len(self.pool), size=loop.initial, replace=False), cycle=0)
        results = []
        for cycle in range(loop.cycles):
            if loop.reset == "reinit":
                for module, state in zip(self.view.modules(), self._initial_state):
                    module.load_state_dict(state)
            start = time.perf_counter()
            self.trainer.fit(self.view, self._train_batches())
            train_seconds = time.perf_counter() - start
            accuracy, rank_accuracy, rho = self.evaluate()
            n_labeled = self.pool.n_labeled
            selected = np.empty(0, dtype=np.int64)
            start = time.perf_counter()
            if cycle < loop.cycles - 1:
                selected = self.query(loop.query)
                self.label(selected, cycle + 1)
            result = CycleResult(
                cycle=cycle, n_labeled=n_labeled, test_accuracy=accuracy,
                lpm_ranking_accuracy=rank_accuracy, lpm_spearman=rho, train_seconds=train_seconds,
                query_seconds=time.perf_counter() - start, selected=selected.tolist(),
            )
            results.append(result)
            if on_cycle is not None:
                on_cycle(result)
        return results
