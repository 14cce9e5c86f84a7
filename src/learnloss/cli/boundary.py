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
141     the reader of the output went away (``learnloss status P --json | head -c 10``): nothing more is printed, as a
        Unix tool killed by ``SIGPIPE`` (128 + 13)
130     interrupted (Ctrl-C): what was committed before is kept, nothing half-written; a command that can be
        continued (``run``, ``bench``) says what it kept and the exact command that continues it
======  ===========================================================================================================

Set ``LEARNLOSS_TRACEBACK=1`` to let unexpected errors propagate with their traceback instead (for debugging).

An argument that is not valid UTF-8 (a file name made in another encoding, which Python hands over with surrogate
escapes) is refused before the command runs (:func:`refuse_undecodable`), as item names are
(:func:`learnloss.project.paths.name_problem`): stores, exports, Label Studio's URLs and JSON carry names as UTF-8.
The boundary itself never fails: what it writes is escaped, and a traceback file it cannot finish is removed.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from learnloss.errors import LearnLossError, UsageError

__all__ = [
    "EXIT_BROKEN_PIPE", "EXIT_FAILURE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_IO", "EXIT_OK", "EXIT_USAGE",
    "INTERRUPTED_LINE", "guarded", "refuse_undecodable",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_IO = 74
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

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


def _shown(text: str) -> str:
    """``text`` as it can always be printed and written: bytes that are not UTF-8 (the surrogate escapes of a file
    name) as ``\\xff``, any other lone surrogate as ``\\udXXX``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _write_traceback(error: BaseException) -> Path | None:
    """Write the full traceback of ``error`` to a new file in the temporary folder; its path, or None (then no file
    is left behind). The command line and the traceback are written escaped, so no argument or message can make
    the writing fail."""
    name = None
    try:
        fd, name = tempfile.mkstemp(prefix=f"learnloss-traceback-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt")
        text = f"learnloss {' '.join(_shown(arg) for arg in sys.argv[1:])}\n\n" + \
            "".join(traceback.format_exception(error))
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8", "backslashreplace"))
        return Path(name)
    except Exception:  # noqa: BLE001 - the boundary must not fail while reporting a failure
        if name is not None:
            try:
                os.unlink(name)
            except OSError:
                pass
        return None


def refuse_undecodable(argv: Sequence[str]) -> None:
    """Refuse an argument that is not valid UTF-8 (on POSIX, Python passes such bytes as surrogate escapes): a
    project folder, data root or file named so could not be stored, exported or shown to Label Studio, so the
    advice is the one :func:`~learnloss.project.paths.name_problem` gives for item names — rename it.

    Raises:
        UsageError: naming the argument, its bytes shown as ``\\xff``.
    """
    for arg in argv:
        if any("\ud800" <= char <= "\udfff" for char in arg):
            raise UsageError(f"'{_shown(arg)}': the name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t "
                             "utf-8 --notest NAME) — learnloss stores, exports and prints names as UTF-8")


def _surrogate_line(error: UnicodeEncodeError) -> str:
    """One line for text holding a lone surrogate that reached an encoder (a file name in another encoding, or a
    ``\\udcff`` escape in a JSON file)."""
    start, end = max(0, error.start - 30), error.end + 30
    return (f"the text '{_shown(error.object[start:end])}' is not valid UTF-8 (a name in another encoding, or a lone "
            "\\udXXX escape in a file); rename the file or fix the text")


def _quiet_broken_pipe() -> int:
    """After the reader of stdout went away: point stdout at ``/dev/null`` so that nothing more fails on exit, and
    say nothing (the recipe of https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no stdout with a descriptor: nothing more will be written
        pass
    return EXIT_BROKEN_PIPE


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
        code = command()
        sys.stdout.flush()  # a reader that went away is reported here, not as an error at exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
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
    except UnicodeEncodeError as error:
        if not any("\ud800" <= char <= "\udfff" for char in error.object[error.start:error.end]):
            if os.environ.get("LEARNLOSS_TRACEBACK"):
                raise
            return _unexpected(error)
        _say(_surrogate_line(error))
        return EXIT_USAGE
    except sqlite3.DatabaseError as error:  # the store translates its own; this is the last resort
        _say(f"a database failed ({error}); run learnloss doctor on the project, or restore it from a backup")
        return EXIT_FAILURE
    except Exception as error:
        if os.environ.get("LEARNLOSS_TRACEBACK"):
            raise
        return _unexpected(error)


def _unexpected(error: Exception) -> int:
    """Report an error no one foresaw: one line naming the traceback file (:func:`_write_traceback`)."""
    path = _write_traceback(error)
    where = f"the full traceback is in {path}" if path else "set LEARNLOSS_TRACEBACK=1 to see the traceback"
    message = _shown(str(error).splitlines()[0]) if str(error) else ""
    _say(f"unexpected {type(error).__name__}: {message} — a bug in learnloss; {where}")
    return EXIT_INTERNAL
