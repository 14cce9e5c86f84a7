"""Datasets as in-memory tensors, loaded without torchvision.

:func:`load_dataset` loads a registered dataset by name (see :func:`available_datasets`), finding its files in
the usual folders and downloading them (with checksums) when they are missing.
"""

from __future__ import annotations

from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.registry import available_datasets, canonical_name, load_dataset

__all__ = ["AugmentSpec", "Dataset", "available_datasets", "canonical_name", "load_dataset"]
