"""Finding the files of a dataset on disk, downloading them when they are missing.

Folders are searched in this order: the ``data_dir`` argument, ``$LEARNLOSS_DATA``, ``~/.cache/learnloss/<name>``
and the dataset's system folders (e.g. ``/usr/share/datasets/fashion-mnist`` of the Debian package). In each,
the files may lie directly or in one of the subfolders named by the dataset's :class:`SourceSpec`.
"""

from __future__ import annotations

import os
from pathlib import Path

from learnloss.data.download import base_url, fetch
from learnloss.data.sources import SourceSpec
from learnloss.errors import DatasetNotFoundError

__all__ = ["DATA_ENV_VAR", "cache_dir", "find_in", "locate", "require_files", "search_dirs"]

DATA_ENV_VAR = "LEARNLOSS_DATA"


def cache_dir(name: str) -> Path:
    """The default download folder of dataset ``name``: ``~/.cache/learnloss/<name>``."""
    return Path.home() / ".cache" / "learnloss" / name


def search_dirs(spec: SourceSpec, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for ``spec``'s files, in order, without duplicates."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get(DATA_ENV_VAR):
        dirs.append(Path(os.environ[DATA_ENV_VAR]).expanduser())
    dirs.append(cache_dir(spec.name))
    dirs.extend(Path(d) for d in spec.system_dirs)
    return list(dict.fromkeys(dirs))


def find_in(spec: SourceSpec, folder: Path) -> dict[str, Path] | None:
    """Map each of ``spec.files`` to its path if ``folder`` (or one of its accepted subfolders) holds them all."""
    for base in dict.fromkeys((folder, folder / spec.name, *(folder / sub for sub in spec.subdirs))):
        found: dict[str, Path] = {}
        for name in spec.files:
            path = next((base / (name + s) for s in spec.suffixes if (base / (name + s)).exists()), None)
            if path is None:
                break
            found[name] = path
        else:
            return found
    return None


def locate(spec: SourceSpec, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path] | None:
    """The files of ``spec`` from the first searched folder that holds them all, or ``None``."""
    for folder in search_dirs(spec, data_dir):
        found = find_in(spec, folder)
        if found is not None:
            return found
    return None


def _remote_urls(spec: SourceSpec) -> str:
    urls = " ".join(f"{base_url(spec).rstrip('/')}/{remote.name}" for remote in spec.remote)
    return urls + (" and extract it there" if any(remote.extract for remote in spec.remote) else "")


def require_files(
    spec: SourceSpec, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> dict[str, Path]:
    """The files of ``spec``, downloaded into ``data_dir`` (default: the cache folder) if none are found.

    Raises:
        DatasetNotFoundError: the files are nowhere and could not be downloaded (or ``download`` is false);
            the message lists the files expected and the folders searched.
        DatasetFormatError: a download failed its checksum or is a malformed archive.
    """
    found = locate(spec, data_dir)
    if found is not None:
        return found
    given = Path(data_dir).expanduser() if data_dir is not None else None
    if given is not None and given.exists() and not given.is_dir():
        raise DatasetNotFoundError(
            f"{spec.name}: data dir {given} is a file; pass the folder holding {spec.describe_files()}"
        )
    if not spec.remote:
        reason = "they cannot be downloaded automatically"
    elif not download:
        reason = f"automatic download is off; get {_remote_urls(spec)}"
    else:
        dest = given if given is not None else cache_dir(spec.name)
        try:
            fetch(spec, dest)
        except DatasetNotFoundError as exc:
            reason = f"automatic download failed: {exc}"
        else:
            found = find_in(spec, dest)
            if found is not None:
                return found
            reason = f"the files downloaded from {base_url(spec)} into {dest} do not contain them all"
    folders = ", ".join(str(d) for d in search_dirs(spec, data_dir))
    subdirs = ", ".join(f"{s}/" for s in dict.fromkeys((spec.name, *spec.subdirs)))
    raise DatasetNotFoundError(
        f"{spec.name}: files not found. Put {spec.describe_files()} in one of: {folders} (directly or in a "
        f"subfolder {subdirs}), or pass --data-dir DIR, or set {DATA_ENV_VAR}=DIR; {reason}"
    )
