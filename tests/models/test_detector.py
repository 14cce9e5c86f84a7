"""Tests of the CenterNet detector on a feature pyramid: output maps, taps, initialisation, the loss prediction
module attached to its pyramid levels, and a short training run on synthetic squares."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import learnloss
from learnloss.errors import UsageError
from learnloss.models import default_taps, embedding_layer
from learnloss.models.detector import OUTPUT_STRIDE, CenterNetFPN
from learnloss.tasks.detection import DetectionTask
from tests_support import tapped_shapes


@pytest.mark.parametrize(
    "shape,cells", [((2, 1, 64, 64), (16, 16)), ((2, 1, 32, 32), (8, 8)), ((2, 3, 30, 45), (8, 12)),
                    ((2, 2, 1, 1), (1, 1))]
)
def test_output_maps(shape: tuple[int, int, int, int], cells: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = CenterNetFPN(shape[1], 5, width=8)
    out = model(torch.randn(*shape))
    assert set(out) == {"heatmap", "size", "offset"}
    assert out["heatmap"].shape == (shape[0], 5, *cells)
    assert out["size"].shape == out["offset"].shape == (shape[0], 2, *cells)
    assert cells == (math.ceil(shape[2] / OUTPUT_STRIDE), math.ceil(shape[3] / OUTPUT_STRIDE))
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())  # every layer, every pyramid level is used


def test_heatmap_starts_at_the_prior() -> None:
    torch.manual_seed(0)
    model = CenterNetFPN(1, 3).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 1, 64, 64))
    assert model.heatmap.out.bias.tolist() == pytest.approx([-math.log(9)] * 3)
    assert float(torch.sigmoid(out["heatmap"]).mean()) == pytest.approx(0.1, abs=0.02)
    assert float(out["size"].abs().max()) < 0.5 and float(out["offset"].abs().max()) < 0.5
    with torch.no_grad():
        heat = CenterNetFPN(1, 3, prior=0.01)(torch.randn(2, 1, 32, 32))["heatmap"]
    assert float(torch.sigmoid(heat).mean()) == pytest.approx(0.01, abs=0.005)


def test_taps_are_the_pyramid_levels() -> None:
    model = CenterNetFPN(1, 4, width=8)
    modules = dict(model.named_modules())
    assert model.default_taps == ("fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5")
    assert model.embedding_layer == "fpn.p5" and model.embedding_layer in model.default_taps
    assert all(name in modules for name in model.default_taps)
    shapes = tapped_shapes(model, model.default_taps, torch.randn(3, 1, 64, 64))
    assert shapes == {"fpn.p2": (3, 16, 16, 16), "fpn.p3": (3, 16, 8, 8), "fpn.p4": (3, 16, 4, 4),
                      "fpn.p5": (3, 16, 2, 2)}
    assert model.embedding_dim == 16
    assert default_taps(model) == model.default_taps and embedding_layer(model) == "fpn.p5"


def test_loss_prediction_module_reads_the_pyramid() -> None:
    torch.manual_seed(0)
    model = CenterNetFPN(1, 2, width=8, fpn_channels=24)
    x = torch.randn(5, 1, 64, 64)
    ll = learnloss.attach(model, model.default_taps, example_input=x[:2], embedding_layer=model.embedding_layer)
    assert ll.lpm.in_channels == (24, 24, 24, 24)
    out = model(x)
    assert isinstance(out, dict)
    predicted = ll.predicted_loss()
    assert predicted.shape == (5,) and bool(predicted.isfinite().all())
    assert ll.embeddings().shape == (5, 24)
    target_loss = DetectionTask().per_sample_loss(out, torch.tensor([[[0, 0.1, 0.1, 0.5, 0.5]]] * 5))
    assert target_loss.shape == predicted.shape  # one loss per image, one prediction per image
    predicted.sum().backward()
    assert model.fpn.p5[0].weight.grad is not None  # the LPM's gradient reaches the detector through its taps
    ll.remove()


def test_options_and_dropout() -> None:
    model = CenterNetFPN(3, 2, 0.3, width=4, blocks=2, fpn_channels=8, head_channels=6)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 3
    assert len(model.layer1) == 2 and model.heatmap.conv.out_channels == 6 and model.embedding_dim == 8
    assert not any(isinstance(m, nn.Dropout) for m in CenterNetFPN(3, 2).modules())


@pytest.mark.parametrize(
    "args,kwargs",
    [((0, 2), {}), ((1, 0), {}), ((1, 2, 1.0), {}), ((1, 2), {"width": 0}), ((1, 2), {"blocks": 0}),
     ((1, 2), {"fpn_channels": 0}), ((1, 2), {"head_channels": 0}), ((1, 2), {"prior": 0.0}),
     ((1, 2), {"prior": 1.0}), ((1.5, 2), {})],
)
def test_invalid_arguments(args: tuple[float, ...], kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        CenterNetFPN(*args, **kwargs)  # type: ignore[arg-type]


def test_deterministic_given_seed() -> None:
    x = torch.randn(2, 1, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = CenterNetFPN(1, 3, width=4).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def _squares(count: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark noisy images with one bright square each (6 to 12 pixels), and its box as a target."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, side, side, generator=g) * 0.1
    targets = torch.zeros(count, 1, 5)
    for i in range(count):
        size = int(torch.randint(6, 13, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, side - size + 1, (2,), generator=g))
        images[i, 0, y0:y0 + size, x0:x0 + size] += 1.0
        targets[i, 0] = torch.tensor([0, x0 / side, y0 / side, (x0 + size) / side, (y0 + size) / side])
    return images, targets


def test_a_short_training_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    images, targets = _squares(48, 32, seed=0)
    model = CenterNetFPN(1, 1, width=8)
    task = DetectionTask()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)

    def mean_loss() -> float:
        with torch.no_grad():
            return float(task.per_sample_loss(model(images), targets).mean())

    before = mean_loss()
    for _ in range(3):  # 9 steps: the loss falls to about a third of its start (0.32 - 0.38 over three seeds)
        for start in range(0, 48, 16):
            loss = task.per_sample_loss(model(images[start:start + 16]), targets[start:start + 16]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = mean_loss()
    assert after < 0.5 * before, (before, after)
