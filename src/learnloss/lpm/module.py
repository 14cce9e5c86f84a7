"""The loss prediction module (Yoo & Kweon, CVPR 2019, Sec. 3.2 and Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from learnloss.errors import FeatureShapeError, UsageError


class LossPredictionModule(nn.Module):
    """Predict the target model's per-sample loss from several of its feature maps.

    Per tapped level: global average pooling → ``Linear(C_i, width)`` → ReLU; the level vectors are
    concatenated and a final ``Linear`` outputs one scalar per sample. No BatchNorm, no dropout, as in the
    paper (width 128). The pooling of Fig. 2 depends on each output's layout, which only the taps know: the
    module receives the pooled ``(B, C_i)`` vectors (:meth:`learnloss.lpm.FeatureTaps.pooled`, or
    :func:`learnloss.lpm.pool_features` with the layout).

    Args:
        in_channels: channel width of each tapped level.
        width: output width of each level's FC layer.
    """

    def __init__(self, in_channels: Sequence[int], width: int = 128) -> None:
        super().__init__()
        if len(in_channels) == 0:
            raise UsageError("the loss prediction module needs at least one tapped level")
        if width <= 0 or any(c <= 0 for c in in_channels):
            raise UsageError(f"widths must be positive, got width={width}, in_channels={list(in_channels)}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.width = int(width)
        # nn.ModuleList, not a Python list: every level's FC is registered and trained (docs/pitfalls.md §4).
        self.levels = nn.ModuleList(nn.Linear(c, width) for c in self.in_channels)
        self.out = nn.Linear(width * len(self.in_channels), 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return the predicted loss, shape ``(B,)``, from one pooled ``(B, C_i)`` vector per level.

        Raises:
            FeatureShapeError: the number of levels, a vector's rank or its width does not match the module.
                Feature maps and sequences are refused, not pooled by a guess: pool them first according to
                their layout (:meth:`learnloss.lpm.FeatureTaps.pooled`).
        """
        if len(features) != len(self.levels):
            raise FeatureShapeError(f"expected {len(self.levels)} feature levels, got {len(features)}")
        vectors = []
        for index, (pooled, fc) in enumerate(zip(features, self.levels)):
            if pooled.dim() != 2:
                raise FeatureShapeError(
                    f"level {index} has shape {tuple(pooled.shape)}; the loss prediction module takes pooled "
                    "(B, C) vectors — pool each tapped output according to its layout first (FeatureTaps.pooled(), "
                    "or pool_features(feature, layout))"
                )
            if pooled.shape[1] != fc.in_features:
                raise FeatureShapeError(
                    f"level {index} has {pooled.shape[1]} channels but the module was built for "
                    f"{fc.in_features}; rebuild the loss prediction module for this model"
                )
            vectors.append(torch.relu(fc(pooled)))
        return self.out(torch.cat(vectors, dim=1)).squeeze(1)
