"""Validation of class labels read from dataset files."""

from __future__ import annotations

import numpy as np
import torch

from learnloss.data.limits import check_classes
from learnloss.errors import DatasetFormatError

__all__ = ["to_labels"]

_INT64_MAX = int(np.iinfo(np.int64).max)


def _refuse(where: str, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{where}: labels must be a 1-D array of integers 0..K-1, got {what}; save the labels "
                              "as integers (class indices)")


def to_labels(values: object, num_classes: int | None, where: str) -> torch.Tensor:
    """Labels as a 1-D ``int64`` tensor after checking they are integers in ``0 .. num_classes - 1``.

    ``values`` may be an array or a list (or tuple) of integers (``bool`` is not one); a trailing dimension of size 1 is dropped.
    With ``num_classes`` ``None`` the class count is the largest label plus one. Either way the class count is
    checked against ``LEARNLOSS_MAX_CLASSES`` before anything is built on it. Booleans, floats, objects and
    negative values are refused. ``where`` names the source in error messages.

    Raises:
        DatasetFormatError: the labels are not integers, not 1-D, or out of range.
        ResourceLimitError: the class count exceeds ``LEARNLOSS_MAX_CLASSES``.
    """
    if num_classes is not None:
        check_classes(num_classes, where)
    if isinstance(values, (list, tuple)):
        odd = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
        if odd is not None:
            raise _refuse(where, f"an element of type {type(odd).__name__}")
        if any(v < 0 or v > _INT64_MAX for v in values):
            low, high = min(values), max(values)
            raise DatasetFormatError(f"{where}: labels must lie in 0..K-1, found values from {low} to {high}")
    elif not isinstance(values, np.ndarray):
        raise _refuse(where, type(values).__name__)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - the checks above make it unreachable
        raise _refuse(where, f"something numpy cannot read ({exc})") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.dtype == np.bool_:
        raise _refuse(where, f"booleans of shape {array.shape}")
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise _refuse(where, f"dtype {array.dtype} and shape {array.shape}")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > _INT64_MAX or (num_classes is not None and high >= num_classes):
            bound = "" if num_classes is None else f" (there are {num_classes} classes)"
            raise DatasetFormatError(f"{where}: labels must lie in 0..K-1{bound}, found values from {low} to {high}")
        if num_classes is None:
            check_classes(high + 1, where)
    return torch.from_numpy(array.astype(np.int64))
