"""Tests of the model registry and the tapping metadata helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learnloss.errors import LayerNotFoundError, UnknownNameError, UsageError
from learnloss.models import (
    ResNet,
    SmallCNN,
    available_models,
    build_model,
    default_taps,
    embedding_layer,
)

EXPECTED = ["detector", "hourglass", "mlp", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "small-cnn"]


def test_available_models() -> None:
    assert available_models() == EXPECTED


@pytest.mark.parametrize(
    "name,cls", [("resnet18", ResNet), ("ResNet50", ResNet), ("SMALL-CNN", SmallCNN), ("small_cnn", SmallCNN)]
)
def test_build_model_case_insensitive(name: str, cls: type[nn.Module]) -> None:
    model = build_model(name, 1, 4).eval()
    assert isinstance(model, cls)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("name", available_models())
def test_default_taps_and_embedding_exist(name: str) -> None:
    model = build_model(name, 3, 10)
    modules = dict(model.named_modules())
    taps = default_taps(model)
    assert taps and all(t in modules for t in taps)
    assert embedding_layer(model) in taps


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_model("vgg16", 3, 10)
    assert isinstance(info.value, UsageError)
    assert info.value.kind == "model"
    assert info.value.available == EXPECTED
    message = str(info.value)
    assert "vgg16" in message
    assert all(name in message for name in EXPECTED)


def test_plain_model_has_no_defaults() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UsageError, match="explicitly"):
        default_taps(model)
    with pytest.raises(UsageError, match="explicitly"):
        embedding_layer(model)


def test_declared_but_missing_layer() -> None:
    class Broken(nn.Module):
        default_taps = ("nope",)
        embedding_layer = "nope"

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(LayerNotFoundError):
        default_taps(Broken())
    with pytest.raises(LayerNotFoundError):
        embedding_layer(Broken())


def test_build_model_validates_sizes() -> None:
    with pytest.raises(UsageError):
        build_model("resnet18", 0, 10)


@pytest.mark.parametrize("name", ["small-cnn", "resnet18"])
def test_dropout_before_the_classifier(name):
    from learnloss.models import build_model

    assert isinstance(build_model(name, 1, 10).dropout, nn.Identity), "the paper's networks have no dropout"
    model = build_model(name, 1, 10, dropout=0.4)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.4
    x = torch.rand(4, 1, 16, 16)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x)), "dropout is not applied in training"


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.3"])
def test_bad_dropout_is_a_usage_error(p):
    from learnloss.models import build_model

    with pytest.raises(UsageError, match="dropout must be a probability"):
        build_model("small-cnn", 1, 10, dropout=p)
