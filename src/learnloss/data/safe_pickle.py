"""Loading the official pickled dataset files without letting them run code.

A pickle can call any importable function while it loads. :class:`RestrictedUnpickler` resolves only the few
globals that the official CIFAR batches need (plain builtin containers and numpy's array reconstruction), so a
tampered file fails with :class:`~learnloss.errors.DatasetFormatError` instead of executing anything.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.errors import DatasetFormatError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

__all__ = ["RestrictedUnpickler", "load_pickle"]

_BUILTINS: dict[str, Any] = {"dict": dict, "list": list, "str": str, "bytes": bytes, "int": int}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, name): obj for module in ("builtins", "__builtin__") for name, obj in _BUILTINS.items()},
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
"""The only globals a dataset pickle may reference, by (module, name)."""


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(module, name) from None


def load_pickle(path: Path) -> Any:
    """Unpickle ``path`` as the official datasets were written (``encoding='bytes'``), refusing code.

    Raises:
        DatasetFormatError: the file references a forbidden global, or is not a valid pickle.
    """
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except _ForbiddenGlobal as exc:
        raise DatasetFormatError(
            f"{path}: refusing to unpickle, the file references {exc.qualname}, which a dataset file never "
            f"needs; it is not an official dataset file: delete it and download it again"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DatasetFormatError(
            f"{path}: not a valid pickle ({type(exc).__name__}: {exc}); delete it and download it again"
        ) from exc
