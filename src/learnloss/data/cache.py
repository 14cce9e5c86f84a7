"""The cache of generated datasets (``scenes``, ``digit-scenes``, ``figures``): generated once per setting, stored as a
compressed ``.npz`` whose name holds a hash of every generation parameter, written atomically, and generated again
when the file is damaged or does not hold what its settings promise. Nothing pickled is ever read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.atomic import atomic_write

__all__ = ["CACHE_ENV_VAR", "cache_folder", "cached_arrays", "settings_key"]

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "LEARNLOSS_CACHE"
"""Environment variable naming the root of generated-dataset caches (default ``~/.cache/learnloss``)."""

_CACHE_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def cache_folder(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where generated dataset ``name`` is cached: ``data_dir`` when given, else ``$LEARNLOSS_CACHE/<name>``, else
    ``~/.cache/learnloss/<name>``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    root = os.environ.get(CACHE_ENV_VAR, "").strip()
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "learnloss") / name


def settings_key(settings: Any, version: int) -> tuple[str, str]:
    """The canonical JSON of a settings dataclass with the generator's format ``version``, and the first 16 hex
    digits of its SHA-256: what a cache file stores and what its name holds."""
    text = json.dumps({"version": version, **asdict(settings)}, sort_keys=True)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of the cache file ``path``, or None when it is missing or damaged (nothing pickled is read)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except _CACHE_ERRORS as error:
        log.warning("%s: damaged cache file (%s); generating it again", path, error)
        return None


def cached_arrays(
    path: Path,
    settings: str,
    generate: Callable[[], Mapping[str, np.ndarray]],
    valid: Callable[[Mapping[str, np.ndarray]], bool],
) -> dict[str, np.ndarray]:
    """The arrays cached in ``path`` when the file is intact, was made with ``settings`` (the canonical JSON of the
    generation parameters, stored beside the arrays) and passes ``valid``; else ``generate()``'s arrays, written to
    ``path`` atomically (:func:`learnloss.atomic.atomic_write`, compressed ``.npz``).

    A cache that cannot be written (a read-only folder) is reported as a warning in the log and the generated arrays
    are returned all the same.
    """
    found = _load_npz(path)
    if found is not None:
        stored = found.pop("settings", None)
        if stored is not None and stored.shape == () and str(stored) == settings and valid(found):
            return found
        log.warning("%s: cache file does not hold what its settings promise; generating it again", path)
    arrays = {key: np.ascontiguousarray(value) for key, value in generate().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, binary=True) as handle:
            savez: Callable[..., None] = np.savez_compressed  # numpy's stubs type **arrays as its own keywords
            savez(handle, settings=np.array(settings), **arrays)
    except OSError as error:
        log.warning("%s: cannot write the cache (%s); the dataset will be generated again next time", path, error)
    return arrays
