"""A multilayer perceptron for vector inputs ``(B, D)``, e.g. tabular regression such as ``diabetes``.

It exposes the tapping interface of the other bundled models so that the loss prediction module of Yoo & Kweon,
"Learning Loss for Active Learning" (CVPR 2019), can be attached to it: every hidden ``Linear`` + ReLU block is a
vector tap ``(B, C)``, which the module reads directly (its global average pooling leaves vectors unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.models.init import classifier_dropout, init_weights
from learnloss.models.resnet import _check_positive

__all__ = ["MLP"]

DEFAULT_HIDDEN = (64, 64)


def _block_names(count: int) -> tuple[str, ...]:
    return tuple(f"block{i}" for i in range(1, count + 1))


class MLP(nn.Module):
    """Hidden blocks ``block1 .. blockN`` (each ``Linear`` + ReLU, widths ``hidden``), optional dropout and a
    linear output layer ``fc`` of width ``num_outputs``.

    ``forward(x)`` maps ``(B, in_features)`` to ``(B, num_outputs)``: logits for classification, values for
    regression. Weights are initialised as in the other bundled models (:func:`learnloss.models.init.init_weights`,
    which leaves ``Linear`` layers at PyTorch's default, as for the small CNN's hidden and output layers).

    Attributes:
        default_taps: the hidden blocks' names, each a vector tap ``(B, C)`` for the loss prediction module
            (``("block1", "block2")`` for the default ``hidden=(64, 64)``; one name per entry of ``hidden``).
        embedding_layer: the last hidden block, whose output is the penultimate embedding.
    """

    default_taps: tuple[str, ...] = _block_names(len(DEFAULT_HIDDEN))
    embedding_layer: str = default_taps[-1]

    def __init__(
        self, in_features: int, num_outputs: int, dropout: float = 0.0, hidden: Sequence[int] = DEFAULT_HIDDEN
    ) -> None:
        super().__init__()
        _check_positive("in_features", in_features)
        _check_positive("num_outputs", num_outputs)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or len(hidden) == 0:
            raise UsageError(f"hidden must list at least one hidden layer width, got {hidden!r}")
        for width in hidden:
            _check_positive("each hidden layer width", width)
        self.in_features = in_features
        self.num_outputs = num_outputs
        self.hidden_widths = tuple(hidden)
        self.embedding_dim = self.hidden_widths[-1]
        names = _block_names(len(self.hidden_widths))
        self.block_names = names
        if names != type(self).default_taps:
            self.default_taps = names
            self.embedding_layer = names[-1]
        width_in = in_features
        for name, width in zip(names, self.hidden_widths, strict=True):
            self.add_module(name, nn.Sequential(nn.Linear(width_in, width), nn.ReLU()))
            width_in = width
        self.dropout = classifier_dropout(dropout)
        self.fc = nn.Linear(width_in, num_outputs)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the outputs ``(B, num_outputs)`` of a batch ``(B, in_features)``.

        Raises:
            UsageError: ``x`` is not ``(B, in_features)``.
        """
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise UsageError(
                f"MLP expects inputs (B, {self.in_features}), got {tuple(x.shape)}; it takes flat feature vectors, "
                "not images (use small-cnn or a resnet for those)"
            )
        out = x
        for name in self.block_names:
            out = getattr(self, name)(out)
        return self.fc(self.dropout(out))
