"""The Label Studio harness fails clearly, never hangs, when the server does not come up, and stops what it started."""

from __future__ import annotations

import os
import time

import pytest
from lsclient import start


def _script(tmp_path, body: str):
    script = tmp_path / "label-studio"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_a_server_that_exits_fails_with_its_log(tmp_path):
    binary = _script(tmp_path, "echo 'Error: no such database' >&2\nexit 3\n")
    with pytest.raises(AssertionError, match=r"exited with 3 before answering(.|\n)*no such database"):
        start(binary, tmp_path / "data", timeout=60)


def test_a_server_that_never_answers_is_stopped_after_the_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    binary = _script(tmp_path, f"echo $$ > {pid_file}\necho starting\nexec sleep 600\n")
    began = time.monotonic()
    with pytest.raises(AssertionError, match=r"did not answer within 3 s(.|\n)*starting"):
        start(binary, tmp_path / "data", timeout=3)
    assert time.monotonic() - began < 40
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # stopped by PID, not left running
        os.kill(pid, 0)
