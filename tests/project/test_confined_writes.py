"""Nothing inside a project or run folder makes learnloss write through a link it did not make.

Each attack is made through the real command line, with real symbolic links: a link planted at ``.lock`` (C1:
``query``, ``remove``, ``run --resume``, ``doctor --fix``), ``exports/`` replaced by a link to an outside folder (M9),
and a checkpoint holding pickled code whose checksum was written into the store (m5). The file or folder outside must
stay byte for byte what it was, and the command must say so in one line, never a traceback. The command line is
``main(argv)`` in-process (the same code as the ``learnloss`` process minus interpreter start-up); the C1 ``query``
attack also goes through a separate process.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from learnloss.atomic import LinkRefusedError
from learnloss.cli.main import main
from learnloss.labeling.maintenance import doctor
from learnloss.project.exports import QueriedItem, write_query_batch
from learnloss.project.labelstudio import LabelStudioSetup
from tests_support import digits_project

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links and O_NOFOLLOW are POSIX")

RUN = ["--protocol", "quick", "--epochs", "1", "--cycles", "2", "--initial", "30", "--query", "20", "--subset", "200",
       "--device", "cpu", "--quiet", "--strategy", "random", "--seed", "1"]
PRECIOUS = b"someone else's file: never to be truncated\n"


class Done(NamedTuple):
    """What one in-process call of the command line did."""

    returncode: int
    stdout: str
    stderr: str


def _learnloss(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LEARNLOSS_TRACEBACK": ""}
    return subprocess.run([sys.executable, "-m", "learnloss", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Done]:
    """``learnloss ARGS`` in-process: the exit code, stdout and stderr of that one call."""
    monkeypatch.setenv("LEARNLOSS_TRACEBACK", "")

    def call(*args: str | Path) -> Done:
        capsys.readouterr()
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as stop:  # what argparse does for a usage error
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return Done(code, captured.out, captured.err)

    return call


def _one_line_refusal(done: Done | subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The refusal's line: a non-zero exit, one line on stderr, no traceback, naming each of ``fragments``."""
    assert done.returncode != 0, done.stdout + done.stderr
    err = done.stderr
    assert "Traceback" not in err, err
    assert err.startswith("learnloss: error:") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _outside_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside" / "precious.txt"
    outside.parent.mkdir()
    outside.write_bytes(PRECIOUS)
    return outside


def _plant_lock_link(folder: Path, outside: Path) -> Path:
    lock = folder / ".lock"
    lock.unlink(missing_ok=True)  # rm P/.lock
    lock.symlink_to(outside)  # ln -s OUTSIDE_FILE P/.lock
    return lock


def _rows(project: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(project / "learnloss.db")
    try:
        return list(db.execute(sql))
    finally:
        db.close()


@pytest.fixture(scope="module")
def labeling(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labeling project (60 digits, 20 labeled) made once; tests copy it."""
    return digits_project(tmp_path_factory.mktemp("labeling"), images=60, labeled=20)


@pytest.fixture
def project(labeling: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(labeling, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-cycle simulated run made through the command line (in-process)."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["run", "--out", str(out), *RUN]) == 0
    return out


@pytest.fixture
def run_folder(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    return copy


# ------------------------------------------------------------------------------------------------------- C1


def test_c1_query_refuses_a_linked_lock_file_and_never_touches_what_it_points_to(project, tmp_path):
    outside = _outside_file(tmp_path)
    lock = _plant_lock_link(project, outside)
    done = _learnloss("query", project, "--k", "2", "--quiet")
    _one_line_refusal(done, f"{lock} is a symbolic link", "delete it")
    assert outside.read_bytes() == PRECIOUS
    assert lock.is_symlink()
    assert _rows(project, "SELECT count(*) FROM queries") == [(0,)], "a query was recorded"


def test_c1_remove_refuses_a_linked_lock_file(project, tmp_path, cli):
    outside = _outside_file(tmp_path)
    _plant_lock_link(project, outside)
    done = cli("remove", project, "1")
    _one_line_refusal(done, ".lock is a symbolic link")
    assert outside.read_bytes() == PRECIOUS
    assert _rows(project, "SELECT count(*) FROM items WHERE retired_at IS NOT NULL") == [(0,)], "an item was retired"


def test_c1_run_resume_refuses_a_linked_lock_file(run_folder, tmp_path, cli):
    outside = _outside_file(tmp_path)
    _plant_lock_link(run_folder, outside)
    before = (run_folder / "results.json").read_bytes()
    done = cli("run", "--out", run_folder, *RUN, "--resume")
    _one_line_refusal(done, ".lock is a symbolic link")
    assert outside.read_bytes() == PRECIOUS
    assert (run_folder / "results.json").read_bytes() == before


def test_c1_a_hard_linked_lock_file_is_refused_too(project, tmp_path, cli):
    outside = _outside_file(tmp_path)
    lock = project / ".lock"
    lock.unlink(missing_ok=True)
    os.link(outside, lock)
    done = cli("remove", project, "1")
    _one_line_refusal(done, "hard links")
    assert outside.read_bytes() == PRECIOUS
    report = doctor(project, fix=True, check_items=False)
    assert [(f.kind, f.path, f.fixed) for f in report.files] == [("link_in_project", ".lock", True)]
    assert outside.read_bytes() == PRECIOUS and os.stat(outside).st_nlink == 1
    assert os.stat(lock).st_nlink == 1, "the lock file is still the outside file"


def test_c1_doctor_reports_a_linked_lock_file_and_fix_removes_only_the_link(project, tmp_path, cli):
    outside = _outside_file(tmp_path)
    lock = _plant_lock_link(project, outside)
    checked = cli("doctor", project)
    assert checked.returncode != 0 and "Traceback" not in checked.stderr
    assert ".lock is a symbolic link" in checked.stdout + checked.stderr
    assert outside.read_bytes() == PRECIOUS

    fixed = cli("doctor", project, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "Traceback" not in fixed.stderr
    assert outside.read_bytes() == PRECIOUS, "doctor --fix wrote through the link"
    assert not lock.is_symlink() and lock.is_file(), "the link was not replaced by the project's own lock file"
    assert cli("doctor", project).returncode == 0


# ------------------------------------------------------------------------------------------------------- M9


def _link_exports(project: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(project / "exports", elsewhere)  # holds labelstudio-config.xml from init
    (elsewhere / "labelstudio-config.xml").write_bytes(PRECIOUS)
    (project / "exports").symlink_to(elsewhere)
    return elsewhere, {p.name: p.read_bytes() for p in elsewhere.iterdir()}


def test_m9_query_refuses_a_linked_exports_folder_before_anything_is_written(project, tmp_path, cli):
    elsewhere, before = _link_exports(project, tmp_path)
    done = cli("query", project, "--k", "2", "--quiet")
    _one_line_refusal(done, f"{project / 'exports'} is a symbolic link",
                      "replace the link by a folder and run again")
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before, "a file was written outside the project"
    assert _rows(project, "SELECT count(*) FROM queries") == [(0,)], "a query was recorded"


def test_m9_the_batch_writer_itself_refuses_a_linked_exports_folder(project, tmp_path):
    elsewhere, before = _link_exports(project, tmp_path)
    items = [QueriedItem(1, "img001.png", 1, 0.5, "1", 0.9)]
    with pytest.raises(LinkRefusedError, match="exports is a symbolic link; a project keeps its files in real folders"):
        write_query_batch(project / "exports", 1, items, [str(c) for c in range(10)], {"strategy": "random"},
                          LabelStudioSetup.for_project(tmp_path / "imgs", None, None))
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_m9_a_link_at_an_export_file_is_replaced_not_written_through(project, tmp_path):
    outside = _outside_file(tmp_path)
    config = project / "exports" / "labelstudio-config.xml"
    config.unlink()
    config.symlink_to(outside)
    items = [QueriedItem(1, "img001.png", 1, 0.5, "1", 0.9)]
    paths, kept = write_query_batch(project / "exports", 1, items, [str(c) for c in range(10)], {"strategy": "random"},
                                    LabelStudioSetup.for_project(tmp_path / "imgs", None, None))
    assert outside.read_bytes() == PRECIOUS
    assert not config.is_symlink() and "<View>" in config.read_text() and kept == {}
    assert paths["labelstudio_config"] == config


def test_doctor_reports_linked_exports_and_checkpoints_and_fix_removes_the_links_only(project, tmp_path):
    elsewhere, before = _link_exports(project, tmp_path)
    kept = tmp_path / "kept-checkpoints"
    kept.mkdir()
    (kept / "cycle-0.pt").write_bytes(PRECIOUS)
    (project / "checkpoints").symlink_to(kept)
    report = doctor(project, check_items=False)
    linked = {f.path: f for f in report.files if f.kind == "link_in_project"}
    assert set(linked) == {"exports", "checkpoints"} and all(f.fixable for f in linked.values())
    assert not report.ok
    assert any("exports/ is a symbolic link" in line for line in report.lines())

    fixed = doctor(project, fix=True, check_items=False)
    assert sorted(fixed.removed) == sorted([project / "exports", project / "checkpoints"])
    assert not (project / "exports").exists() and not (project / "checkpoints").exists()
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before
    assert (kept / "cycle-0.pt").read_bytes() == PRECIOUS
    assert doctor(project, check_items=False).ok


# ------------------------------------------------------------------------------------------------------- m5


class _Hostile:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_m5_a_checkpoint_with_code_and_a_recorded_checksum_is_refused_without_advising_to_unpickle(run_folder,
                                                                                                  tmp_path, cli):
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"modules": [_Hostile(marker)]}, buffer)
    data = buffer.getvalue()
    ((cycle, recorded),) = _rows(run_folder, "SELECT cycle, checkpoint FROM cycles WHERE checkpoint IS NOT NULL "
                                             "ORDER BY cycle DESC LIMIT 1")
    (run_folder / recorded).write_bytes(data)
    db = sqlite3.connect(run_folder / "learnloss.db")
    with db:
        db.execute("UPDATE cycles SET checkpoint_sha256 = ? WHERE cycle = ?", (hashlib.sha256(data).hexdigest(), cycle))
    db.close()

    done = cli("evaluate", run_folder)
    err = _one_line_refusal(done, f"checkpoint {run_folder / recorded} is not a weights-only file", "exec",
                            "never runs code")
    assert not marker.exists(), "the checkpoint's code ran"
    for advice in ("weights_only", "add_safe_globals", "safe_globals", "trust"):
        assert advice not in err, err
