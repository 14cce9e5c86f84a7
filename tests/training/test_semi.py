"""Stage B, the semi-supervised LPM (Hwang, Choi & Choi, IEEE Access 2024): the LPM alone is fine-tuned on labeled
and pseudo-labeled unlabeled data while the target model stays frozen."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learnloss.active.loop import ActiveLearningLoop, LoopConfig
from learnloss.data.dataset import Dataset
from learnloss.errors import UsageError
from learnloss.inference import ModelView
from learnloss.lpm.attach import attach
from learnloss.lpm.losses import get_lpm_loss
from learnloss.runs.builder import build_loop
from learnloss.runs.presets import resolve_spec
from learnloss.strategies import build_strategy
from learnloss.tasks import build_task
from learnloss.training import TrainConfig
from learnloss.training.semi import SemiConfig, SemiEpochLog, SemiSupervisedLPM, _Step
from learnloss.training.stages import CycleData
from tests_support import TinyNet, make_dataset

DIGITS = {"initial": 40, "query": 20, "cycles": 2, "epochs": 2, "semi_epochs": 2, "subset": 100,
          "semi_unlabeled": 120, "device": "cpu"}


def _tiny_loop(strategy: str = "learning-loss", seed: int = 0, dataset: Dataset | None = None) -> ActiveLearningLoop:
    """A loop over the tiny dataset with its initial 20 labels, untrained (stage B only needs an attached LPM)."""
    torch.manual_seed(seed)
    loop = ActiveLearningLoop(
        TinyNet(), dataset or make_dataset(), build_strategy(strategy),
        LoopConfig(initial=20, query=10, cycles=2, subset=50, seed=seed, layers=["conv", "hidden"],
                   embedding_layer="hidden"),
        TrainConfig(epochs=1, batch_size=16, lr=0.05, milestones=(), stop_grad_epoch=1),
    )
    loop.begin()
    return loop


def _config(**kwargs) -> SemiConfig:
    settings = dict(epochs=2, batch_size=8, unlabeled=40, lr=0.05)
    settings.update(kwargs)
    return SemiConfig(**settings)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ frozen backbone


def test_the_backbone_is_frozen_and_only_the_lpm_learns():
    loop = _tiny_loop()
    view, model, lpm = loop.view, loop.view.model, loop.view.learning_loss.lpm
    # the state a loop leaves after training, plus a flag the stage must put back as it was
    model.train()
    lpm.eval()
    model.conv[0].bias.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model_before, lpm_before = _state(model), _state(lpm)
    assert any("running_mean" in k for k in model_before) and any("num_batches_tracked" in k for k in model_before)
    during = []

    def spy(module, inputs, output):
        during.append((module.training, any(p.requires_grad for p in module.parameters()), lpm.training))

    hook = model.register_forward_hook(spy)
    logs = SemiSupervisedLPM(_config(threshold=0.0)).run(view, loop.cycle_data(query=True))
    hook.remove()

    assert len(logs) == 2 and all(isinstance(log, SemiEpochLog) for log in logs)
    assert during and all(mode == (False, False, True) for mode in during)  # eval, no grad, LPM training
    assert _same(_state(model), model_before)  # parameters and BatchNorm statistics, bit for bit
    lpm_after = _state(lpm)
    assert any(not torch.equal(lpm_before[k], lpm_after[k]) for k in lpm_before)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert model.training and all(m.training for m in model.modules())
    assert not lpm.training
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # nothing flowed into the model


def test_modes_are_restored_the_other_way_round_too():
    loop = _tiny_loop()
    model, lpm = loop.view.model, loop.view.learning_loss.lpm
    model.eval()
    lpm.train()
    SemiSupervisedLPM(_config(epochs=1)).run(loop.view, loop.cycle_data(query=True))
    assert not model.training and lpm.training
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ τ and the NaN guard


def test_a_threshold_nothing_reaches_leaves_only_the_labeled_term():
    loop = _tiny_loop()
    lpm = loop.view.learning_loss.lpm
    before = _state(lpm)
    logs = SemiSupervisedLPM(_config(threshold=1.0, epochs=3)).run(loop.view, loop.cycle_data(query=True))
    assert len(logs) == 3
    for log in logs:
        assert log.confident == 0.0
        assert log.unlabeled_lpm_loss is None
        assert math.isfinite(log.lpm_loss) and math.isfinite(log.task_loss)
    assert not _same(_state(lpm), before)  # the labeled term alone still trains the LPM


def test_with_mse_an_empty_selection_is_not_a_nan():
    """MSE over no sample is NaN: only the guard keeps the epoch finite."""
    loop = _tiny_loop()
    logs = SemiSupervisedLPM(_config(threshold=1.0, lpm_loss="mse")).run(loop.view, loop.cycle_data(query=True))
    assert all(math.isfinite(log.lpm_loss) and log.unlabeled_lpm_loss is None for log in logs)


def test_a_threshold_of_zero_counts_every_unlabeled_sample():
    loop = _tiny_loop()
    logs = SemiSupervisedLPM(_config(threshold=0.0, epochs=2)).run(loop.view, loop.cycle_data(query=True))
    for log in logs:
        assert log.confident == 1.0
        assert isinstance(log.unlabeled_lpm_loss, float) and math.isfinite(log.unlabeled_lpm_loss)
        assert log.unlabeled_lpm_loss > 0.0


class _Scripted(SemiSupervisedLPM):
    """Stage B whose epochs are given steps instead of draws through the model."""

    def __init__(self, steps, **kwargs) -> None:
        super().__init__(_config(epochs=1, **kwargs))
        self.steps = steps

    def _draw(self, view, data, labeled, unlabeled, step_size):
        yield from self.steps


def _features(lpm, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, generator=g) for c in lpm.in_channels]


@pytest.mark.parametrize("loss", ["logistic", "ranking", "mse"])
@pytest.mark.parametrize("kept", [0, 1, 2, 5])
def test_a_step_needs_two_confident_samples_for_an_unlabeled_term(loss, kept):
    loop = _tiny_loop()
    lpm = loop.view.learning_loss.lpm
    labeled, labeled_losses = _features(lpm, 6, 1), torch.tensor([0.1, 2.0, 0.3, 1.5, 0.7, 0.2])
    unlabeled, unlabeled_losses = _features(lpm, kept, 2), torch.linspace(3.0, 0.0, kept)
    step = _Step(labeled, labeled_losses, unlabeled, unlabeled_losses, seen=8)
    rank, reference = get_lpm_loss(loss), copy.deepcopy(lpm)
    with torch.no_grad():
        labeled_term = rank(reference(labeled), labeled_losses, 1.0).item()
        unlabeled_term = rank(reference(unlabeled), unlabeled_losses, 1.0).item() if kept >= 2 else None

    [log] = _Scripted([step], lpm_loss=loss).run(loop.view, loop.cycle_data(query=True))

    assert log.confident == kept / 8
    if kept < 2:
        assert log.unlabeled_lpm_loss is None
        assert log.lpm_loss == pytest.approx(labeled_term, rel=1e-5)
    else:
        assert log.unlabeled_lpm_loss == pytest.approx(unlabeled_term, rel=1e-5)
        assert log.lpm_loss == pytest.approx(labeled_term + unlabeled_term, rel=1e-5)
    assert log.task_loss == pytest.approx(labeled_losses.mean().item())
    assert not _same(_state(lpm), _state(reference))


# ------------------------------------------------------------------------------------------ when it runs


def test_skipped_without_a_query_or_without_unlabeled_samples():
    loop = _tiny_loop()
    lpm = loop.view.learning_loss.lpm
    before, generator = _state(lpm), loop._generator.get_state()
    stage = SemiSupervisedLPM(_config())
    assert stage.run(loop.view, loop.cycle_data(query=False)) == []
    for unlabeled in (np.empty(0, dtype=np.int64), loop.pool.unlabeled_indices[:1]):
        data = loop.cycle_data(query=True)
        data.unlabeled = unlabeled
        assert stage.run(loop.view, data) == []
    data = loop.cycle_data(query=True)
    data.labeled = np.empty(0, dtype=np.int64)
    assert stage.run(loop.view, data) == []
    assert _same(_state(lpm), before)
    assert torch.equal(loop._generator.get_state(), generator)  # no random number drawn


# ------------------------------------------------------------------------------------------ refusals


def test_refuses_a_model_without_an_lpm():
    loop = _tiny_loop("entropy")
    assert loop.view.learning_loss is None
    with pytest.raises(UsageError, match="loss prediction module"):
        SemiSupervisedLPM(_config()).run(loop.view, loop.cycle_data(query=True))


def test_refuses_a_regression_task():
    loop = _tiny_loop()
    model = TinyNet()
    example = loop.dataset.to_float(loop.dataset.x_train[:2])
    view = ModelView(model, build_task("regression"),
                     attach(model, ["conv", "hidden"], example, embedding_layer="hidden"))
    before = _state(view.learning_loss.lpm)
    with pytest.raises(UsageError, match="classification task"):
        SemiSupervisedLPM(_config()).run(view, loop.cycle_data(query=True))
    assert _same(_state(view.learning_loss.lpm), before)


def test_refuses_float_inputs():
    images = make_dataset()
    floats = Dataset("floats", images.x_train.float() / 255, images.y_train, images.x_test.float() / 255,
                     images.y_test, images.classes, images.augment)
    loop = _tiny_loop(dataset=floats)
    with pytest.raises(UsageError, match="uint8"):
        SemiSupervisedLPM(_config()).run(loop.view, loop.cycle_data(query=True))
    assert all(p.requires_grad for p in loop.view.model.parameters())


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"views": 0}, {"unlabeled": 1}, {"lr": 0.0}, {"lr": math.nan},
                                 {"threshold": 1.5}, {"threshold": -0.1}, {"lpm_loss": "hinge"}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(UsageError):
        SemiConfig(**bad)


# ------------------------------------------------------------------------------------------ reproducibility


def _stage_b_weights(seed: int) -> list[torch.Tensor]:
    loop = build_loop(resolve_spec("quick", {**DIGITS, "strategy": "ssl-lpm", "seed": seed, "epochs": 1}))
    loop.begin()
    stages = {stage.name: stage for stage in loop.stages}
    data = loop.cycle_data(query=True)
    stages["joint"].run(loop.view, data)
    logs = stages["semi-lpm"].run(loop.view, data)
    assert len(logs) == 2
    return [p.detach().clone() for p in loop.view.learning_loss.lpm.parameters()]


def test_the_same_seed_gives_the_same_lpm():
    a, b, c = _stage_b_weights(3), _stage_b_weights(3), _stage_b_weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


# ------------------------------------------------------------------------------------------ cached views


@pytest.mark.parametrize("views, passes", [(1, 1), (2, 2), (None, 3), (5, 3)])
def test_cached_views_run_the_model_once_per_drawn_epoch(views, passes):
    loop = _tiny_loop()
    data = loop.cycle_data(query=True)
    steps = len(data.labeled_batches(8))
    assert steps >= 2
    calls = []
    hook = loop.view.model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    per_epoch = []
    logs = SemiSupervisedLPM(_config(epochs=3, views=views, threshold=0.0),
                             on_epoch=lambda log: per_epoch.append(log)).run(loop.view, data)
    hook.remove()
    assert len(logs) == 3 and per_epoch == logs and [log.epoch for log in logs] == [0, 1, 2]
    assert len(calls) == passes * steps
    assert all(log.confident == 1.0 for log in logs)  # a cached epoch still has its unlabeled samples


# ------------------------------------------------------------------------------------------ the views themselves


def test_the_unlabeled_features_are_the_strong_views_and_the_targets_fixmatchs():
    loop = _tiny_loop()
    view, model = loop.view, loop.view.model
    data = loop.cycle_data(query=True)
    stage = SemiSupervisedLPM(_config(threshold=0.0))
    seen = []

    def record(module, inputs, output):
        seen.append((inputs[0].detach().clone(), output.detach().clone(),
                     [level.detach().clone() for level in view.learning_loss.taps.pooled(detach=True)]))

    hook = model.register_forward_hook(record)
    model.eval()
    with torch.no_grad():
        steps = list(stage._draw(view, data, data.labeled_batches(8), stage._unlabeled_stream(data), 5))
    hook.remove()
    assert len(steps) == len(seen) >= 2
    for step, (inputs, output, pooled) in zip(steps, seen):
        n_labeled, n_unlabeled = step.labeled_losses.shape[0], step.seen
        assert n_unlabeled == 5 and inputs.shape[0] == n_labeled + 2 * n_unlabeled
        weak, strong = slice(n_labeled, n_labeled + n_unlabeled), slice(n_labeled + n_unlabeled, None)
        for level, features in enumerate(pooled):
            assert torch.equal(step.labeled[level], features[:n_labeled])
            assert torch.equal(step.unlabeled[level], features[strong])
            assert not torch.equal(step.unlabeled[level], features[weak])
        assert not torch.equal(inputs[weak], inputs[strong])
        pseudo = torch.softmax(output[weak], dim=1)
        expected = -(pseudo * F.log_softmax(output[strong], dim=1)).sum(dim=1)
        assert torch.allclose(step.unlabeled_losses, expected)


def test_only_confident_weak_views_are_kept():
    loop = _tiny_loop()
    view, model = loop.view, loop.view.model
    data = loop.cycle_data(query=True)
    outputs = []
    hook = model.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach().clone()))
    model.eval()
    probabilities = []
    with torch.no_grad():
        stage = SemiSupervisedLPM(_config(threshold=0.0))
        for step, output in zip(stage._draw(view, data, data.labeled_batches(8), stage._unlabeled_stream(data), 6),
                                outputs):
            n_labeled = step.labeled_losses.shape[0]
            probabilities.append(torch.softmax(output[n_labeled:n_labeled + 6], dim=1).max(dim=1).values)
    hook.remove()
    tau = float(torch.cat(probabilities).median())
    # the same draws again, from the same generator state, with τ at the median confidence
    loop2 = _tiny_loop()
    data2 = loop2.cycle_data(query=True)
    stage2 = SemiSupervisedLPM(_config(threshold=tau))
    loop2.view.model.eval()
    with torch.no_grad():
        steps = list(stage2._draw(loop2.view, data2, data2.labeled_batches(8), stage2._unlabeled_stream(data2), 6))
    kept = [int(step.unlabeled_losses.shape[0]) for step in steps]
    assert kept == [int((p >= tau).sum()) for p in probabilities]
    assert 0 < sum(kept) < 6 * len(steps)


# ------------------------------------------------------------------------------------------ through the builder


def test_the_builder_adds_stage_b_for_ssl_lpm_only():
    names = {
        strategy: [stage.name for stage in build_loop(resolve_spec("quick", {**DIGITS, "strategy": strategy})).stages]
        for strategy in ("ssl-lpm", "ssl-lpm:semi=false", "learning-loss")
    }
    assert names == {"ssl-lpm": ["joint", "semi-lpm"], "ssl-lpm:semi=false": ["joint"], "learning-loss": ["joint"]}


def test_the_builder_passes_the_semi_settings():
    spec = resolve_spec("quick", {**DIGITS, "strategy": "ssl-lpm", "semi_threshold": 0.5, "semi_lr": 0.02,
                                  "semi_views": 1, "semi_lpm_loss": "ranking"})
    stage = build_loop(spec).stages[1]
    assert isinstance(stage, SemiSupervisedLPM)
    config = stage.config
    assert (config.epochs, config.threshold, config.lr, config.views, config.unlabeled, config.lpm_loss) == (
        2, 0.5, 0.02, 1, 120, "ranking")
    assert config.batch_size == spec.batch_size and config.momentum == spec.momentum
    assert stage.rank is get_lpm_loss("ranking")


def test_in_a_run_stage_b_follows_the_querying_cycles_only():
    loop = build_loop(resolve_spec("quick", {**DIGITS, "strategy": "ssl-lpm"}))
    joint, semi = loop.stages
    calls = []
    run = semi.run

    def counted(view, data):
        logs = run(view, data)
        calls.append((data.query, len(data.labeled), len(logs)))
        return logs

    semi.run = counted
    epochs = []
    semi.on_epoch = epochs.append
    results = loop.run()
    assert [len(r.selected) for r in results] == [20, 0]
    assert calls == [(True, 40, 2), (False, 60, 0)]
    assert len(epochs) == 2 and all(isinstance(log, SemiEpochLog) for log in epochs)
    assert all(0.0 <= log.confident <= 1.0 for log in epochs)
