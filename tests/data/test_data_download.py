"""Downloading from a local mirror (file:// and an HTTP server on 127.0.0.1): checksums, atomicity, safety."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from datafakes import (
    IDX_NAMES,
    md5,
    set_md5s,
    tar_gz,
    tar_with_member,
    write_cifar10,
    write_idx_set,
    write_tiny_imagenet,
    zip_dir,
)

from learnloss.data import download, load_dataset
from learnloss.data.download import extract_archive, mirror_env_var
from learnloss.errors import DatasetFormatError, DatasetNotFoundError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a fresh folder; yields (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mnist_mirror(folder: Path, monkeypatch: pytest.MonkeyPatch, name: str = "mnist") -> dict[str, object]:
    arrays = write_idx_set(folder)
    set_md5s(monkeypatch, name, {f"{n}.gz": md5(folder / f"{n}.gz") for n in IDX_NAMES})
    return arrays


def test_file_url_download_into_cache(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _mnist_mirror(tmp_path / "mirror", monkeypatch, "fashion-mnist")
    monkeypatch.setenv(mirror_env_var("fashion-mnist"), (tmp_path / "mirror").as_uri())
    ds = load_dataset("fmnist")
    cache = isolated / ".cache" / "learnloss" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES)  # no temp files left
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays[IDX_NAMES[0]]))
    monkeypatch.setenv(mirror_env_var("fashion-mnist"), f"http://127.0.0.1:{_closed_port()}/")
    assert len(load_dataset("fashion-mnist").x_test) == 5  # found in the cache, no download needed


def test_http_download_and_extract_tar(
    tmp_path: Path, http_mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = http_mirror
    arrays = write_cifar10(tmp_path / "src")
    archive = tar_gz(tmp_path / "src" / "cifar-10-batches-py", served / "cifar-10-python.tar.gz")
    set_md5s(monkeypatch, "cifar10", {archive.name: md5(archive)})
    monkeypatch.setitem(download.MIRRORS, "cifar10", url)
    dest = tmp_path / "dest"
    ds = load_dataset("cifar10", dest)
    assert torch.equal(ds.x_train, torch.from_numpy(arrays["x_train"]))
    assert [p.name for p in dest.iterdir()] == ["cifar-10-batches-py"]  # archive removed, no staging left


def test_zip_download_tiny_imagenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tiny_imagenet(tmp_path / "src")
    archive = zip_dir(root, tmp_path / "mirror" / "tiny-imagenet-200.zip")
    set_md5s(monkeypatch, "tiny-imagenet", {archive.name: md5(archive)})
    monkeypatch.setenv("LEARNLOSS_MIRROR_TINY_IMAGENET", (tmp_path / "mirror").as_uri() + "/")
    ds = load_dataset("tiny-imagenet", tmp_path / "dest")
    assert ds.x_train.shape == (5, 3, 64, 64)


def test_env_var_overrides_mirror_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _mnist_mirror(tmp_path / "mirror", monkeypatch)
    monkeypatch.setitem(download.MIRRORS, "mnist", f"http://127.0.0.1:{_closed_port()}/")
    monkeypatch.setenv("LEARNLOSS_MIRROR_MNIST", (tmp_path / "mirror").as_uri())
    assert len(load_dataset("mnist", tmp_path / "dest").x_train) == 12


def test_checksum_mismatch_leaves_nothing(
    tmp_path: Path, http_mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = http_mirror
    write_idx_set(served)  # official checksums do not match these fake files
    monkeypatch.setenv("LEARNLOSS_MIRROR_MNIST", url)
    dest = tmp_path / "dest"
    with pytest.raises(DatasetFormatError) as info:
        load_dataset("mnist", dest)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert md5(served / "train-images-idx3-ubyte.gz") in message
    assert list(dest.iterdir()) == []


def test_offline_names_files_and_folders(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNLOSS_MIRROR_CIFAR100", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("LEARNLOSS_DATA", str(tmp_path / "shared"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", tmp_path / "mine")
    message = str(info.value)
    assert message.startswith("cifar100: files not found. Put train, test, meta in one of: ")
    for folder in (tmp_path / "mine", tmp_path / "shared", isolated / ".cache" / "learnloss" / "cifar100"):
        assert str(folder) in message
    assert "cifar-100-python/" in message and "--data-dir" in message
    assert "could not download http://127.0.0.1:" in message and "cifar-100-python.tar.gz" in message
    assert not list((tmp_path / "mine").glob("*.part")) and not list((tmp_path / "mine").glob(".*"))


def test_http_404_is_not_found(tmp_path: Path, http_mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNLOSS_MIRROR_MNIST", http_mirror[0])
    with pytest.raises(DatasetNotFoundError, match="HTTP Error 404"):
        load_dataset("mnist", tmp_path)


def test_download_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _mnist_mirror(tmp_path / "mirror", monkeypatch)
    monkeypatch.setenv("LEARNLOSS_MIRROR_MNIST", (tmp_path / "mirror").as_uri())
    with pytest.raises(DatasetNotFoundError, match=r"download is off; get file://.*/train-images-idx3-ubyte.gz"):
        load_dataset("mnist", tmp_path / "dest", download=False)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/tmp/evil-abs.txt"])
def test_unsafe_tar_member_rejected(tmp_path: Path, member: str) -> None:
    archive = tar_with_member(tmp_path / "a.tar.gz", member)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DatasetFormatError, match="refusing to extract member"):
        extract_archive(archive, dest)
    assert not (tmp_path / "out" / "evil.txt").exists() and list(dest.iterdir()) == []


def test_unsafe_tar_via_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tar_with_member(tmp_path / "mirror" / "cifar-10-python.tar.gz", "../escaped")
    set_md5s(monkeypatch, "cifar10", {archive.name: md5(archive)})
    monkeypatch.setenv("LEARNLOSS_MIRROR_CIFAR10", (tmp_path / "mirror").as_uri())
    with pytest.raises(DatasetFormatError, match="refusing to extract"):
        load_dataset("cifar10", tmp_path / "dest")
    assert not (tmp_path / "escaped").exists()


def test_tar_symlink_outside_rejected(tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DatasetFormatError, match="cannot extract"):
        extract_archive(archive, tmp_path / "dest")


@pytest.mark.parametrize("member", ["../evil.txt", "/evil.txt", "C:/evil.txt"])
def test_unsafe_zip_member_rejected(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(member, b"evil")
    with pytest.raises(DatasetFormatError, match="refusing to extract member"):
        extract_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="cannot extract"):
        extract_archive(tmp_path / "x.tar.gz", tmp_path / "dest")
