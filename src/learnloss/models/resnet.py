"""CIFAR-style residual networks.

The architecture follows He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), in the
variant used for 32x32 inputs by the Learning Loss paper (Yoo & Kweon, "Learning Loss for Active Learning",
CVPR 2019): a 3x3 stride-1 stem convolution with batch normalisation and ReLU, *no* max-pool, four stages
``layer1`` .. ``layer4`` of widths 64, 128, 256, 512 (times ``width / 64``) with strides 1, 2, 2, 2, global
average pooling and a linear classifier ``fc``.

Because the pooling is adaptive, any number of input channels and any spatial size of at least one pixel
works (8x8 digits, 28x28 MNIST, 32x32 CIFAR, 64x64 Tiny ImageNet, ...). ``forward`` returns logits only; the
loss prediction module of Yoo & Kweon reads the outputs of the stages through forward hooks on the layers
named in :attr:`ResNet.default_taps`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.models.init import classifier_dropout, init_weights

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_DEPTHS", "resnet"]


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 projection with batch norm when the shape changes (option B of He et al. 2016)."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016, Fig. 2); used by ResNet-18/34."""

    expansion: ClassVar[int] = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection (He et al. 2016, Fig. 5); ResNet-50/101/152."""

    expansion: ClassVar[int] = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016) as used as the target model by Yoo & Kweon (CVPR 2019).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck` (any ``nn.Module`` subclass with the same
            ``(in_planes, planes, stride)`` constructor and an integer ``expansion`` class attribute).
        layers: number of blocks in each of the four stages, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        in_channels: channels of the input images (1 for greyscale, 3 for RGB, ...).
        num_classes: size of the logit vector.
        width: channels of the stem and of ``layer1``; the stages have ``width * (1, 2, 4, 8)`` planes.
        dropout: dropout probability before ``fc`` (0, the paper's setting, adds no layer).

    ``forward(x)`` maps ``(B, in_channels, H, W)`` with ``H, W >= 1`` to logits ``(B, num_classes)``.
    """

    #: Modules whose outputs feed the loss prediction module (dotted names as in ``named_modules()``).
    default_taps: ClassVar[tuple[str, ...]] = ("layer1", "layer2", "layer3", "layer4")
    #: The tap whose globally average-pooled output is the penultimate embedding.
    embedding_layer: ClassVar[str] = "layer4"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int] | list[int],
        in_channels: int,
        num_classes: int,
        width: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        layers = list(layers)
        if len(layers) != 4:
            raise UsageError(f"layers must give the block count of 4 stages, got {layers!r}")
        for count in layers:
            _check_positive("each entry of layers", count)

        self.in_channels = in_channels
        self.num_classes = num_classes
        self._in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = classifier_dropout(dropout)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        self.embedding_dim = width * 8 * block.expansion
        init_weights(self)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        modules: list[nn.Module] = []
        for s in [stride] + [1] * (blocks - 1):
            modules.append(block(self._in_planes, planes, s))
            self._in_planes = planes * block.expansion
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``(B, num_classes)`` of a batch ``(B, in_channels, H, W)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(self.dropout(out))


#: Block type and blocks per stage of each supported depth (He et al. 2016, Table 1).
RESNET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet(depth: int, in_channels: int, num_classes: int, width: int = 64, dropout: float = 0.0) -> ResNet:
    """Build a CIFAR-style ResNet of ``depth`` 18, 34, 50, 101 or 152 (He et al. 2016).

    Raises:
        UsageError: ``depth`` is not one of the supported depths (the message lists them).
    """
    if isinstance(depth, bool) or depth not in RESNET_DEPTHS:
        valid = ", ".join(str(d) for d in RESNET_DEPTHS)
        raise UsageError(f"unsupported ResNet depth {depth!r}; choose one of: {valid}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, layers, in_channels, num_classes, width=width, dropout=dropout)
