"""The pairwise logistic (RankNet) ranking loss of the semi-supervised LPM."""

from __future__ import annotations

import math

import pytest
import torch

from learnloss.lpm.losses import get_lpm_loss, logistic_ranking_loss, margin_ranking_loss


def _by_hand(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """The mean over the pairs (i, B-1-i), i < B // 2, of BCE(sigmoid(p_i - p_j), 1[l_i > l_j]), in float64."""
    p, t = predicted.double().tolist(), target.double().tolist()
    b = len(p)
    terms = []
    for i in range(b // 2):
        j = b - 1 - i
        z = p[i] - p[j]
        y = 1.0 if t[i] > t[j] else 0.0
        sigmoid = 1.0 / (1.0 + math.exp(-z))
        terms.append(-(y * math.log(sigmoid) + (1.0 - y) * math.log(1.0 - sigmoid)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("size", [6, 7])
def test_equals_the_bce_of_each_pairs_difference_against_its_order(size):
    g = torch.Generator().manual_seed(size)
    predicted = torch.randn(size, generator=g)
    target = torch.rand(size, generator=g) * 3
    loss = logistic_ranking_loss(predicted, target)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(_by_hand(predicted, target), rel=1e-6, abs=1e-7)


def test_the_middle_of_an_odd_batch_sits_out():
    predicted = torch.tensor([0.3, -1.0, 0.7, 2.0, -0.4])
    target = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.1])
    other_p, other_t = predicted.clone(), target.clone()
    other_p[2], other_t[2] = 100.0, -100.0
    assert torch.equal(logistic_ranking_loss(predicted, target), logistic_ranking_loss(other_p, other_t))


def test_ties_count_as_the_first_sample_not_being_larger():
    predicted = torch.tensor([0.8, -0.5])
    tied = torch.tensor([1.5, 1.5])
    # target 0: BCE(z, 0) = softplus(z) with z = 0.8 - (-0.5)
    assert logistic_ranking_loss(predicted, tied).item() == pytest.approx(math.log1p(math.exp(1.3)), rel=1e-6)
    assert logistic_ranking_loss(predicted, tied).item() == pytest.approx(_by_hand(predicted, tied), rel=1e-6)
    # the same pair with l_i > l_j has target 1: softplus(-z)
    assert logistic_ranking_loss(predicted, torch.tensor([2.0, 1.0])).item() == pytest.approx(
        math.log1p(math.exp(-1.3)), rel=1e-6)


@pytest.mark.parametrize("size", [0, 1])
def test_fewer_than_two_samples_give_zero_with_a_graph(size):
    predicted = torch.randn(size, requires_grad=True)
    loss = logistic_ranking_loss(predicted, torch.rand(size))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert predicted.grad is not None and torch.equal(predicted.grad, torch.zeros(size))


def test_the_gradient_pushes_a_wrongly_ordered_pair_apart():
    # l_0 > l_1 but the prediction says the opposite
    predicted = torch.tensor([-1.0, 1.0], requires_grad=True)
    loss = logistic_ranking_loss(predicted, torch.tensor([5.0, 0.0]))
    loss.backward()
    grad = predicted.grad
    assert grad[0] < 0 < grad[1]  # descent raises l̂_0 and lowers l̂_1
    assert grad[0].item() == pytest.approx(-grad[1].item())
    # a step of gradient descent lowers the loss and brings the pair towards the right order
    with torch.no_grad():
        stepped = predicted - 0.5 * grad
    assert logistic_ranking_loss(stepped, torch.tensor([5.0, 0.0])) < loss
    assert (stepped[0] - stepped[1]) > (predicted[0] - predicted[1])


def test_the_target_losses_get_no_gradient():
    predicted = torch.randn(4, requires_grad=True)
    target = torch.rand(4, requires_grad=True)
    logistic_ranking_loss(predicted, target).backward()
    assert target.grad is None and predicted.grad is not None


def test_a_correct_order_costs_less_than_the_reversed_one():
    target = torch.tensor([4.0, 3.0, 2.5, 0.5, 0.2, 0.1])
    assert logistic_ranking_loss(target.clone(), target) < logistic_ranking_loss(-target, target)
    assert logistic_ranking_loss(10 * target, target) < logistic_ranking_loss(target, target)  # never stops pushing


def test_large_differences_do_not_overflow():
    loss = logistic_ranking_loss(torch.tensor([-1e4, 1e4]), torch.tensor([1.0, 0.0]))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(2e4)


def test_margin_is_ignored_and_shapes_are_checked():
    predicted, target = torch.randn(6), torch.rand(6)
    assert torch.equal(logistic_ranking_loss(predicted, target, 0.0), logistic_ranking_loss(predicted, target, 7.0))
    with pytest.raises(ValueError):
        logistic_ranking_loss(torch.randn(4), torch.rand(5))
    with pytest.raises(ValueError):
        logistic_ranking_loss(torch.randn(4, 1), torch.rand(4, 1))


def test_registered_under_its_name():
    assert get_lpm_loss("logistic") is logistic_ranking_loss
    assert get_lpm_loss("ranking") is margin_ranking_loss
