"""A small anchor-free object detector: a CenterNet head on a residual backbone with a feature pyramid.

Yoo & Kweon, "Learning Loss for Active Learning" (CVPR 2019), show that the loss prediction module is
task-agnostic by attaching it to an object detector (SSD) and tapping its multi-scale feature maps. This module
provides a detector small enough to train on a CPU that plays the same role:

* **Backbone**: a 3x3 stride-2 stem and four residual stages ``layer1`` .. ``layer4`` of basic blocks (He et al.,
  "Deep Residual Learning for Image Recognition", CVPR 2016) of widths ``width * (1, 2, 4, 8)``, each opening
  with a stride-2 block, so the stage outputs C2 .. C5 have strides 4, 8, 16 and 32 (16x16 .. 2x2 for a
  64x64 image).
* **Neck**: a feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017): a 1x1
  lateral convolution per stage, a top-down path that upsamples the coarser level (nearest neighbour) and adds
  it to the lateral, and a 3x3 convolution per level giving P2 .. P5 (``fpn.p2`` .. ``fpn.p5``), all of
  ``fpn_channels`` channels (each convolution followed by batch normalisation).
* **Head**: CenterNet (Zhou, Wang & Krähenbühl, "Objects as Points", arXiv:1904.07850, 2019) at the resolution
  of the finest level: P3 .. P5 are upsampled (nearest neighbour) and added to P2, so every pyramid level, and
  so every tap, takes part in the detection (as SSD's maps do); then, for each output, a 3x3 convolution, batch
  normalisation, ReLU and a 1x1 convolution. The heatmap's bias starts at ``-log((1 - π) / π)`` with prior
  ``π = 0.1`` (-2.19, CenterNet's setting, after the prior initialisation of Lin et al., "Focal Loss for Dense
  Object Detection", ICCV 2017), so training starts from a low, uniform object probability instead of a flood of
  positives.

``forward`` returns a plain ``dict`` (``learnloss.tasks.detection`` reads its keys; models and tasks do not import
each other) of maps at stride 4, ``h = ceil(H / 4)`` and ``w = ceil(W / 4)``:

* ``"heatmap"`` ``(B, num_classes, h, w)``: logits of the class centre heatmaps;
* ``"size"`` ``(B, 2, h, w)``: box width and height as fractions of the image width and height;
* ``"offset"`` ``(B, 2, h, w)``: the sub-cell position of the centre, in cells (targets in ``[0, 1)``).

Size and offset are raw (linear) outputs as in CenterNet. The loss prediction module taps the pyramid levels
(:attr:`CenterNetFPN.default_taps`), the counterpart of the SSD feature maps tapped in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from learnloss.errors import UsageError
from learnloss.models.init import classifier_dropout, init_weights
from learnloss.models.resnet import BasicBlock, _check_positive

__all__ = ["OUTPUT_STRIDE", "CenterHead", "CenterNetFPN", "FeaturePyramid"]

#: Stride of the output maps relative to the input image.
OUTPUT_STRIDE = 4


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """A convolution without bias ("same" padding) followed by batch normalisation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class FeaturePyramid(nn.Module):
    """The top-down pathway with lateral connections of Lin et al. (CVPR 2017, Sec. 3).

    ``forward(c2, c3, c4, c5)`` returns ``(p2, p3, p4, p5)``: ``P5 = p5(lateral(C5))`` and, going down,
    ``P_l = p_l(lateral(C_l) + upsample(M_{l+1}))`` where ``M`` is the merged map before its 3x3 convolution.
    Upsampling is nearest-neighbour to the size of the finer map, so odd input sizes work. Each convolution is
    followed by batch normalisation (the ``norm`` option of common FPN implementations such as Detectron2's),
    which keeps the summed maps at a stable scale when training from scratch with SGD at the learning rates of
    the classification recipe.
    """

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise UsageError(f"the feature pyramid needs the channels of 4 stages, got {list(in_channels)!r}")
        self.lateral = nn.ModuleList(_conv_bn(c, channels, kernel_size=1) for c in in_channels)
        self.p2 = _conv_bn(channels, channels, kernel_size=3)
        self.p3 = _conv_bn(channels, channels, kernel_size=3)
        self.p4 = _conv_bn(channels, channels, kernel_size=3)
        self.p5 = _conv_bn(channels, channels, kernel_size=3)

    def forward(
        self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pyramid levels P2 .. P5 of the stage outputs C2 .. C5 (finest first)."""
        m5 = self.lateral[3](c5)
        m4 = self.lateral[2](c4) + F.interpolate(m5, size=c4.shape[-2:], mode="nearest")
        m3 = self.lateral[1](c3) + F.interpolate(m4, size=c3.shape[-2:], mode="nearest")
        m2 = self.lateral[0](c2) + F.interpolate(m3, size=c2.shape[-2:], mode="nearest")
        return self.p2(m2), self.p3(m3), self.p4(m4), self.p5(m5)


class CenterHead(nn.Module):
    """One CenterNet output head: 3x3 conv, batch norm, ReLU, optional dropout, 1x1 conv ``out``.

    CenterNet's heads have no normalisation; the batch norm here keeps the hidden layer's scale stable under
    the SGD learning rates (0.05 - 0.1) that the run presets use for every model.

    ``out`` starts from weights drawn with standard deviation 0.01 and bias ``bias`` (Lin et al. 2017), so the
    first predictions are near the bias everywhere.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, dropout: float, bias: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = classifier_dropout(dropout)
        self.out = nn.Conv2d(hidden, out_channels, kernel_size=1)
        self.initial_bias = bias

    def reset_output(self) -> None:
        """Re-initialise ``out`` (after a model-wide initialisation)."""
        nn.init.normal_(self.out.weight, std=0.01)
        if self.out.bias is not None:
            nn.init.constant_(self.out.bias, self.initial_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The head's map ``(B, out_channels, h, w)``."""
        return self.out(self.dropout(self.relu(self.bn(self.conv(x)))))


def _stage(in_planes: int, planes: int, blocks: int) -> nn.Sequential:
    """``blocks`` basic blocks, the first of stride 2."""
    return nn.Sequential(*(BasicBlock(in_planes if i == 0 else planes, planes, 2 if i == 0 else 1)
                           for i in range(blocks)))


class CenterNetFPN(nn.Module):
    """A CenterNet detector (Zhou et al. 2019) on a small ResNet with a feature pyramid (Lin et al. 2017).

    Args:
        in_channels: channels of the input images (1 for greyscale, 3 for RGB, ...).
        num_classes: number of object classes (channels of the heatmap).
        dropout: dropout probability inside each head, after its hidden ReLU (0 adds no layer); what
            MC-dropout baselines sample.
        width: channels of the stem and of ``layer1``; the stages have ``width * (1, 2, 4, 8)`` channels.
        blocks: basic blocks per stage.
        fpn_channels: channels of every pyramid level (default ``2 * width``, 32 channels at the default width).
        head_channels: hidden channels of each head (default ``fpn_channels``).
        prior: initial object probability of every heatmap cell (CenterNet's 0.1).

    ``forward(x)`` maps ``(B, in_channels, H, W)`` with ``H, W >= 1`` to the dict of ``"heatmap"``
    ``(B, num_classes, h, w)``, ``"size"`` ``(B, 2, h, w)`` and ``"offset"`` ``(B, 2, h, w)``, with
    ``h = ceil(H / 4)`` and ``w = ceil(W / 4)`` (16x16 for 64x64 inputs); see the module docstring.

    The defaults (0.38 M parameters for 3 classes) train one epoch of 2,000 64x64 greyscale images, batch 64,
    in about 3-4 s on 2 CPU threads (SGD, loss included; ``fpn_channels=64``: about 5.5 s).

    Raises:
        UsageError: a size is not a positive integer, ``dropout`` is not in ``[0, 1)`` or ``prior`` not in
            ``(0, 1)``.
    """

    #: The pyramid levels, finest first, whose outputs feed the loss prediction module (Yoo & Kweon tap SSD's
    #: multi-scale feature maps the same way).
    default_taps: ClassVar[tuple[str, ...]] = ("fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5")
    #: The coarsest pyramid level: its globally average-pooled output is the image embedding (core-set).
    embedding_layer: ClassVar[str] = "fpn.p5"
    #: Keys of the output dict.
    output_keys: ClassVar[tuple[str, ...]] = ("heatmap", "size", "offset")

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.0,
        *,
        width: int = 16,
        blocks: int = 1,
        fpn_channels: int | None = None,
        head_channels: int | None = None,
        prior: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        _check_positive("blocks", blocks)
        fpn_channels = 2 * width if fpn_channels is None else fpn_channels
        _check_positive("fpn_channels", fpn_channels)
        head_channels = fpn_channels if head_channels is None else head_channels
        _check_positive("head_channels", head_channels)
        if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0 < prior < 1:
            raise UsageError(f"prior must be a probability in (0, 1), got {prior!r}; CenterNet uses 0.1")
        classifier_dropout(dropout)  # validates before any layer is built

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embedding_dim = fpn_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.layer1 = _stage(width, width, blocks)
        self.layer2 = _stage(width, 2 * width, blocks)
        self.layer3 = _stage(2 * width, 4 * width, blocks)
        self.layer4 = _stage(4 * width, 8 * width, blocks)
        self.fpn = FeaturePyramid((width, 2 * width, 4 * width, 8 * width), fpn_channels)
        self.heatmap = CenterHead(fpn_channels, head_channels, num_classes, dropout,
                                  bias=-math.log((1.0 - prior) / prior))
        self.size = CenterHead(fpn_channels, head_channels, 2, dropout)
        self.offset = CenterHead(fpn_channels, head_channels, 2, dropout)
        init_weights(self)
        for head in (self.heatmap, self.size, self.offset):
            head.reset_output()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``"heatmap"``, ``"size"`` and ``"offset"`` maps at stride 4 of a batch ``(B, C, H, W)``."""
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        p2, p3, p4, p5 = self.fpn(c2, c3, c4, c5)
        size = p2.shape[-2:]
        merged = p2
        for level in (p3, p4, p5):
            merged = merged + F.interpolate(level, size=size, mode="nearest")
        return {"heatmap": self.heatmap(merged), "size": self.size(merged), "offset": self.offset(merged)}
