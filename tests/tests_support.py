"""Test helpers: a tiny learnable image dataset and a tiny model, so loop tests run in seconds."""

from __future__ import annotations

import torch
from torch import nn

from learnloss.data.dataset import AugmentSpec, Dataset


class TinyNet(nn.Module):
    """Conv → BN → ReLU → dropout → GAP → FC; BN and dropout make train/eval mode observable."""

    default_taps = ("conv", "hidden")
    embedding_layer = "hidden"

    def __init__(self, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.hidden = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.drop(self.conv(x).mean(dim=(2, 3)))))


def make_dataset(n_train: int = 120, n_test: int = 60, seed: int = 0) -> Dataset:
    """Three classes told apart by mean brightness, stored as uint8 8x8 images."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 3, (n,), generator=g)
        x = (y[:, None, None, None] * 70 + 30 + torch.randint(0, 60, (n, 1, 8, 8), generator=g)).clamp(0, 255)
        return x.to(torch.uint8), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset("tiny", x_train, y_train, x_test, y_test, ["a", "b", "c"], AugmentSpec(pad=1, flip=True))
