"""The loss prediction module, its taps and its losses (docs/pitfalls.md §3, §4, §5, §7)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import learnloss
from learnloss.errors import FeatureShapeError, LayerNotFoundError, UnknownNameError
from learnloss.lpm import FeatureTaps, LossPredictionModule, get_lpm_loss, margin_ranking_loss, mse_loss


class MixedNet(nn.Module):
    """A model whose layers give a feature map, a sequence and a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.seq = nn.Linear(6, 5)  # applied to (B, T, C)
        self.head = nn.Linear(5, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))  # (B, 6, H, W)
        tokens = self.seq(x.flatten(2).transpose(1, 2))  # (B, H*W, 5)
        return self.fc(torch.relu(self.head(tokens.mean(1))))


@pytest.mark.parametrize("size", [(7, 9), (32, 32), (64, 48)])
def test_attach_infers_widths_for_maps_sequences_and_vectors_of_any_size(size):
    net = MixedNet()
    ll = learnloss.attach(
        net, ["conv", "seq", "head"], example_input=torch.zeros(2, 3, *size), layouts={"seq": "batch-first"}
    )
    assert ll.lpm.in_channels == (6, 5, 4)
    out = net(torch.randn(5, 3, *size))
    assert out.shape == (5, 3)
    assert ll.predicted_loss().shape == (5,)


def test_forward_is_unchanged_and_taps_can_be_removed():
    torch.manual_seed(0)
    net = MixedNet()
    x = torch.randn(3, 3, 8, 8)
    before = net(x)
    ll = learnloss.attach(net, ["conv", "head"], example_input=x)
    assert torch.equal(net(x), before)
    ll.remove()
    assert all(not m._forward_hooks for m in net.modules())
    assert torch.equal(net(x), before)


def test_unknown_layer_fails_up_front_listing_available_names():
    net = MixedNet()
    with pytest.raises(LayerNotFoundError) as info:
        learnloss.attach(net, ["conv", "layer9"], example_input=torch.zeros(1, 3, 8, 8))
    message = str(info.value)
    assert "'layer9'" in message and "conv" in message and "head" in message and "fc" in message
    assert all(not m._forward_hooks for m in net.modules()), "a failed attach must not leave hooks behind"


def test_unusable_output_fails_up_front():
    class ScalarOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).sum()  # the tapped module below returns a scalar per batch

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = ScalarOut()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    with pytest.raises(FeatureShapeError, match="body"):
        learnloss.attach(Wrapper(), ["body"], example_input=torch.zeros(3, 4))


def test_layers_that_do_not_run_are_reported():
    net = MixedNet()
    taps = FeatureTaps(net, ["conv"])
    with pytest.raises(FeatureShapeError, match="did not run"):
        taps.features


def test_every_lpm_parameter_is_registered_and_updated():
    """docs/pitfalls.md §4: layers in a plain list are never registered, never trained."""
    lpm = LossPredictionModule([6, 5, 4], width=16)
    names = {name for name, _ in lpm.named_parameters()}
    assert names == {f"levels.{i}.{p}" for i in range(3) for p in ("weight", "bias")} | {"out.weight", "out.bias"}
    before = [p.detach().clone() for p in lpm.parameters()]
    optimizer = torch.optim.SGD(lpm.parameters(), lr=0.1)
    features = [torch.randn(8, 6), torch.randn(8, 5), torch.randn(8, 4)]  # pooled (B, C) vectors
    # MSE, because the ranking loss is blind to a shift of all predictions: the output bias gets no gradient.
    loss = mse_loss(lpm(features), torch.randn(8))
    loss.backward()
    optimizer.step()
    for (name, param), old in zip(lpm.named_parameters(), before):
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert not torch.equal(param, old), name


def test_lpm_architecture_matches_the_paper():
    lpm = LossPredictionModule([64, 128, 256, 512])
    assert [fc.out_features for fc in lpm.levels] == [128] * 4
    assert lpm.out.in_features == 512 and lpm.out.out_features == 1
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.Dropout)) for m in lpm.modules())


def _brute_force_ranking_loss(pred, target, margin):
    b = len(pred)
    terms = []
    for i in range(b // 2):
        j = b - 1 - i
        sign = 1.0 if target[i] > target[j] else -1.0
        terms.append(max(0.0, -sign * (pred[i] - pred[j]) + margin))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("batch", [2, 3, 7, 8, 129])
def test_ranking_loss_matches_eq2_for_any_batch_size(batch):
    torch.manual_seed(batch)
    pred, target = torch.randn(batch), torch.randn(batch)
    target[0] = target[-1]  # a tie: sign is -1
    expected = _brute_force_ranking_loss(pred.tolist(), target.tolist(), 0.5)
    assert margin_ranking_loss(pred, target, margin=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_is_zero_when_order_is_right_by_the_margin():
    target = torch.tensor([3.0, 2.0, 0.0, 1.0])  # pairs (0,3) and (1,2)
    pred = torch.tensor([5.0, 4.0, 0.0, 1.0])
    assert margin_ranking_loss(pred, target, margin=1.0).item() == 0.0
    assert margin_ranking_loss(-pred, target, margin=1.0).item() > 0.0


def test_ranking_loss_does_not_backpropagate_into_targets():
    pred = torch.randn(6, requires_grad=True)
    target = torch.randn(6, requires_grad=True)
    for loss_fn in (margin_ranking_loss, mse_loss):
        loss_fn(pred, target).backward()
        assert target.grad is None


def test_single_sample_batch_contributes_zero_with_a_graph():
    pred = torch.randn(1, requires_grad=True)
    loss = margin_ranking_loss(pred, torch.randn(1))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None


def test_lpm_loss_registry():
    assert get_lpm_loss("ranking") is margin_ranking_loss
    assert get_lpm_loss("mse") is mse_loss
    with pytest.raises(UnknownNameError, match="mse, ranking"):
        get_lpm_loss("hinge")
