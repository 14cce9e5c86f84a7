"""Where the files of each file-backed dataset live: the per-dataset source specification.

One :class:`SourceSpec` per dataset names the files a loader needs, the subfolders and system folders they may
sit in, and the official download (base URL, file names, published MD5 checksums). :mod:`learnloss.data.locate`
and :mod:`learnloss.data.download` are driven entirely by these specs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SOURCES", "RemoteFile", "SourceSpec"]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name under the base URL (and on disk), its MD5, and whether to extract it."""

    name: str
    md5: str
    extract: bool = False


@dataclass(frozen=True)
class SourceSpec:
    """The files of one dataset and how to obtain them.

    Attributes:
        name: canonical dataset name (also the cache folder name ``~/.cache/learnloss/<name>``).
        files: paths (relative to the dataset folder) that must all exist; a directory counts.
        suffixes: accepted endings of each file name, the first one shown in messages
            (``(".gz", "")``: gzipped or raw).
        subdirs: subfolders of a searched folder that may hold the files (the folder itself and a subfolder
            named ``name`` are always tried).
        system_dirs: extra folders searched last (e.g. where a Debian package installs the data).
        url: official base URL of the download; overridable, see :func:`learnloss.data.download.base_url`.
        remote: the files to download from ``url``.
    """

    name: str
    files: tuple[str, ...]
    suffixes: tuple[str, ...] = ("",)
    subdirs: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    url: str = ""
    remote: tuple[RemoteFile, ...] = ()

    def describe_files(self) -> str:
        """The expected file names, comma separated, as shown in error messages."""
        names = ", ".join(f + self.suffixes[0] for f in self.files)
        if self.suffixes[0] and "" in self.suffixes:
            names += f" (also accepted without {self.suffixes[0]})"
        return names


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_remote(md5s: tuple[str, str, str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f"{name}.gz", md5) for name, md5 in zip(_IDX_FILES, md5s))


def _subdirs(names: tuple[str, ...], inner: str) -> tuple[str, ...]:
    """``inner`` (the folder an archive extracts to), each of ``names``, and ``inner`` within each of them."""
    return (inner, *names, *(f"{n}/{inner}" for n in names))


SOURCES: dict[str, SourceSpec] = {
    "mnist": SourceSpec(
        name="mnist",
        files=_IDX_FILES,
        suffixes=(".gz", ""),
        subdirs=("mnist", "MNIST/raw"),
        system_dirs=("/usr/share/datasets/mnist",),
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        remote=_idx_remote(
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            )
        ),
    ),
    "fashion-mnist": SourceSpec(
        name="fashion-mnist",
        files=_IDX_FILES,
        suffixes=(".gz", ""),
        subdirs=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        remote=_idx_remote(
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            )
        ),
    ),
    "cifar10": SourceSpec(
        name="cifar10",
        files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        subdirs=_subdirs(("cifar10", "cifar-10"), "cifar-10-batches-py"),
        url="https://www.cs.toronto.edu/~kriz/",
        remote=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", extract=True),),
    ),
    "cifar100": SourceSpec(
        name="cifar100",
        files=("train", "test", "meta"),
        subdirs=_subdirs(("cifar100", "cifar-100"), "cifar-100-python"),
        url="https://www.cs.toronto.edu/~kriz/",
        remote=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
    ),
    "tiny-imagenet": SourceSpec(
        name="tiny-imagenet",
        files=("wnids.txt", "train", "val/val_annotations.txt"),
        subdirs=_subdirs(("tiny-imagenet", "tiny_imagenet"), "tiny-imagenet-200"),
        url="http://cs231n.stanford.edu/",
        remote=(RemoteFile("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de", extract=True),),
    ),
}
