"""The long-tailed pool: the exponential profile, a fixed subsample, the test split untouched, the registry name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafakes import write_idx_set

from learnloss.data import load_dataset
from learnloss.data.dataset import Dataset
from learnloss.data.longtail import long_tail, long_tail_sizes
from learnloss.errors import UsageError


def test_sizes_follow_the_exponential_profile_of_cifar10_lt():
    assert long_tail_sizes([6000] * 10, 100.0) == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert long_tail_sizes([5000] * 10, 1.0) == [5000] * 10  # ratio 1: balanced
    assert long_tail_sizes([10, 50, 40], 2.0) == [10, 7, 5]  # scaled from the smallest class
    with pytest.raises(UsageError, match="ratio"):
        long_tail_sizes([10, 10], 0.5)


def _dataset(per_class: int = 40, classes: int = 5) -> Dataset:
    rng = np.random.default_rng(1)
    y = torch.as_tensor(np.repeat(np.arange(classes), per_class))
    x = torch.as_tensor(rng.integers(0, 256, (len(y), 1, 4, 4), dtype=np.uint8))
    return Dataset("toy", x, y, x[:7], y[:7], [str(c) for c in range(classes)])


def test_long_tail_subsamples_the_train_split_only_and_is_fixed_by_its_own_seed():
    data = _dataset()
    tail = long_tail(data, ratio=8.0)
    assert tail.name == "toy-lt"
    assert torch.bincount(tail.y_train).tolist() == long_tail_sizes([40] * 5, 8.0) == [40, 23, 14, 8, 5]
    assert torch.equal(tail.x_test, data.x_test) and torch.equal(tail.y_test, data.y_test)
    again = long_tail(data, ratio=8.0)
    assert torch.equal(again.x_train, tail.x_train)  # the same pool for every run of a benchmark
    other = long_tail(data, ratio=8.0, seed=1)
    assert not torch.equal(other.x_train, tail.x_train)
    # every kept image is one of the dataset's, with its own label
    rows = {(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(data.x_train, data.y_train)}
    assert all((bytes(x.numpy().tobytes()), int(y)) in rows for x, y in zip(tail.x_train, tail.y_train))
    assert not torch.equal(tail.mean, data.mean)  # normalisation recomputed on the kept pool


def test_long_tail_needs_classes():
    data = _dataset()
    regression = Dataset("r", data.x_train.float(), data.y_train.float()[:, None], data.x_test.float(),
                         data.y_test.float()[:, None], ["t"], task="regression")
    with pytest.raises(UsageError, match="class labels"):
        long_tail(regression)


def test_the_registered_fashion_mnist_lt_reads_fashion_mnist_files(tmp_path):
    arrays = write_idx_set(tmp_path, n_train=200, n_test=9)
    data = load_dataset("fmnist-lt", tmp_path, download=False)
    assert data.name == "fashion-mnist-lt"
    available = np.bincount(arrays["train-labels-idx1-ubyte"], minlength=10).tolist()
    assert torch.bincount(data.y_train, minlength=10).tolist() == long_tail_sizes(available, 100.0)
    assert len(data.y_test) == 9
