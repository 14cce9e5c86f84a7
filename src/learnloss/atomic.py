"""Atomic file writes inside a folder, never through a symbolic link that learnloss did not make.

Readers see the old file or the complete new one, never a partial one; and nothing inside a project or run folder
makes learnloss write, truncate, read or delete anything outside it.

Every file is written under a **root**: the project or run folder a command works on (the user named it, and it may
itself be a symbolic link — that is the user's choice and is followed), or, for a file the user named outside any
project (``evaluate --out FILE``, ``export FILE``), that file's own folder. Below the root nothing is followed:

* every folder between the root and the file is opened relative to its parent's descriptor with
  ``O_NOFOLLOW | O_DIRECTORY``; a symbolic link there is refused with :class:`LinkRefusedError` (one line naming the
  path) before anything is written, and a folder that is missing is created with ``mkdir(dir_fd=...)``;
* the temporary file (``.NAME.XXXXXXXX.tmp``, the pattern ``learnloss doctor`` recognises) is created in that
  folder's descriptor with ``O_CREAT | O_EXCL | O_NOFOLLOW``, written, ``fsync``-ed and renamed over ``NAME`` with
  ``os.replace(src_dir_fd=..., dst_dir_fd=...)``, then the folder is ``fsync``-ed;
* a symbolic link at ``NAME`` itself is **replaced** by the new file: a rename replaces the link, never writes
  through it, so what the link pointed to is untouched (refusing would leave the user with nothing written and the
  same link to delete; replacing loses nothing);
* the project lock is opened with ``O_RDWR | O_CREAT | O_NOFOLLOW`` relative to the root's descriptor
  (:func:`open_lock_file`); a link there is refused, since the lock file is written in place.

Reading and deleting a file the same way (:func:`read_file`, :func:`remove_file`) serve checkpoints, whose names come
from a store that may be crafted. ``O_NOFOLLOW`` and ``dir_fd`` are POSIX (``openat(2)``, ``mkdirat(2)``,
``renameat(2)``); where the platform lacks them (Windows) paths are used as they are.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import IO, Any

from learnloss.errors import LearnLossError

__all__ = [
    "LinkRefusedError",
    "atomic_write",
    "check_folder",
    "fsync_dir",
    "make_folder",
    "open_lock_file",
    "read_file",
    "remove_file",
    "remove_link",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_HAVE_DIR_FD = os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd and _NOFOLLOW != 0
_TMP_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # as tempfile.mkstemp's names: doctor's pattern


class LinkRefusedError(LearnLossError):
    """A folder or file inside a project or run folder is a symbolic link (or not a folder where one belongs), so
    learnloss refuses to write there: nothing outside the folder is touched."""


def _link_refused(path: Path) -> LinkRefusedError:
    return LinkRefusedError(f"{path} is a symbolic link; a project keeps its files in real folders — replace the "
                            "link by a folder and run again")


def _not_a_folder(path: Path) -> LinkRefusedError:
    return LinkRefusedError(f"{path} is not a folder; a project keeps its files in real folders — move it away and "
                            "run again")


def fsync_dir(directory: str | os.PathLike[str] | int) -> None:
    """Make a rename in ``directory`` (a path or an open descriptor) durable (a no-op where directories cannot be
    opened, e.g. Windows)."""
    if isinstance(directory, int):
        with contextlib.suppress(OSError):
            os.fsync(directory)
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parts(path: str | os.PathLike[str], root: str | os.PathLike[str] | None) -> tuple[Path, tuple[str, ...]]:
    """The root and the names from it to ``path``: ``path`` relative to ``root`` (joined to it) or, when absolute
    or starting with ``root``, lexically below it; without ``root``, the file's own folder and its name.

    Raises:
        ValueError: ``path`` is not below ``root``, or climbs with ``..`` (a caller's mistake, not a user's).
    """
    target = Path(path)
    if root is None:
        return target.parent, (target.name,)
    base = Path(root)
    if target.is_absolute() != base.is_absolute() or not target.parts[:len(base.parts)] == base.parts:
        if target.is_absolute():
            raise ValueError(f"{target} is not inside {base}")
        target = base / target
    names = target.parts[len(base.parts):]
    if not names or any(name in ("", ".", "..") for name in names):
        raise ValueError(f"{target} does not name a file inside {base}")
    return base, names


def _open_child(parent_fd: int, name: str, shown: Path, create: bool) -> int:
    """The descriptor of the folder ``name`` inside ``parent_fd``, opened without following a link; created when
    missing and ``create``.

    Raises:
        LinkRefusedError: it is a symbolic link or not a folder.
        FileNotFoundError: it is missing and not ``create``.
    """
    flags = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
    for _ in range(2):
        try:
            return os.open(name, flags, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(shown)) from None
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile: open it
                os.mkdir(name, 0o777, dir_fd=parent_fd)
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise OSError(error.errno, error.strerror, str(shown)) from None
            try:
                mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            raise (_link_refused(shown) if stat.S_ISLNK(mode) else _not_a_folder(shown)) from None
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(shown))


@contextlib.contextmanager
def _folder(root: Path, names: tuple[str, ...], create: bool) -> Iterator[int]:
    """The descriptor of ``root/names...``: the root opened as given (a link to it is followed), every folder below
    it without following a link (:func:`_open_child`)."""
    fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        shown = root
        for name in names:
            shown = shown / name
            child = _open_child(fd, name, shown, create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def make_folder(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Make sure the folder ``path`` (relative to ``root``, or a path below it) exists as real folders below
    ``root``, creating what is missing with ``mkdir(dir_fd=...)``; returns ``root/path``.

    Raises:
        LinkRefusedError: a folder on the way is a symbolic link or not a folder.
        OSError: ``root`` does not exist, or a folder cannot be created.
    """
    base, names = _parts(path, root)
    if _HAVE_DIR_FD:
        with _folder(base, names, create=True):
            pass
    else:
        base.joinpath(*names).mkdir(parents=True, exist_ok=True)
    return base.joinpath(*names)


def check_folder(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether the folder ``path`` below ``root`` exists (False when it or a folder on the way is missing).

    Raises:
        LinkRefusedError: it, or a folder on the way, is a symbolic link or not a folder.
    """
    base, names = _parts(path, root)
    if not _HAVE_DIR_FD:
        return base.joinpath(*names).is_dir()
    try:
        with _folder(base, names, create=False):
            return True
    except FileNotFoundError:
        return False


def _temporary_name(name: str) -> str:
    return f".{name}.{''.join(secrets.choice(_TMP_LETTERS) for _ in range(8))}.tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], binary: bool = False,
                 root: str | os.PathLike[str] | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file in the folder of ``path`` for writing; on success flush, ``fsync`` and rename it over
    ``path``, then ``fsync`` the folder. On any exception (including an interrupt) the temporary file is removed and
    ``path`` is untouched.

    ``root`` is the project or run folder ``path`` lies in (``path`` is relative to it, or a path below it): every
    folder between them is opened without following a link, and created when missing (see the module docstring).
    Without ``root`` — a file the user named outside any project — the file's own folder is the root: it must exist,
    and only the final name is confined (a link there is replaced, not written through).

    Raises:
        LinkRefusedError: a folder between ``root`` and ``path`` is a symbolic link or not a folder.
        OSError: the folder does not exist or is not writable, or a write failed (no space left...); an error
            of a write that names no file is raised again naming ``path``.
    """
    base, names = _parts(path, root)
    target = base.joinpath(*names)
    handle: IO[Any]
    if not _HAVE_DIR_FD:  # no openat(2): plain paths
        with _write_by_path(target, binary) as handle:
            yield handle
        return
    with _folder(base, names[:-1], create=True) as folder_fd:
        name = names[-1]
        tmp = _temporary_name(name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY, 0o644,
                         dir_fd=folder_fd)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(target)) from None
        try:
            with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as handle:
                yield handle
                handle.flush()
                with contextlib.suppress(OSError):  # keep the permissions of the file it replaces
                    old = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
                    if stat.S_ISREG(old.st_mode):
                        os.fchmod(handle.fileno(), old.st_mode & 0o777)
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)  # a link at name is replaced
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder_fd)
            if error.filename is None or error.filename == tmp:  # name the target, not the temporary file
                raise OSError(error.errno, error.strerror, str(target)) from error
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder_fd)
            raise
        fsync_dir(folder_fd)


@contextlib.contextmanager
def _write_by_path(target: Path, binary: bool) -> Iterator[IO[Any]]:
    """:func:`atomic_write` where the platform has no ``dir_fd`` (Windows): a temporary file beside ``target``."""
    import tempfile

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    handle: IO[Any]
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, (target.stat().st_mode & 0o777) if target.exists() else 0o644)
        os.replace(tmp, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(target)) from error
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def open_lock_file(root: str | os.PathLike[str], name: str) -> int:
    """A read-write descriptor of the regular file ``name`` directly in ``root`` (created when missing), opened
    relative to the root's descriptor with ``O_RDWR | O_CREAT | O_NOFOLLOW``: the project lock, which is written in
    place and so must never be a link.

    Raises:
        LinkRefusedError: ``root/name`` is a symbolic link, not a regular file, or has other hard links (nothing is
            written to it; the message says to delete it).
        OSError: ``root`` does not exist or is not writable.
    """
    path = Path(root) / name
    advice = f"delete it (rm {path}) and run again; nothing it points to was touched"
    if not _HAVE_DIR_FD:
        return os.open(path, os.O_RDWR | os.O_CREAT | _BINARY, 0o644)
    with _folder(Path(root), (), create=False) as root_fd:
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, 0o644, dir_fd=root_fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EMLINK):
                raise LinkRefusedError(f"{path} is a symbolic link; learnloss never writes through one — "
                                       f"{advice}") from None
            if error.errno == errno.EISDIR:
                raise LinkRefusedError(f"{path} is a folder, not the project's lock file; {advice}") from None
            raise OSError(error.errno, error.strerror, str(path)) from None
    found = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(found.st_mode) else
               "has other hard links (it may be another file)" if found.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise LinkRefusedError(f"{path} {problem}; learnloss never writes to it — {advice}")
    os.set_blocking(fd, True)
    return fd


def read_file(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> bytes:
    """The bytes of the regular file ``path`` below ``root`` (default: its own folder), never read through a
    symbolic link (the folders on the way and the file itself are opened with ``O_NOFOLLOW``).

    Raises:
        LinkRefusedError: a folder on the way is a symbolic link or not a folder.
        OSError: the file is missing or unreadable; ``ELOOP`` when it is a symbolic link, ``EISDIR`` when it is not
            a regular file.
    """
    base, names = _parts(path, root)
    target = base.joinpath(*names)
    if not _HAVE_DIR_FD:
        return target.read_bytes()
    with _folder(base, names[:-1], create=False) as folder_fd:
        try:
            fd = os.open(names[-1], os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, dir_fd=folder_fd)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(target)) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(target))
        return handle.read()


def _remove(path: str | os.PathLike[str], root: str | os.PathLike[str] | None, kind: Callable[[int], bool]) -> bool:
    """Delete ``path`` below ``root`` when its own mode (never what a link leads to) is of ``kind``; whether it was
    deleted. Anything else, or anything behind a link on the way, is left alone."""
    try:
        base, names = _parts(path, root)
    except ValueError:
        return False
    if "\x00" in str(PurePath(*names)):
        return False
    if not _HAVE_DIR_FD:
        target = base.joinpath(*names)
        try:
            if not kind(os.lstat(target).st_mode):
                return False
            target.unlink()
        except OSError:
            return False
        return True
    try:
        with _folder(base, names[:-1], create=False) as folder_fd:
            if not kind(os.stat(names[-1], dir_fd=folder_fd, follow_symlinks=False).st_mode):
                return False
            os.unlink(names[-1], dir_fd=folder_fd)  # unlink(2) removes a link itself, never what it points to
            return True
    except (OSError, LinkRefusedError):
        return False


def remove_file(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> bool:
    """Delete the regular file ``path`` below ``root`` (default: its own folder) — never a symbolic link, a folder,
    or anything a link leads to; whether it was deleted. A file that is already gone, lies behind a link, or cannot
    be deleted, is left alone."""
    return _remove(path, root, stat.S_ISREG)


def remove_link(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> bool:
    """Delete the symbolic link ``path`` below ``root`` (default: its own folder) — the link only, never what it
    points to; whether it was deleted. Anything that is not a link (or lies behind one) is left alone."""
    return _remove(path, root, stat.S_ISLNK)
