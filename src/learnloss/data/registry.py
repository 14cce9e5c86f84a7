"""Dataset names: :func:`load_dataset` maps a name to its loader and, for file-backed datasets, its files.

============== ================ ======================================= ==================== ==================
name             source                                  inputs               augmentation
================ ======================================= ==================== ==================
digits           scikit-learn, bundled (offline)         uint8 (N, 1, 8, 8)   pad 1
diabetes         scikit-learn, bundled (offline)         float32 (N, 10)      none (regression)
mnist            IDX files, downloadable                 uint8 (N, 1, 28, 28) pad 2
fashion-mnist    IDX files, downloadable                 uint8 (N, 1, 28, 28) pad 2, flip
fashion-mnist-lt fashion-mnist, train split long-tailed  uint8 (N, 1, 28, 28) pad 2, flip
cifar10          python pickles, downloadable            uint8 (N, 3, 32, 32) pad 4, flip
cifar100         python pickles (fine labels), download. uint8 (N, 3, 32, 32) pad 4, flip
tiny-imagenet    JPEG tree, downloadable                 uint8 (N, 3, 64, 64) pad 8, flip
imagefolder      ``data_dir/<class>/*`` images           uint8 (N, C, H, W)   pad min(H, W) // 8
npz              ``data_dir`` ``.npz`` file              as stored            pad min(H, W) // 8
npy              ``data_dir`` folder of ``.npy`` files,  as stored            pad min(H, W) // 8
                 inputs memory-mapped (pools > memory)
scenes           Fashion-MNIST glyphs on a canvas,       uint8 (N, 1, 64, 64) none (detection)
                 generated once, cached in ``data_dir``
digit-scenes     the same with scikit-learn's digits     uint8 (N, 1, 64, 64) none (detection)
figures          rendered stick figures (14 keypoints),  uint8 (N, 1, 64, 64) none (keypoints)
                 generated once, cached in ``data_dir``
voc              ``data_dir`` Pascal VOC folder          uint8 (N, C, S, S)   none (detection)
coco             ``data_dir`` COCO annotation JSON       uint8 (N, C, S, S)   none (detection or
                 (images beside it)                                           keypoints)
================ ======================================= ==================== ==================

``fashion-mnist-lt`` keeps 6,000 / 3,596 / 2,156 / 1,292 / 774 / 464 / 278 / 166 / 100 / 60 training images of
classes 0-9 (14,886 in all; an exponential profile of imbalance ratio 100, :mod:`learnloss.data.longtail`); its test split is the
balanced 10,000.

``scenes``, ``digit-scenes`` and ``figures`` are generated (4,000 training and 1,000 test images) the first time
and cached as an ``.npz`` file in ``data_dir`` (default ``$LEARNLOSS_CACHE/<name>``, else
``~/.cache/learnloss/<name>``); ``scenes`` reads the Fashion-MNIST files only then. ``voc`` and ``coco`` resize images
to S = 128. Detection targets are float32 ``(N, M, 5)`` rows ``(class, x0, y0, x1, y1)`` normalised to [0, 1] and
padded with ``(-1, 0, 0, 0, 0)`` (:mod:`learnloss.data.scenes`); keypoint targets float32 ``(N, K, 3)`` rows ``(x, y,
v)`` with COCO's visibility (:mod:`learnloss.data.figures`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from learnloss.data.cifar import load_cifar10, load_cifar100
from learnloss.data.coco import load_coco
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.diabetes import load_diabetes
from learnloss.data.figures import make_figures
from learnloss.data.digits import load_digits
from learnloss.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx_dataset
from learnloss.data.imagefolder import load_imagefolder
from learnloss.data.locate import require_files
from learnloss.data.longtail import long_tail
from learnloss.data.npy import load_npy
from learnloss.data.npz import load_npz
from learnloss.data.scenes import make_scenes
from learnloss.data.sources import SOURCES
from learnloss.data.tiny_imagenet import load_tiny_imagenet
from learnloss.data.voc import load_voc
from learnloss.errors import UnknownNameError

__all__ = ["available_datasets", "canonical_name", "load_dataset"]

Loader = Callable[[str | os.PathLike[str] | None, bool], Dataset]


def _from_files(name: str, build: Callable[[dict[str, Path]], Dataset]) -> Loader:
    """A loader that finds (or downloads) the files of ``SOURCES[name]`` and passes them to ``build``."""

    def load(data_dir: str | os.PathLike[str] | None, download: bool) -> Dataset:
        return build(require_files(SOURCES[name], data_dir, download))

    return load


_fashion_mnist = partial(load_idx_dataset, "fashion-mnist", FASHION_MNIST_CLASSES, AugmentSpec(pad=2, flip=True))

_LOADERS: dict[str, Loader] = {
    "digits": lambda data_dir, download: load_digits(),
    "diabetes": lambda data_dir, download: load_diabetes(),
    "mnist": _from_files("mnist", partial(load_idx_dataset, "mnist", MNIST_CLASSES, AugmentSpec(pad=2))),
    "fashion-mnist": _from_files("fashion-mnist", _fashion_mnist),
    "fashion-mnist-lt": _from_files("fashion-mnist", lambda files: long_tail(_fashion_mnist(files), 100.0)),
    "cifar10": _from_files("cifar10", load_cifar10),
    "cifar100": _from_files("cifar100", load_cifar100),
    "tiny-imagenet": _from_files("tiny-imagenet", load_tiny_imagenet),
    "imagefolder": lambda data_dir, download: load_imagefolder(data_dir),
    "npz": lambda data_dir, download: load_npz(data_dir),
    "npy": lambda data_dir, download: load_npy(data_dir),
    "scenes": lambda data_dir, download: make_scenes("fashion-mnist", data_dir=data_dir, download=download),
    "digit-scenes": lambda data_dir, download: make_scenes("digits", data_dir=data_dir),
    "figures": lambda data_dir, download: make_figures(data_dir=data_dir),
    "voc": lambda data_dir, download: load_voc(data_dir),
    "coco": lambda data_dir, download: load_coco(data_dir),
}

_ALIASES = {
    "fmnist": "fashion-mnist",
    "fmnist-lt": "fashion-mnist-lt",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "tinyimagenet": "tiny-imagenet",
    "tiny-imagenet-200": "tiny-imagenet",
    "image-folder": "imagefolder",
    "fashion-mnist-scenes": "scenes",
    "fmnist-scenes": "scenes",
    "digits-scenes": "digit-scenes",
    "stick-figures": "figures",
    "pascal-voc": "voc",
    "ms-coco": "coco",
}


def available_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_LOADERS)


def canonical_name(name: str) -> str:
    """The registered name that ``name`` denotes (case-insensitive, ``_`` as ``-``, aliases such as ``fmnist``).

    Raises:
        UnknownNameError: ``name`` denotes no registered dataset (the message lists them).
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else ""
    key = _ALIASES.get(key, key)
    if key not in _LOADERS:
        raise UnknownNameError("dataset", str(name), available_datasets())
    return key


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    """Load the dataset ``name`` as a :class:`Dataset` (tensors; ``npy``: memory-mapped array sources).

    For file-backed datasets ``data_dir`` is searched first, then ``$LEARNLOSS_DATA``, ``~/.cache/learnloss/<name>``
    and system folders; missing files are downloaded into ``data_dir`` (default: the cache folder) when
    ``download`` is true. ``imagefolder``, ``npz``, ``npy`` and ``voc`` read ``data_dir`` itself, ``coco`` the
    annotation file it names; ``scenes``, ``digit-scenes`` and ``figures`` cache what they generate there;
    ``digits`` and ``diabetes`` ignore it.

    Raises:
        UnknownNameError: ``name`` is not registered.
        DatasetNotFoundError: the files are missing and could not be downloaded.
        DatasetFormatError: the files are malformed (or a download failed its checksum).
    """
    return _LOADERS[canonical_name(name)](data_dir, download)
