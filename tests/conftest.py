"""Fixtures shared by the whole suite; the helpers live in ``tests_support`` so tests can import them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tests_support import TinyNet, make_dataset  # noqa: E402

from learnloss.data.dataset import Dataset  # noqa: E402


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()
