"""scikit-learn's bundled handwritten digits: the dataset that works offline with no files at all."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_digits

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.split import stratified_split

__all__ = ["load_digits"]

TEST_FRACTION = 0.25
SEED = 0


def load_digits() -> Dataset:
    """The 1797 8x8 digit images as ``uint8`` ``(N, 1, 8, 8)`` (grey levels 0..16 scaled to 0..255), 10 classes,
    split into 75% train / 25% test by a fixed stratified split."""
    bunch = _sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, TEST_FRACTION, SEED)
    return Dataset(
        "digits",
        torch.from_numpy(images[train]),
        torch.from_numpy(labels[train]),
        torch.from_numpy(images[test]),
        torch.from_numpy(labels[test]),
        [str(d) for d in range(10)],
        AugmentSpec(pad=1, flip=False),
    )
