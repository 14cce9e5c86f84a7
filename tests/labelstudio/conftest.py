"""One real Label Studio server for every test of this folder (it takes about a minute to start)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lsclient import LabelStudio, executable, start  # noqa: E402


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    binary = executable()
    if binary is None:
        message = ("no Label Studio to test against: run the README's test command (it installs label-studio into "
                   ".lsvenv), or set LEARNLOSS_LABEL_STUDIO to a label-studio executable")
        if os.environ.get("LEARNLOSS_REQUIRE_LABEL_STUDIO"):
            pytest.fail(message)
        pytest.skip(message)
    server = start(binary, tmp_path_factory.mktemp("label-studio"))
    try:
        yield server
    finally:
        server.stop()
