"""Checkpoints a project can trust: written atomically, identified by SHA-256, loaded without unpickling code, and
kept in a real folder of the project that nothing a store says can lead out of.

``torch.save`` output is written through :func:`learnloss.atomic.atomic_write` (temporary file, fsync,
rename); the store records its SHA-256 with the cycle. :func:`load_checkpoint` verifies the checksum before
reading, and reads with ``torch.load(weights_only=True)``, which accepts tensors and plain containers only —
never arbitrary pickled objects.

A project's checkpoints live directly in its ``checkpoints/`` folder (:data:`FOLDER`), which must be a real folder,
not a symbolic link. Files are opened relative to that folder's descriptor and never through a symbolic link
(``O_NOFOLLOW``), so neither a crafted store, a symlinked folder nor a symlinked file makes learnloss read, write or
delete anything outside it (:func:`checkpoint_folder`, :func:`confined_checkpoint`, :func:`remove_in_folder`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any

import torch

from learnloss.atomic import atomic_write
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
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class CheckpointError(LearnLossError):
    """A checkpoint is missing, damaged, changed since it was recorded, not a weights-only file, outside its
    project's ``checkpoints/`` folder, or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint passed its checksum but does not fit the model it is loaded into (other parameter names or
    shapes): it was made by other code or for other data, not damaged."""


def checkpoint_folder(project: Path, create: bool = False) -> Path:
    """``project/checkpoints``, refused unless it is a real folder (or, without ``create``, absent).

    Raises:
        CheckpointError: it is a symbolic link or not a folder.
    """
    folder = project / FOLDER
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder
    if stat.S_ISLNK(mode):
        raise CheckpointError(f"{folder} is a symbolic link; a project keeps its checkpoints in a real folder "
                              "inside it — move the files there in place of the link, then run the command again")
    if not stat.S_ISDIR(mode):
        raise CheckpointError(f"{folder} is not a folder; move it away, then run the command again")
    return folder


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


def _read_no_follow(path: Path) -> bytes:
    """The bytes of the regular file ``path``, opened relative to its folder and never through a symbolic link."""
    folder_fd = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    try:
        fd = os.open(path.name, os.O_RDONLY | _NOFOLLOW, dir_fd=folder_fd)
    finally:
        os.close(folder_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise IsADirectoryError(21, "not a regular file", str(path))
        return handle.read()


def remove_in_folder(folder: Path, name: str) -> bool:
    """Delete the regular file ``name`` directly inside ``folder`` (never a symbolic link, a folder, or anything a
    link leads to); whether it was deleted. A file that is already gone, or cannot be deleted, is left alone."""
    if "/" in name or "\x00" in name or name in ("", ".", ".."):
        return False
    try:
        folder_fd = os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
            return False
        os.unlink(name, dir_fd=folder_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(folder_fd)


def save_checkpoint(path: Path, state: dict[str, Any]) -> str:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically; returns
    its SHA-256.

    Raises:
        CheckpointError: the folder of ``path`` is a symbolic link.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    if path.parent.is_symlink():
        raise CheckpointError(f"{path.parent} is a symbolic link; checkpoints are written into a real folder only — "
                              "move the files there in place of the link, then run the command again")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, binary=True) as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: Path, sha256: str) -> dict[str, Any]:
    """Read the checkpoint at ``path`` (never through a symbolic link) after checking it against ``sha256``.

    Raises:
        CheckpointError: the file is missing, unreadable or a link, its checksum differs, or it holds more than
            weights.
    """
    try:
        data = _read_no_follow(path)
    except (OSError, ValueError) as error:
        reason = "it is a symbolic link" if getattr(error, "errno", None) == errno.ELOOP else (
            getattr(error, "strerror", None) or str(error))
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {path} does not match the checksum the project recorded: it was changed "
                              "or damaged")
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is not a weights-only file ({first}); it is not loaded") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(loaded).__name__}, not a learnloss snapshot; it is "
                              "not loaded")
    return loaded
