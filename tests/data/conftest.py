"""Fixtures of the dataset tests: an isolated home, no real data folders, and no network beyond 127.0.0.1.

The fake-file writers live in ``datafakes`` (importable thanks to the ``sys.path`` entry added here).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from learnloss.data import download
from learnloss.data.sources import SOURCES

sys.path.insert(0, str(Path(__file__).parent))

_LOCAL = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME at a fresh folder, drop data/mirror settings and system folders, forbid remote host names."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in list(os.environ):
        if var == "LEARNLOSS_DATA" or var.startswith("LEARNLOSS_MIRROR_"):
            monkeypatch.delenv(var)
    monkeypatch.setattr(download, "MIRRORS", {})
    for name, spec in SOURCES.items():
        monkeypatch.setitem(SOURCES, name, dataclasses.replace(spec, system_dirs=()))
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in _LOCAL:
            raise OSError(f"tests must not use the network (tried to resolve {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    yield home
