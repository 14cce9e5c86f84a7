"""What the loop measures on the candidates it scores (the LPM's ranking of unlabeled data, in a simulation) and
the drop-easy option (the lowest-loss labeled samples left out of the target model's next training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnloss.active.loop import ActiveLearningLoop, CycleResult, LoopConfig
from learnloss.active.oracle import GroundTruthOracle, HumanOracle
from learnloss.errors import UsageError
from learnloss.inference import stream
from learnloss.metrics import ranking_accuracy, spearman
from learnloss.strategies import build_strategy
from learnloss.training import TrainConfig
from learnloss.training.stages import JointTraining
from tests_support import TinyNet, make_dataset


def _loop(strategy="learning-loss", seed=0, oracle=None, cycles=3, **loop_kwargs):
    torch.manual_seed(seed)
    dataset = make_dataset()
    config = dict(initial=20, query=10, cycles=cycles, subset=50, seed=seed, layers=["conv", "hidden"],
                  embedding_layer="hidden")
    config.update(loop_kwargs)
    return ActiveLearningLoop(TinyNet(), dataset, build_strategy(strategy), LoopConfig(**config),
                              TrainConfig(epochs=2, batch_size=16, lr=0.05, milestones=(), stop_grad_epoch=1),
                              oracle=oracle)


class BlindOracle:
    """The ground truth, answering at once, but not claiming to know every target (as people would not)."""

    knows_targets = False

    def __init__(self, targets: torch.Tensor) -> None:
        self.inner = GroundTruthOracle(targets)
        self.asked: list[np.ndarray] = []

    def label(self, indices: np.ndarray) -> torch.Tensor:
        self.asked.append(np.asarray(indices).copy())
        return self.inner.label(indices)


def _recompute(loop: ActiveLearningLoop, candidates: np.ndarray) -> tuple[float, float]:
    """The LPM's ranking accuracy and Spearman correlation on ``candidates``, against their true losses."""
    _, values = stream(loop.view, loop.eval_batches(loop.dataset.x_train, loop.dataset.y_train, candidates),
                       lambda batch: {"predicted": batch.lpm_scores, "loss": batch.true_losses})
    return ranking_accuracy(values["predicted"], values["loss"]), spearman(values["predicted"], values["loss"])


def _spy_queries(loop: ActiveLearningLoop) -> list[tuple[np.ndarray, object, tuple[float, float]]]:
    """Record each query's candidates and batch, and the measures recomputed on the same model at query time."""
    records = []
    sample, query_batch = loop.pool.sample_unlabeled, loop.query_batch
    drawn = []

    def sample_spy(count, rng):
        drawn.append(sample(count, rng))
        return drawn[-1]

    def query_spy(k):
        batch = query_batch(k)
        records.append((drawn[-1], batch, _recompute(loop, drawn[-1])))
        return batch

    loop.pool.sample_unlabeled = sample_spy
    loop.query_batch = query_spy
    return records


# ------------------------------------------------------------------------------------------ measured candidates


def test_a_simulation_measures_the_lpm_on_the_candidates_it_scored():
    loop = _loop()
    records = _spy_queries(loop)
    results = loop.run()
    assert len(records) == 2
    for result, (candidates, batch, (accuracy, rho)) in zip(results, records):
        assert len(candidates) == 50 and np.isin(result.selected, candidates).all()
        assert 0.0 <= result.candidate_ranking_accuracy <= 1.0 and -1.0 <= result.candidate_spearman <= 1.0
        assert result.candidate_ranking_accuracy == batch.candidate_ranking_accuracy
        assert result.candidate_spearman == batch.candidate_spearman
        assert result.candidate_ranking_accuracy == pytest.approx(accuracy, abs=1e-12)
        assert result.candidate_spearman == pytest.approx(rho, abs=1e-12)
        assert isinstance(result.candidate_ranking_accuracy, float) and isinstance(result.candidate_spearman, float)
    last = results[-1]
    assert last.selected == [] and last.candidate_ranking_accuracy is None and last.candidate_spearman is None
    # measured on the unlabeled candidates, not on the test split
    assert any(r.candidate_ranking_accuracy != r.lpm_ranking_accuracy for r in results[:-1])


def test_the_whole_unlabeled_pool_when_no_subset_is_drawn():
    loop = _loop(subset=None, cycles=2)
    records = _spy_queries(loop)
    [first, _] = loop.run()
    [(candidates, _, (accuracy, rho))] = records
    assert len(candidates) == 100
    assert first.candidate_ranking_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert first.candidate_spearman == pytest.approx(rho, abs=1e-12)


def test_no_lpm_no_measure():
    results = _loop("random").run()
    assert all(r.candidate_ranking_accuracy is None and r.candidate_spearman is None for r in results)
    results = _loop("entropy", cycles=2).run()
    assert all(r.candidate_ranking_accuracy is None and r.candidate_spearman is None for r in results)


@pytest.mark.parametrize("strategy", ["learning-loss", "random"])
def test_measuring_does_not_change_the_selection(strategy):
    kwargs = {"attach_lpm": True} if strategy == "random" else {}
    measured = _loop(strategy, seed=2, **kwargs)
    assert measured.oracle.knows_targets
    measured_results = measured.run()
    blind = _loop(strategy, seed=2, oracle=BlindOracle(make_dataset().y_train), **kwargs)
    blind_results = blind.run()
    assert [r.selected for r in measured_results] == [r.selected for r in blind_results]
    assert [r.lpm_ranking_accuracy for r in measured_results] == [r.lpm_ranking_accuracy for r in blind_results]
    assert all(r.candidate_ranking_accuracy is None and r.candidate_spearman is None for r in blind_results)
    assert all(0.0 <= r.candidate_ranking_accuracy <= 1.0 for r in measured_results[:-1])
    # the blind oracle was asked for the initial set and the selections only, never for the candidates
    assert [len(asked) for asked in blind.oracle.asked] == [20, 10, 10]


def test_people_as_the_oracle_give_no_measure():
    loop = _loop(oracle=HumanOracle(), cycles=2)
    initial = np.arange(0, 120, 6)
    loop.pool.add_labels(initial, make_dataset().y_train[initial], 0)
    loop.train_cycle(0)
    batch = loop.query_batch(10)
    assert len(batch.selected) == 10
    assert batch.candidate_ranking_accuracy is None and batch.candidate_spearman is None


class _PlainOracle:
    """An oracle written before ``knows_targets`` existed: it answers, but does not say it knows every target."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def label(self, indices: np.ndarray) -> torch.Tensor:
        return self.targets[torch.as_tensor(np.asarray(indices, dtype=np.int64))]


def test_an_oracle_that_does_not_say_it_knows_every_target_is_not_asked_for_the_candidates():
    reference = _loop(seed=1, cycles=2).run()
    results = _loop(seed=1, cycles=2, oracle=_PlainOracle(make_dataset().y_train)).run()
    assert [r.selected for r in results] == [r.selected for r in reference]
    assert all(r.candidate_ranking_accuracy is None and r.candidate_spearman is None for r in results)
    assert reference[0].candidate_ranking_accuracy is not None


# ------------------------------------------------------------------------------------------ results.json


def test_the_measures_round_trip_through_a_dict():
    result = CycleResult(cycle=1, n_labeled=30, metrics={"accuracy": 0.5}, lpm_ranking_accuracy=0.6,
                         lpm_spearman=0.2, train_seconds=1.0, query_seconds=0.5, selected=[3, 1],
                         candidate_ranking_accuracy=0.7, candidate_spearman=-0.3)
    values = result.to_dict()
    assert values["candidate_ranking_accuracy"] == 0.7 and values["candidate_spearman"] == -0.3
    assert CycleResult.from_dict(values) == result
    last = CycleResult(cycle=2, n_labeled=40, metrics={"accuracy": 0.6}, lpm_ranking_accuracy=None, lpm_spearman=None,
                       train_seconds=1.0, query_seconds=0.0, selected=[])
    assert last.to_dict()["candidate_ranking_accuracy"] is None
    assert CycleResult.from_dict(last.to_dict()) == last
    old = {key: value for key, value in values.items() if not key.startswith("candidate_")}
    restored = CycleResult.from_dict(old)
    assert restored.candidate_ranking_accuracy is None and restored.candidate_spearman is None
    assert restored.selected == [3, 1] and restored.lpm_ranking_accuracy == 0.6


def test_a_real_run_round_trips():
    results = _loop(cycles=2).run()
    assert [CycleResult.from_dict(r.to_dict()) for r in results] == results


# ------------------------------------------------------------------------------------------ drop easy


def _losses(loop: ActiveLearningLoop, indices: np.ndarray) -> dict[int, float]:
    order, values = stream(loop.view, loop.eval_batches(loop.dataset.x_train, loop.pool.targets, indices),
                           lambda batch: {"loss": batch.true_losses})
    return dict(zip(order.tolist(), values["loss"].tolist()))


@pytest.mark.parametrize("initial, fraction, count", [(20, 0.25, 5), (22, 0.25, 5), (20, 0.1, 2), (20, 0.04, 0)])
def test_easiest_labeled_are_the_lowest_loss_fraction(initial, fraction, count):
    loop = _loop(drop_easy=fraction, initial=initial, cycles=2)
    loop.begin()
    assert loop.easiest_labeled().tolist() == []  # no model has been trained
    loop.train_cycle(0)
    easy = loop.easiest_labeled()
    labeled = loop.pool.labeled_indices
    assert len(easy) == count == math.floor(fraction * len(labeled))
    assert easy.dtype == np.int64 and np.all(np.diff(easy) > 0) and np.isin(easy, labeled).all()
    if count:
        losses = _losses(loop, labeled)
        rest = np.setdiff1d(labeled, easy)
        assert max(losses[i] for i in easy.tolist()) <= min(losses[i] for i in rest.tolist())
        assert set(easy.tolist()) == set(sorted(losses, key=losses.get)[:count])
    assert np.array_equal(loop.easiest_labeled(), easy)  # measuring changes nothing


def test_no_fraction_no_easy_samples():
    loop = _loop(cycles=2)
    loop.begin()
    loop.train_cycle(0)
    assert loop.easiest_labeled().tolist() == []


def test_labeled_batches_can_leave_the_easy_samples_out():
    loop = _loop(drop_easy=0.25, cycles=2)
    loop.begin()
    loop.train_cycle(0)
    easy = loop.easiest_labeled()
    data = loop.cycle_data(query=True, easy=easy)
    assert np.array_equal(data.easy, easy) and len(easy) == 5
    for _ in range(3):
        seen = np.concatenate([index.numpy() for index, _, _ in data.labeled_batches(4, without_easy=True)])
        assert not np.isin(seen, easy).any()
        assert sorted(seen.tolist()) == np.setdiff1d(data.labeled, easy).tolist()
    everything = np.concatenate([index.numpy() for index, _, _ in data.labeled_batches(4)])
    assert sorted(everything.tolist()) == data.labeled.tolist()
    assert loop.cycle_data(query=True).easy.tolist() == []


@pytest.mark.parametrize("reset", ["warm", "reinit"])
def test_the_joint_stage_trains_without_the_easy_samples_of_the_previous_model(reset):
    loop = _loop(drop_easy=0.25, reset=reset, cycles=2)
    [joint] = loop.stages
    assert isinstance(joint, JointTraining)
    given, trained_on = [], []
    run = joint.run

    def spy(view, data):
        given.append(data.easy.copy())
        original = data.labeled_batches

        def batches(*args, **kwargs):
            result = original(*args, **kwargs)
            trained_on.append(np.concatenate([index.numpy() for index, _, _ in result]))
            return result

        data.labeled_batches = batches
        return run(view, data)

    joint.run = spy
    loop.begin()
    loop.step(0)
    expected = loop.easiest_labeled()  # the trained model of cycle 0, over the 30 labels cycle 1 trains on
    loop.step(1, query=False)
    assert given[0].tolist() == [] and len(trained_on[0]) == 20
    assert len(expected) == 7 and np.array_equal(given[1], expected)
    assert len(trained_on[1]) == 23 and not np.isin(trained_on[1], expected).any()


@pytest.mark.parametrize("fraction", [1.0, 1.5, -0.1])
def test_a_fraction_outside_zero_to_one_is_refused(fraction):
    config = LoopConfig(initial=20, query=10, cycles=2, layers=["conv"], embedding_layer="conv", drop_easy=fraction)
    with pytest.raises(UsageError, match="--drop-easy"):
        config.validate(120)
    with pytest.raises(UsageError, match="--drop-easy"):
        _loop(drop_easy=fraction)


def test_fractions_below_one_are_accepted():
    for fraction in (0.0, 0.01, 0.99):
        LoopConfig(initial=20, query=10, cycles=2, layers=["conv"], embedding_layer="conv",
                   drop_easy=fraction).validate(120)
