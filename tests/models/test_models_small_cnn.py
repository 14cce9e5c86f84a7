"""Tests of the small CNN used for fast CPU runs."""

from __future__ import annotations

import pytest
import torch

from learnloss.errors import UsageError
from learnloss.models import SmallCNN
from tests_support import tapped_outputs


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32), (2, 3, 1, 1)])
def test_shapes(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    model = SmallCNN(shape[1], 10)
    out = model(torch.randn(*shape))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_taps_exist_and_hidden_is_a_vector() -> None:
    model = SmallCNN(1, 10, width=8).eval()
    modules = dict(model.named_modules())
    assert model.default_taps == ("block1", "block2", "block3", "hidden")
    assert model.embedding_layer == "hidden"
    assert all(n in modules for n in model.default_taps)
    with torch.no_grad():
        outs = tapped_outputs(model, model.default_taps, torch.randn(3, 1, 8, 8))
    assert outs["block1"].shape == (3, 8, 8, 8)
    assert outs["block2"].shape == (3, 16, 4, 4)
    assert outs["block3"].shape == (3, 32, 2, 2)
    assert outs["hidden"].shape == (3, 128)
    assert outs["hidden"].dim() == 2


def test_deterministic_given_seed() -> None:
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = SmallCNN(3, 5).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("args", [(0, 10), (1, 0), (1, 10, 0)])
def test_invalid_sizes(args: tuple[int, ...]) -> None:
    with pytest.raises(UsageError):
        SmallCNN(*args)
