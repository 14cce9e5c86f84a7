"""The dataset every loader returns: inputs as tensors, or as array sources read by rows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from learnloss.data.source import ArraySource, Inputs
from learnloss.errors import DatasetFormatError


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation: random crop after zero padding of ``pad`` pixels, optional horizontal flip."""

    pad: int = 0
    flip: bool = False

    @classmethod
    def for_unknown_images(cls, height: int, width: int) -> AugmentSpec:
        """Crop after padding an eighth of the smaller side, no flip: for images whose content is unknown."""
        return cls(pad=max(1, min(height, width) // 8), flip=False)


@dataclass
class Dataset:
    """A train/test split: inputs and targets.

    ``x_*`` are ``(N, C, H, W)`` (images) or ``(N, C, L)`` / ``(N, D)`` tensors, or
    :class:`~learnloss.data.source.ArraySource` objects of those shapes that read rows on demand (a pool too large to
    hold: a memory-mapped ``.npy``, image files decoded per batch); whatever reads inputs indexes rows
    (``x[rows]``), which both answer with a tensor. Images are kept as ``uint8`` (0..255) to bound memory and
    converted to float per batch by :meth:`to_float`; other data is ``float32``.
    ``mean``/``std`` are per-channel statistics of the *float* training inputs, used for normalisation.
    The test split may be empty (a labeling project without labeled test items): nothing is evaluated then.
    ``task`` names the task the targets belong to (:func:`learnloss.tasks.build_task`): ``classification``
    targets are class indices ``(N,)`` into ``classes``; ``regression`` targets are float vectors ``(N, D)``
    whose ``D`` components ``classes`` names; ``detection`` targets are ``(N, M, 5)`` rows ``(class, x0, y0, x1,
    y1)`` normalised to [0, 1] (padding rows ``(-1, 0, 0, 0, 0)``); ``keypoints`` targets are ``(N, K, 3)`` rows
    ``(x, y, v)`` normalised, with COCO's visibility ``v`` and ``classes`` naming the ``K`` keypoints.
    """

    name: str
    x_train: Inputs
    y_train: torch.Tensor
    x_test: Inputs
    y_test: torch.Tensor
    classes: list[str]
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.shape[0] != y.shape[0]:
                raise DatasetFormatError(
                    f"dataset {self.name!r}: {split} split has {x.shape[0]} inputs but {y.shape[0]} labels"
                )
            if x.shape[0] == 0 and split == "train":
                raise DatasetFormatError(f"dataset {self.name!r}: {split} split is empty")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetFormatError(
                f"dataset {self.name!r}: train inputs {tuple(self.x_train.shape[1:])} and test inputs "
                f"{tuple(self.x_test.shape[1:])} differ in shape"
            )
        if self.task == "classification":
            self.y_train = self.y_train.long()
            self.y_test = self.y_test.long()
        elif self.y_train.shape[1:] != self.y_test.shape[1:]:
            raise DatasetFormatError(
                f"dataset {self.name!r}: train targets {tuple(self.y_train.shape[1:])} and test targets "
                f"{tuple(self.y_test.shape[1:])} differ in shape"
            )
        if self.mean is None or self.std is None:
            self.mean, self.std = channel_stats(self.x_train)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_outputs(self) -> int:
        """Width of the model's output: the number of regression target components, else of ``classes`` (the
        classes of classification and detection, the keypoints of a keypoint task: one heatmap each)."""
        if self.task != "regression":
            return len(self.classes)
        return int(self.y_train.shape[1]) if self.y_train.dim() > 1 else 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def resident_on(self, device: torch.device, free_bytes: int | None = None) -> Dataset:
        """This dataset with its stored inputs moved to ``device`` — an accelerator — so that batches are gathered,
        normalised and augmented there without a host round trip per step; kept as stored (``uint8`` images are a
        quarter of float32). Inputs stay where they are on a CPU, for an :class:`ArraySource` (a pool read per
        batch), and when they would take more than a quarter of ``free_bytes`` (the device's free memory, read
        from CUDA when None). Targets stay on the host, where the pool and the oracle read them."""
        if device.type == "cpu":
            return self
        x_train, x_test = self.x_train, self.x_test
        if isinstance(x_train, ArraySource) or isinstance(x_test, ArraySource):
            return self
        if free_bytes is None:
            if device.type != "cuda":
                return self
            free_bytes = int(torch.cuda.mem_get_info(device)[0])
        needed = sum(x.numel() * x.element_size() for x in (x_train, x_test))
        if needed > free_bytes // 4:
            return self
        return replace(self, x_train=x_train.to(device), x_test=x_test.to(device))

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """Convert a batch of stored inputs to normalised float32 on the batch's device."""
        assert self.mean is not None and self.std is not None  # set in __post_init__
        return normalize(x, self.mean, self.std)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _broadcast(stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return stat.to(x.device).view(1, -1, *([1] * (x.dim() - 2)))


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Scale ``uint8`` inputs to [0, 1] and standardise each channel (dimension 1)."""
    return (_as_float(x) - _broadcast(mean, x)) / _broadcast(std, x)


_STATS_CHUNK_VALUES = 1 << 22
"""Values per chunk of :func:`channel_stats` (about 80 MiB of float32, float64 and squares at once)."""


def stats_rows(x: Inputs) -> np.ndarray | None:
    """The rows :func:`channel_stats` reads: None for all of them, else the evenly spaced rows an
    :class:`ArraySource` with more than its :attr:`~ArraySource.stats_rows` rows is estimated from."""
    limit = x.stats_rows if isinstance(x, ArraySource) else None
    count = int(x.shape[0])
    if limit is None or count <= limit:
        return None
    return np.unique(np.linspace(0, count - 1, num=max(1, limit)).round().astype(np.int64))


def channel_stats(x: Inputs, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the float inputs, computed ``chunk`` samples at a time to bound memory (by
    default as many samples as fit in about four million values, whatever their size).

    A tensor and a source with at most :attr:`ArraySource.stats_rows` rows give exact statistics over every row
    (read in the same chunks, so the same values give the same statistics); a larger source gives estimates from
    that many evenly spaced rows (:func:`stats_rows`), so a pool of millions is not read in full."""
    per_sample = max(1, x[:1].numel())
    chunk = chunk or max(1, _STATS_CHUNK_VALUES // per_sample)
    dims = [0] + list(range(2, x.dim()))
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    sample = stats_rows(x)
    for start in range(0, x.shape[0] if sample is None else len(sample), chunk):
        rows = x[start : start + chunk] if sample is None else x[torch.from_numpy(sample[start : start + chunk])]
        part = _as_float(rows).double()
        total += part.sum(dim=dims)
        total_sq += (part * part).sum(dim=dims)
        count += part.numel() // x.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()
