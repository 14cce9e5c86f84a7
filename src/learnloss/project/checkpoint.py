"""Checkpoints a project can trust: written atomically, identified by SHA-256, loaded without unpickling code.

``torch.save`` output is written through :func:`learnloss.atomic.atomic_write` (temporary file, fsync,
rename); the store records its SHA-256 with the cycle. :func:`load_checkpoint` verifies the checksum before
reading, and reads with ``torch.load(weights_only=True)``, which accepts tensors and plain containers only —
never arbitrary pickled objects.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from learnloss.atomic import atomic_write
from learnloss.errors import LearnLossError

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


class CheckpointError(LearnLossError):
    """A checkpoint is missing, damaged, changed since it was recorded, or not a weights-only file."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> str:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically; returns
    its SHA-256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, binary=True) as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: Path, sha256: str) -> dict[str, Any]:
    """Read the checkpoint at ``path`` after checking it against ``sha256``.

    Raises:
        CheckpointError: the file is missing, its checksum differs, or it holds more than weights.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read ({error.strerror}); run the command again to "
                              "retrain it") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {path} does not match the checksum the project recorded: it was changed "
                              "or damaged; delete it and run the command again to retrain")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"checkpoint {path} is not a weights-only file ({error}); it is not loaded") from None
