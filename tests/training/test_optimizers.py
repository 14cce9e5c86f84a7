"""The ``optimizer`` setting: one optimiser over the model and the LPM, of the kind the recipe names."""

from __future__ import annotations

import pytest
import torch

from learnloss.errors import UsageError
from learnloss.inference import ModelView
from learnloss.lpm import attach
from learnloss.runs.presets import resolve_spec
from learnloss.tasks import ClassificationTask
from learnloss.training import TrainConfig, Trainer
from tests_support import TinyNet


@pytest.mark.parametrize(("name", "kind"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                            ("rmsprop", torch.optim.RMSprop)])
def test_each_optimizer_covers_the_model_and_the_lpm(name, kind):
    model = TinyNet()
    lpm = attach(model, ["conv", "hidden"], torch.zeros(2, 1, 8, 8))
    view = ModelView(model, ClassificationTask(), lpm)
    optimizer = Trainer(TrainConfig(optimizer=name, lr=0.01, momentum=0.0)).make_optimizer(view)
    assert isinstance(optimizer, kind)
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    expected = {id(p) for module in view.modules() for p in module.parameters()}
    assert owned == expected and any(id(p) in owned for p in lpm.lpm.parameters())


def test_an_unknown_optimizer_is_refused_naming_the_flag():
    with pytest.raises(UsageError, match="--optimizer must be one of sgd, adam, rmsprop"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(UsageError, match="--optimizer must be one of"):
        resolve_spec("quick", {"optimizer": "adagrad"})


def test_the_pose_recipe_is_the_papers():
    spec = resolve_spec("keypoints-cpu")
    assert (spec.optimizer, spec.lr, spec.momentum, spec.lpm_weight) == ("rmsprop", 2.5e-4, 0.0, 1e-4)
    assert spec.stop_grad_epoch / spec.epochs == pytest.approx(75 / 125)
    assert resolve_spec("detection-cpu").stop_grad_epoch / resolve_spec("detection-cpu").epochs == pytest.approx(0.8)
