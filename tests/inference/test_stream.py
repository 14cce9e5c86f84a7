"""Streaming scoring: aligned to pool indices, eval mode, no augmentation (docs/pitfalls.md §2, §6)."""

from __future__ import annotations

import numpy as np
import torch

import learnloss
from learnloss.inference import ModelView, stream
from learnloss.data.batches import ArrayBatches
from learnloss.tasks import ClassificationTask


def _view(net, dataset):
    ll = learnloss.attach(net, ["conv", "hidden"], example_input=dataset.to_float(dataset.x_train[:2]))
    return ModelView(net, ClassificationTask(), ll)


def _scores(view, dataset, indices, shuffle=None, batch_size=7):
    batches = ArrayBatches(dataset.x_train, None, indices, batch_size, dataset.to_float, torch.device("cpu"),
                           shuffle=shuffle)
    visited, values = stream(view, batches, lambda b: {"score": b.lpm_scores})
    return dict(zip(visited.tolist(), values["score"].tolist()))


def test_scores_stay_aligned_to_indices_under_a_shuffled_loader(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    indices = np.arange(5, 95, 3)
    ordered = _scores(view, tiny_dataset, indices)
    shuffled = _scores(view, tiny_dataset, indices, shuffle=torch.Generator().manual_seed(1), batch_size=4)
    assert set(ordered) == set(shuffled) == set(indices.tolist())
    for index in indices.tolist():
        assert shuffled[index] == np.float32(ordered[index]) or abs(shuffled[index] - ordered[index]) < 1e-5
    assert len(set(ordered.values())) > 1  # a constant score would make this test vacuous


def test_scoring_runs_in_eval_mode_without_augmentation_and_restores_the_mode(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    view.model.train()
    indices = np.arange(30)
    first = _scores(view, tiny_dataset, indices)
    second = _scores(view, tiny_dataset, indices)
    assert first == second  # dropout and augmentation would make them differ
    assert view.model.training and view.learning_loss.lpm.training
    view.model.eval()
    with torch.no_grad():
        view.model(tiny_dataset.to_float(tiny_dataset.x_train[:30]))
        expected = view.learning_loss.predicted_loss()
    assert np.allclose([first[i] for i in range(30)], expected.numpy(), atol=1e-5)


def test_scoring_keeps_no_features_after_the_pass(tiny_dataset, tiny_net):
    view = _view(tiny_net, tiny_dataset)
    _scores(view, tiny_dataset, np.arange(20))
    assert view.learning_loss.taps._outputs == {}
