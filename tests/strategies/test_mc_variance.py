"""``mc-variance`` (MC-dropout variance, the regression baseline) and ``uncertainty`` (the task's own baseline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from learnloss.active.loop import ActiveLearningLoop, LoopConfig
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.errors import UsageError
from learnloss.strategies import build_strategy
from learnloss.tasks import RegressionTask
from learnloss.training import TrainConfig
from tests_support import TinyNet, make_dataset


def _loop(name: str, model: nn.Module | None = None, dataset: Dataset | None = None, seed: int = 0,
          task=None) -> ActiveLearningLoop:
    torch.manual_seed(seed)
    loop = ActiveLearningLoop(
        model or TinyNet(), dataset or make_dataset(), build_strategy(name),
        LoopConfig(initial=20, query=5, cycles=2, subset=None, seed=seed, layers=["conv", "hidden"],
                   embedding_layer="hidden"),
        TrainConfig(epochs=1, batch_size=16, lr=0.01, milestones=()), task=task,
    )
    loop.label(np.arange(20), cycle=0)
    return loop


class Regressor(nn.Module):
    """An MLP on (N, D) vectors with dropout; output (B, 1)."""

    default_taps = ("hidden",)
    embedding_layer = "hidden"

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(4, 32), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.hidden(x)))


def _regression_data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 4, generator=g)
    y = x.sum(1, keepdim=True)
    # a few inputs far from the rest: the dropout ensemble disagrees most there
    x[70:80] *= 25  # pool indices 70..79
    return Dataset("toy-regression", x[:80], y[:80], x[80:], y[80:], ["y"], AugmentSpec(), task="regression")


def test_mc_variance_is_positive_when_dropout_makes_the_passes_differ():
    loop = _loop("mc-variance")
    batch = loop.query_batch(5)
    assert loop.strategy.iterations == 20
    assert batch.scores is not None and np.all(np.asarray(batch.scores) > 0)  # the passes differ
    loop.view.model.drop.p = 0.0  # no noise left: every pass agrees
    with pytest.raises(UsageError):  # refused up front when the model has no active dropout
        loop.strategy.check(loop.view)


def test_mc_variance_needs_a_dropout_layer():
    class NoDropout(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Identity()

    with pytest.raises(UsageError, match="no dropout layer with p > 0"):
        _loop("mc-variance", model=NoDropout())
    with pytest.raises(UsageError, match="at least 2 iterations"):
        build_strategy("mc-variance:iterations=1")


def test_mc_variance_ranks_regression_inputs_far_from_the_data_first_and_leaves_modes_as_they_were():
    data = _regression_data()
    loop = _loop("mc-variance", model=Regressor(), dataset=data, task=RegressionTask())
    modes = [m.training for m in loop.view.model.modules()]
    batch = loop.query_batch(10)
    assert len(set(batch.selected.tolist()) & set(range(70, 80))) >= 8
    assert [m.training for m in loop.view.model.modules()] == modes


def test_mc_variance_same_seed_same_selection():
    first = _loop("mc-variance", seed=3).query(5).tolist()
    again = _loop("mc-variance", seed=3).query(5).tolist()
    assert first == again


def test_uncertainty_is_the_tasks_own_baseline_entropy_for_classification():
    loop = _loop("uncertainty")
    by_task = loop.query_batch(7)
    entropy = _loop("entropy").query_batch(7)
    assert by_task.selected.tolist() == entropy.selected.tolist()
    np.testing.assert_allclose(by_task.scores, entropy.scores, rtol=1e-6)


def test_uncertainty_is_refused_by_a_task_without_one():
    data = _regression_data()
    loop = _loop("uncertainty", model=Regressor(), dataset=data, task=RegressionTask())
    with pytest.raises(UsageError, match="has no uncertainty score of its own"):
        loop.query(5)
