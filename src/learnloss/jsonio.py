"""The one JSON writer of learnloss: every JSON file the package writes goes through :func:`write_json`.

One rule for values JSON cannot hold: NaN and infinite floats are written as ``null`` (standard JSON has no
NaN or Infinity; :func:`json.dumps` would otherwise emit the invalid tokens ``NaN`` / ``Infinity``). numpy
scalars and arrays, tuples, paths and dataclass instances become their plain JSON counterparts; mapping keys
become strings. Anything else JSON cannot represent (a set, an arbitrary object) is an error, not silently
turned into text.

Layer: foundation -- imports only the standard library, numpy and :mod:`learnloss.atomic`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from learnloss.atomic import atomic_write

__all__ = ["dumps", "to_jsonable", "write_json"]


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` made of plain JSON types.

    - NaN and ±infinity (Python or numpy floats) become ``None``;
    - numpy booleans, integers and floats become ``bool`` / ``int`` / ``float``; numpy arrays become lists;
    - tuples become lists; mapping keys become ``str``;
    - :class:`os.PathLike` values become their path string;
    - dataclass instances become dicts (:func:`dataclasses.asdict`).

    Values of other types (sets, bytes, arbitrary objects) are passed through unchanged, so that
    :func:`json.dumps` rejects them with a :class:`TypeError`.

    Raises:
        ValueError: ``obj`` contains itself (a circular reference).
    """
    return _convert(obj, set())


def _convert(obj: Any, active: set[int]) -> Any:
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return _convert(obj.tolist(), active)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _convert(dataclasses.asdict(obj), active)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (Mapping, list, tuple)):
        if id(obj) in active:
            raise ValueError("circular reference: a container holds itself")
        active.add(id(obj))
        try:
            if isinstance(obj, Mapping):
                return {_key(k): _convert(v, active) for k, v in obj.items()}
            return [_convert(v, active) for v in obj]
        finally:
            active.discard(id(obj))
    return obj


def _key(key: Any) -> str:
    """A mapping key as a string, spelled as :func:`json.dumps` spells keys (``True`` -> ``"true"``)."""
    if isinstance(key, str):
        return key
    value = _convert(key, set()) if isinstance(key, (bool, float, np.generic, os.PathLike)) else key
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def dumps(obj: Any, indent: int | None = None) -> str:
    """``obj`` as JSON text (after :func:`to_jsonable`): never ``NaN``/``Infinity``, non-ASCII kept as is.

    Raises:
        TypeError: ``obj`` contains a value JSON cannot represent.
        ValueError: ``obj`` contains itself.
    """
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2,
               root: str | os.PathLike[str] | None = None) -> None:
    """Write ``obj`` as UTF-8 JSON (see :func:`dumps`) with a trailing newline to ``path``, atomically
    (:func:`learnloss.atomic.atomic_write`): readers see the old file or the complete new one, and on any
    failure -- including one while serialising -- ``path`` is untouched.

    ``root`` is the project or run folder ``path`` lies in: no folder between them is followed through a symbolic
    link. Without it the file's own folder is the root (``RUN/results.json``, or a file the user named): a link at
    the file's name is replaced by the file, never written through.

    Raises:
        TypeError: ``obj`` contains a value JSON cannot represent or contains itself (the message names
            ``path``).
        LinkRefusedError: a folder between ``root`` and ``path`` is a symbolic link.
        OSError: the directory does not exist or is not writable.
    """
    try:
        text = dumps(obj, indent=indent)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot write {os.fspath(path)} as JSON: {exc}") from exc
    with atomic_write(path, root=root) as handle:
        handle.write(text + "\n")
