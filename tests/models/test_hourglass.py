"""Tests of the stacked hourglass network: heatmap shapes, taps, the loss prediction module on its features, and a
short training run on a tiny keypoint problem."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import learnloss
from learnloss.errors import UsageError
from learnloss.models import default_taps, embedding_layer
from learnloss.models.hourglass import HourglassNet, hourglass_taps
from learnloss.tasks.keypoints import KeypointTask
from tests_support import tapped_outputs

EPOCHS = 12  # of the short training run, 4 steps each: about 2 s on one core


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run each test on one intra-op thread: these tensors are too small to gain from a second, and on a shared
    machine every op then waits for a descheduled thread (measured: 50 ms per BatchNorm of a 16x4x2x2 batch, and
    the training run 10x slower, with two threads on two busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "shape,heatmap",
    [((2, 1, 64, 64), (16, 16)), ((2, 1, 32, 32), (8, 8)), ((2, 3, 30, 18), (8, 5)), ((2, 1, 1, 1), (1, 1))],
)
def test_heatmap_shapes(shape: tuple[int, int, int, int], heatmap: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = HourglassNet(shape[1], 13, width=8)
    out = model(torch.randn(*shape))
    assert out.shape == (2, 13, *heatmap)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_two_stacks_and_deeper_hourglasses() -> None:
    torch.manual_seed(0)
    model = HourglassNet(1, 5, width=8, depth=4, stacks=2, blocks=2)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5, 16, 16)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5, 8, 8)  # depth 4 reaches 1x1 and stays there


def test_default_taps_and_embedding_layer() -> None:
    model = HourglassNet(1, 13).eval()
    assert model.default_taps == HourglassNet.default_taps == (
        "stacks.0.hourglass.inner.inner.inner", "stacks.0.hourglass.inner.inner", "stacks.0.hourglass.inner",
        "stacks.0.features",
    )
    assert model.embedding_layer == "stacks.0.features" and model.embedding_layer in model.default_taps
    assert default_taps(model) == model.default_taps
    assert embedding_layer(model) == model.embedding_layer
    with torch.no_grad():
        outs = tapped_outputs(model, model.default_taps, torch.randn(3, 1, 64, 64))
    sizes = [tuple(outs[n].shape) for n in model.default_taps]
    assert sizes == [(3, 32, 2, 2), (3, 32, 4, 4), (3, 32, 8, 8), (3, 32, 16, 16)]
    assert model.embedding_dim == 32


@pytest.mark.parametrize("depth,stacks", [(1, 1), (2, 3), (4, 2)])
def test_taps_follow_the_configuration(depth: int, stacks: int) -> None:
    model = HourglassNet(1, 3, width=4, depth=depth, stacks=stacks)
    taps = hourglass_taps(depth, stacks)
    assert model.default_taps == taps and len(taps) == depth + stacks
    assert model.embedding_layer == f"stacks.{stacks - 1}.features"
    modules = dict(model.named_modules())
    assert all(name in modules for name in taps)
    assert HourglassNet.default_taps == hourglass_taps(3, 1), "the class attribute keeps the defaults"


def test_learning_loss_attaches_to_the_default_taps() -> None:
    torch.manual_seed(0)
    model = HourglassNet(1, 13)
    example = torch.randn(2, 1, 64, 64)
    ll = learnloss.attach(model, model.default_taps, example_input=example, embedding_layer=model.embedding_layer)
    assert ll.lpm.in_channels == (32, 32, 32, 32)
    heatmaps = model(torch.randn(5, 1, 64, 64))
    predicted = ll.predicted_loss()
    assert heatmaps.shape == (5, 13, 16, 16) and predicted.shape == (5,)
    assert ll.embeddings().shape == (5, 32)
    target = torch.rand(5, 13, 3) * torch.tensor([1.0, 1.0, 0.0]) + torch.tensor([0.0, 0.0, 2.0])
    loss = KeypointTask().per_sample_loss(heatmaps, target).mean() + 1e-4 * predicted.mean()
    loss.backward()
    assert all(p.grad is not None for p in ll.lpm.parameters())
    ll.remove()


def test_dropout_only_before_the_last_head() -> None:
    assert not any(isinstance(m, nn.Dropout) for m in HourglassNet(1, 3, width=4).modules())
    model = HourglassNet(1, 3, width=4, stacks=2, dropout=0.3)
    drops = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert drops == ["stacks.1.dropout"]


def test_heads_start_near_zero_and_the_model_is_deterministic() -> None:
    x = torch.randn(2, 1, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = HourglassNet(1, 4).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])
    assert float(outs[0].abs().max()) < 0.5


@pytest.mark.parametrize(
    "args,kwargs",
    [((0, 13), {}), ((1, 0), {}), ((1, 13), {"width": 0}), ((1, 13), {"depth": 0}), ((1, 13), {"stacks": 0}),
     ((1, 13), {"blocks": 0}), ((1, 13), {"dropout": 1.0}), ((True, 13), {}), ((1, 13), {"depth": 2.0})],
)
def test_invalid_arguments(args: tuple[int, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        HourglassNet(*args, **kwargs)


def _dot_problem(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` dark ``size x size`` images, each with one bright 3x3 dot; its centre is the single keypoint."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(2, size - 2, (n,), generator=g)
    cols = torch.randint(2, size - 2, (n,), generator=g)
    images = 0.05 * torch.rand(n, 1, size, size, generator=g)
    for i in range(n):
        images[i, 0, rows[i] - 1 : rows[i] + 2, cols[i] - 1 : cols[i] + 2] = 1.0
    targets = torch.stack([(cols + 0.5) / size, (rows + 0.5) / size, torch.full((n,), 2.0)], dim=1)[:, None, :]
    return images, targets


def test_a_short_training_run_learns_where_the_dot_is() -> None:
    torch.manual_seed(0)
    images, targets = _dot_problem(64, 32, seed=0)
    model = HourglassNet(1, 1, width=16, depth=2)
    task = KeypointTask()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(EPOCHS):
        order = torch.randperm(64)
        for start in range(0, 64, 16):
            batch = order[start : start + 16]
            loss = task.per_sample_loss(model(images[batch]), targets[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        heatmaps = model(images)
        final = float(task.per_sample_loss(heatmaps, targets).mean())
    assert final < 0.5 * (sum(losses[:4]) / 4)
    error = task.new_metrics()["mean_error"]
    error.update(heatmaps, targets)
    assert error.compute() < 0.5 / 8, "within half a pixel of the 8x8 heatmaps on average"
