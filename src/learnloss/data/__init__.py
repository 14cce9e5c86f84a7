"""Datasets as tensors or array sources read by rows, loaded without torchvision.

:func:`load_dataset` loads a registered dataset by name (see :func:`available_datasets`), finding its files in
the usual folders and downloading them (with checksums) when they are missing. Pools larger than memory are held
as :class:`ArraySource` objects: a memory-mapped ``.npy`` (:class:`MemmapSource`, ``npy``) or image files decoded
per batch (:class:`ImageSource`).
"""

from __future__ import annotations

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.image_source import ImageSource
from learnloss.data.memmap import MemmapSource
from learnloss.data.registry import available_datasets, canonical_name, load_dataset
from learnloss.data.source import ArraySource, Inputs, materialize

__all__ = [
    "ArraySource", "AugmentSpec", "Dataset", "ImageSource", "Inputs", "MemmapSource", "available_datasets",
    "canonical_name", "load_dataset", "materialize",
]
