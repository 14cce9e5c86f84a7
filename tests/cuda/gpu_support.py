"""Small data for the CUDA tests: RGB images a small CNN learns in one epoch, as tensors, as memory-mapped ``.npy``
files and as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloss.data.dataset import AugmentSpec, Dataset

CLASSES = ("red", "green", "blue")


def colour_images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 ``(3, size, size)`` noise images whose class (0-2) is the channel made brighter, and the classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    images = rng.integers(0, 90, size=(n, 3, size, size), dtype=np.uint8)
    images[np.arange(n), labels] += 140
    return images, labels


def colour_dataset(n_train: int = 192, n_test: int = 64, size: int = 16, seed: int = 0) -> Dataset:
    """Train and test splits of :func:`colour_images` as a learnloss dataset (pad-crop and flip augmentation)."""
    x_train, y_train = colour_images(n_train, size, seed)
    x_test, y_test = colour_images(n_test, size, seed + 1)
    return Dataset("colours", torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_test),
                   torch.from_numpy(y_test), list(CLASSES), AugmentSpec(pad=2, flip=True))


def write_npy(dataset: Dataset, folder: Path) -> Path:
    """``dataset`` as the ``npy`` dataset's folder (``x_train.npy`` ...), read back through memory maps."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        value = getattr(dataset, key)
        np.save(folder / f"{key}.npy", value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value))
    np.save(folder / "classes.npy", np.asarray(dataset.classes))
    return folder


def write_pngs(images: np.ndarray, labels: np.ndarray, folder: Path) -> dict[str, str]:
    """Each ``(3, H, W)`` image as ``folder/img NNN.png`` (a space, as users' names have); file name -> class."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        name = f"img {i:03d}.png"
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(folder / name)
        truth[name] = CLASSES[int(label)]
    return truth


def loop_settings(device: torch.device, **settings: Any) -> dict[str, Any]:
    """Settings of a tiny loop (``resolve_spec("quick", ...)``): the small CNN, 1 epoch, 48 + 32 labels, 2 cycles."""
    return {"device": str(device), "model": "small-cnn", "strategy": "learning-loss", "initial": 48, "query": 32,
            "cycles": 2, "subset": 96, "epochs": 1, "batch_size": 16, "seed": 0, **settings}
