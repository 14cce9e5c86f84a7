"""Tests of the CIFAR-style ResNets (He et al. 2016) used as target models (Yoo & Kweon 2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.models import RESNET_DEPTHS, BasicBlock, Bottleneck, ResNet, build_model, resnet
from tests_support import tapped_shapes


@pytest.mark.parametrize("depth", sorted(RESNET_DEPTHS))
def test_every_depth_gives_logits_on_cifar_shape(depth: int) -> None:
    torch.manual_seed(0)
    model = resnet(depth, 3, 10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize(
    "shape", [(2, 3, 32, 32), (2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 64, 64), (2, 4, 5, 7), (2, 2, 1, 1)]
)
def test_any_channels_and_size(depth: int, shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    model = resnet(depth, shape[1], 7)
    out = model(torch.randn(*shape))  # training mode: batch norm sees a batch of 2
    assert out.shape == (2, 7)
    out.sum().backward()
    assert model.conv1.weight.grad is not None


def test_forward_returns_a_plain_tensor() -> None:
    model = resnet(18, 1, 3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 8, 8))
    assert isinstance(out, torch.Tensor)


def test_resnet18_parameter_count_matches_cifar_reference() -> None:
    model = build_model("resnet18", 3, 10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


@pytest.mark.parametrize("depth,block", [(18, BasicBlock), (34, BasicBlock), (50, Bottleneck), (101, Bottleneck)])
def test_block_types_and_stage_lengths(depth: int, block: type[nn.Module]) -> None:
    model = resnet(depth, 3, 10)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(s) for s in stages] == list(RESNET_DEPTHS[depth][1])
    assert all(isinstance(b, block) for s in stages for b in s)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert model.fc.in_features == 512 * (4 if block is Bottleneck else 1)


def test_default_taps_exist_and_have_cifar_shapes() -> None:
    model = resnet(18, 3, 10).eval()
    modules = dict(model.named_modules())
    assert ResNet.default_taps == ("layer1", "layer2", "layer3", "layer4")
    assert all(name in modules for name in model.default_taps)
    assert model.embedding_layer == "layer4"
    with torch.no_grad():
        shapes = tapped_shapes(model, model.default_taps, torch.randn(2, 3, 32, 32))
    assert shapes == {
        "layer1": (2, 64, 32, 32),
        "layer2": (2, 128, 16, 16),
        "layer3": (2, 256, 8, 8),
        "layer4": (2, 512, 4, 4),
    }


def test_bottleneck_taps_are_expanded() -> None:
    model = resnet(50, 3, 10).eval()
    with torch.no_grad():
        shapes = tapped_shapes(model, model.default_taps, torch.randn(1, 3, 32, 32))
    assert [s[1] for s in shapes.values()] == [256, 512, 1024, 2048]


def test_width_scales_stages() -> None:
    model = ResNet(BasicBlock, (1, 1, 1, 1), 3, 10, width=8).eval()
    with torch.no_grad():
        shapes = tapped_shapes(model, model.default_taps, torch.randn(1, 3, 16, 16))
    assert [s[1] for s in shapes.values()] == [8, 16, 32, 64]


def test_initialisation() -> None:
    model = resnet(18, 3, 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    std = model.conv1.weight.std().item()
    expected = (2.0 / (64 * 3 * 3)) ** 0.5  # Kaiming normal, fan_out
    assert 0.7 * expected < std < 1.3 * expected


@pytest.mark.parametrize("depth", [0, 20, 200, -18, True])
def test_invalid_depth_lists_valid_depths(depth: int) -> None:
    with pytest.raises(UsageError) as info:
        resnet(depth, 3, 10)
    for valid in (18, 34, 50, 101, 152):
        assert str(valid) in str(info.value)


@pytest.mark.parametrize("in_channels,num_classes", [(0, 10), (3, 0), (-1, 10), (3, -2)])
def test_invalid_sizes_raise_usage_error(in_channels: int, num_classes: int) -> None:
    with pytest.raises(UsageError):
        resnet(18, in_channels, num_classes)


def test_invalid_layers_raise_usage_error() -> None:
    with pytest.raises(UsageError):
        ResNet(BasicBlock, (2, 2, 2), 3, 10)
    with pytest.raises(UsageError):
        ResNet(BasicBlock, (2, 0, 2, 2), 3, 10)


def test_deterministic_given_seed() -> None:
    x = torch.randn(2, 3, 16, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = resnet(18, 3, 10).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(124)
    other = resnet(18, 3, 10).eval()
    with torch.no_grad():
        assert not torch.equal(other(x), outs[0])
