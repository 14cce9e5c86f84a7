"""Validation of class labels read from dataset files."""

from __future__ import annotations

import numpy as np
import torch

from learnloss.errors import DatasetFormatError

__all__ = ["to_labels"]


def to_labels(values: object, num_classes: int | None, where: str) -> torch.Tensor:
    """Labels as a 1-D ``int64`` tensor after checking they are integers in ``0 .. num_classes - 1``.

    ``values`` may be an array or a list; a trailing dimension of size 1 is dropped. With ``num_classes``
    ``None`` only non-negativity is checked. ``where`` names the source in error messages.

    Raises:
        DatasetFormatError: the labels are not integers, not 1-D, or out of range.
    """
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise DatasetFormatError(
            f"{where}: labels must be a 1-D array of integers 0..K-1, got dtype {array.dtype} and shape "
            f"{array.shape}"
        )
    if array.size and (array.min() < 0 or (num_classes is not None and array.max() >= num_classes)):
        bound = "" if num_classes is None else f" (there are {num_classes} classes)"
        raise DatasetFormatError(
            f"{where}: labels must lie in 0..K-1{bound}, found values from {array.min()} to {array.max()}"
        )
    return torch.from_numpy(array.astype(np.int64))
