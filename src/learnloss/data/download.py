"""Downloading dataset files: atomic writes, MD5 verification and safe archive extraction.

The base URL of a dataset is, in order of precedence: the environment variable ``LEARNLOSS_MIRROR_<NAME>``
(``<NAME>`` upper-cased with non-alphanumerics as ``_``, e.g. ``LEARNLOSS_MIRROR_FASHION_MNIST``), the entry of
:data:`MIRRORS`, or the official URL of its :class:`~learnloss.data.sources.SourceSpec`. ``file://`` URLs work.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from learnloss.data.sources import SourceSpec
from learnloss.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["MIRRORS", "base_url", "download_file", "extract_archive", "fetch", "file_md5", "mirror_env_var"]

log = logging.getLogger(__name__)

MIRRORS: dict[str, str] = {}
"""Base URLs that replace the official ones, by canonical dataset name (the environment variable wins)."""

TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def mirror_env_var(name: str) -> str:
    """The environment variable that overrides the base URL of dataset ``name``."""
    return "LEARNLOSS_MIRROR_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def base_url(spec: SourceSpec) -> str:
    """The base URL the files of ``spec`` are downloaded from."""
    return os.environ.get(mirror_env_var(spec.name)) or MIRRORS.get(spec.name) or spec.url


def file_md5(path: Path) -> str:
    """The hexadecimal MD5 digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to the file ``dest`` atomically, checking its MD5; an existing good ``dest`` is kept.

    The data goes to a hidden temporary file beside ``dest`` that replaces ``dest`` only once verified.

    Raises:
        OSError: the URL cannot be read or ``dest`` cannot be written (``urllib.error.URLError`` included).
        DatasetFormatError: the download does not match ``md5``; the temporary file is deleted.
    """
    if dest.is_file() and file_md5(dest) == md5.lower():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5.lower():
            raise DatasetFormatError(
                f"checksum mismatch for {dest.name} downloaded from {url}: expected md5 {md5.lower()}, got "
                f"{digest.hexdigest()}; the download was deleted. Retry, or check the mirror URL"
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def _check_member(archive: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DatasetFormatError(
            f"{archive}: refusing to extract member {name!r}, which points outside the target folder (absolute "
            f"path or '..'); the archive is corrupt or malicious: delete it and download it again"
        )


def _extract_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(archive, member.name)
            if not hasattr(tarfile, "data_filter") and not (member.isfile() or member.isdir()):
                raise DatasetFormatError(f"{archive}: refusing to extract {member.name!r}: not a file or folder")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, members=members, filter="data")
        else:  # Python without extraction filters: members were checked above
            tar.extractall(into, members=members)


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _check_member(archive, name)
        zf.extractall(into)


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a ``.zip`` or (compressed) tar ``archive`` into the folder ``dest``, safely and atomically.

    Members with absolute paths or ``..`` are rejected before anything is written (tar files are also extracted
    with the ``'data'`` filter). Extraction happens in a hidden staging folder inside ``dest``; each top-level
    entry then replaces its namesake in ``dest``.

    Raises:
        DatasetFormatError: the archive is malformed or has an unsafe member.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            (_extract_zip if archive.name.lower().endswith(".zip") else _extract_tar)(archive, staging)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetFormatError(
                f"{archive}: cannot extract ({exc}); delete the file and download it again"
            ) from exc
        for entry in staging.iterdir():
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(spec: SourceSpec, dest: Path) -> None:
    """Download (and extract, where marked) every remote file of ``spec`` into the folder ``dest``.

    Raises:
        DatasetNotFoundError: a file cannot be downloaded (network unreachable, HTTP error, unwritable ``dest``).
        DatasetFormatError: a download fails its checksum or is a malformed archive.
    """
    url_base = base_url(spec).rstrip("/")
    for remote in spec.remote:
        url = f"{url_base}/{remote.name}"
        log.info("downloading %s to %s", url, dest)
        try:
            path = download_file(url, dest / remote.name, remote.md5)
        except (OSError, http.client.HTTPException) as exc:
            reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
            raise DatasetNotFoundError(f"could not download {url} into {dest} ({reason})") from exc
        if remote.extract:
            extract_archive(path, dest)
            path.unlink()
