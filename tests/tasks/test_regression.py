"""Tests of the regression task: per-sample squared error, R² and RMSE against scikit-learn, target checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error, r2_score

from learnloss.errors import UsageError
from learnloss.tasks import TASKS, RegressionTask, build_task


def test_registered() -> None:
    task = build_task("regression")
    assert isinstance(task, RegressionTask) and TASKS["regression"] is RegressionTask
    assert task.metrics == ("r2", "rmse") and task.primary_metric == "r2"
    assert set(task.new_metrics()) == {"r2", "rmse"}
    assert task.new_metric().name == "r2"


@pytest.mark.parametrize("shape", [(7, 3), (5, 1), (6,)])
def test_per_sample_loss_is_mean_squared_error_with_gradient(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    output = torch.randn(*shape, generator=g, requires_grad=True)
    target = torch.randn(*shape, generator=g)
    losses = RegressionTask().per_sample_loss(output, target)
    assert losses.shape == (shape[0],)
    out2, tgt2 = output.detach().reshape(shape[0], -1), target.reshape(shape[0], -1)
    expected = [float(((out2[i] - tgt2[i]) ** 2).sum() / out2.shape[1]) for i in range(shape[0])]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    losses.sum().backward()
    assert output.grad is not None
    assert torch.allclose(output.grad, 2 * (output.detach() - target) / out2.shape[1])


def test_per_sample_loss_reads_1d_as_one_component() -> None:
    output, target = torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 4.0])
    assert RegressionTask().per_sample_loss(output, target).tolist() == [1.0, 4.0]


@pytest.mark.parametrize("output,target", [((4, 2), (4, 3)), ((4,), (4, 2)), ((3, 1), (4, 1))])
def test_per_sample_loss_refuses_mismatched_shapes(output: tuple[int, ...], target: tuple[int, ...]) -> None:
    with pytest.raises(UsageError) as info:
        RegressionTask().per_sample_loss(torch.zeros(output), torch.zeros(target))
    assert str(output) in str(info.value) and str(target) in str(info.value)


def _fed_in_batches(y_true: np.ndarray, y_pred: np.ndarray, sizes: list[int]) -> dict[str, float]:
    metrics = RegressionTask().new_metrics()
    start = 0
    for size in sizes:
        for metric in metrics.values():
            part = slice(start, start + size)
            metric.update(torch.from_numpy(y_pred[part]), torch.from_numpy(y_true[part]))
        start += size
    assert start == len(y_true)
    return {name: metric.compute() for name, metric in metrics.items()}


@pytest.mark.parametrize("components", [None, 1, 4])
def test_metrics_match_sklearn_over_batches(components: int | None) -> None:
    rng = np.random.default_rng(3)
    shape = (53,) if components is None else (53, components)
    scale = np.array([1.0, 10.0, 0.1, 100.0])[: 1 if components is None else components]
    offset = 1000.0  # a large mean: the streaming SS_tot must not lose it to cancellation
    y_true = (rng.normal(size=shape) * (scale if components else scale[0]) + offset).astype(np.float32)
    y_pred = (y_true + rng.normal(size=shape) * 0.7 * (scale if components else scale[0])).astype(np.float32)
    got = _fed_in_batches(y_true, y_pred, [1, 16, 5, 0, 31])
    y_true64, y_pred64 = y_true.astype(np.float64), y_pred.astype(np.float64)  # the metrics accumulate in float64
    assert got["r2"] == pytest.approx(r2_score(y_true64, y_pred64, multioutput="uniform_average"), rel=1e-9)
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y_true64, y_pred64)), rel=1e-9)
    assert got["r2"] < 1.0


def test_r2_can_be_negative_and_constant_components_follow_sklearn() -> None:
    y_true = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]], dtype=np.float32)
    y_pred = np.array([[1.0, 9.0], [1.0, -3.0], [1.0, 0.0]], dtype=np.float32)
    got = _fed_in_batches(y_true, y_pred, [2, 1])
    assert got["r2"] == pytest.approx(r2_score(y_true.astype(np.float64), y_pred.astype(np.float64)), abs=1e-12)
    y_pred[0, 0] = 2.0  # a constant component predicted wrongly scores 0
    got = _fed_in_batches(y_true, y_pred, [3])
    assert got["r2"] == pytest.approx(r2_score(y_true.astype(np.float64), y_pred.astype(np.float64)), abs=1e-12)


def test_metrics_are_nan_without_enough_samples() -> None:
    metrics = RegressionTask().new_metrics()
    assert all(math.isnan(m.compute()) for m in metrics.values())
    for metric in metrics.values():
        metric.update(torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    assert math.isnan(metrics["r2"].compute())
    assert metrics["rmse"].compute() == pytest.approx(1.0)


def test_metric_refuses_a_change_of_width() -> None:
    metric = RegressionTask().new_metric()
    metric.update(torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(UsageError, match="components"):
        metric.update(torch.zeros(2, 3), torch.ones(2, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_check_targets_refuses_non_finite(bad: float) -> None:
    targets = torch.zeros(5, 2)
    targets[3, 1] = bad
    with pytest.raises(UsageError, match="finite.*index 3"):
        RegressionTask().check_targets(targets)


@pytest.mark.parametrize(
    "targets", [torch.arange(4), torch.ones(4, 2, dtype=torch.int32), torch.ones(3, dtype=torch.bool)]
)
def test_check_targets_refuses_integers(targets: torch.Tensor) -> None:
    with pytest.raises(UsageError, match="floating point"):
        RegressionTask().check_targets(targets)


def test_check_targets_returns_float32() -> None:
    targets = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64)
    checked = RegressionTask().check_targets(targets)
    assert checked.dtype == torch.float32 and torch.equal(checked, targets.float())


@pytest.mark.parametrize("like_shape", [(9, 3), (9,), (9, 1)])
def test_empty_targets(like_shape: tuple[int, ...]) -> None:
    empty = RegressionTask().empty_targets(4, torch.zeros(like_shape, dtype=torch.float64))
    assert empty.shape == (4, *like_shape[1:]) and empty.dtype == torch.float32
    assert bool(empty.isnan().all())


def test_predict_gives_rows_and_no_confidence() -> None:
    values, confidence = RegressionTask().predict(torch.tensor([[1.5, -2.0], [0.25, 4.0]]))
    assert values == [[1.5, -2.0], [0.25, 4.0]] and confidence == [None, None]
    values, confidence = RegressionTask().predict(torch.tensor([3.0, 1.0]))
    assert values == [[3.0], [1.0]] and confidence == [None, None]


def test_no_class_probabilities() -> None:
    with pytest.raises(UsageError, match="no class probabilities"):
        RegressionTask().probabilities(torch.zeros(2, 1))
