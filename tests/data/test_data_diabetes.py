"""The bundled diabetes regression dataset: offline, fixed split, targets standardised with training statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes as sklearn_diabetes

from learnloss.data import available_datasets, canonical_name, load_dataset
from learnloss.data.diabetes import diabetes_split, diabetes_target_stats, load_diabetes
from learnloss.tasks import build_task


def test_registered_and_offline() -> None:
    assert "diabetes" in available_datasets() and canonical_name(" Diabetes ") == "diabetes"
    ds = load_dataset("DIABETES", data_dir="/nonexistent", download=False)
    assert ds.name == "diabetes" and ds.task == "regression"
    assert ds.classes == ["disease_progression"] and ds.num_outputs == 1


def test_shapes_dtypes_and_split_sizes() -> None:
    ds = load_diabetes()
    assert ds.x_train.shape == (342, 10) and ds.x_test.shape == (100, 10)
    assert ds.y_train.shape == (342, 1) and ds.y_test.shape == (100, 1)
    assert {t.dtype for t in (ds.x_train, ds.x_test, ds.y_train, ds.y_test)} == {torch.float32}
    assert ds.input_shape == (10,) and ds.in_channels == 10
    assert (ds.augment.pad, ds.augment.flip) == (0, False)
    build_task(ds.task).check_targets(ds.y_train)  # finite float targets


def test_split_is_a_fixed_partition() -> None:
    train, test = diabetes_split()
    assert sorted([*train, *test]) == list(range(442)) and len(test) == 100
    assert np.array_equal(train, np.sort(train)) and np.array_equal(test, np.sort(test))
    a, b = load_diabetes(), load_dataset("diabetes")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_rows_are_the_original_patients() -> None:
    bunch = sklearn_diabetes(scaled=False)
    train, test = diabetes_split()
    ds = load_diabetes()
    mean, std = diabetes_target_stats()
    assert torch.equal(ds.x_test, torch.from_numpy(bunch.data[test].astype(np.float32)))
    restored = ds.y_test[:, 0].double() * std + mean
    assert np.allclose(restored.numpy(), bunch.target[test], atol=1e-3)


def test_targets_standardised_with_training_statistics_only() -> None:
    ds = load_diabetes()
    assert float(ds.y_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(ds.y_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(ds.y_test.mean())) > 1e-3, "the test split must not be standardised with its own statistics"
    mean, std = diabetes_target_stats()
    target = sklearn_diabetes(scaled=False).target[diabetes_split()[0]]
    assert (mean, std) == pytest.approx((target.mean(), target.std()))
    assert 100 < mean < 200 and 50 < std < 100  # original units of disease progression


def test_inputs_are_normalised_with_training_feature_statistics() -> None:
    ds = load_diabetes()
    x = ds.to_float(ds.x_train)
    assert torch.allclose(x.mean(0), torch.zeros(10), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(10), atol=1e-4)
