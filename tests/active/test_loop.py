"""The simulated loop: budgets, reset policy, reproducibility, per-cycle records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnloss.active.loop import ActiveLearningLoop, LoopConfig
from learnloss.active.pool import Pool
from learnloss.errors import BudgetError, UsageError
from learnloss.strategies import build_strategy
from learnloss.training import TrainConfig
from tests_support import TinyNet, make_dataset


def _loop(strategy="learning-loss", seed=0, reset="warm", cycles=3, **loop_kwargs):
    torch.manual_seed(seed)
    config = dict(initial=20, query=10, cycles=cycles, subset=50, seed=seed, reset=reset, layers=["conv", "hidden"],
                  embedding_layer="hidden")
    config.update(loop_kwargs)
    return ActiveLearningLoop(TinyNet(), make_dataset(), build_strategy(strategy), LoopConfig(**config),
                              TrainConfig(epochs=2, batch_size=16, lr=0.05, milestones=(), stop_grad_epoch=1))


def test_cycles_record_labels_metrics_and_selection():
    loop = _loop()
    results = loop.run()
    assert [r.n_labeled for r in results] == [20, 30, 40]
    assert [len(r.selected) for r in results] == [10, 10, 0]
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in results)
    assert all(0.0 <= r.lpm_ranking_accuracy <= 1.0 and -1 <= r.lpm_spearman <= 1 for r in results)
    selected = np.concatenate([r.selected for r in results]).astype(np.int64)
    assert len(np.unique(selected)) == 20
    assert loop.pool.n_labeled == 40
    assert np.array_equal(loop.pool.targets.numpy()[selected], loop.dataset.y_train.numpy()[selected])
    assert sorted(loop.pool.labeled_at[selected].tolist()) == [1] * 10 + [2] * 10


def test_baselines_train_without_an_lpm():
    results = _loop("entropy", cycles=2).run()
    assert results[0].lpm_ranking_accuracy is None


@pytest.mark.parametrize("strategy", ["learning-loss", "entropy", "core-set", "random"])
def test_same_seed_same_selected_samples(strategy):
    a = [r.selected for r in _loop(strategy, seed=5).run()]
    b = [r.selected for r in _loop(strategy, seed=5).run()]
    c = [r.selected for r in _loop(strategy, seed=6).run()]
    assert a == b
    assert a != c


def test_initial_set_is_shared_across_strategies_for_a_seed():
    initial = []
    for strategy in ("random", "learning-loss"):
        loop = _loop(strategy, seed=4)
        loop.run()
        initial.append(set(np.flatnonzero(loop.pool.labeled_at == 0).tolist()))
    assert initial[0] == initial[1]


def _weights(loop):
    return [p.detach().clone() for m in loop.view.modules() for p in m.parameters()]


@pytest.mark.parametrize("reset", ["warm", "reinit"])
def test_reset_policy_is_honoured(reset):
    loop = _loop(reset=reset, cycles=2)
    initial = _weights(loop)
    seen = []
    [stage] = loop.stages
    run = stage.run

    def spy(view, data):
        seen.append(_weights(loop))
        return run(view, data)

    stage.run = spy
    loop.run()
    assert all(torch.equal(a, b) for a, b in zip(seen[0], initial))
    at_second = [torch.equal(a, b) for a, b in zip(seen[1], initial)]
    assert all(at_second) if reset == "reinit" else not any(at_second)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"initial": 100, "query": 20, "cycles": 3}, BudgetError, "exceeds the pool of 120"),
        ({"initial": 0}, UsageError, "--initial"),
        ({"query": -1}, UsageError, "--query"),
        ({"subset": 5}, UsageError, "--subset"),
        ({"reset": "sometimes"}, UsageError, "--reset"),
    ],
)
def test_bad_loop_settings_fail_before_training(kwargs, error, match):
    with pytest.raises(error, match=match):
        _loop(**kwargs)


def test_pool_refuses_inconsistent_labels_atomically():
    pool = Pool(10)
    pool.add_labels([1, 2], [0, 1], cycle=0)
    for indices, labels in (([2, 3], [0, 0]), ([4, 4], [0, 0]), ([10], [0]), ([5], [-1]), ([5, 6], [0])):
        with pytest.raises(UsageError):
            pool.add_labels(indices, labels, cycle=1)
    assert pool.n_labeled == 2 and pool.labeled_indices.tolist() == [1, 2]


@pytest.mark.parametrize("strategy", ["true-loss", "stochastic(true-loss)"])
def test_true_loss_without_ground_truth_is_refused_before_any_training(strategy, monkeypatch):
    from learnloss.active.oracle import HumanOracle
    from learnloss.runs.builder import build_loop
    from learnloss.runs.presets import resolve_spec
    from learnloss.training.stages import JointTraining

    def never(*args, **kwargs):
        raise AssertionError("trained before refusing the strategy")

    monkeypatch.setattr(JointTraining, "run", never)
    message = "ranks by the true loss of unlabeled samples, which only a simulation knows; choose another strategy"
    with pytest.raises(UsageError, match=message):
        ActiveLearningLoop(TinyNet(), make_dataset(), build_strategy(strategy),
                           LoopConfig(initial=20, query=10, cycles=2, layers=["conv", "hidden"], embedding_layer="hidden"),
                           TrainConfig(epochs=1), oracle=HumanOracle())
    # the builder refuses it before the data is even loaded (this data set does not exist)
    spec = resolve_spec("quick", {"strategy": strategy, "dataset": "npz", "data_dir": "/nonexistent/data.npz"})
    with pytest.raises(UsageError, match=message):
        build_loop(spec, oracle=HumanOracle())
    monkeypatch.undo()
    assert _loop("true-loss", cycles=2).run()[0].selected, "a simulation may still use it"


def test_a_snapshot_that_does_not_fit_changes_nothing():
    from learnloss.active.loop import SnapshotError

    loop, other = _loop(), _loop(seed=3)
    other.run()
    before, state = _weights(loop), loop.snapshot()
    good = other.snapshot()
    bad_shape = {**good, "modules": [dict(good["modules"][0], **{"fc.weight": torch.zeros(2, 2)}), *good["modules"][1:]]}
    missing = {**good, "modules": [{k: v for k, v in good["modules"][0].items() if k != "fc.bias"},
                                   *good["modules"][1:]]}
    bad_stream = {**good, "numpy": {**good["numpy"], "subset": "{not json"}}
    for snapshot, match in ((bad_shape, r"fc.weight is \(2, 2\) in the snapshot, \(3, 16\) in the model"),
                            (missing, "missing fc.bias"), (bad_stream, "subset random stream is malformed"),
                            ({**good, "modules": good["modules"][:1]}, "1 module states, the loop has 2"),
                            ({**good, "generator": torch.zeros(3)}, "training random stream")):
        with pytest.raises(SnapshotError, match=match):
            loop.restore(snapshot)
        assert all(torch.equal(a, b) for a, b in zip(_weights(loop), before))
        assert loop.snapshot()["numpy"] == state["numpy"]
    loop.restore(good)
    assert all(torch.equal(a, b) for a, b in zip(_weights(loop), _weights(other)))
