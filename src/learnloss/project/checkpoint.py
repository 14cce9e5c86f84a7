"""Checkpoints a project can trust: written atomically, identified by SHA-256, loaded without unpickling code, and
kept in a real folder of the project that nothing a store says can lead out of.

``torch.save`` output is written through :func:`learnloss.atomic.atomic_write` (temporary file, fsync,
rename, below the project folder without following a link); the store records its SHA-256 with the cycle.
:func:`load_checkpoint` verifies the checksum before
reading, and reads with ``torch.load(weights_only=True)``, which accepts tensors and plain containers only —
never arbitrary pickled objects.

A project's checkpoints live directly in its ``checkpoints/`` folder (:data:`FOLDER`), which must be a real folder,
not a symbolic link. Files are opened relative to that folder's descriptor and never through a symbolic link
(``O_NOFOLLOW``, the one mechanism of :mod:`learnloss.atomic`), so neither a crafted store, a symlinked folder nor a
symlinked file makes learnloss read, write or delete anything outside it (:func:`checkpoint_folder`,
:func:`confined_checkpoint`, :func:`remove_in_folder`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from learnloss.atomic import LinkRefusedError, atomic_write, check_folder, make_folder, read_file, remove_file
from learnloss.errors import LearnLossError

__all__ = [
    "FOLDER",
    "CheckpointError",
    "CheckpointMismatchError",
    "checkpoint_folder",
    "confined_checkpoint",
    "load_checkpoint",
    "remove_in_folder",
    "save_checkpoint",
]

#: The folder of a project that holds its checkpoints.
FOLDER = "checkpoints"
#: What a checkpoint's name may be: a plain file name of letters, digits, ``.``, ``_`` and ``-``, ending in ``.pt``.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,126}\.pt")


class CheckpointError(LearnLossError):
    """A checkpoint is missing, damaged, changed since it was recorded, not a weights-only file, outside its
    project's ``checkpoints/`` folder, or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint passed its checksum but does not fit the model it is loaded into (other parameter names or
    shapes): it was made by other code or for other data, not damaged."""


def checkpoint_folder(project: Path, create: bool = False) -> Path:
    """``project/checkpoints``, refused unless it is a real folder (or, without ``create``, absent); with
    ``create`` made when missing (:func:`learnloss.atomic.make_folder`).

    Raises:
        CheckpointError: it is a symbolic link or not a folder.
    """
    try:
        if create:
            return make_folder(project, FOLDER)
        check_folder(project, FOLDER)
    except LinkRefusedError as error:
        raise CheckpointError(str(error)) from None
    return project / FOLDER


def confined_checkpoint(project: Path, recorded: str) -> Path:
    """The checkpoint a store records as ``recorded`` (``checkpoints/NAME``), refused unless it names a plain file
    directly inside the project's real ``checkpoints/`` folder: no absolute path, no ``..``, no other folder, no
    NUL byte, no name over 128 characters.

    Raises:
        CheckpointError: the recorded path leads elsewhere, or the folder is a symbolic link.
    """
    prefix = f"{FOLDER}/"
    name = recorded[len(prefix):] if isinstance(recorded, str) and recorded.startswith(prefix) else ""
    if not NAME.fullmatch(name):
        shown = recorded if not isinstance(recorded, str) or len(recorded) <= 80 else recorded[:77] + "..."
        raise CheckpointError(f"{project} records a checkpoint outside its {FOLDER}/ folder ({shown!r}); the store is "
                              "damaged or crafted, and it is not followed")
    return checkpoint_folder(project) / name


def remove_in_folder(folder: Path, name: str) -> bool:
    """Delete the regular file ``name`` directly inside ``folder`` (never a symbolic link, a folder, or anything a
    link leads to; :func:`learnloss.atomic.remove_file`); whether it was deleted. A file that is already gone, or
    cannot be deleted, is left alone."""
    if "/" in name or "\x00" in name or name in ("", ".", ".."):
        return False
    return remove_file(name, root=folder)


def save_checkpoint(path: Path, state: dict[str, Any]) -> str:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically; returns
    its SHA-256.

    ``path`` is ``FOLDER/NAME`` of a project (``project/checkpoints/cycle-3.pt``): the project is the root, the folder
    is opened (made when missing) without following a link, and a link at ``NAME`` is replaced, never written
    through (:func:`learnloss.atomic.atomic_write`).

    Raises:
        CheckpointError: the folder of ``path`` is a symbolic link or not a folder.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    try:
        with atomic_write(path, binary=True, root=path.parent.parent) as handle:
            handle.write(data)
    except LinkRefusedError as error:
        raise CheckpointError(str(error)) from None
    return hashlib.sha256(data).hexdigest()


_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([A-Za-z0-9_.]{1,80})")


def _refusal(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in learnloss's words: the object it would have to import
    when PyTorch names one, else the kind of error. PyTorch's own text is not repeated: it suggests loading with
    ``weights_only=False`` or allow-listing the object, either of which would run the file's code."""
    found = _GLOBAL.search(str(error))
    if found:
        return f"it would import {found.group(1)}"
    if isinstance(error, EOFError):
        return "it ends early"
    return f"{type(error).__name__} while reading it"


def load_checkpoint(path: Path, sha256: str) -> dict[str, Any]:
    """Read the checkpoint at ``path`` (never through a symbolic link) after checking it against ``sha256``.

    Raises:
        CheckpointError: the file is missing, unreadable or a link, its checksum differs, or it holds more than
            weights.
    """
    try:
        data = read_file(path, root=path.parent.parent)  # the folder and the file: never through a link
    except (OSError, ValueError, LinkRefusedError) as error:
        reason = "it is a symbolic link" if getattr(error, "errno", None) == errno.ELOOP else (
            getattr(error, "strerror", None) or str(error))
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {path} does not match the checksum the project recorded: it was changed "
                              "or damaged")
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} is not a weights-only file ({_refusal(error)}); it is not loaded, "
                              "since learnloss never runs code from a checkpoint — it did not come from learnloss: "
                              "delete it and restore the project from a backup") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(loaded).__name__}, not a learnloss snapshot; it is "
                              "not loaded")
    return loaded
