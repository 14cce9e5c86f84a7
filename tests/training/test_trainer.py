"""Joint training: stop-gradient, one forward per step, schedule order, divergence (docs/pitfalls.md §3, §8, §11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import learnloss
from learnloss.inference import ModelView
from learnloss.data.batches import ArrayBatches
from learnloss.errors import TrainingDivergedError, UsageError
from learnloss.tasks import ClassificationTask
from learnloss.training import TrainConfig, Trainer


def _view(net, dataset):
    ll = learnloss.attach(net, ["conv", "hidden"], example_input=dataset.to_float(dataset.x_train[:2]))
    return ModelView(net, ClassificationTask(), ll)


def _batches(dataset, batch_size=16, seed=0):
    return ArrayBatches(dataset.x_train, dataset.y_train, np.arange(48), batch_size, dataset.to_float,
                        torch.device("cpu"), shuffle=torch.Generator().manual_seed(seed), augment=dataset.augment)


def _backbone_grad_from_lpm(view, dataset, detach):
    """Gradient that the LPM loss alone sends into the backbone's first conv."""
    x = dataset.to_float(dataset.x_train[:8])
    view.model.zero_grad(set_to_none=True)
    out = view.model(x)
    losses = view.task.per_sample_loss(out, dataset.y_train[:8])
    learnloss.margin_ranking_loss(view.learning_loss.predicted_loss(detach_features=detach), losses).backward()
    grad = view.model.conv[0].weight.grad
    return None if grad is None else grad.abs().sum().item()


def test_stop_gradient_really_stops_the_gradient_into_the_backbone(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    assert _backbone_grad_from_lpm(view, tiny_dataset, detach=False) > 0
    assert _backbone_grad_from_lpm(view, tiny_dataset, detach=True) in (None, 0.0)
    # ... while the LPM itself still gets gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in view.learning_loss.lpm.parameters())


def test_stop_gradient_starts_exactly_at_the_configured_epoch(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    calls = []
    original = view.learning_loss.predicted_loss
    view.learning_loss.predicted_loss = lambda detach_features=False: calls.append(detach_features) or original(detach_features)
    logs = Trainer(TrainConfig(epochs=4, stop_grad_epoch=2, lr=0.01, milestones=())).fit(view, _batches(tiny_dataset))
    assert [log.features_detached for log in logs] == [False, False, True, True]
    assert calls == [False] * 6 + [True] * 6  # 3 steps per epoch


def test_one_backbone_forward_per_step(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    forwards = []
    tiny_net.register_forward_hook(lambda *args: forwards.append(1))
    Trainer(TrainConfig(epochs=2, lr=0.01, milestones=())).fit(view, _batches(tiny_dataset))
    assert len(forwards) == 2 * 3


def test_learning_rate_schedule_is_stepped_after_each_epoch(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    logs = Trainer(TrainConfig(epochs=4, lr=0.1, milestones=(2,), gamma=0.1)).fit(view, _batches(tiny_dataset))
    assert [log.lr for log in logs] == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_training_updates_model_and_lpm(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    before = [p.detach().clone() for m in view.modules() for p in m.parameters()]
    Trainer(TrainConfig(epochs=1, lr=0.05, milestones=())).fit(view, _batches(tiny_dataset))
    after = [p.detach() for m in view.modules() for p in m.parameters()]
    changed = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert all(changed[: len(list(tiny_net.parameters()))])
    assert any(changed[len(list(tiny_net.parameters())):])


def test_nan_loss_raises_a_clear_error(tiny_dataset, tiny_net):
    tiny_dataset.x_train = tiny_dataset.x_train.float()
    tiny_dataset.x_train[3] = float("nan")
    view = _view(tiny_net, tiny_dataset)
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 1.*lower the learning rate"):
        Trainer(TrainConfig(epochs=2, lr=0.01, milestones=())).fit(view, _batches(tiny_dataset, batch_size=48))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"epochs": 0}, "--epochs"), ({"batch_size": -1}, "--batch-size"), ({"lr": 0.0}, "lr"),
     ({"lr": float("nan")}, "lr"), ({"lpm_loss": "hinge"}, "LPM loss"), ({"stop_grad_epoch": -3}, "stop_grad")],
)
def test_bad_settings_are_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("n, batch_size, sizes", [(49, 16, [16, 16, 17]), (45, 7, [7] * 6 + [3]), (1, 4, [1])])
def test_odd_batches_train_and_a_trailing_single_sample_is_folded_in(tiny_dataset, tiny_net, n, batch_size, sizes):
    """docs/pitfalls.md §5: odd batch sizes must not crash the pairing; BatchNorm cannot train on one sample,
    so a trailing batch of one joins the batch before it (no sample is dropped)."""
    batches = ArrayBatches(tiny_dataset.x_train, tiny_dataset.y_train, np.arange(n), batch_size,
                           tiny_dataset.to_float, torch.device("cpu"), shuffle=torch.Generator().manual_seed(0),
                           merge_singleton=True)
    assert [len(index) for index, _, _ in batches] == sizes and len(batches) == len(sizes)
    if n > 1:
        logs = Trainer(TrainConfig(epochs=1, lr=0.01, milestones=())).fit(_view(tiny_net, tiny_dataset), batches)
        assert np.isfinite(logs[0].lpm_loss)
