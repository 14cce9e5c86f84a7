"""Feature layouts: every tapped output is pooled over the right dimensions, or refused — never guessed.

The loss prediction module (Yoo & Kweon, CVPR 2019, Fig. 2) globally average-pools each tapped output to
``(B, C)``. A rank-3 output may be ``(B, C, L)``, ``(B, T, C)`` or ``(T, B, C)``; pooling the wrong dimension
builds the module for the wrong width or, worse, averages over the batch and mixes samples.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import learnloss
from learnloss.errors import FeatureShapeError, UsageError
from learnloss.inference.view import ModelView
from learnloss.lpm import LAYOUTS, FeatureTaps, LossPredictionModule, pool_features
from learnloss.tasks.classification import ClassificationTask


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


class Conv1dNet(nn.Module):
    """(B, 4, L) signals: a Conv1d gives (B, C, L) with C = 6 and L = 18."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3)
        self.norm = nn.BatchNorm1d(6)
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.norm(self.conv(x)))).mean(2))


class RecurrentNet(nn.Module):
    """(B, T, 5) sequences through an LSTM with either batch_first."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.lstm = nn.LSTM(5, 7, batch_first=batch_first)
        self.head = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x if self.batch_first else x.transpose(0, 1))
        return self.head(out[:, -1] if self.batch_first else out[-1])


class SequenceFirstTransformer(nn.Module):
    """(B, T, 8) inputs, run sequence-first through a TransformerEncoderLayer(batch_first=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x.transpose(0, 1))  # (T, B, 8)
        return self.head(out.mean(0))


class TokenNet(nn.Module):
    """A Linear applied to a (B, T, C) sequence: its rank-3 output is ambiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.seq(x)).mean(1))


def test_conv1d_tap_builds_the_module_for_channels_not_length():
    net = Conv1dNet()
    ll = learnloss.attach(net, ["conv", "norm", "pool"], example_input=torch.zeros(2, 4, 20))
    assert ll.lpm.in_channels == (6, 6, 6)  # C, not L = 18 or 9
    assert ll.taps.layouts == ("channels-first",) * 3
    x = torch.randn(5, 4, 20)
    net(x)
    conv_out = net.conv(x)
    assert torch.equal(ll.taps.pooled()[0], conv_out.mean(2))
    assert ll.predicted_loss().shape == (5,)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("steps", [2, 9])  # 2: the time steps equal the probe's batch size of 2
def test_lstm_pools_over_time_for_either_batch_first(batch_first, steps):
    torch.manual_seed(0)
    net = RecurrentNet(batch_first)
    ll = learnloss.attach(net, ["lstm"], example_input=torch.zeros(2, steps, 5))
    assert ll.lpm.in_channels == (7,)
    assert ll.taps.layouts == ("batch-first" if batch_first else "sequence-first",)
    x = torch.randn(4, steps, 5)
    net(x)
    out, _ = net.lstm(x if batch_first else x.transpose(0, 1))
    expected = out.mean(1) if batch_first else out.mean(0)
    pooled = ll.taps.pooled()[0]
    assert pooled.shape == (4, 7)
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert ll.predicted_loss().shape == (4,)


def test_sequence_first_transformer_pools_over_time_and_keeps_samples_apart():
    torch.manual_seed(0)
    net = SequenceFirstTransformer().eval()
    ll = learnloss.attach(net, ["encoder"], example_input=torch.zeros(2, 6, 8))
    assert ll.taps.layouts == ("sequence-first",)
    assert ll.lpm.in_channels == (8,)
    x = torch.randn(4, 6, 8)
    with torch.no_grad():
        net(x)
        out = net.encoder(x.transpose(0, 1))  # (T, B, C)
        pooled = ll.taps.pooled()[0]
        assert torch.allclose(pooled, out.mean(0), atol=1e-6)
        before = ll.predicted_loss()
        changed = x.clone()
        changed[2] += torch.randn(6, 8)
        net(changed)
        after = ll.predicted_loss()
    assert before.shape == after.shape == (4,)
    others = [0, 1, 3]
    assert torch.allclose(before[others], after[others], atol=1e-6), "another sample's input leaked into its score"
    assert not torch.allclose(before[2], after[2], atol=1e-4)


def test_sequence_first_transformer_with_as_many_steps_as_samples():
    """T == B: only the module's batch_first can tell; it does."""
    net = SequenceFirstTransformer()
    ll = learnloss.attach(net, ["encoder"], example_input=torch.zeros(2, 2, 8))
    assert ll.taps.layouts == ("sequence-first",)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_containers_and_attention_read_batch_first(batch_first):
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=batch_first)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x if batch_first else x.transpose(0, 1)
            x = self.stack(x)
            return self.attn(x, x, x)[0]

    expected = "batch-first" if batch_first else "sequence-first"
    taps = FeatureTaps(Net(), ["stack", "attn"])
    assert taps.probe(torch.zeros(3, 3, 8)) == [8, 8]
    assert taps.layouts == (expected, expected)


def test_unknown_rank3_module_with_batch_in_dim_1_is_sequence_first():
    class TimeMajor(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.transpose(0, 1) * 2.0  # (T, B, C)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = TimeMajor()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x).mean(0)

    net = Net()
    ll = learnloss.attach(net, ["body"], example_input=torch.zeros(2, 5, 3))
    assert ll.taps.layouts == ("sequence-first",) and ll.lpm.in_channels == (3,)
    x = torch.randn(4, 5, 3)
    net(x)
    assert torch.allclose(ll.taps.pooled()[0], (x * 2.0).mean(1))


def test_ambiguous_rank3_output_is_refused_naming_the_layer_and_the_fix():
    net = TokenNet()
    with pytest.raises(FeatureShapeError) as info:
        learnloss.attach(net, ["seq"], example_input=torch.zeros(2, 9, 6))
    message = str(info.value)
    assert "\n" not in message
    assert "'seq'" in message and "Linear" in message and "(2, 9, 5)" in message
    assert "layouts={'seq': 'batch-first'}" in message
    assert all(layout in message for layout in LAYOUTS) and "callable" in message
    assert _no_hooks(net), "a failed attach must not leave hooks behind"


def test_ambiguous_output_works_with_an_explicit_layout():
    net = TokenNet()
    ll = learnloss.attach(net, ["seq"], example_input=torch.zeros(2, 9, 6), layouts={"seq": "batch-first"})
    assert ll.lpm.in_channels == (5,)
    x = torch.randn(3, 9, 6)
    net(x)
    assert torch.equal(ll.taps.pooled()[0], net.seq(x).mean(1))
    assert ll.embeddings().shape == (3, 5)
    assert ll.predicted_loss().shape == (3,)


def test_callable_layout():
    net = TokenNet()

    def max_over_time(t: torch.Tensor) -> torch.Tensor:
        return t.amax(dim=1)

    ll = learnloss.attach(net, ["seq"], example_input=torch.zeros(2, 9, 6), layouts={"seq": max_over_time})
    assert ll.taps.layouts == (max_over_time,) and ll.lpm.in_channels == (5,)
    x = torch.randn(3, 9, 6)
    net(x)
    assert torch.equal(ll.taps.pooled()[0], net.seq(x).amax(dim=1))
    assert ll.predicted_loss().shape == (3,)


def test_callable_layout_that_does_not_return_a_batch_of_vectors_is_refused():
    net = TokenNet()
    for bad in (lambda t: t, lambda t: t.mean(0)):  # (B, T, C); (T, C) — averaged over the batch
        with pytest.raises(FeatureShapeError, match="seq"):
            learnloss.attach(net, ["seq"], example_input=torch.zeros(2, 9, 6), layouts={"seq": bad})
        assert _no_hooks(net)


def test_unknown_layout_and_untapped_layer_are_refused():
    net = TokenNet()
    with pytest.raises(UsageError) as info:
        learnloss.attach(net, ["seq"], example_input=torch.zeros(2, 9, 6), layouts={"seq": "time-major"})
    assert "'time-major'" in str(info.value) and all(layout in str(info.value) for layout in LAYOUTS)
    with pytest.raises(UsageError, match="'head'.*not tapped"):
        FeatureTaps(net, ["seq"], layouts={"head": "batch-first"})
    with pytest.raises(UsageError, match="unknown feature layout"):
        pool_features(torch.zeros(2, 3, 4), "time-major")
    assert _no_hooks(net)


@pytest.mark.parametrize(
    ("layers", "layouts", "example"),
    [
        (["seq"], {"seq": "sequence-first"}, torch.zeros(2, 9, 6)),  # dim 1 is 9, not the batch of 2
        (["encoder"], {"encoder": "batch-first"}, torch.zeros(2, 6, 8)),  # (T=6, B=2, C): dim 0 is not the batch
        (["norm"], {"norm": "sequence-first"}, torch.zeros(2, 4, 20)),  # (B=2, C=6, L=18)
    ],
)
def test_explicit_layout_contradicting_the_shapes_is_refused(layers, layouts, example):
    net = {"seq": TokenNet, "encoder": SequenceFirstTransformer}.get(layers[0], Conv1dNet)()
    with pytest.raises(FeatureShapeError, match=layers[0]):
        learnloss.attach(net, layers, example_input=example, layouts=layouts)
    assert _no_hooks(net)


def test_a_stated_layout_that_fits_the_shapes_wins_over_the_module_type():
    net = Conv1dNet()
    ll = learnloss.attach(net, ["conv"], example_input=torch.zeros(2, 4, 20), layouts={"conv": "batch-first"})
    assert ll.taps.layouts == ("batch-first",) and ll.lpm.in_channels == (18,)


def test_sequence_layout_on_a_feature_map_or_vector_is_refused():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    for layer, layout in (("conv", "batch-first"), ("fc", "sequence-first")):
        with pytest.raises(FeatureShapeError, match=f"'{layer}'.*rank-3"):
            learnloss.attach(Net(), [layer], example_input=torch.zeros(2, 3, 8, 8), layouts={layer: layout})
    with pytest.raises(FeatureShapeError, match=r"\(B, T, C\)"):
        pool_features(torch.zeros(2, 3, 4, 4), "batch-first")


def test_maps_and_vectors_pool_exactly_as_before():
    """Rank 2 and 4 are unchanged bit for bit: (B, C) as is, (B, C, H, W) as flatten(2).mean(2)."""
    torch.manual_seed(0)
    vector, fmap = torch.randn(5, 7), torch.randn(5, 6, 9, 11)
    assert pool_features(vector) is vector
    assert torch.equal(pool_features(fmap), fmap.flatten(2).mean(dim=2))
    assert torch.equal(pool_features(fmap, "channels-first"), fmap.flatten(2).mean(dim=2))
    volume = torch.randn(2, 3, 4, 5, 6)
    assert torch.equal(pool_features(volume), volume.flatten(2).mean(dim=2))

    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    ll = learnloss.attach(net, ["1", "4"], example_input=torch.zeros(2, 3, 8, 8), width=16)
    assert ll.taps.layouts == ("channels-first", "channels-first")
    x = torch.randn(6, 3, 8, 8)
    net(x)
    maps, vectors = net[1](net[0](x)), net[4](net[3](net[2](net[1](net[0](x)))))
    lpm = ll.lpm
    levels = [torch.relu(lpm.levels[0](maps.flatten(2).mean(dim=2))), torch.relu(lpm.levels[1](vectors))]
    expected = lpm.out(torch.cat(levels, dim=1)).squeeze(1)
    assert torch.equal(ll.predicted_loss(), expected)
    assert torch.equal(ll.predicted_loss(detach_features=True), expected)
    assert torch.equal(ll.embeddings(), vectors)


def test_detach_features_stops_the_gradient_into_the_model():
    net = Conv1dNet()
    ll = learnloss.attach(net, ["conv", "pool"], example_input=torch.zeros(2, 4, 20))
    net(torch.randn(4, 4, 20))
    ll.predicted_loss(detach_features=True).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    assert all(p.grad is not None for p in ll.lpm.parameters())
    net(torch.randn(4, 4, 20))
    ll.predicted_loss().sum().backward()
    assert net.conv.weight.grad is not None


def test_lpm_refuses_unpooled_features():
    lpm = LossPredictionModule([6, 5])
    with pytest.raises(FeatureShapeError, match="level 0.*pooled"):
        lpm([torch.randn(4, 6, 3, 3), torch.randn(4, 5)])
    with pytest.raises(FeatureShapeError, match="level 1"):
        lpm([torch.randn(4, 6), torch.randn(4, 9, 5)])
    assert lpm([torch.randn(4, 6), torch.randn(4, 5)]).shape == (4,)


def test_pooled_without_probe_resolves_layouts_from_the_forward_pass():
    net = RecurrentNet(batch_first=False)
    with FeatureTaps(net, ["lstm"]) as taps:
        x = torch.randn(3, 8, 5)
        net(x)
        out, _ = net.lstm(x.transpose(0, 1))
        assert torch.allclose(taps.pooled()[0], out.mean(0))
        assert taps.layouts == ("sequence-first",)


def test_model_view_embeddings_use_the_taps_layouts():
    net = RecurrentNet(batch_first=False)
    taps = FeatureTaps(net, ["lstm"])
    taps.probe(torch.zeros(2, 8, 5))
    view = ModelView(net, ClassificationTask(), embedding_taps=taps)
    x = torch.randn(3, 8, 5)
    net(x)
    out, _ = net.lstm(x.transpose(0, 1))
    embeddings = view.embeddings()
    assert embeddings.shape == (3, 7)
    assert torch.allclose(embeddings, out.mean(0))
    view.remove()
