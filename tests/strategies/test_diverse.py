"""Loss-aware diverse selection (Hwang, Choi & Choi, IEEE Access 2024): shortlist by score, cluster, best of each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.strategies import (
    DiverseSelection,
    Entropy,
    Margin,
    QueryContext,
    RandomSampling,
    Shortlist,
    build_strategy,
    max_shortlist,
    plan_shortlist,
    shortlist_cluster,
    strategy_parameters,
    top_k,
)
from learnloss.strategies.diverse import BYTES_PER_PAIR
from learnloss.tasks import ClassificationTask
from tests_support import TinyNet

METHODS = ("agglomerative", "kmeans")


def _blobs(sizes=(10, 10, 10, 10, 10), spread=0.01, seed=0, dim=8):
    """Tight blobs around far-apart centers (20 * e_b), shuffled; returns embeddings and each point's blob."""
    rng = np.random.default_rng(seed)
    blob = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(blob)
    centers = 20.0 * np.eye(max(dim, len(sizes)))[: len(sizes), :dim]
    embeddings = (centers[blob] + spread * rng.normal(size=(len(blob), dim))).astype(np.float32)
    return embeddings, blob


def _best_of_each_blob(scores, blob):
    best = [int(np.flatnonzero(blob == b)[np.argmax(scores[blob == b])]) for b in np.unique(blob)]
    return sorted(best, key=lambda i: -scores[i])


def _pick(scores, embeddings, k, seed=0, **kwargs):
    kwargs = {"ratio": 10.0, "method": "agglomerative", "memory_mb": 1024} | kwargs
    return shortlist_cluster(np.asarray(scores), embeddings, k, rng=np.random.default_rng(seed), **kwargs)


# --- the selection ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pick_per_cluster_the_best_of_each_highest_first(method, seed):
    embeddings, blob = _blobs(seed=seed)
    scores = np.random.default_rng(10 + seed).uniform(size=len(blob))
    picks = _pick(scores, embeddings, 5, seed=seed, method=method)
    assert picks.tolist() == _best_of_each_blob(scores, blob)
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", METHODS)
def test_diverse_where_plain_top_k_takes_one_blob(method):
    embeddings, blob = _blobs()
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.0, 1.0, size=len(blob))
    scores[blob == 0] += 10.0  # every score in blob 0 beats every other one
    assert set(blob[top_k(scores, 5)].tolist()) == {0}
    picks = _pick(scores, embeddings, 5, method=method)
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3, 4]
    assert picks.tolist() == _best_of_each_blob(scores, blob)
    assert picks[0] == int(np.argmax(scores))


@pytest.mark.parametrize("method", METHODS)
def test_the_shortlist_limits_what_can_be_picked(method):
    """With ratio=1 the shortlist is the top k itself: clustering cannot bring in a lower score."""
    embeddings, blob = _blobs()
    scores = np.random.default_rng(4).uniform(size=len(blob))
    assert _pick(scores, embeddings, 5, ratio=1.0, method=method).tolist() == top_k(scores, 5).tolist()
    assert _pick(scores, embeddings, 5, ratio=0.01, method=method).tolist() == top_k(scores, 5).tolist()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 9, 30, 60])
def test_exactly_k_distinct_picks_highest_score_first(method, k):
    rng = np.random.default_rng(k)
    scores, embeddings = rng.normal(size=60), rng.normal(size=(60, 6)).astype(np.float32)
    picks = _pick(scores, embeddings, k, method=method, ratio=2.0)
    assert len(picks) == k and len(np.unique(picks)) == k
    assert np.all(np.diff(scores[picks]) <= 0)
    assert picks[0] == int(np.argmax(scores))


@pytest.mark.parametrize("method", METHODS)
def test_duplicate_embeddings_fill_up_with_the_next_scores(method):
    """All embeddings equal: k-means finds one non-empty cluster; the batch is filled by score."""
    scores = np.random.default_rng(5).uniform(size=30)
    picks = _pick(scores, np.ones((30, 4), dtype=np.float32), 6, method=method, ratio=3.0)
    assert len(np.unique(picks)) == 6 and picks[0] == int(np.argmax(scores))
    if method == "kmeans":
        assert picks.tolist() == top_k(scores, 6).tolist()


@pytest.mark.parametrize("method", METHODS)
def test_ties_are_broken_by_position_and_inputs_give_the_same_picks(method):
    embeddings, blob = _blobs(seed=6)
    scores = np.ones(len(blob))
    picks = _pick(scores, embeddings, 5, method=method)
    assert picks.tolist() == sorted(int(np.flatnonzero(blob == b)[0]) for b in range(5))
    assert np.array_equal(_pick(scores, embeddings, 5, method=method), picks)
    assert _pick(scores, embeddings, len(blob), method=method).tolist() == list(range(len(blob)))


def test_kmeans_is_deterministic_under_the_same_seed():
    rng = np.random.default_rng(7)
    scores, embeddings = rng.normal(size=200), rng.normal(size=(200, 4)).astype(np.float32)
    first = _pick(scores, embeddings, 20, seed=11, method="kmeans", ratio=5)
    assert np.array_equal(first, _pick(scores, embeddings, 20, seed=11, method="kmeans", ratio=5))
    others = {tuple(_pick(scores, embeddings, 20, seed=s, method="kmeans", ratio=5)) for s in range(4)}
    assert len(others) >= 2, "the k-means seed does not come from the generator"


def test_shape_mismatch_is_a_bug():
    with pytest.raises(ValueError, match="embeddings"):
        _pick(np.ones(5), np.ones((4, 2)), 2)


# --- the memory budget ------------------------------------------------------------------------------------------


def test_max_shortlist_fits_the_budget_and_grows_with_it():
    sizes = [max_shortlist(mb) for mb in (1, 2, 10, 64, 512, 1024, 4096, 4800)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for mb in (1, 7, 1024, 4800):
        s = max_shortlist(mb)
        assert BYTES_PER_PAIR * s * (s - 1) / 2 <= mb * 2**20 < BYTES_PER_PAIR * (s + 1) * s / 2
    assert max_shortlist(1024) == 11585
    assert max_shortlist(4800) >= 25_000, "the paper's 25,000 shortlist needs about 4.7 GiB"
    assert max_shortlist(0) == 1


def test_a_small_budget_cuts_the_shortlist_and_the_strategy_reports_it():
    rng = np.random.default_rng(8)
    scores, embeddings = rng.normal(size=1000), rng.normal(size=(1000, 3)).astype(np.float32)
    limit = max_shortlist(1)
    assert 5 < limit < 500
    assert plan_shortlist(1000, 5, ratio=100, method="agglomerative", memory_mb=1) == Shortlist(500, limit, limit)
    assert plan_shortlist(1000, 5, ratio=100, method="kmeans", memory_mb=1) == Shortlist(500, 500)
    assert plan_shortlist(1000, 5, ratio=10, method="agglomerative", memory_mb=1) == Shortlist(50, 50, limit)
    assert plan_shortlist(30, 5, ratio=10, method="agglomerative", memory_mb=1).size == 30

    strategy = build_strategy("diverse(entropy):ratio=100:memory-mb=1")
    assert strategy.last_shortlist is None
    picks = strategy.query(np.arange(1000), {"score": scores, "embedding": embeddings}, 5,
                           QueryContext(rng=np.random.default_rng(0)))
    assert strategy.last_shortlist.cut and strategy.last_shortlist.size == limit
    ranked = top_k(scores, limit)
    assert set(picks.tolist()) <= set(ranked.tolist()), "a pick from outside the cut shortlist"
    uncut = build_strategy("diverse(entropy):ratio=2:memory-mb=1")
    uncut.query(np.arange(1000), {"score": scores, "embedding": embeddings}, 5, QueryContext(rng=np.random.default_rng(0)))
    assert uncut.last_shortlist == Shortlist(10, 10, limit) and not uncut.last_shortlist.cut


def test_a_budget_below_k_is_an_actionable_usage_error():
    k = max_shortlist(1) + 1
    with pytest.raises(UsageError, match=r"k=\d+ clusters .* more than memory-mb=1; use method=kmeans or raise memory-mb to 2$"):
        plan_shortlist(2 * k, k, ratio=1, method="agglomerative", memory_mb=1)
    rng = np.random.default_rng(9)
    values = {"score": rng.normal(size=2 * k), "embedding": rng.normal(size=(2 * k, 2)).astype(np.float32)}
    with pytest.raises(UsageError, match="use method=kmeans"):
        build_strategy("diverse(margin):memory-mb=1").query(np.arange(2 * k), values, k, QueryContext(rng=rng))


# --- the strategy -----------------------------------------------------------------------------------------------


def test_spec_grammar_and_parameters():
    assert strategy_parameters("diverse") == ("ratio", "method", "memory_mb")
    strategy = build_strategy("diverse(margin):method=kmeans:ratio=4")
    assert isinstance(strategy, DiverseSelection) and isinstance(strategy.inner, Margin)
    assert (strategy.method, strategy.ratio, strategy.memory_mb) == ("kmeans", 4.0, 1024)
    assert str(strategy.spec) == "diverse(margin):method=kmeans:ratio=4.0"
    assert str(build_strategy("diverse(learning-loss)").spec) == "diverse(learning-loss)"
    assert str(DiverseSelection(Entropy(), memory_mb=64).spec) == "diverse(entropy):memory-mb=64"
    assert build_strategy("diverse(learning-loss)").training_stages == ()


@pytest.mark.parametrize("inner", ["core-set", "random", "badge", "ssl-lpm", "stochastic(entropy)"])
def test_a_non_scoring_inner_strategy_is_refused_at_build_time(inner):
    with pytest.raises(UsageError, match=r"diverse shortlists by score, but .* does not score candidates one by one"):
        build_strategy(f"diverse({inner})")
    with pytest.raises(UsageError, match="does not score"):
        DiverseSelection(RandomSampling())


@pytest.mark.parametrize(("spec", "problem"), [
    ("diverse(entropy):ratio=0", "'ratio' of diverse must be a positive number"),
    ("diverse(entropy):ratio=-2", "'ratio' of diverse must be a positive number"),
    ("diverse(entropy):memory-mb=0", "'memory-mb' of diverse must be a positive number of MiB"),
    ("diverse(entropy):method=ward", "'method' of diverse must be one of agglomerative, kmeans"),
])
def test_bad_parameters_are_refused(spec, problem):
    with pytest.raises(UsageError, match=problem):
        build_strategy(spec)


@pytest.mark.parametrize(("inner", "needs"), [
    ("entropy", {Need.PROBABILITIES}),
    ("learning-loss", {Need.LPM_SCORES}),
    ("true-loss", {Need.TRUE_LOSSES}),
    ("baal-bald:iterations=3", {Need.INPUTS}),
])
def test_needs_are_the_inner_strategys_plus_embeddings(inner, needs):
    strategy = build_strategy(f"diverse({inner})")
    assert strategy.needs == frozenset(needs) | strategy.inner.needs | {Need.EMBEDDINGS}


def test_collect_keeps_the_inner_values_and_the_embeddings():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    batch = BatchOutputs(ModelView(TinyNet(), ClassificationTask()), torch.arange(2), torch.zeros(2, 1), logits, None)
    batch.__dict__["embeddings"] = torch.arange(8.0).reshape(2, 4)  # as the model's embedding layer would give
    collected = build_strategy("diverse(entropy)").collect(batch)
    assert collected.keys() == {"score", "embedding"}
    assert torch.allclose(collected["score"], Entropy().collect(batch)["score"])
    assert torch.equal(collected["embedding"], batch.embeddings)


def test_the_strategy_returns_pool_indices_and_refuses_non_finite_values():
    embeddings, blob = _blobs()
    scores = np.random.default_rng(12).uniform(size=len(blob))
    candidates = np.arange(500, 500 + len(blob))
    strategy = build_strategy("diverse(entropy)")
    picks = strategy.query(candidates, {"score": scores, "embedding": embeddings}, 5, QueryContext(rng=np.random.default_rng(0)))
    assert picks.tolist() == (candidates[_best_of_each_blob(scores, blob)]).tolist()
    bad = embeddings.copy()
    bad[3, 1] = np.nan
    with pytest.raises(LearnLossError, match=rf"1 non-finite embeddings .*pool index {candidates[3]}"):
        strategy.query(candidates, {"score": scores, "embedding": bad}, 5, QueryContext(rng=np.random.default_rng(0)))
    scores[4] = np.inf
    with pytest.raises(LearnLossError, match="non-finite scores"):
        strategy.query(candidates, {"score": scores, "embedding": embeddings}, 5, QueryContext(rng=np.random.default_rng(0)))


def test_diverse_learning_loss_in_the_loop():
    """The loop reads the wrapper's needs: it attaches the LPM, streams its scores and the embeddings."""
    from learnloss.active.loop import ActiveLearningLoop, LoopConfig
    from learnloss.training import TrainConfig
    from tests_support import make_dataset

    def run(spec: str):
        torch.manual_seed(0)
        loop = ActiveLearningLoop(
            TinyNet(), make_dataset(), build_strategy(spec),
            LoopConfig(initial=20, query=5, cycles=2, subset=40, seed=1, layers=["conv", "hidden"],
                       embedding_layer="hidden"),
            TrainConfig(epochs=1, batch_size=16, lr=0.01, milestones=()),
        )
        assert loop.view.learning_loss is not None
        loop.label(np.arange(20), cycle=0)
        return loop, loop.query_scored(5)

    loop, (selected, scores) = run("diverse(learning-loss):ratio=4")
    assert len(np.unique(selected)) == 5 and scores is not None and np.all(np.diff(scores) <= 0)
    assert loop.strategy.last_shortlist == Shortlist(20, 20, max_shortlist(1024))
    _, (again, _) = run("diverse(learning-loss):ratio=4")
    assert np.array_equal(selected, again)
    _, (kmeans, _) = run("diverse(learning-loss):ratio=4:method=kmeans")
    assert len(np.unique(kmeans)) == 5
