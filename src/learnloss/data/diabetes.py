"""scikit-learn's bundled diabetes data: the regression dataset that works offline with no files at all.

442 diabetes patients (Efron, Hastie, Johnstone & Tibshirani, "Least Angle Regression", Annals of Statistics,
2004), each described by 10 baseline measurements (age, sex, body mass index, mean blood pressure and six blood
serum measurements s1..s6); the target is a quantitative measure of disease progression one year after baseline.
It is a real clinical outcome, not a synthetic function, small enough for CPU tests, and it ships inside
scikit-learn, so active learning for regression (Yoo & Kweon, CVPR 2019, Sec. 3: any task with a per-sample loss)
can be exercised without a download.

Inputs are the raw measurements (``load_diabetes(scaled=False)``) as float32 ``(N, 10)``; the :class:`Dataset`
standardises each feature with the *training* split's statistics (its ``mean``/``std``), so nothing of the test
split leaks into the scaling (scikit-learn's pre-scaled copy was scaled with all 442 patients).

Targets are float32 ``(N, 1)``, standardised with the *training* split's mean and standard deviation (population,
``ddof=0``): a model's output ``z`` is a progression of ``z * std + mean`` in the original units;
:func:`diabetes_target_stats` returns ``(mean, std)``, about ``(152.15, 77.23)`` for the fixed split.
R² is unchanged by this standardisation; RMSE is in units of the training standard deviation.

The split is fixed: 100 patients drawn by a generator seeded with :data:`SEED` form the test split, the other
342 the training split (both sorted by the original row order).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes as _sklearn_diabetes

from learnloss.data.dataset import AugmentSpec, Dataset

__all__ = ["TARGET_NAME", "diabetes_split", "diabetes_target_stats", "load_diabetes"]

TEST_SIZE = 100
SEED = 0
#: The one target component's name (``Dataset.classes``).
TARGET_NAME = "disease_progression"


def _raw() -> tuple[np.ndarray, np.ndarray]:
    bunch = _sklearn_diabetes(scaled=False)
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)


def diabetes_split(n: int = 442) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``, each sorted: :data:`TEST_SIZE` rows drawn by a generator seeded with
    :data:`SEED` are held out for testing."""
    order = np.random.default_rng(SEED).permutation(n)
    return np.sort(order[TEST_SIZE:]), np.sort(order[:TEST_SIZE])


def diabetes_target_stats() -> tuple[float, float]:
    """The training split's target mean and (population) standard deviation, in the original units of disease
    progression, that :func:`load_diabetes` standardised the targets with."""
    _, target = _raw()
    return _target_stats(target, diabetes_split(len(target))[0])


def _target_stats(target: np.ndarray, train: np.ndarray) -> tuple[float, float]:
    return float(target[train].mean()), float(target[train].std())


def load_diabetes() -> Dataset:
    """The 442 patients as float32 inputs ``(N, 10)`` and standardised float32 targets ``(N, 1)``, split into 342
    training and 100 test patients by a fixed seeded split; task ``regression``, no augmentation."""
    features, target = _raw()
    train, test = diabetes_split(len(target))
    mean, std = _target_stats(target, train)
    y = ((target - mean) / std).astype(np.float32)[:, None]
    x = features.astype(np.float32)
    return Dataset(
        "diabetes",
        torch.from_numpy(x[train]),
        torch.from_numpy(y[train]),
        torch.from_numpy(x[test]),
        torch.from_numpy(y[test]),
        [TARGET_NAME],
        AugmentSpec(),
        task="regression",
    )
