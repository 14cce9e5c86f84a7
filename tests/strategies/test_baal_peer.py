"""The Baal peer strategies: Baal's heuristics on MC-dropout samples, driven inside the learnloss loop."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from learnloss.inference import BatchOutputs, ModelView
from learnloss.errors import UsageError
from learnloss.models import SmallCNN
from learnloss.strategies import BaalBALD, BaalEntropy, QueryContext
from learnloss.tasks import ClassificationTask
from tests_support import TinyNet



class Replay(nn.Module):
    """Returns the given logits one after another, as successive MC-dropout passes would."""

    def __init__(self, logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.logits = list(logits)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.pop(0)


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    return -(p * np.log(p)).sum(axis=axis)


def _scores(strategy, logits):
    model = Replay(logits[1:])
    batch = BatchOutputs(ModelView(model, ClassificationTask()), torch.arange(4), torch.zeros(4, 1), logits[0], None)
    return strategy.score(batch).numpy(), torch.softmax(torch.stack(logits, dim=-1), dim=1).numpy()


def test_bald_is_the_mutual_information_of_the_mc_samples():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(4, 3, generator=g) for _ in range(5)]
    scores, p = _scores(BaalBALD(iterations=5), logits)
    expected = _entropy(p.mean(axis=-1), axis=1) - _entropy(p, axis=1).mean(axis=-1)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert (scores > 0).all()


def test_bald_is_zero_when_every_pass_agrees_but_entropy_is_not():
    logits = [torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 1.0, 0.0], [0.0, 3.0, 0.0]])] * 4
    bald, _ = _scores(BaalBALD(iterations=4), logits)
    entropy, p = _scores(BaalEntropy(iterations=4), logits)
    assert bald == pytest.approx(np.zeros(4), abs=1e-5)
    assert entropy == pytest.approx(_entropy(p[..., 0], axis=1), abs=1e-5)


def test_a_model_without_dropout_is_refused_before_training():
    with pytest.raises(UsageError, match="--dropout"):
        BaalBALD().check(ModelView(SmallCNN(1, 3, width=4, dropout=0.0), ClassificationTask()))
    BaalBALD().check(ModelView(SmallCNN(1, 3, width=4, dropout=0.3), ClassificationTask()))


def test_scoring_turns_dropout_on_then_restores_the_model_and_the_global_rng():
    model = TinyNet().eval()
    view = ModelView(model, ClassificationTask())
    x = torch.rand(6, 1, 8, 8)
    before = model(x)
    rng_state = torch.get_rng_state()
    context = QueryContext(rng=np.random.default_rng(0))
    with BaalBALD().scoring(view, context):
        assert not torch.equal(model(x), model(x)), "dropout is not sampled at query time"
    assert type(model.drop) is nn.Dropout
    assert torch.equal(model(x), before)
    assert torch.equal(torch.get_rng_state(), rng_state), "MC sampling consumed the training RNG"


def test_the_masks_come_from_the_query_seed():
    model = TinyNet().eval()
    view = ModelView(model, ClassificationTask())
    x = torch.rand(6, 1, 8, 8)

    def sample(seed: int) -> torch.Tensor:
        with BaalBALD().scoring(view, QueryContext(rng=np.random.default_rng(seed))):
            return model(x)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_too_few_iterations_are_refused():
    with pytest.raises(UsageError, match="at least 2"):
        BaalBALD(iterations=1)


def test_missing_baal_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "baal.active.heuristics", None)
    with pytest.raises(UsageError, match=r"learnloss\[peer\]"):
        BaalBALD()


def test_the_loop_refuses_a_model_without_dropout_before_training():
    from learnloss.active.loop import ActiveLearningLoop, LoopConfig
    from learnloss.training import TrainConfig
    from tests_support import make_dataset

    with pytest.raises(UsageError, match="no dropout layer"):
        ActiveLearningLoop(
            SmallCNN(1, 3, width=4), make_dataset(), BaalBALD(),
            LoopConfig(initial=20, query=5, cycles=2, layers=["block1"], embedding_layer="hidden"),
            TrainConfig(epochs=1, batch_size=16, milestones=()),
        )
