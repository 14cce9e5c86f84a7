"""ssl-lpm: the method of Hwang, Choi & Choi (IEEE Access 2024) under one name, and its ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnloss.errors import LearnLossError, UsageError
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.strategies import (
    SSLLPM,
    QueryContext,
    Shortlist,
    build_strategy,
    max_shortlist,
    shortlist_cluster,
    strategy_parameters,
    top_k,
)
from learnloss.tasks import ClassificationTask
from tests_support import TinyNet


def _values(n=60, seed=0):
    rng = np.random.default_rng(seed)
    blob = rng.permutation(np.repeat(np.arange(6), n // 6))
    embeddings = (20.0 * np.eye(6)[blob] + 0.01 * rng.normal(size=(n, 6))).astype(np.float32)
    scores = rng.uniform(size=n)
    scores[blob == 0] += 5.0  # plain top-k takes only blob 0
    return {"score": scores, "embedding": embeddings}, blob


def test_spec_grammar_parameters_and_training_stages():
    assert strategy_parameters("ssl-lpm") == ("semi", "cluster", "ratio", "method", "memory_mb")
    full = build_strategy("ssl-lpm")
    assert isinstance(full, SSLLPM) and str(full.spec) == "ssl-lpm"
    assert (full.semi, full.cluster, full.ratio, full.method, full.memory_mb) == (True, True, 10.0, "agglomerative", 1024)
    assert full.training_stages == ("semi-lpm",)
    without_b = build_strategy("ssl-lpm:semi=false")
    assert without_b.training_stages == () and str(without_b.spec) == "ssl-lpm:semi=false"
    assert build_strategy("ssl-lpm:cluster=off").training_stages == ("semi-lpm",)
    assert str(SSLLPM(cluster=False, method="kmeans").spec) == "ssl-lpm:cluster=false:method=kmeans"
    tuned = build_strategy("ssl-lpm:method=kmeans:ratio=4:memory-mb=256")
    assert (tuned.method, tuned.ratio, tuned.memory_mb) == ("kmeans", 4.0, 256)


@pytest.mark.parametrize(("spec", "problem"), [
    ("ssl-lpm:ratio=0", "'ratio' of ssl-lpm must be a positive number"),
    ("ssl-lpm:memory-mb=-1", "'memory-mb' of ssl-lpm must be a positive number of MiB"),
    ("ssl-lpm:method=ward", "'method' of ssl-lpm must be one of agglomerative, kmeans"),
    ("ssl-lpm:semi=maybe", "'semi' of ssl-lpm must be true or false"),
])
def test_bad_parameters_are_refused(spec, problem):
    with pytest.raises(UsageError, match=problem):
        build_strategy(spec)


def test_needs_the_lpm_and_embeddings_only_when_clustering():
    assert build_strategy("ssl-lpm").needs == SSLLPM.needs == {Need.LPM_SCORES, Need.EMBEDDINGS}
    assert build_strategy("ssl-lpm:cluster=false").needs == {Need.LPM_SCORES}
    assert build_strategy("ssl-lpm:semi=false").needs == {Need.LPM_SCORES, Need.EMBEDDINGS}


def test_collect_keeps_the_predicted_loss_as_the_score():
    view = ModelView(TinyNet(), ClassificationTask())
    batch = BatchOutputs(view, torch.arange(2), torch.zeros(2, 1), torch.zeros(2, 3), None)
    batch.__dict__["lpm_scores"] = torch.tensor([0.5, 2.0])
    batch.__dict__["embeddings"] = torch.ones(2, 4)
    assert build_strategy("ssl-lpm").collect(batch).keys() == {"score", "embedding"}
    collected = build_strategy("ssl-lpm:cluster=false").collect(batch)
    assert collected.keys() == {"score"} and collected["score"].tolist() == [0.5, 2.0]


@pytest.mark.parametrize("method", ["agglomerative", "kmeans"])
def test_selects_one_per_cluster_by_predicted_loss(method):
    values, blob = _values()
    candidates = np.arange(300, 360)
    strategy = build_strategy(f"ssl-lpm:method={method}")
    picks = strategy.query(candidates, values, 6, QueryContext(rng=np.random.default_rng(2)))
    assert sorted(blob[picks - 300].tolist()) == list(range(6))
    expected = shortlist_cluster(values["score"], values["embedding"], 6, ratio=10.0, method=method,
                                 memory_mb=1024, rng=np.random.default_rng(2))
    assert picks.tolist() == candidates[expected].tolist()
    assert strategy.last_shortlist == Shortlist(60, 60, max_shortlist(1024) if method == "agglomerative" else None)


def test_without_clustering_it_is_the_plain_top_k():
    values, blob = _values()
    picks = build_strategy("ssl-lpm:cluster=false").query(np.arange(60), {"score": values["score"]}, 6,
                                                          QueryContext(rng=np.random.default_rng(0)))
    assert picks.tolist() == top_k(values["score"], 6).tolist() and set(blob[picks].tolist()) == {0}


def test_non_finite_predicted_losses_are_refused():
    values, _ = _values()
    values["score"][7] = np.nan
    for spec in ("ssl-lpm", "ssl-lpm:cluster=false"):
        with pytest.raises(LearnLossError, match=r"non-finite scores .*pool index 7"):
            build_strategy(spec).query(np.arange(60), values, 6, QueryContext(rng=np.random.default_rng(0)))


@pytest.mark.parametrize("spec", ["ssl-lpm:semi=false", "ssl-lpm:semi=false:cluster=false"])
def test_in_the_loop(spec):
    """The loop attaches the LPM for it and reports each pick's predicted loss."""
    from learnloss.active.loop import ActiveLearningLoop, LoopConfig
    from learnloss.training import TrainConfig
    from tests_support import make_dataset

    torch.manual_seed(0)
    loop = ActiveLearningLoop(
        TinyNet(), make_dataset(), build_strategy(spec),
        LoopConfig(initial=20, query=5, cycles=2, subset=40, seed=2, layers=["conv", "hidden"], embedding_layer="hidden"),
        TrainConfig(epochs=1, batch_size=16, lr=0.01, milestones=()),
    )
    assert loop.view.learning_loss is not None
    loop.label(np.arange(20), cycle=0)
    selected, scores = loop.query_scored(5)
    assert len(np.unique(selected)) == 5 and scores is not None and np.all(np.diff(scores) <= 0)
