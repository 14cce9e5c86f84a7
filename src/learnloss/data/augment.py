"""Batched training augmentation as tensor operations on the batch's device (no torchvision).

Random crop after zero padding and horizontal flip, the CIFAR augmentation of Yoo & Kweon (CVPR 2019, Sec. 4.1).
Scoring never augments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learnloss.data.dataset import AugmentSpec


def augment_batch(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a float batch ``(B, C, H, W)``: per-sample random ``pad``-pixel crop, then random flip.

    Random numbers come from ``generator`` (on the CPU) so a seeded run is reproducible on any device.
    Inputs that are not images (fewer than 4 dimensions) are returned unchanged.
    """
    if x.dim() != 4 or (spec.pad <= 0 and not spec.flip):
        return x
    batch, _, height, width = x.shape
    if spec.pad > 0:
        padded = F.pad(x, (spec.pad, spec.pad, spec.pad, spec.pad))
        offsets = torch.randint(0, 2 * spec.pad + 1, (2, batch), generator=generator).to(x.device)
        rows = (offsets[0, :, None] + torch.arange(height, device=x.device))[:, None, :, None]
        cols = (offsets[1, :, None] + torch.arange(width, device=x.device))[:, None, None, :]
        samples = torch.arange(batch, device=x.device)[:, None, None, None]
        channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[samples, channels, rows, cols]
    if spec.flip:
        flip = (torch.rand(batch, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
