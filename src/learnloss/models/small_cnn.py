"""A small convolutional network for fast CPU runs and tests.

It exposes the same tapping interface as the ResNets so that the loss prediction module of Yoo & Kweon,
"Learning Loss for Active Learning" (CVPR 2019), can be attached to it: three convolutional blocks and one
hidden fully connected layer whose output is a vector tap ``(B, 128)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from learnloss.models.init import classifier_dropout, init_weights
from learnloss.models.resnet import _check_positive

__all__ = ["SmallCNN"]

HIDDEN_DIM = 128


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv3x3-BN-ReLU blocks (widths ``w, 2w, 4w``; strides 1, 2, 2), global average pooling,
    a hidden ``Linear(4w, 128)`` + ReLU, optional dropout and a linear classifier ``fc``.

    Works for any number of input channels and any spatial size of at least one pixel (8x8, 28x28, 32x32, ...).
    ``forward(x)`` returns logits ``(B, num_classes)`` only.
    """

    #: Modules whose outputs feed the loss prediction module; ``hidden`` is a vector tap ``(B, 128)``.
    default_taps: ClassVar[tuple[str, ...]] = ("block1", "block2", "block3", "hidden")
    #: The tap whose output is the penultimate embedding.
    embedding_layer: ClassVar[str] = "hidden"

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embedding_dim = HIDDEN_DIM
        self.block1 = _conv_block(in_channels, width, stride=1)
        self.block2 = _conv_block(width, 2 * width, stride=2)
        self.block3 = _conv_block(2 * width, 4 * width, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Sequential(nn.Linear(4 * width, HIDDEN_DIM), nn.ReLU(inplace=True))
        self.dropout = classifier_dropout(dropout)
        self.fc = nn.Linear(HIDDEN_DIM, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``(B, num_classes)`` of a batch ``(B, in_channels, H, W)``."""
        out = self.block3(self.block2(self.block1(x)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(self.dropout(self.hidden(out)))
