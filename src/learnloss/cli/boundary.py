"""The command line's one error boundary: every failure becomes one line on stderr and a documented exit code.

======  ===========================================================================================================
code    meaning
======  ===========================================================================================================
0       success
1       a failure at run time: training diverged, a damaged store or checkpoint, another process holding the project,
        out of memory
2       bad usage or bad input: a flag, a name, a file or a dataset that is malformed, unsafe or over a resource limit
74      the operating system refused a read or a write: no space left, a read-only or unreadable folder
        (``EX_IOERR`` of ``sysexits.h``)
70      an unexpected error, a bug in learnloss: one line, and the full traceback written to a file it names
        (``EX_SOFTWARE``)
130     interrupted (Ctrl-C): what was committed before is kept, nothing half-written; a command that can be
        continued (``run``, ``bench``) says what it kept and the exact command that continues it
======  ===========================================================================================================

Set ``LEARNLOSS_TRACEBACK=1`` to let unexpected errors propagate with their traceback instead (for debugging).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from learnloss.errors import LearnLossError

__all__ = [
    "EXIT_FAILURE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_IO", "EXIT_OK", "EXIT_USAGE", "INTERRUPTED_LINE",
    "guarded",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_IO = 74
EXIT_INTERRUPTED = 130

_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space and run the command again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run the command again",
    errno.EFBIG: "the file would exceed the file-size limit (ulimit -f); raise it or free space and run the command "
                 "again",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; make it readable/writable for you or choose another folder",
    errno.EPERM: "operation not permitted; make it writable for you or choose another folder",
    errno.ENOENT: "no such file or folder; check the path",
    errno.EISDIR: "is a folder, not a file; name a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run the command again",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def _say(message: str) -> None:
    print(f"learnloss: error: {message}", file=sys.stderr)


def os_error_line(error: OSError) -> str:
    """One line for an error the operating system raised: what, on which file, and what to do."""
    where = " → ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    advice = _OS_ADVICE.get(error.errno or -1) or (error.strerror or str(error))
    return f"{where}: {advice}" if where else advice


def _write_traceback(error: BaseException) -> Path | None:
    """Write the full traceback of ``error`` to a new file in the temporary folder; its path, or None."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"learnloss-traceback-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"learnloss {' '.join(sys.argv[1:])}\n\n")
            handle.write("".join(traceback.format_exception(error)))
        return Path(name)
    except OSError:
        return None


INTERRUPTED_LINE = "learnloss: interrupted; what was committed before is kept, nothing half-written"
"""What Ctrl-C prints when the command has no more to say (see :func:`guarded`'s ``on_interrupt``)."""


def _interrupted_line(on_interrupt: Callable[[], str | None] | None) -> str:
    """The line Ctrl-C prints: ``on_interrupt``'s, or :data:`INTERRUPTED_LINE` when it has none or fails (even by a
    second Ctrl-C) — saying what was kept must never turn the interruption into a traceback."""
    if on_interrupt is None:
        return INTERRUPTED_LINE
    try:
        return on_interrupt() or INTERRUPTED_LINE
    except BaseException:  # noqa: BLE001 - a damaged store, a second Ctrl-C: the generic line still holds
        return INTERRUPTED_LINE


def guarded(command: Callable[[], int], on_interrupt: Callable[[], str | None] | None = None) -> int:
    """Run ``command`` and turn whatever it raises into one line on stderr and the exit code of the table above.

    ``on_interrupt`` is called after Ctrl-C (once ``command`` has unwound, so its stores are closed) for the line
    to print instead of :data:`INTERRUPTED_LINE`: what the command kept and how to continue it.
    """
    try:
        return command()
    except LearnLossError as error:
        _say(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        print(_interrupted_line(on_interrupt), file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        _say("out of memory; lower --batch-size or the data's size (LEARNLOSS_MAX_BYTES bounds what a dataset may "
             "declare), or use a machine with more memory")
        return EXIT_FAILURE
    except OSError as error:
        _say(os_error_line(error))
        return EXIT_IO
    except sqlite3.DatabaseError as error:  # the store translates its own; this is the last resort
        _say(f"a database failed ({error}); run learnloss doctor on the project, or restore it from a backup")
        return EXIT_FAILURE
    except Exception as error:
        if os.environ.get("LEARNLOSS_TRACEBACK"):
            raise
        path = _write_traceback(error)
        where = f"the full traceback is in {path}" if path else "set LEARNLOSS_TRACEBACK=1 to see the traceback"
        _say(f"unexpected {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} — a bug in "
             f"learnloss; {where}")
        return EXIT_INTERNAL
