"""A small stacked hourglass network for keypoint heatmaps.

The architecture follows Newell, Yang & Deng, "Stacked Hourglass Networks for Human Pose Estimation" (ECCV 2016),
the target model of the pose experiment of Yoo & Kweon, "Learning Loss for Active Learning" (CVPR 2019, Sec. 4.3),
scaled down for CPU runs on small images:

* **stem** (Newell et al. Sec. 3): a 7x7 stride-2 convolution with batch norm and ReLU, a residual block,
  a 2x2 max-pool and residual blocks, so the heatmaps have a quarter of the input's resolution
  (``ceil(H / 4) x ceil(W / 4)``: 16x16 for 64x64 inputs, 8x8 for 32x32; the paper maps 256x256 to 64x64);
* **hourglass** of depth ``d`` (Fig. 3), defined recursively: a skip branch of residual blocks at the
  current resolution, and a lower branch that max-pools, applies residual blocks, the hourglass of depth
  ``d - 1`` (residual blocks at the bottom), more residual blocks and a nearest-neighbour upsampling; the two
  branches are added;
* **head** per stack: residual blocks, a 1x1 convolution with batch norm and ReLU (the stack's ``features``) and
  a 1x1 convolution to one heatmap per keypoint. With several stacks, the features and heatmaps of a stack are
  mapped back by 1x1 convolutions and added to its input to form the next stack's input (Fig. 4 right).

Residual blocks are the paper's pre-activation bottleneck (Fig. 4 left; He et al., "Identity Mappings in Deep
Residual Networks", ECCV 2016): BN-ReLU-1x1 (half width), BN-ReLU-3x3, BN-ReLU-1x1, plus the input (through a
1x1 convolution when the width changes).

``forward`` returns the *last* stack's heatmaps ``(B, K, h, w)`` only: the task interface sees one output, so
the intermediate supervision of Newell et al. is not applied; earlier stacks still feed their
heatmaps forward. Max-pooling uses ``ceil_mode`` and upsampling matches the skip branch's size, so any input of
at least one pixel works, not only powers of two.

The loss prediction module reads the hourglass's features on the way up, from the lowest resolution to the
stack's output features, as multi-level taps like the four ResNet stages of the classification experiment
(Yoo & Kweon attach it to the hourglass features): see :attr:`HourglassNet.default_taps`.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from learnloss.models.init import classifier_dropout, init_weights
from learnloss.models.resnet import _check_positive

__all__ = ["Hourglass", "HourglassNet", "HourglassStack", "Residual", "hourglass_taps"]

DEFAULT_WIDTH = 32
DEFAULT_DEPTH = 3
DEFAULT_STACKS = 1
DEFAULT_BLOCKS = 1
#: Standard deviation of the heatmap heads' initial weights (their biases start at 0).
HEAD_INIT_STD = 1e-3


class Residual(nn.Module):
    """Pre-activation bottleneck residual block of Newell et al. (ECCV 2016, Fig. 4 left).

    ``BN-ReLU-conv1x1(out/2) → BN-ReLU-conv3x3(out/2) → BN-ReLU-conv1x1(out)``, added to the input, or to a 1x1
    projection of it when ``in_planes != out_planes``. The spatial size is unchanged.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        mid = max(out_planes // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, mid, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_planes, kernel_size=1, bias=False),
        )
        self.skip: nn.Module = (
            nn.Identity() if in_planes == out_planes else nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``body(x) + skip(x)``, same spatial size as ``x``."""
        return self.body(x) + self.skip(x)


def _residuals(in_planes: int, out_planes: int, blocks: int) -> nn.Sequential:
    """``blocks`` residual blocks, the first changing the width from ``in_planes`` to ``out_planes``."""
    return nn.Sequential(*(Residual(in_planes if i == 0 else out_planes, out_planes) for i in range(blocks)))


class Hourglass(nn.Module):
    """One hourglass of depth ``depth`` (Newell et al. 2016, Fig. 3), defined recursively.

    ``forward(x) = skip(x) + upsample(up(inner(down(x))))`` where ``down`` max-pools by 2 and applies residual
    blocks, ``inner`` is the hourglass of depth ``depth - 1`` (a stack of residual blocks when ``depth == 1``: the
    lowest-resolution bottleneck), ``up`` applies residual blocks and the nearest-neighbour upsampling returns to
    the size of ``x``. Width and spatial size are preserved.
    """

    def __init__(self, depth: int, planes: int, blocks: int = 1) -> None:
        super().__init__()
        _check_positive("depth", depth)
        self.depth = depth
        self.skip = _residuals(planes, planes, blocks)
        self.down = nn.Sequential(nn.MaxPool2d(2, stride=2, ceil_mode=True), *_residuals(planes, planes, blocks))
        self.inner: nn.Module = (
            Hourglass(depth - 1, planes, blocks) if depth > 1 else _residuals(planes, planes, blocks)
        )
        self.up = _residuals(planes, planes, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of the same shape as ``x``: the skip branch plus the upsampled lower branch."""
        low = self.up(self.inner(self.down(x)))
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class HourglassStack(nn.Module):
    """One stack: an :class:`Hourglass`, residual blocks, the ``features`` (1x1 conv, BN, ReLU), optional dropout
    and the heatmap ``head`` (1x1 conv to ``num_keypoints`` maps). Unless it is the last stack, ``merge_features``
    and ``merge_heatmaps`` (1x1 convs) map both back to the input's width for the next stack (Newell et al.,
    Fig. 4 right)."""

    def __init__(self, depth: int, planes: int, num_keypoints: int, blocks: int, last: bool, dropout: float) -> None:
        super().__init__()
        self.hourglass = Hourglass(depth, planes, blocks)
        self.post = _residuals(planes, planes, blocks)
        self.features = nn.Sequential(
            nn.Conv2d(planes, planes, kernel_size=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
        )
        self.dropout = classifier_dropout(dropout) if last else nn.Identity()
        self.head = nn.Conv2d(planes, num_keypoints, kernel_size=1)
        self.merge_features: nn.Module | None = None if last else nn.Conv2d(planes, planes, kernel_size=1)
        self.merge_heatmaps: nn.Module | None = None if last else nn.Conv2d(num_keypoints, planes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stack's ``(features, heatmaps)``; both have the spatial size of ``x``."""
        features = self.features(self.post(self.hourglass(x)))
        return features, self.head(self.dropout(features))

    def reset_head(self) -> None:
        """Initialise the heatmap head at ``N(0, HEAD_INIT_STD)`` with zero bias.

        Kaiming fan-out (the other layers' initialisation) would give a 1x1 convolution to K maps a standard deviation
        of ``sqrt(2 / K)``; heatmaps that start near zero, like the mostly-zero targets, train better, as heatmap
        regressors commonly do.
        """
        nn.init.normal_(self.head.weight, std=HEAD_INIT_STD)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    def merge(self, x: torch.Tensor, features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        """The next stack's input ``x + merge_features(features) + merge_heatmaps(heatmaps)``; ``x`` after the last."""
        if self.merge_features is None or self.merge_heatmaps is None:
            return x
        return x + self.merge_features(features) + self.merge_heatmaps(heatmaps)


def hourglass_taps(depth: int, stacks: int) -> tuple[str, ...]:
    """The default tap names of a :class:`HourglassNet` of ``depth`` and ``stacks``.

    The features of every stack but the last (``stacks.<s>.features``), then the last hourglass on the way up:
    its bottleneck (``...hourglass`` + ``.inner`` × ``depth``), each lower level's output (``.inner`` × ``depth - 1``
    down to × 1) and the last stack's output ``features`` — ``depth + 1`` maps from the lowest resolution to the
    heatmaps' resolution, plus one per earlier stack.
    """
    _check_positive("depth", depth)
    _check_positive("stacks", stacks)
    last = f"stacks.{stacks - 1}"
    earlier = tuple(f"stacks.{s}.features" for s in range(stacks - 1))
    levels = tuple(f"{last}.hourglass" + ".inner" * i for i in range(depth, 0, -1))
    return (*earlier, *levels, f"{last}.features")


class HourglassNet(nn.Module):
    """A stacked hourglass network (Newell et al., ECCV 2016) mapping images to keypoint heatmaps.

    Args:
        in_channels: channels of the input images (1 for greyscale, 3 for RGB, ...).
        num_classes: the number of keypoints ``K``, one heatmap each (named as in the registry's model builders).
        dropout: dropout probability before the last heatmap head (0, the paper's setting, adds no layer).
        width: channels of the hourglass and its heads (the paper's 256; the stem starts at ``width // 2``).
        depth: number of max-pool steps of each hourglass (the paper's 4 at 64x64 heatmaps; 3 here suits 16x16).
        stacks: number of stacked hourglasses (the paper's 8; 1 by default for CPU runs).
        blocks: residual blocks at each position of an hourglass (the paper's 1).

    ``forward(x)`` maps ``(B, in_channels, H, W)`` with ``H, W >= 1`` to heatmaps
    ``(B, num_classes, ceil(H / 4), ceil(W / 4))`` (the last stack's). One training epoch of the defaults (47k
    parameters) on 2,000 64x64 greyscale images with 13 keypoints, batch 64, costs about 6.5 CPU-seconds.

    Weights are initialised as in the other bundled models (:func:`learnloss.models.init.init_weights`) except the
    heatmap heads, which start at ``N(0, 1e-3)`` with zero bias so that the first heatmaps are near zero, like the
    mostly-zero targets.

    Attributes:
        default_taps: the loss prediction module's inputs (:func:`hourglass_taps`). For the defaults on 64x64
            inputs: the bottleneck ``stacks.0.hourglass.inner.inner.inner`` (``width`` x 2x2), the levels
            ``stacks.0.hourglass.inner.inner`` (4x4) and ``stacks.0.hourglass.inner`` (8x8), and the stack's
            output ``stacks.0.features`` (16x16).
        embedding_layer: ``stacks.<last>.features``, the penultimate feature map that the heatmap head reads.
    """

    default_taps: tuple[str, ...] = hourglass_taps(DEFAULT_DEPTH, DEFAULT_STACKS)
    embedding_layer: str = default_taps[-1]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.0,
        width: int = DEFAULT_WIDTH,
        depth: int = DEFAULT_DEPTH,
        stacks: int = DEFAULT_STACKS,
        blocks: int = DEFAULT_BLOCKS,
    ) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        _check_positive("depth", depth)
        _check_positive("stacks", stacks)
        _check_positive("blocks", blocks)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width, self.depth, self.stacks_count, self.blocks = width, depth, stacks, blocks
        self.embedding_dim = width
        taps = hourglass_taps(depth, stacks)
        if taps != type(self).default_taps:
            self.default_taps = taps
            self.embedding_layer = taps[-1]
        stem_width = max(width // 2, 1)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            Residual(stem_width, width),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
            *_residuals(width, width, blocks),
        )
        self.stacks = nn.ModuleList(
            HourglassStack(depth, width, num_classes, blocks, last=s == stacks - 1, dropout=dropout)
            for s in range(stacks)
        )
        init_weights(self)
        for stack in self._stacks():
            stack.reset_head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last stack's heatmaps ``(B, num_classes, ceil(H / 4), ceil(W / 4))`` of ``(B, C, H, W)``."""
        out = self.stem(x)
        heatmaps = out
        for stack in self._stacks():
            features, heatmaps = stack(out)
            out = stack.merge(out, features, heatmaps)
        return heatmaps

    def _stacks(self) -> list[HourglassStack]:
        return [cast(HourglassStack, stack) for stack in self.stacks]
