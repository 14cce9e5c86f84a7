"""The command line's error boundary: one line and a documented exit code for every failure, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from learnloss.cli.boundary import EXIT_INTERNAL, EXIT_IO
from learnloss.cli.main import main
from tests_support import init_grey_project


@pytest.fixture
def project(tmp_path, capsys):
    assert init_grey_project(tmp_path)[0] == 0
    capsys.readouterr()
    return tmp_path / "proj"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("learnloss: error:") and "Traceback" not in err, err
    return lines[0]


def test_an_unexpected_error_is_one_line_naming_a_file_with_the_traceback(project, capsys, monkeypatch):
    import learnloss.labeling.workflow as workflow

    def broken(project):  # a bug somewhere below the command line
        raise ZeroDivisionError("division by zero in a place nobody expected")

    monkeypatch.setattr(workflow, "project_status", broken)
    assert main(["status", str(project)]) == EXIT_INTERNAL
    line = _one_line(capsys.readouterr().err)
    assert "unexpected ZeroDivisionError" in line and "a bug in learnloss" in line
    written = Path(re.search(r"the full traceback is in (\S+)$", line).group(1))
    try:
        text = written.read_text()
        assert "Traceback" in text and "division by zero in a place nobody expected" in text and "broken" in text
    finally:
        written.unlink()


def test_learnloss_traceback_lets_the_error_through(project, monkeypatch):
    import learnloss.labeling.workflow as workflow

    monkeypatch.setattr(workflow, "project_status", lambda project: 1 / 0)
    monkeypatch.setenv("LEARNLOSS_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        main(["status", str(project)])


def test_writing_into_a_missing_folder_is_one_line_exit_74(project, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "labels.csv"
    assert main(["export", str(project), "--out", str(out)]) == EXIT_IO
    line = _one_line(capsys.readouterr().err)
    assert "no such file or folder" in line and str(out.parent) in line


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from learnloss.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_write_that_runs_out_of_room_is_one_line_and_leaves_nothing_behind(tmp_path):
    import numpy as np
    from PIL import Image

    images = tmp_path / "photos"  # 400 labeled images: their export is larger than the store's 32 KiB index file
    for i in range(400):
        (images / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), i % 256, dtype=np.uint8), mode="L").save(images / "ab"[i % 2] / f"{i}.png")
    assert main(["init", str(tmp_path / "proj"), "--images", str(images)]) == 0
    out = tmp_path / "exports"
    out.mkdir()
    target = out / "labels.json"
    target.write_text("the previous export\n")
    limit = str(48 * 1024)
    proc = subprocess.run([sys.executable, "-c", _LIMITED, limit, "export", str(tmp_path / "proj"), "--out", str(target)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == EXIT_IO, proc.stderr
    assert "labels.json" in _one_line(proc.stderr)
    assert target.read_text() == "the previous export\n"  # the old file is kept whole
    assert sorted(p.name for p in out.iterdir()) == ["labels.json"]  # no temporary file left
    assert main(["export", str(tmp_path / "proj"), "--out", str(target)]) == 0  # and it is the room, not the data
    assert len(target.read_bytes()) > int(limit)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_exit_74(project, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["export", str(project), "--out", str(folder / "labels.csv")]) == EXIT_IO
        assert "permission denied" in _one_line(capsys.readouterr().err)
    finally:
        folder.chmod(0o700)


def _interrupt() -> int:
    raise KeyboardInterrupt


def test_ctrl_c_is_exit_130_with_the_generic_line(capsys):
    from learnloss.cli.boundary import EXIT_INTERRUPTED, INTERRUPTED_LINE, guarded

    assert guarded(_interrupt) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == INTERRUPTED_LINE + "\n"
    assert INTERRUPTED_LINE == "learnloss: interrupted; what was committed before is kept, nothing half-written"


def test_ctrl_c_prints_the_commands_own_line(capsys):
    from learnloss.cli.boundary import guarded

    assert guarded(_interrupt, on_interrupt=lambda: "learnloss: interrupted; continue with: learnloss x") == 130
    assert capsys.readouterr().err == "learnloss: interrupted; continue with: learnloss x\n"


@pytest.mark.parametrize("failure", [KeyboardInterrupt, ZeroDivisionError, lambda: None])
def test_a_failing_interrupt_line_falls_back_to_the_generic_one(capsys, failure):
    """A damaged store, a second Ctrl-C while it is read, or nothing to say: still one line and exit 130."""
    from learnloss.cli.boundary import INTERRUPTED_LINE, guarded

    def line():
        result = failure()
        if isinstance(result, BaseException):
            raise result
        return result

    assert guarded(_interrupt, on_interrupt=line) == 130
    assert capsys.readouterr().err == INTERRUPTED_LINE + "\n"
