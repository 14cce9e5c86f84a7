"""Tests of the MLP for vector inputs: shapes, taps for the loss prediction module, dropout, and that it learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learnloss.data import load_dataset
from learnloss.errors import UsageError
from learnloss.models import MLP, build_model, default_taps, embedding_layer
from learnloss.tasks import RegressionTask
from tests_support import tapped_outputs


@pytest.mark.parametrize("in_features,num_outputs", [(10, 1), (3, 7)])
def test_output_shape_and_gradient(in_features: int, num_outputs: int) -> None:
    torch.manual_seed(0)
    model = MLP(in_features, num_outputs)
    out = model(torch.randn(5, in_features))
    assert out.shape == (5, num_outputs)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registered_with_the_builder_signature() -> None:
    model = build_model("MLP", 10, 2, dropout=0.2)
    assert isinstance(model, MLP) and (model.in_features, model.num_outputs) == (10, 2)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.2


@pytest.mark.parametrize("hidden", [(64, 64), (32,), (16, 8, 4)])
def test_default_taps_are_hidden_vectors(hidden: tuple[int, ...]) -> None:
    model = MLP(6, 2, hidden=hidden).eval()
    modules = dict(model.named_modules())
    taps = default_taps(model)
    assert taps == tuple(f"block{i + 1}" for i in range(len(hidden)))
    assert all(name in modules for name in taps)
    assert embedding_layer(model) == taps[-1]
    with torch.no_grad():
        outs = tapped_outputs(model, taps, torch.randn(3, 6))
    assert [tuple(outs[name].shape) for name in taps] == [(3, width) for width in hidden]


def test_class_attributes_describe_the_default_layout() -> None:
    assert MLP.default_taps == ("block1", "block2") and MLP.embedding_layer == "block2"
    assert MLP(4, 1).default_taps == MLP.default_taps


def test_dropout_only_when_asked() -> None:
    assert isinstance(MLP(4, 2).dropout, nn.Identity)
    model = MLP(4, 2, dropout=0.5)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    x = torch.randn(8, 4)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x)), "dropout is not applied in training"


@pytest.mark.parametrize("shape", [(4, 5), (4, 6, 1), (6,), (2, 1, 6, 6)])
def test_refuses_inputs_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(UsageError, match=r"expects inputs \(B, 6\)"):
        MLP(6, 1)(torch.zeros(shape))


@pytest.mark.parametrize(
    "args,kwargs", [((0, 1), {}), ((3, 0), {}), ((3, 1), {"hidden": ()}), ((3, 1), {"hidden": (8, 0)}),
                    ((3, 1), {"dropout": 1.0})],
)  # fmt: skip
def test_invalid_settings(args: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(UsageError):
        MLP(*args, **kwargs)


def test_learns_diabetes_with_the_regression_loss() -> None:
    torch.manual_seed(0)
    ds = load_dataset("diabetes")
    task = RegressionTask()
    x, y = ds.to_float(ds.x_train), task.check_targets(ds.y_train)
    model = build_model("mlp", ds.in_channels, ds.num_outputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return task.per_sample_loss(model(x), y).mean()

    with torch.no_grad():
        before = float(loss())
    for _ in range(150):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.6 * before, (before, after)
    metric = task.new_metric()
    with torch.no_grad():
        metric.update(model(x), y)
    assert metric.compute() > 0.4  # a linear model already reaches R² ≈ 0.5 on these patients
