"""Stochastic batch acquisition (Kirsch et al., arXiv:2106.12059): a wrapper that samples the batch by score."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.models import SmallCNN
from learnloss.strategies import (
    STRATEGIES,
    Entropy,
    LearningLossStrategy,
    QueryContext,
    RandomSampling,
    ScoreStrategy,
    StochasticBatchAcquisition,
    WrapperStrategy,
    build_strategy,
    gumbel_top_k,
    top_k,
)
from learnloss.tasks import ClassificationTask
from tests_support import TinyNet

MODES = ("softmax", "power", "softrank")
SCORING = sorted(name for name, cls in STRATEGIES.items() if issubclass(cls, ScoreStrategy))


def _select(spec: str, scores, k: int, seed: int = 0, candidates=None) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.arange(100, 100 + len(scores)) if candidates is None else candidates
    return build_strategy(spec).query(candidates, {"score": scores}, k, QueryContext(rng=np.random.default_rng(seed)))


# --- a wrapper delegates everything but the selection -----------------------------------------------------------


@pytest.mark.parametrize("inner", SCORING)
def test_needs_are_the_inner_strategys(inner):
    wrapper = build_strategy(f"stochastic({inner})")
    assert isinstance(wrapper, WrapperStrategy)
    assert wrapper.needs == STRATEGIES[inner].needs


def test_stochastic_learning_loss_needs_the_lpm():
    assert build_strategy("stochastic(learning-loss)").needs == LearningLossStrategy.needs == frozenset({Need.LPM_SCORES})


def test_check_is_delegated():
    view = ModelView(SmallCNN(1, 3, width=4, dropout=0.0), ClassificationTask())
    with pytest.raises(UsageError, match="no dropout layer"):
        build_strategy("stochastic(baal-bald:iterations=3)").check(view)
    build_strategy("stochastic(entropy)").check(view)


def test_scoring_is_delegated():
    """MC dropout of the inner Baal strategy is on while the wrapper scores, and off afterwards."""
    model = TinyNet().eval()
    view = ModelView(model, ClassificationTask())
    x = torch.rand(6, 1, 8, 8)
    before = model(x)
    with build_strategy("stochastic(baal-bald:iterations=3)").scoring(view, QueryContext(rng=np.random.default_rng(0))):
        assert not torch.equal(model(x), model(x))
    assert torch.equal(model(x), before)


def test_collect_is_delegated():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    batch = BatchOutputs(ModelView(TinyNet(), ClassificationTask()), torch.arange(2), torch.zeros(2, 1), logits, None)
    collected = build_strategy("stochastic(entropy)").collect(batch)
    assert collected.keys() == {"score"}
    assert torch.allclose(collected["score"], Entropy().collect(batch)["score"])


@pytest.mark.parametrize("inner", ["random", "core-set", "stochastic(entropy)"])
def test_a_non_scoring_inner_strategy_is_refused_at_build_time(inner):
    with pytest.raises(UsageError, match=rf"stochastic samples by score, but {inner.replace('(', '.').replace(')', '.')} "
                                         "does not score candidates one by one"):
        build_strategy(f"stochastic({inner})")
    with pytest.raises(UsageError, match="does not score"):
        StochasticBatchAcquisition(RandomSampling())


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"mode": "gumbel"}, "'mode' of stochastic must be one of softmax, power, softrank"),
    ({"beta": 0.0}, "'beta' of stochastic must be a positive number"),
    ({"beta": -1.0}, "'beta' of stochastic must be a positive number"),
    ({"beta": float("inf")}, "'beta' of stochastic must be a positive number"),
])
def test_bad_mode_or_beta_is_refused(kwargs, problem):
    with pytest.raises(UsageError, match=problem):
        StochasticBatchAcquisition(Entropy(), **kwargs)


# --- the sampling -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_selection_different_seed_usually_different(mode):
    scores = np.random.default_rng(7).uniform(0.1, 1.0, size=60)
    spec = f"stochastic(entropy):mode={mode}"
    assert np.array_equal(_select(spec, scores, 10, seed=3), _select(spec, scores, 10, seed=3))
    selections = {tuple(_select(spec, scores, 10, seed=seed)) for seed in range(5)}
    assert len(selections) >= 4


@pytest.mark.parametrize("mode", MODES)
def test_a_large_beta_picks_the_top_k_in_order(mode):
    scores = np.random.default_rng(1).uniform(0.1, 1.0, size=50)
    beta = {"softmax": 1e6, "power": 1e4, "softrank": 1e3}[mode]
    expected = np.arange(100, 150)[top_k(scores, 8)]
    for seed in range(5):
        assert _select(f"stochastic(entropy):mode={mode}:beta={beta}", scores, 8, seed=seed).tolist() == expected.tolist()


@pytest.mark.parametrize("mode", MODES)
def test_the_highest_score_is_picked_more_often_than_the_lowest(mode):
    scores = np.linspace(0.1, 1.0, 10)
    picks = Counter(int(_select(f"stochastic(entropy):mode={mode}", scores, 1, seed=seed)[0]) for seed in range(400))
    assert picks[109] > 2 * picks[100]
    assert len(picks) >= 5, "the selection is not stochastic"


@pytest.mark.parametrize(("mode", "beta", "scores", "weights"), [
    ("softmax", 1.0, [0.0, 1.0, 2.0], [1.0, np.e, np.e**2]),
    ("softmax", 2.0, [5.0, 5.5, 7.0], [1.0, np.e, np.e**4]),
    ("power", 2.0, [1.0, 2.0, 3.0], [1.0, 4.0, 9.0]),
    ("softrank", 1.0, [0.3, -5.0, 9.0], [1 / 2, 1 / 3, 1.0]),
    ("softrank", 2.0, [0.3, -5.0, 9.0], [1 / 4, 1 / 9, 1.0]),
])
def test_first_draw_follows_the_mode_s_distribution(mode, beta, scores, weights):
    strategy = StochasticBatchAcquisition(Entropy(), mode=mode, beta=beta)
    p = np.asarray(weights) / np.sum(weights)
    log_weights = strategy.log_weights(np.asarray(scores))
    assert np.exp(log_weights - log_weights.max()) / np.exp(log_weights - log_weights.max()).sum() == pytest.approx(p)
    rng = np.random.default_rng(0)
    draws = 20_000
    counts = np.bincount([gumbel_top_k(log_weights, 1, rng)[0] for _ in range(draws)], minlength=3)
    assert counts / draws == pytest.approx(p, abs=0.015)


def test_gumbel_top_k_samples_without_replacement():
    """P(first i, then j) = p_i * p_j / (1 - p_i) (sequential sampling without replacement)."""
    p = np.array([0.7, 0.2, 0.1])
    rng = np.random.default_rng(0)
    draws = 20_000
    pairs = Counter(tuple(gumbel_top_k(np.log(p), 2, rng).tolist()) for _ in range(draws))
    for (i, j), count in pairs.items():
        assert i != j
        assert count / draws == pytest.approx(p[i] * p[j] / (1 - p[i]), abs=0.015)


def test_softrank_ignores_the_scale_of_the_scores():
    scores = np.random.default_rng(2).normal(size=30)
    spec = "stochastic(entropy):mode=softrank:beta=1.5"
    assert np.array_equal(_select(spec, scores, 6, seed=4), _select(spec, 1000 * scores + 7, 6, seed=4))


def test_softmax_handles_huge_scores():
    picks = _select("stochastic(entropy):mode=softmax", [1e300, 1e300 - 1e290, 0.0], 2)
    assert sorted(picks.tolist()) == [100, 101]


def test_picks_are_pool_indices_of_the_candidates():
    candidates = np.array([42, 7, 19, 3])
    picks = _select("stochastic(entropy)", [0.1, 0.2, 0.3, 0.4], 4, candidates=candidates)
    assert sorted(picks.tolist()) == [3, 7, 19, 42]


# --- refusals ---------------------------------------------------------------------------------------------------


def test_power_mode_refuses_negative_scores():
    with pytest.raises(UsageError, match=r"power mode needs non-negative scores, but margin gave 2 negative ones"):
        _select("stochastic(margin):mode=power", [-0.1, 0.0, -0.5, 0.3], 2)


def test_power_mode_takes_zero_scores_last_and_tolerates_round_off():
    for seed in range(10):
        picks = _select("stochastic(entropy):mode=power", [0.0, 2.0, -1e-12, 1.0], 3, seed=seed).tolist()
        assert sorted(picks[:2]) == [101, 103] and picks[2] in (100, 102)
    thirds = {_select("stochastic(entropy):mode=power", [0.0, 2.0, 0.0, 1.0], 3, seed=seed)[2] for seed in range(20)}
    assert thirds == {100, 102}, "zero scores are not drawn uniformly"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(mode, bad):
    with pytest.raises(LearnLossError, match=r"strategy stochastic\(entropy\).* got 1 non-finite scores .*pool index 101"):
        _select(f"stochastic(entropy):mode={mode}", [0.5, bad, 0.2], 1)


# --- in the loop ------------------------------------------------------------------------------------------------


def test_stochastic_learning_loss_in_the_loop():
    """The loop reads the wrapper's needs: it attaches the LPM, streams its scores and reports each pick's score."""
    from learnloss.active.loop import ActiveLearningLoop, LoopConfig
    from learnloss.training import TrainConfig
    from tests_support import make_dataset

    def run(seed: int):
        torch.manual_seed(0)
        loop = ActiveLearningLoop(
            TinyNet(), make_dataset(), build_strategy("stochastic(learning-loss):mode=softmax"),
            LoopConfig(initial=20, query=5, cycles=2, subset=40, seed=seed, layers=["conv", "hidden"],
                       embedding_layer="hidden"),
            TrainConfig(epochs=1, batch_size=16, lr=0.01, milestones=()),
        )
        assert loop.view.learning_loss is not None
        loop.label(np.arange(20), cycle=0)
        return loop.query_scored(5)

    selected, scores = run(seed=1)
    assert len(np.unique(selected)) == 5 and scores is not None and np.isfinite(scores).all()
    again, _ = run(seed=1)
    assert np.array_equal(selected, again)
