"""Attacks on the error boundary: file names that are not UTF-8, a reader of the output that goes away, and hostile
results files.

Python decodes argv bytes that are not UTF-8 with surrogateescape, so ``os.fsdecode(b"bad\\xff.csv")`` is exactly
what ``sys.argv`` holds for such a name: most attacks call ``main`` in-process with those strings (the same code as
the ``learnloss`` process minus interpreter start-up). One test hands raw bytes to a real process, and the broken
pipe needs a real process and a real pipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from learnloss.cli.boundary import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_USAGE, guarded
from learnloss.cli.main import main
from tests_support import init_grey_project

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _learnloss(args: list[bytes], cwd: Path, tmpdir: Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """``python -m learnloss ARGS`` in ``cwd`` with its temporary folder ``tmpdir`` (where a traceback file would
    go); arguments are bytes, as a shell passes a name that is not UTF-8."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": SRC, "LEARNLOSS_TRACEBACK": ""}
    streams = kwargs or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run([os.fsencode(sys.executable), b"-m", b"learnloss", *args], cwd=cwd, env=env,
                          timeout=300, **streams)  # type: ignore[call-overload]


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert init_grey_project(tmp_path)[0] == 0
    capsys.readouterr()
    return tmp_path / "proj"


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Callable[[list[bytes]], tuple[int, str, Path]]:
    """``learnloss ARGS`` in-process as the process would run it: in ``tmp_path``, its temporary folder (where a
    traceback file would go) an empty ``tmp_path/tmp``, arguments decoded from bytes as Python decodes ``sys.argv``.
    Returns the exit code, stderr and that temporary folder."""
    import tempfile

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setenv("LEARNLOSS_TRACEBACK", "")
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again

    def call(args: list[bytes]) -> tuple[int, str, Path]:
        capsys.readouterr()
        argv = [os.fsdecode(arg) for arg in args]
        try:
            code = main(argv)
        except SystemExit as stop:  # what argparse does for a usage error
            code = stop.code if isinstance(stop.code, int) else 1
        return code, capsys.readouterr().err, tmpdir

    return call


def _one_refusal(result: subprocess.CompletedProcess[bytes] | tuple[int, str, Path], shown: str,
                 tmpdir: Path) -> None:
    if isinstance(result, tuple):
        returncode, err = result[0], result[1]
    else:
        returncode, err = result.returncode, result.stderr.decode("utf-8", "backslashreplace")
    lines = err.strip().splitlines()
    assert returncode == EXIT_USAGE, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("learnloss: error: ") and f"'{shown}'" in lines[0], err
    assert "not valid UTF-8" in lines[0] and "rename it" in lines[0], err
    assert list(tmpdir.iterdir()) == []  # no traceback file, empty or not


def test_label_file_named_in_latin1_is_one_line_and_the_store_is_untouched(project: Path, tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/bad\xff.csv"
    with open(name, "w", encoding="utf-8") as handle:
        handle.write("path,label\n7.png,a\n")
    before = (project / "learnloss.db").read_bytes()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    _one_refusal(_learnloss([b"label", b"proj", b"bad\xff.csv"], tmp_path, tmpdir), "bad\\xff.csv", tmpdir)
    assert (project / "learnloss.db").read_bytes() == before


def test_init_with_images_in_a_latin1_folder_creates_nothing(tmp_path: Path, in_process) -> None:
    from PIL import Image

    folder = os.fsencode(tmp_path) + b"/ph\xff"
    os.mkdir(folder)
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(os.fsdecode(folder + f"/{i}.png".encode()))
    result = in_process([b"init", b"pj", b"--images", b"ph\xff", b"--classes", b"a,b"])
    _one_refusal(result, "ph\\xff", result[2])
    assert not (tmp_path / "pj").exists()


def test_init_of_a_latin1_project_folder_creates_nothing(tmp_path: Path, in_process) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / "imgs" / f"{i}.png")
    result = in_process([b"init", b"pj\xff", b"--images", b"imgs", b"--classes", b"a,b"])
    _one_refusal(result, "pj\\xff", result[2])
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"imgs", b"tmp"]


def test_backup_to_a_latin1_file_writes_nothing(project: Path, tmp_path: Path, in_process) -> None:
    result = in_process([b"backup", os.fsencode(project), b"b\xff.db"])
    _one_refusal(result, "b\\xff.db", result[2])
    assert not os.path.exists(os.fsencode(tmp_path) + b"/b\xff.db")


def test_the_traceback_file_of_a_bug_holds_a_latin1_argument_escaped(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    """The boundary writes the command line into its traceback file: an argument that is not UTF-8 must not make
    that writing fail (it used to, leaving an empty file and two chained tracebacks)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("LEARNLOSS_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["learnloss", "label", "pj", os.fsdecode(b"bad\xff.csv")])
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again

    def bug() -> int:
        raise ZeroDivisionError("a bug with \udcff in its message")

    assert guarded(bug) == EXIT_INTERNAL
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "a bug in learnloss" in lines[0], err
    written = Path(re.search(r"the full traceback is in (\S+)$", lines[0]).group(1))  # type: ignore[union-attr]
    assert written.parent == tmp_path
    text = written.read_text(encoding="utf-8")
    assert text.startswith("learnloss label pj bad\\xff.csv\n") and "ZeroDivisionError" in text


def test_a_lone_surrogate_reaching_an_encoder_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The last resort for a name in another encoding that reaches SQLite or a URL from a file, not argv."""

    def command() -> int:
        "item-\udcff.png".encode("utf-8")
        return 0

    assert guarded(command) == EXIT_USAGE
    line = capsys.readouterr().err.strip()
    assert line.startswith("learnloss: error: the text 'item-\\xff.png' is not valid UTF-8"), line


def test_a_reader_that_goes_away_ends_the_command_quietly(project: Path, tmp_path: Path) -> None:
    """``learnloss status P --json | head -c 10``: the reader is gone before anything is written (its end of the
    pipe is closed before the command starts), so every write meets a broken pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    try:
        result = _learnloss([b"status", os.fsencode(project), b"--json"], tmp_path, tmpdir, stdout=write_end,
                            stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert result.returncode == EXIT_BROKEN_PIPE == 141
    assert result.stderr == b""  # no "Broken pipe" line, no "Exception ignored" at exit
    assert list(tmpdir.iterdir()) == []


def test_in_process_a_latin1_argument_is_refused_before_the_command(project: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", os.fsdecode(os.fsencode(project) + b"\xff")]) == EXIT_USAGE
    assert "not valid UTF-8" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ hostile results.json files

HOSTILE_RESULTS = {
    "nested": "[" * 50_000 + "]" * 50_000,
    "digits": '{"aubc": ' + "7" * 5_000 + "}",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results") / "run"
    assert main(["run", "--out", str(out), "--protocol", "quick", "--epochs", "1", "--cycles", "2", "--initial", "30",
                 "--query", "20", "--subset", "100", "--device", "cpu", "--quiet", "--strategy", "random"]) == 0
    return out


@pytest.mark.parametrize("kind", sorted(HOSTILE_RESULTS))
@pytest.mark.parametrize("command", ["compare", "evaluate"])
def test_a_hostile_results_file_is_one_usage_line_naming_it(finished_run: Path, tmp_path: Path, in_process,
                                                            kind: str, command: str) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "results.json").write_text(HOSTILE_RESULTS[kind])
    args = [b"compare", os.fsencode(out), b"--plot", os.fsencode(tmp_path / "plot.png")] if command == "compare" \
        else [b"evaluate", os.fsencode(out), b"--device", b"cpu"]
    returncode, err, tmpdir = in_process(args)
    assert returncode == EXIT_USAGE, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(out / "results.json") in err and "a bug" not in err, err
    assert list(tmpdir.iterdir()) == []
