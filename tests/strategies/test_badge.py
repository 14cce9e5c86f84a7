"""BADGE (Ash et al., ICLR 2020): k-means++ seeding over last-layer gradient embeddings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.strategies import (
    Badge,
    QueryContext,
    badge_seeding,
    build_strategy,
    gradient_factors,
    gradient_sq_distances,
)
from learnloss.tasks import ClassificationTask
from tests_support import TinyNet


def _random(n=40, classes=4, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    probabilities = torch.softmax(3 * torch.randn(n, classes, generator=g, dtype=torch.float64), dim=1)
    return probabilities, torch.randn(n, dim, generator=g, dtype=torch.float64)


def _explicit(probabilities, embeddings):
    """The gradient embeddings themselves, (N, K*D): what BADGE never forms."""
    a = probabilities.clone()
    a[torch.arange(len(a)), probabilities.argmax(dim=1)] -= 1
    return (a[:, :, None] * embeddings[:, None, :]).reshape(len(a), -1)


def test_the_factors_are_p_minus_the_onehot_of_the_hypothesised_label():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert torch.allclose(gradient_factors(p), torch.tensor([[-0.3, 0.2, 0.1], [0.1, 0.3, -0.4]]))


def test_the_gradient_embedding_is_the_last_layer_gradient():
    """``(p - onehot(ŷ)) ⊗ h`` is the cross-entropy's gradient for label ŷ with respect to the last weight."""
    h = torch.randn(1, 5, dtype=torch.float64)
    fc = torch.nn.Linear(5, 3, dtype=torch.float64)
    logits = fc(h)
    label = logits.argmax(dim=1)
    torch.nn.functional.cross_entropy(logits, label).backward()
    expected = _explicit(torch.softmax(logits.detach(), dim=1), h)
    assert torch.allclose(fc.weight.grad.reshape(1, -1), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_factorised_distance_equals_the_explicit_one(seed):
    probabilities, embeddings = _random(seed=seed)
    g = _explicit(probabilities, embeddings)
    a = gradient_factors(probabilities)
    for center in (0, 7, 39):
        expected = ((g - g[center]) ** 2).sum(dim=1)
        assert torch.allclose(gradient_sq_distances(a, embeddings, center), expected, rtol=1e-9, atol=1e-12)
        assert gradient_sq_distances(a, embeddings, center)[center] == 0


def test_duplicates_are_at_distance_zero_despite_round_off():
    probabilities, embeddings = _random(n=5, seed=3)
    probabilities, embeddings = probabilities[[0, 0, 1, 2, 0]], embeddings[[0, 0, 1, 2, 0]]
    d = gradient_sq_distances(gradient_factors(probabilities), embeddings, 1)
    assert d[[0, 1, 4]].tolist() == [0.0, 0.0, 0.0] and (d[[2, 3]] > 0).all()


def test_first_pick_is_the_largest_gradient_norm_then_k_distinct():
    probabilities, embeddings = _random(n=50, seed=4)
    norms = _explicit(probabilities, embeddings).norm(dim=1)
    for seed in range(5):
        picks = badge_seeding(probabilities, embeddings, 20, np.random.default_rng(seed))
        assert picks[0] == int(torch.argmax(norms))
        assert len(picks) == 20 and len(np.unique(picks)) == 20
    assert sorted(badge_seeding(probabilities, embeddings, 50, np.random.default_rng(0)).tolist()) == list(range(50))


def test_same_seed_same_picks_and_seeds_matter():
    probabilities, embeddings = _random(n=60, seed=5)
    first = badge_seeding(probabilities, embeddings, 10, np.random.default_rng(7))
    assert np.array_equal(first, badge_seeding(probabilities, embeddings, 10, np.random.default_rng(7)))
    draws = {tuple(badge_seeding(probabilities, embeddings, 10, np.random.default_rng(s))) for s in range(5)}
    assert len(draws) >= 2


def test_second_pick_follows_the_squared_distance():
    """With one center chosen, the next is drawn with probability ∝ D² (Arthur & Vassilvitskii 2007)."""
    p = torch.tensor([[0.5, 0.5]] * 4, dtype=torch.float64)  # a = (-0.5, 0.5) for every candidate
    h = torch.tensor([[3.0], [1.0], [2.0], [0.0]], dtype=torch.float64)  # g ∝ h; candidate 0 has the largest norm
    a = gradient_factors(p)
    d2 = gradient_sq_distances(a, h, 0).numpy()
    expected = np.array([0.0, d2[1], d2[2], 0.0]) / (d2[1] + d2[2])  # candidate 3: zero gradient, taken last
    counts = Counter(int(badge_seeding(p, h, 2, np.random.default_rng(s))[1]) for s in range(3000))
    assert counts[0] == counts[3] == 0
    assert counts[1] / 3000 == pytest.approx(expected[1], abs=0.03)
    assert counts[2] / 3000 == pytest.approx(expected[2], abs=0.03)


def test_zero_gradient_embeddings_come_last():
    """Confident (one-hot) predictions have g = 0: never picked while another candidate is left."""
    probabilities, embeddings = _random(n=20, seed=6)
    confident = [2, 5, 11, 17]
    probabilities[confident] = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 4).double()
    for seed in range(10):
        picks = badge_seeding(probabilities, embeddings, 20, np.random.default_rng(seed))
        assert sorted(picks[16:].tolist()) == confident
        assert not set(badge_seeding(probabilities, embeddings, 16, np.random.default_rng(seed))) & set(confident)
    everything = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).double()
    picks = badge_seeding(everything, embeddings[:6], 6, np.random.default_rng(0))
    assert sorted(picks.tolist()) == list(range(6))


def test_duplicates_are_drawn_uniformly_once_every_distance_is_zero():
    probabilities, embeddings = _random(n=1, seed=7)
    probabilities, embeddings = probabilities.repeat(8, 1), embeddings.repeat(8, 1)
    firsts = Counter()
    for seed in range(200):
        picks = badge_seeding(probabilities, embeddings, 8, np.random.default_rng(seed))
        assert picks[0] == 0 and sorted(picks.tolist()) == list(range(8))
        firsts[int(picks[1])] += 1
    assert set(firsts) == set(range(1, 8))


@pytest.mark.parametrize("seed", range(5))
def test_separated_groups_of_equal_norm_are_each_picked_first(seed):
    """Three well-separated groups, all gradients of equal norm: the first three picks cover the groups."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(np.repeat(np.arange(3), 30))
    directions = np.eye(3)[group] + 1e-3 * rng.normal(size=(90, 3))
    embeddings = torch.tensor(directions / np.linalg.norm(directions, axis=1, keepdims=True))
    probabilities = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64).repeat(90, 1)
    picks = badge_seeding(probabilities, embeddings, 3, np.random.default_rng(seed))
    assert sorted(group[picks].tolist()) == [0, 1, 2]


# --- the strategy -----------------------------------------------------------------------------------------------


def test_needs_collect_and_registered_name():
    strategy = build_strategy("badge")
    assert isinstance(strategy, Badge) and strategy.needs == {Need.PROBABILITIES, Need.EMBEDDINGS}
    assert str(strategy.spec) == "badge" and strategy.training_stages == ()
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    batch = BatchOutputs(ModelView(TinyNet(), ClassificationTask()), torch.arange(2), torch.zeros(2, 1), logits, None)
    batch.__dict__["embeddings"] = torch.ones(2, 16)
    collected = strategy.collect(batch)
    assert collected.keys() == {"probabilities", "embedding"}
    assert torch.allclose(collected["probabilities"], torch.softmax(logits, dim=1))


def test_refuses_a_task_that_is_not_classification():
    from learnloss.tasks.regression import RegressionTask

    build_strategy("badge").check(ModelView(TinyNet(), ClassificationTask()))
    with pytest.raises(UsageError, match="badge embeds the gradient of the classification loss, but the task is 'regression'") as info:
        build_strategy("badge").check(ModelView(TinyNet(), RegressionTask()))
    assert "\n" not in str(info.value)


def test_query_returns_pool_indices_in_pick_order_and_refuses_non_finite_values():
    probabilities, embeddings = _random(n=30, seed=8)
    values = {"probabilities": probabilities.float().numpy(), "embedding": embeddings.float().numpy()}
    candidates = np.arange(1000, 1030)
    picks = Badge().query(candidates, values, 6, QueryContext(rng=np.random.default_rng(1)))
    expected = badge_seeding(probabilities.float(), embeddings.float(), 6, np.random.default_rng(1))
    assert picks.tolist() == candidates[expected].tolist()
    values["embedding"][4, 0] = np.inf
    with pytest.raises(LearnLossError, match="non-finite .* pool index 1004"):
        Badge().query(candidates, values, 6, QueryContext(rng=np.random.default_rng(1)))
