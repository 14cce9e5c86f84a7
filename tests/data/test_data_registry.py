"""Dataset names, the bundled digits, and the stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learnloss.data import available_datasets, canonical_name, load_dataset
from learnloss.data.split import stratified_split
from learnloss.errors import UnknownNameError

NAMES = ["cifar10", "cifar100", "coco", "diabetes", "digit-scenes", "digits", "fashion-mnist", "fashion-mnist-lt",
         "figures", "imagefolder", "mnist", "npy", "npz", "scenes", "tiny-imagenet", "voc"]


def test_available_datasets() -> None:
    assert available_datasets() == NAMES


@pytest.mark.parametrize(
    "alias,name",
    [("FMNIST", "fashion-mnist"), ("fashion_mnist", "fashion-mnist"), ("Fashion-MNIST", "fashion-mnist"),
     ("CIFAR-10", "cifar10"), (" Digits ", "digits"), ("tiny_imagenet", "tiny-imagenet"), ("MNIST", "mnist")],
)  # fmt: skip
def test_names_are_case_insensitive_with_aliases(alias: str, name: str) -> None:
    assert canonical_name(alias) == name


def test_unknown_name_lists_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_dataset("imagenet")
    assert str(info.value) == f"unknown dataset 'imagenet'; choose one of: {', '.join(NAMES)}"


def test_digits_offline_and_deterministic() -> None:
    ds = load_dataset("digits", download=False)
    assert ds.name == "digits" and ds.num_classes == 10 and ds.classes == [str(d) for d in range(10)]
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == torch.uint8
    assert len(ds.x_train) + len(ds.x_test) == 1797 and len(ds.x_test) == 450
    assert int(ds.x_train.max()) == 255
    assert set(ds.x_train.unique().tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert ds.y_test.bincount().min() >= 44  # stratified: every class ~25% held out
    assert (ds.augment.pad, ds.augment.flip) == (1, False)
    again = load_dataset("DIGITS")
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, again.y_train)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.floats(0.05, 0.95), st.integers(0, 3))
def test_stratified_split_properties(labels: list[int], fraction: float, seed: int) -> None:
    y = np.array(labels)
    train, test = stratified_split(y, fraction, seed)
    assert sorted([*train, *test]) == list(range(len(y)))
    for c in np.unique(y):
        n, n_test = int((y == c).sum()), int((y[test] == c).sum())
        assert n_test == (0 if n == 1 else min(max(round(fraction * n), 1), n - 1))
    again = stratified_split(y, fraction, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
