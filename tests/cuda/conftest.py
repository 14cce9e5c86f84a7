"""The CUDA tests' device, and a record of each outcome as it happens.

Every test here is marked ``cuda`` and runs on ``$LEARNLOSS_TEST_DEVICE`` (default ``cuda``); without CUDA it is
skipped. ``benchmarks/gpu/run.sh``'s dry run sets ``LEARNLOSS_TEST_DEVICE=cpu`` so that the same tests run on a
CPU (what needs an accelerator, fp16, is skipped there). With ``$LEARNLOSS_TEST_REPORT`` set, each outcome is
appended to that file as one JSON line the moment it is known, so a run stopped at its time limit still says what
passed before it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

DEVICE_ENV = "LEARNLOSS_TEST_DEVICE"


def device_name() -> str:
    """The device the CUDA tests run on (``cuda`` unless ``$LEARNLOSS_TEST_DEVICE`` says otherwise)."""
    return os.environ.get(DEVICE_ENV, "cuda") or "cuda"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test; the test is skipped where it names CUDA and CUDA is not available."""
    name = device_name()
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA is not available (set LEARNLOSS_TEST_DEVICE=cpu to run these tests on the CPU)")
    return torch.device(name)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Append the outcome of each test to ``$LEARNLOSS_TEST_REPORT`` (a skip or error at setup, else the call)."""
    path = os.environ.get("LEARNLOSS_TEST_REPORT")
    if not path or not report.nodeid.startswith("tests/cuda/"):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed) or (
            report.when == "teardown" and report.failed):
        line = {"test": report.nodeid, "when": report.when, "outcome": report.outcome,
                "seconds": round(report.duration, 3)}
        if report.failed:
            line["error"] = str(report.longrepr).strip().splitlines()[-1][:500] if report.longrepr else ""
        elif report.skipped and isinstance(report.longrepr, tuple):
            line["reason"] = str(report.longrepr[2])[:300]
        with Path(path).open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")
