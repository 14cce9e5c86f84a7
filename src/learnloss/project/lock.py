"""The project lock: one long operation at a time on a project folder.

:func:`project_lock` holds an exclusive ``flock`` on the file :data:`LOCK_FILENAME` in the project folder for an
operation that must not run twice at once (training and querying, removing items, repairs). The operating system
releases it when the process dies, so a killed process never leaves a project locked. A process that waits past its
timeout gets a :class:`~learnloss.project.database.StoreBusyError` that names the holder when it is known to be alive.

The lock file is opened relative to the project folder's descriptor and never through a symbolic link
(:func:`learnloss.atomic.open_lock_file`): it is truncated and written in place, so a link or a hard link planted at
``.lock`` is refused with one line saying to delete it, and nothing it leads to is touched. Holding the lock also
checks that the folders learnloss writes into (:data:`FOLDERS`) are real folders, so an operation whose files would
go through a link is refused before it trains or records anything.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from learnloss.atomic import check_folder, open_lock_file
from learnloss.project.database import StoreBusyError, one_line

__all__ = ["FOLDERS", "LOCK_FILENAME", "project_lock"]

#: The lock file in a project folder.
LOCK_FILENAME = ".lock"
#: The folders of a project or run folder that learnloss writes into: each must be a real folder (or absent).
FOLDERS = ("checkpoints", "exports")

_PID = re.compile(r"\(pid (\d+)\)")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (whose locks the kernel has released already)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _holder(text: str) -> str:
    """Who holds the lock, from the lock file's text — only when the process it names is alive: the text can be
    a dead process's when the current holder has not written its own yet."""
    match = _PID.search(text)
    if text and match and _alive(int(match.group(1))):
        return one_line(text, 120)
    return "another process"


@contextmanager
def project_lock(project: str | Path, what: str, timeout: float = 30.0,
                 folders: Sequence[str] = FOLDERS) -> Iterator[None]:
    """Hold the lock of the project folder ``project`` (the file ``.lock`` in it) for a long operation that must
    not run twice at once (training and querying, removing items, repairs); waits up to ``timeout`` seconds. The
    operating system releases the lock when the process dies, so a killed process never leaves the project
    locked. ``what`` names the operation in the message another process gets. Once held, each of ``folders``
    (the project's :data:`FOLDERS` by default) must be a real folder or absent.

    Raises:
        StoreBusyError: another process held the lock for the whole timeout; the message names it when it is
            known to be alive.
        LinkRefusedError: ``.lock`` is a symbolic link, a hard link or not a regular file, or one of ``folders`` is
            a symbolic link or not a folder (nothing is written).
    """
    folder = Path(project)
    with open(open_lock_file(folder, LOCK_FILENAME), "r+", encoding="utf-8", errors="replace") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise StoreBusyError(
                        f"{_holder(handle.read().strip())} is running on {folder} and did not finish within "
                        f"{timeout:g} s; run {what} again when it is done"
                    ) from None
                time.sleep(0.1)
        try:
            for name in folders:
                check_folder(folder, name)
            handle.seek(0)
            handle.truncate()
            handle.write(f"learnloss {what} (pid {os.getpid()})")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
