"""Paths a user supplies (manifests, label files) stay inside the project's data root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from learnloss.errors import UsageError

__all__ = ["UnsafePathError", "resolve_inside", "safe_relative"]


class UnsafePathError(UsageError):
    """A path that is absolute, climbs out with ``..``, or leads outside the data root through a symlink."""


def safe_relative(text: str, where: str = "") -> str:
    """Normalise ``text`` to a relative POSIX path, refusing absolute paths, drive letters and ``..`` parts.

    Raises:
        UnsafePathError: the path could leave the data root (``where`` says which row or file it came from).
    """
    origin = f"{where}: " if where else ""
    if not text or not text.strip():
        raise UnsafePathError(f"{origin}empty path")
    if "\x00" in text:
        raise UnsafePathError(f"{origin}path {text!r} contains a NUL byte")
    posix = PurePosixPath(text.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(text).drive:
        raise UnsafePathError(f"{origin}path {text!r} is absolute; give it relative to the data root")
    if ".." in posix.parts:
        raise UnsafePathError(f"{origin}path {text!r} climbs out of the data root with '..'")
    parts = [part for part in posix.parts if part not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"{origin}path {text!r} names the data root itself, not a file")
    return "/".join(parts)


def resolve_inside(root: Path, relative: str, where: str = "") -> Path:
    """``root / relative`` after :func:`safe_relative`, refused when symlinks lead it outside ``root``.

    Raises:
        UnsafePathError: as :func:`safe_relative`, or the resolved path is outside ``root``.
    """
    path = root / safe_relative(relative, where)
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        origin = f"{where}: " if where else ""
        raise UnsafePathError(f"{origin}path {relative!r} leads outside the data root {root} (through a symlink)")
    return path
