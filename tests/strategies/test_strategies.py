"""A battery every strategy inherits (scikit-activeml style), plus each strategy's own behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnloss.active.loop import ActiveLearningLoop, LoopConfig
from learnloss.errors import LearnLossError, UnknownNameError, UsageError
from learnloss.strategies import (
    STRATEGIES,
    CoreSet,
    Entropy,
    LeastConfidence,
    Margin,
    QueryContext,
    ScoreStrategy,
    WrapperStrategy,
    build_strategy,
    k_center_greedy,
    parse_strategy,
    top_k,
)
from learnloss.training import TrainConfig
from tests_support import TinyNet, make_dataset


def _loop(name: str, seed: int = 0, subset: int | None = 40) -> ActiveLearningLoop:
    torch.manual_seed(seed)
    loop = ActiveLearningLoop(
        TinyNet(), make_dataset(), build_strategy(name),
        LoopConfig(initial=20, query=5, cycles=2, subset=subset, seed=seed, layers=["conv", "hidden"],
                   embedding_layer="hidden"),
        TrainConfig(epochs=1, batch_size=16, lr=0.01, milestones=()),
    )
    loop.label(np.arange(20), cycle=0)
    return loop


#: Every registered strategy, each wrapper around a scoring strategy: a new strategy inherits the battery.
BATTERY = sorted(
    f"{name}(entropy)" if issubclass(cls, WrapperStrategy) else name for name, cls in STRATEGIES.items()
)


def test_the_battery_covers_every_registered_strategy():
    assert {parse_strategy(spec).name for spec in BATTERY} == set(STRATEGIES)
    assert "stochastic(entropy)" in BATTERY


@pytest.mark.parametrize("name", BATTERY)
class TestEveryStrategy:
    @pytest.mark.parametrize("k", [1, 7, 40])
    def test_returns_k_distinct_unlabeled_candidates(self, name, k):
        loop = _loop(name)
        selected = loop.query(k)
        assert len(selected) == k and len(np.unique(selected)) == k
        assert np.all(loop.pool.labeled_at[selected] < 0), "a labeled sample was queried again"

    def test_same_seed_same_selection(self, name):
        assert np.array_equal(_loop(name, seed=3).query(5), _loop(name, seed=3).query(5))

    def test_selects_only_from_the_scored_subset(self, name):
        loop = _loop(name, subset=10)
        subset = loop.pool.sample_unlabeled(10, np.random.default_rng(np.random.SeedSequence(0).spawn(3)[1]))
        selected = loop.query(5)
        assert set(selected.tolist()) <= set(subset.tolist())

    @pytest.mark.parametrize("k", [0, -2, 41])
    def test_bad_k_is_a_usage_error(self, name, k):
        with pytest.raises(UsageError):
            _loop(name).query(k)

    def test_is_registered_under_its_name(self, name):
        strategy = build_strategy(name)
        assert type(strategy).name == strategy.name == parse_strategy(name).name
        assert str(strategy.spec) == name

    def test_needs_are_readable_on_the_instance(self, name):
        strategy = build_strategy(name)
        inner = strategy.inner if isinstance(strategy, WrapperStrategy) else strategy
        # a wrapper provides at least what its inner strategy needs (diverse adds embeddings)
        assert strategy.needs >= type(inner).needs


def test_unknown_strategy_lists_the_names():
    with pytest.raises(UnknownNameError, match="core-set, diverse, entropy"):
        build_strategy("bald")


class Fixed(ScoreStrategy):
    name = "fixed"

    def score(self, batch):  # pragma: no cover - select is called directly below
        raise NotImplementedError


def test_score_strategies_pick_the_highest_scores():
    """docs/pitfalls.md §1: selecting the lowest predicted losses is the classic bug."""
    candidates = np.array([10, 11, 12, 13, 14])
    scores = np.array([0.1, 5.0, -2.0, 3.0, 4.0])
    context = QueryContext(rng=np.random.default_rng(0))
    assert Fixed().query(candidates, {"score": scores}, 3, context).tolist() == [11, 14, 13]


def test_non_finite_scores_are_refused():
    context = QueryContext(rng=np.random.default_rng(0))
    with pytest.raises(LearnLossError, match="non-finite"):
        Fixed().query(np.arange(3), {"score": np.array([1.0, np.nan, 2.0])}, 1, context)


def test_top_k_breaks_ties_by_position():
    assert top_k(np.array([1.0, 2.0, 2.0, 0.0, 2.0]), 2).tolist() == [1, 2]
    assert top_k(np.array([3.0, 1.0, 2.0]), 3).tolist() == [0, 2, 1]


def test_uncertainty_scores():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    entropy = Entropy.uncertainty(p)
    assert entropy[0] == pytest.approx(0.0, abs=1e-6)
    assert entropy[2] == pytest.approx(np.log(3))
    assert LeastConfidence.uncertainty(p).tolist() == pytest.approx([0.0, 0.5, 2 / 3, 0.4])
    assert Margin.uncertainty(p).tolist() == pytest.approx([-1.0, 0.0, 0.0, -0.3])
    # most uncertain first for each
    for strategy in (Entropy, LeastConfidence, Margin):
        assert int(torch.argmin(strategy.uncertainty(p))) == 0


def _brute_k_center(points, centers, k):
    chosen = []
    for _ in range(k):
        all_centers = np.concatenate([centers, points[chosen]]) if chosen else centers
        d = np.linalg.norm(points[:, None] - all_centers[None], axis=2).min(axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    return chosen


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_k_center_greedy_matches_brute_force_for_any_chunk(chunk):
    rng = np.random.default_rng(0)
    points, centers = rng.normal(size=(50, 4)), rng.normal(size=(7, 4))
    picks = k_center_greedy(torch.tensor(points), torch.tensor(centers), 6, chunk=chunk)
    assert picks.tolist() == _brute_k_center(points, centers, 6)


def test_k_center_greedy_without_labeled_set_and_with_duplicates():
    points = torch.zeros(5, 2)
    picks = k_center_greedy(points, torch.zeros(0, 2), 5)
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 4]


def test_core_set_uses_labeled_embeddings():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [5.0, 5.0]], dtype=np.float32)
    context = QueryContext(rng=np.random.default_rng(0), labeled_embeddings=np.array([[0.0, 0.0]], dtype=np.float32))
    assert CoreSet().query(np.array([7, 8, 9, 6]), {"embedding": points}, 2, context).tolist() == [9, 6]
