"""Attach a loss prediction module to any model in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.lpm.module import LossPredictionModule
from learnloss.lpm.taps import FeatureTaps, Layout


class LearningLoss:
    """A target model, feature taps on some of its layers, and the loss prediction module that reads them.

    Create it with :func:`attach`. After ``model(x)``, :meth:`predicted_loss` returns the predicted
    per-sample loss of that forward pass — the model runs once; the module reads the captured features.

    Attributes:
        model: the user's model, unchanged but for forward hooks.
        taps: the :class:`FeatureTaps` on ``layers``.
        lpm: the :class:`LossPredictionModule` (an ``nn.Module``: optimise ``lpm.parameters()``).
        embedding_layer: the tapped layer whose pooled output serves as the sample embedding.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps, lpm: LossPredictionModule, embedding_layer: str) -> None:
        self.model, self.taps, self.lpm, self.embedding_layer = model, taps, lpm, embedding_layer

    @property
    def layers(self) -> tuple[str, ...]:
        return self.taps.layers

    def predicted_loss(self, detach_features: bool = False) -> torch.Tensor:
        """Predicted loss ``(B,)`` for the last forward pass of the model.

        Each tapped output is globally average-pooled to ``(B, C)`` according to its layout
        (:meth:`FeatureTaps.pooled`) and the vectors go through the module (Yoo & Kweon, CVPR 2019, Fig. 2).
        With ``detach_features=True`` the features are detached first: the module still learns, but no
        gradient flows from it into the target model (the paper's stop-gradient after epoch 120 of 200).
        """
        return self.lpm(self.taps.pooled(detach=detach_features))

    def embeddings(self) -> torch.Tensor:
        """Globally average-pooled output ``(B, C)`` of :attr:`embedding_layer` for the last forward pass.

        Pooled according to the layer's layout, as for :meth:`predicted_loss`.
        """
        return self.taps.pooled_layer(self.embedding_layer)

    def clear(self) -> None:
        """Free the features captured by the last forward pass."""
        self.taps.clear()

    def remove(self) -> None:
        """Remove the forward hooks from the model."""
        self.taps.remove()


def attach(
    model: nn.Module,
    layers: Sequence[str],
    example_input: torch.Tensor,
    width: int = 128,
    embedding_layer: str | None = None,
    layouts: Mapping[str, Layout] | None = None,
) -> LearningLoss:
    """Attach a loss prediction module (Yoo & Kweon, CVPR 2019) to ``model``.

    Args:
        model: any ``nn.Module``; its ``forward`` is left as it is.
        layers: dotted names of the submodules to tap (see ``model.named_modules()``). Their outputs may be
            feature maps ``(B, C, *spatial)`` of any rank and size, sequences ``(B, T, C)`` or ``(T, B, C)``,
            or vectors ``(B, C)``; each is globally average-pooled to ``(B, C)`` according to its layout.
        example_input: one batch of inputs (``B ≥ 1``) used to check the taps and infer channel widths up front.
        width: width of each level's FC layer (128 in the paper).
        embedding_layer: tapped layer used for embeddings (core-set); defaults to the last of ``layers``.
        layouts: optional map from a tapped layer's name to its output layout: ``"channels-first"``
            ``(B, C, *spatial)``, ``"batch-first"`` ``(B, T, C)``, ``"sequence-first"`` ``(T, B, C)``, or a
            callable ``f(tensor) -> (B, C) tensor``. Other layers are inferred where certain (rank 2 and ≥ 4,
            the module type for rank 3, e.g. ``Conv1d`` or an ``nn.LSTM``'s ``batch_first``); an ambiguous
            rank-3 output (e.g. an ``nn.Linear`` applied to a sequence) is refused, asking for its layout.

    Returns:
        A :class:`LearningLoss`; move ``result.lpm`` to the model's device and add its parameters to an optimiser.

    Raises:
        LayerNotFoundError: a name is not a submodule (the message lists the available names).
        FeatureShapeError: a tapped output cannot be read by the module, its layout is ambiguous or it
            contradicts the stated layout.
        UsageError: a layout is unknown, or ``layouts`` names a layer that is not tapped.

    Example:
        >>> import torch, learnloss
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.LazyLinear(10))
        >>> ll = learnloss.attach(net, ["0", "2"], example_input=torch.zeros(2, 1, 8, 8))
        >>> logits = net(torch.randn(4, 1, 8, 8))
        >>> ll.predicted_loss().shape
        torch.Size([4])
    """
    taps = FeatureTaps(model, layers, layouts=layouts)
    try:
        widths = taps.probe(example_input)
        if embedding_layer is None:
            embedding_layer = taps.layers[-1]
        elif embedding_layer not in taps.layers:
            raise UsageError(f"embedding_layer {embedding_layer!r} must be one of the tapped layers {taps.layers}")
    except BaseException:
        taps.remove()
        raise
    lpm = LossPredictionModule(widths, width=width).to(example_input.device)
    return LearningLoss(model, taps, lpm, embedding_layer)
