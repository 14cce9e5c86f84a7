"""The one writer of files inside a folder: atomic, and never through a symbolic link below its root."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from learnloss.atomic import (
    LinkRefusedError,
    atomic_write,
    check_folder,
    make_folder,
    open_lock_file,
    read_file,
    remove_file,
    remove_link,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links and O_NOFOLLOW are POSIX")

SECRET = b"outside the root: never written\n"
#: What ``learnloss doctor`` recognises as a leftover of an interrupted atomic write.
TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "file.txt").write_bytes(SECRET)
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_link_as_a_folder_on_the_way_is_refused_and_nothing_is_written(root, outside):
    (root / "exports").symlink_to(outside)
    with pytest.raises(LinkRefusedError) as refused:
        with atomic_write(root / "exports" / "file.txt", root=root) as handle:
            handle.write("new")
    assert str(refused.value) == (f"{root / 'exports'} is a symbolic link; a project keeps its files in real folders "
                                  "— replace the link by a folder and run again")
    assert _contents(outside) == {"file.txt": SECRET}


def test_a_link_deeper_on_the_way_is_refused_too(root, outside):
    (root / "a").mkdir()
    (root / "a" / "b").symlink_to(outside)
    with pytest.raises(LinkRefusedError, match=re.escape(f"{root / 'a' / 'b'} is a symbolic link")):
        with atomic_write("a/b/c/file.txt", root=root) as handle:
            handle.write("new")
    assert _contents(outside) == {"file.txt": SECRET}
    with pytest.raises(LinkRefusedError):
        make_folder(root, "a/b/c")
    with pytest.raises(LinkRefusedError):
        check_folder(root, "a/b")
    assert not (outside / "c").exists()


def test_a_file_where_a_folder_belongs_is_refused(root):
    (root / "exports").write_text("a file")
    with pytest.raises(LinkRefusedError, match="is not a folder"):
        with atomic_write(root / "exports" / "x.json", root=root) as handle:
            handle.write("{}")


def test_a_link_at_the_final_name_is_replaced_never_written_through(root, outside):
    target = root / "results.json"
    target.symlink_to(outside / "file.txt")
    with atomic_write(target, root=root) as handle:
        handle.write("new")
    assert not target.is_symlink() and target.read_text() == "new"
    assert _contents(outside) == {"file.txt": SECRET}
    (root / "alone.txt").symlink_to(outside / "file.txt")  # without a root: the file's own folder
    with atomic_write(root / "alone.txt") as handle:
        handle.write("mine")
    assert (root / "alone.txt").read_text() == "mine" and _contents(outside) == {"file.txt": SECRET}


def test_folders_on_the_way_are_created_and_the_root_may_be_a_link(root, tmp_path):
    with atomic_write(root / "a" / "b" / "f.bin", binary=True, root=root) as handle:
        handle.write(b"\x00\x01")
    assert (root / "a").is_dir() and (root / "a" / "b").is_dir()
    assert (root / "a" / "b" / "f.bin").read_bytes() == b"\x00\x01"
    named = tmp_path / "named-by-the-user"
    named.symlink_to(root)  # the user's choice: followed
    with atomic_write(named / "g.txt", root=named) as handle:
        handle.write("through the root")
    assert (root / "g.txt").read_text() == "through the root"
    assert make_folder(named, "exports") == named / "exports" and (root / "exports").is_dir()
    assert check_folder(root, "exports") and not check_folder(root, "missing")


def test_paths_outside_the_root_are_a_programming_error(root, tmp_path):
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "elsewhere.txt", root=root):
            pass
    with pytest.raises(ValueError):
        with atomic_write("../escape.txt", root=root):
            pass


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary_file(root):
    target = root / "exports" / "query-0.csv"
    with atomic_write(target, root=root) as handle:
        handle.write("old")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError):
        with atomic_write(target, root=root) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(target.parent) == ["query-0.csv"]
    with atomic_write(target, root=root) as handle:
        handle.write("new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640, "permissions not kept"


def test_a_process_killed_mid_write_leaves_the_old_file(root):
    target = root / "exports" / "big.bin"
    with atomic_write(target, binary=True, root=root) as handle:
        handle.write(b"old" * 1000)
    script = textwrap.dedent(f"""
        import os, signal, sys
        from learnloss.atomic import atomic_write
        with atomic_write({str(target)!r}, binary=True, root={str(root)!r}) as handle:
            handle.write(b"new" * 100000)
            handle.flush()
            print("written", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL and done.stdout == "written\n", done.stderr
    assert target.read_bytes() == b"old" * 1000
    leftovers = [name for name in os.listdir(target.parent) if name != "big.bin"]
    assert len(leftovers) == 1 and TMP.match(leftovers[0]), leftovers  # what doctor --fix removes
    assert os.path.getsize(target.parent / leftovers[0]) == 300000


def test_the_lock_file_is_never_opened_through_a_link(root, outside):
    (root / ".lock").symlink_to(outside / "file.txt")
    with pytest.raises(LinkRefusedError, match=re.escape(f"{root / '.lock'} is a symbolic link")) as refused:
        open_lock_file(root, ".lock")
    assert "delete it" in str(refused.value)
    (root / ".lock").unlink()
    (root / ".lock").symlink_to(outside / "missing")  # a dangling link would be created by O_CREAT without O_NOFOLLOW
    with pytest.raises(LinkRefusedError):
        open_lock_file(root, ".lock")
    assert _contents(outside) == {"file.txt": SECRET}
    (root / ".lock").unlink()
    os.link(outside / "file.txt", root / ".lock")
    with pytest.raises(LinkRefusedError, match="hard links"):
        open_lock_file(root, ".lock")
    assert _contents(outside) == {"file.txt": SECRET}
    (root / ".lock").unlink()
    fd = open_lock_file(root, ".lock")
    try:
        os.write(fd, b"learnloss query (pid 1)")
    finally:
        os.close(fd)
    assert (root / ".lock").read_bytes() == b"learnloss query (pid 1)"


def test_reading_and_removing_never_go_through_a_link(root, outside):
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "cycle-0.pt").symlink_to(outside / "file.txt")
    with pytest.raises(OSError):
        read_file(root / "checkpoints" / "cycle-0.pt", root=root)
    assert not remove_file(root / "checkpoints" / "cycle-0.pt", root=root)
    (root / "linked").symlink_to(outside)
    with pytest.raises(LinkRefusedError):
        read_file(root / "linked" / "file.txt", root=root)
    assert not remove_file(root / "linked" / "file.txt", root=root)
    assert not remove_link(root / "linked" / "file.txt", root=root)
    assert _contents(outside) == {"file.txt": SECRET}
    assert remove_link(root / "linked", root=root) and not os.path.lexists(root / "linked")
    assert _contents(outside) == {"file.txt": SECRET}
    (root / "checkpoints" / "cycle-1.pt").write_bytes(b"ours")
    assert read_file(root / "checkpoints" / "cycle-1.pt", root=root) == b"ours"
    assert not remove_link(root / "checkpoints" / "cycle-1.pt", root=root)
    assert remove_file(root / "checkpoints" / "cycle-1.pt", root=root)
    assert not (root / "checkpoints" / "cycle-1.pt").exists()
