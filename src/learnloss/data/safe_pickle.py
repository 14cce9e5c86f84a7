"""Loading the official pickled dataset files without letting them run code or take unbounded memory.

A pickle can call any importable function while it loads. :class:`RestrictedUnpickler` resolves only the few
globals that the official CIFAR batches need (numpy's array reconstruction and the plain builtin containers), and
even those cannot allocate on a file's say-so: the builtins may only be called without arguments (an empty value),
``numpy.ndarray`` cannot be called at all, ``_reconstruct`` only makes the empty array that numpy's own pickles
start from, and filling an array (``__setstate__``) needs the raw bytes to be in the file: all arrays together may
not hold more bytes than the file's byte strings do, so one row cannot be repeated into a hundred thousand images.

Before that, :func:`scan_pickle` walks the opcodes without building anything (:func:`pickletools.genops`) and bounds
what unpickling can take: every declared length must fit in the file, memo indices must be plausible (a 9-byte
pickle with a memo index of 10^8 would otherwise make the unpickler allocate gigabytes), and the sum of a per-opcode
cost, the strings and the memo is checked against ``LEARNLOSS_MAX_BYTES`` (:mod:`learnloss.data.limits`). A file
that breaks any of this fails with one line (:class:`~learnloss.errors.DatasetFormatError` or
:class:`~learnloss.data.limits.ResourceLimitError`), as does a ``MemoryError`` while loading.
"""

from __future__ import annotations

import math
import os
import pickle
import pickletools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from learnloss.data.limits import check_bytes, out_of_memory
from learnloss.errors import DatasetFormatError, LearnLossError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

__all__ = ["ALLOWED_GLOBALS", "PickleScan", "RestrictedUnpickler", "load_pickle", "scan_pickle"]

_ADVICE = "it is not an official dataset file: delete it and download it again"
_BUILTINS: dict[str, type] = {"dict": dict, "list": list, "str": str, "bytes": bytes, "int": int}
_NDARRAY = ("numpy", "ndarray")
_RECONSTRUCT = "_reconstruct"

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, name): obj for module in ("builtins", "__builtin__") for name, obj in _BUILTINS.items()},
    ("numpy.core.multiarray", _RECONSTRUCT): _reconstruct,
    ("numpy._core.multiarray", _RECONSTRUCT): _reconstruct,
    _NDARRAY: np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
"""The only globals a dataset pickle may reference, by (module, name) (what :class:`RestrictedUnpickler` hands
out in their place is guarded: see the module docstring)."""

_OP_COST = 128
"""Bytes one opcode can make the unpickler hold at most, besides its string: an object header, a list slot, a memo
slot (the largest objects one opcode makes from a few bytes are an empty dict or list, under 100 bytes)."""
_DTYPE_KINDS = "biufcSU"  # booleans, integers, floats, complex numbers, byte and text strings
_SLACK = 4096  # arrays of at most this many bytes in all may come from outside byte strings (numpy copies small ones)


class _Refused(pickle.UnpicklingError):
    """The file asks for something a dataset file never needs; the message says what."""


@dataclass(frozen=True)
class PickleScan:
    """What :func:`scan_pickle` found: the file's size, the byte strings it holds, and an upper bound of the memory
    unpickling it takes (``footprint``, checked against ``LEARNLOSS_MAX_BYTES``)."""

    path: Path
    file_size: int
    string_bytes: int
    footprint: int


class _BoundedReader:
    """A file whose reads never ask for more than what remains (a declared length cannot allocate beyond it)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._size, self._pos = f, size, 0

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        data = self._f.read(left if n < 0 else min(n, left))
        self._pos += len(data)
        return data

    def readline(self) -> bytes:
        line = self._f.readline(max(0, self._size - self._pos))
        self._pos += len(line)
        return line

    def tell(self) -> int:
        return self._pos


def _payload(name: str, arg: object) -> tuple[int, int]:
    """The bytes an opcode's string takes once unpickled, and how many of them are a byte string."""
    if isinstance(arg, (bytes, bytearray)):
        return len(arg), len(arg)
    if isinstance(arg, str):
        if name.endswith("STRING"):  # a Python 2 str: bytes with encoding='bytes'
            return len(arg), len(arg)
        return 4 * len(arg), 0  # the widest str takes four bytes a character
    return 0, 0


class _Tally:
    """What the opcodes seen so far can make the unpickler hold (see :func:`scan_pickle`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ops = self.strings = self.string_bytes = self.memo = 0

    def add(self, name: str, arg: object, remaining: int) -> None:
        self.ops += 1
        payload, as_bytes = _payload(name, arg)
        self.strings += payload
        self.string_bytes += as_bytes
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not isinstance(arg, int) or not 0 <= arg <= self.size:
                raise _Refused(f"it declares memo index {arg:,} in a file of {self.size:,} bytes (the unpickler would "
                               "allocate a table that large)")
            self.memo = max(self.memo, arg + 1)
        elif name == "MEMOIZE":
            self.memo += 1
        elif name == "FRAME" and isinstance(arg, int) and arg > remaining:
            raise _Refused(f"it declares a frame of {arg:,} bytes where {remaining:,} remain")
        elif name in ("PERSID", "BINPERSID"):
            raise _Refused("it references a persistent id, which a dataset file never needs")
        elif name in ("INST", "GLOBAL") and isinstance(arg, str):
            module, _, attribute = arg.partition(" ")
            if (module, attribute) not in ALLOWED_GLOBALS:
                raise _Refused(_forbidden(module, attribute))

    @property
    def footprint(self) -> int:
        """Bytes unpickling can hold: per opcode, its string, the memo table, array copies of the byte strings."""
        return self.ops * _OP_COST + self.strings + 16 * self.memo + self.string_bytes + _SLACK


def scan_pickle(path: Path) -> PickleScan:
    """Walk the opcodes of the pickle ``path`` without building anything, and bound the memory loading it takes.

    Guarantees, once it returns: every opcode is known and complete, every declared length fits in the file, no memo
    index exceeds the file's size, every ``GLOBAL`` is in :data:`ALLOWED_GLOBALS`, and ``footprint`` bounds what
    :func:`load_pickle` holds and has passed ``LEARNLOSS_MAX_BYTES``. At most one string of the file is held at a
    time.

    Raises:
        DatasetFormatError: the file cannot be read, is not a complete pickle, or references a forbidden global.
        ResourceLimitError: loading it could take more than ``LEARNLOSS_MAX_BYTES``.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            check_bytes(size, f"{path} (a pickle of {size:,} bytes)")
            reader, tally = _BoundedReader(f, size), _Tally(size)
            with warnings.catch_warnings():  # a damaged protocol-0 string may hold an invalid escape sequence
                warnings.simplefilter("ignore", DeprecationWarning)
                for opcode, arg, _ in pickletools.genops(cast(IO[bytes], reader)):
                    tally.add(opcode.name, arg, size - reader.tell())
    except LearnLossError:
        raise
    except _Refused as exc:
        raise _refusal(path, str(exc)) from None
    except (OSError, ValueError, EOFError, OverflowError) as exc:
        raise _invalid(path, exc) from None
    except MemoryError:
        raise out_of_memory(str(path)) from None
    check_bytes(tally.footprint, f"{path} (a pickle of {size:,} bytes and {tally.ops:,} opcodes)")
    return PickleScan(path, size, tally.string_bytes, tally.footprint)


def _forbidden(module: str, name: str) -> str:
    return f"the file references {module}.{name}, which a dataset file never needs"


def _refusal(path: Path, why: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: refusing to unpickle, {why}; {_ADVICE}")


def _invalid(path: Path, exc: BaseException) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: not a valid pickle ({type(exc).__name__}: {exc}); delete it and download it "
                              "again")


class _PendingDtype:
    """What ``numpy.dtype(...)`` gives while unpickling: a plain numeric or text dtype whose byte order the pickled
    state sets, checked here rather than by numpy's own ``dtype.__setstate__`` (which a crafted state can break)."""

    def __init__(self, spec: object, align: object = False, copy: object = False) -> None:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 8 or align not in (0, 1) or copy not in (0, 1):  # Python 2: 0, 1
            raise _Refused(f"it builds a numpy dtype from {type(spec).__name__} {str(spec)[:20]!r}, which dataset files "
                           "never do")
        try:
            dtype = np.dtype(spec)
        except (TypeError, ValueError):
            raise _Refused(f"it builds the numpy dtype {spec!r}, which does not exist") from None
        if dtype.kind not in _DTYPE_KINDS or dtype.names is not None or dtype.subdtype is not None:
            raise _Refused(f"it builds the numpy dtype {dtype}, which dataset files never hold")
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        # numpy writes (3, byte order, None, None, None, -1, -1, flags) for a plain dtype
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[2:5] == (None,) * 3):
            raise _Refused("it sets a numpy dtype to a state that numpy never writes for a plain dtype")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"it sets a numpy dtype to the byte order {order!r}")
        if order != "|":
            self.dtype = self.dtype.newbyteorder(cast(Any, order))


class _ArrayBudget:
    """Admits array states while the bytes of all arrays stay within what the file's byte strings hold."""

    def __init__(self, allowance: int) -> None:
        self.allowance, self.used = allowance, 0

    def admit(self, state: object) -> Any:
        """The state numpy's ``ndarray.__setstate__`` may be given for ``state`` (its dtype resolved)."""
        if not isinstance(state, tuple) or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
            raise _Refused("it fills an array from a state that numpy never writes")
        shape, pending, fortran, raw = state[-4:]
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise _Refused(f"it declares an array of shape {shape!r}")
        if not isinstance(pending, _PendingDtype) or fortran not in (0, 1):
            raise _Refused(f"it fills an array with the dtype {type(pending).__name__}, which numpy never writes")
        dtype = pending.dtype
        nbytes = math.prod(shape) * dtype.itemsize
        if not isinstance(raw, bytes) or len(raw) != nbytes:
            found = f"{len(raw):,} bytes" if isinstance(raw, bytes) else type(raw).__name__
            raise _Refused(f"it declares an array of shape {shape} and dtype {dtype} ({nbytes:,} bytes) but gives "
                           f"{found}")
        self.used += nbytes
        if self.used > self.allowance:
            raise _Refused(f"it builds arrays of {self.used:,} bytes in all from {self.allowance - _SLACK:,} bytes of "
                           "data: it repeats data to inflate it")
        return (*state[:-4], shape, dtype, bool(fortran), raw)


def _array_type(budget: _ArrayBudget) -> type[np.ndarray]:
    class _GuardedArray(np.ndarray):  # type: ignore[type-arg]
        """An ndarray whose unpickling state is checked by ``budget`` before numpy sees it."""

        def __setstate__(self, state: Any) -> None:
            super().__setstate__(budget.admit(state))

    return _GuardedArray


def _no_arguments(qualname: str, kind: type) -> Callable[..., object]:
    def make(*args: object, **kwargs: object) -> object:
        if args or kwargs:
            raise _Refused(f"it calls {qualname} with arguments, which dataset files never do (such a call can "
                           "allocate what the file declares)")
        return kind()

    return make


class _NotCallable:
    """Stands for ``numpy.ndarray``: an argument of ``_reconstruct``, never something to call."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise _Refused("it calls numpy.ndarray directly, which dataset files never do (the call allocates what the "
                       "file declares)")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`, and those only in the forms numpy's and Python's own
    pickles use (see the module docstring).

    ``array_bytes`` bounds the bytes of all arrays it builds (default: none may be built); arrays come back as a
    private subclass of ``numpy.ndarray`` (:func:`load_pickle` hands back plain ``numpy.ndarray`` views).
    """

    def __init__(self, file: IO[bytes], *, encoding: str = "ASCII", array_bytes: int = 0) -> None:
        super().__init__(file, encoding=encoding)
        self._array = _array_type(_ArrayBudget(array_bytes))
        self._ndarray = _NotCallable()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise _Refused(_forbidden(module, name))
        if (module, name) == _NDARRAY:
            return self._ndarray
        if name == _RECONSTRUCT:
            return self._reconstruct
        if name == "dtype":
            return _PendingDtype
        return _no_arguments(f"{module}.{name}", _BUILTINS[name])

    def _reconstruct(self, cls: object, shape: object, dtype: object) -> np.ndarray:
        if cls is not self._ndarray or shape != (0,) or dtype not in ("b", b"b"):
            raise _Refused("it calls numpy's _reconstruct with other arguments than numpy's own pickles use (it "
                           "would allocate what the file declares)")
        return cast(np.ndarray, _reconstruct(self._array, (0,), "b"))


def _plain(obj: Any) -> Any:
    """``obj`` with the guarded arrays directly in it (a dict's values, a list's items) as plain ndarray views."""
    if isinstance(obj, np.ndarray) and type(obj) is not np.ndarray:
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        return {k: _plain(v) if isinstance(v, np.ndarray) else v for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) if isinstance(v, np.ndarray) else v for v in obj]
    return obj


def load_pickle(path: Path, scan: PickleScan | None = None) -> Any:
    """Unpickle ``path`` as the official datasets were written (``encoding='bytes'``), refusing code and inflation.

    ``path`` is scanned first (:func:`scan_pickle`) unless ``scan`` is the result of that. Arrays held directly by
    the result (a value of a dict, an item of a list) are plain ``numpy.ndarray``.

    Raises:
        DatasetFormatError: the file references a forbidden global or calls an allowed one in a way dataset files
            never do, builds more array data than it holds, or is not a valid pickle.
        ResourceLimitError: loading it could take more than ``LEARNLOSS_MAX_BYTES``, or memory ran out.
    """
    if scan is None:
        scan = scan_pickle(path)
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes", array_bytes=scan.string_bytes + _SLACK).load()
    except _Refused as exc:
        raise _refusal(path, str(exc)) from None
    except MemoryError:
        raise out_of_memory(str(path)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, RecursionError, UnicodeDecodeError, SystemError) as exc:
        raise _invalid(path, exc) from None
    return _plain(obj)
