"""The cache of generated datasets (``scenes``, ``digit-scenes``, ``figures``): generated once per setting, stored as a
compressed ``.npz`` whose name holds a hash of every generation parameter, written atomically, and generated again
when the file is damaged or does not hold what its settings promise. The file is read as the ``.npz`` loader reads
one: headers first, checked against the shapes the settings make and against ``LEARNLOSS_MAX_BYTES``, before any
data is decompressed. Nothing pickled is ever read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.atomic import atomic_write
from learnloss.data.limits import CHUNK_BYTES, ResourceLimitError, check_bytes
from learnloss.data.npyformat import NpyHeader, read_exact, read_npy_header
from learnloss.errors import DatasetFormatError

__all__ = ["CACHE_ENV_VAR", "cache_folder", "cached_arrays", "settings_key"]

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "LEARNLOSS_CACHE"
"""Environment variable naming the root of generated-dataset caches (default ``~/.cache/learnloss``)."""

_CACHE_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)
_SAVE = "delete the file; it is generated again"


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


class _Mismatch(Exception):
    """A cache file that is not what its settings promise (its headers tell, before any data is read)."""


def _headers(archive: zipfile.ZipFile, where: str) -> dict[str, NpyHeader]:
    """Every member's ``.npy`` header, read and checked as the ``.npz`` loader reads them
    (:func:`~learnloss.data.npyformat.read_npy_header`): plain dtypes only, and exactly the size the archive's
    directory gives the member — so what a member declares is what will be decompressed."""
    headers: dict[str, NpyHeader] = {}
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        with archive.open(info) as f:
            header = read_npy_header(f, key, where, _SAVE)
        if header.dtype.hasobject or header.dtype.names is not None or header.dtype.subdtype is not None:
            raise _Mismatch(f"{key} has dtype {header.dtype}")
        if info.file_size != header.offset + header.nbytes:
            raise _Mismatch(f"{key} declares {header.nbytes:,} bytes of data but the archive gives it "
                            f"{max(0, info.file_size - header.offset):,}")
        headers[key] = header
    return headers


def _shell(header: NpyHeader) -> np.ndarray:
    """An array of the declared shape and dtype that holds no data (every stride 0): what ``valid`` checks before
    anything is decompressed."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype=header.dtype), header.shape, (0,) * len(header.shape),
                                           writeable=False)


def _read(archive: zipfile.ZipFile, key: str, header: NpyHeader, where: str) -> np.ndarray:
    """Member ``key``'s data, streamed into an array of its declared shape (the header was checked)."""
    out = np.empty(header.shape, dtype=header.dtype.newbyteorder("="), order="F" if header.fortran else "C")
    flat = out.reshape(-1, order="A").view(np.uint8) if header.count else np.empty(0, np.uint8)
    info = archive.getinfo(f"{key}.npy") if f"{key}.npy" in archive.NameToInfo else archive.getinfo(key)
    with archive.open(info) as f:
        read_exact(f, header.offset, f"{key} header", where, _SAVE)
        step = CHUNK_BYTES
        for start in range(0, header.nbytes, step):
            chunk = read_exact(f, min(step, header.nbytes - start), f"data of {key}", where, _SAVE)
            flat[start:start + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        if f.read(1):  # reading past the end also checks the member's CRC
            raise _Mismatch(f"{key} holds more data than its header declares")
    if header.dtype != out.dtype:  # stored in the other byte order
        out = out.view(header.dtype).astype(out.dtype)
    return out


def _load_npz(path: Path, settings: str, valid: Callable[[Mapping[str, np.ndarray]], bool]
              ) -> dict[str, np.ndarray] | None:
    """Every array of the cache file ``path`` but its ``settings``, or None when it is missing, damaged, made with
    other ``settings`` or not what ``valid`` accepts (then it is generated again).

    As in the ``.npz`` loader (:mod:`learnloss.data.npz`), nothing is decompressed before every member's header has
    been read and checked: its dtype, its size in the archive, that the members are the ones ``valid`` expects with
    the shapes and dtypes it expects (checked on arrays that hold no data, :func:`_shell`), and that all of them fit
    ``LEARNLOSS_MAX_BYTES`` (:func:`~learnloss.data.limits.check_bytes`). A small file that declares gigabytes is
    thus generated again without allocating them. Nothing pickled is read."""
    if not path.is_file():
        return None
    where = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = _headers(archive, where)
            if "settings" not in headers or headers["settings"].shape != () or headers["settings"].dtype.kind != "U":
                raise _Mismatch("no settings")
            if not valid({key: _shell(h) for key, h in headers.items() if key != "settings"}):
                raise _Mismatch("its arrays are not those its settings make")
            total = sum(h.nbytes for h in headers.values())
            try:
                check_bytes(total, f"{path} (cached arrays)")
            except ResourceLimitError as error:
                raise _Mismatch(str(error)) from None
            if str(_read(archive, "settings", headers.pop("settings"), where)) != settings:
                raise _Mismatch("it was made with other settings")
            return {key: _read(archive, key, header, where) for key, header in headers.items()}
    except _Mismatch as error:
        log.warning("%s: cache file does not hold what its settings promise (%s); generating it again", path, error)
        return None
    except (*_CACHE_ERRORS, DatasetFormatError, RuntimeError, NotImplementedError, zipfile.LargeZipFile,
            lzma.LZMAError, struct.error, OverflowError) as error:
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
    found = _load_npz(path, settings, valid)
    if found is not None:
        if valid(found):  # the data itself, now that the headers were found right
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
