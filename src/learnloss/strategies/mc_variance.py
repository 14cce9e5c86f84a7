"""MC-dropout variance: the uncertainty baseline of tasks without class probabilities (regression).

Dropout left on at test time samples from an approximate posterior over the network's weights (Gal &
Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016, Sec. 3–4); the spread of ``T`` stochastic
predictions estimates the model's (epistemic) uncertainty about a sample. For regression the spread is the
variance of the predicted values — the acquisition Gal, Islam & Ghahramani ("Deep Bayesian Active Learning with
Image Data", ICML 2017) call *variation* for classification and that regression studies use as the standard
uncertainty baseline (e.g. Tsymbalov, Panov & Shapeev, "Dropout-based Active Learning for Regression", 2018).
For classification it is the variance of the class probabilities, summed over classes.

Only the dropout layers are switched to training mode while scoring — batch normalisation keeps its running
statistics — and the masks come from the query's seeded stream: same seed, same selection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from learnloss.errors import UsageError
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.strategies.base import QueryContext, ScoreStrategy

__all__ = ["MCVariance", "check_mc_dropout", "dropout_layers"]

#: Stochastic passes per candidate (Gal et al. 2017 use 20).
MC_ITERATIONS = 20


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model`` that drop something (``p > 0``)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def check_mc_dropout(strategy: str, view: ModelView) -> None:
    """Refuse an MC-dropout strategy on a model without a dropout layer that drops something."""
    if not dropout_layers(view.model):
        raise UsageError(
            f"strategy {strategy} samples MC dropout, but the model has no dropout layer with p > 0; "
            "build it with dropout (e.g. --dropout 0.3 for the bundled models)"
        )


class MCVariance(ScoreStrategy):
    """Variance of the prediction over ``iterations`` MC-dropout passes, averaged over the output's components
    (regression values; class probabilities summed over classes); highest first.

    Args:
        iterations: stochastic forward passes per candidate.
    """

    name = "mc-variance"
    needs = frozenset({Need.INPUTS})
    score_meaning = "variance of the prediction over MC-dropout passes: higher = the passes disagree more"

    def __init__(self, iterations: int = MC_ITERATIONS) -> None:
        if iterations < 2:
            raise UsageError(f"MC dropout needs at least 2 iterations, got {iterations}")
        self.iterations = iterations

    def check(self, view: ModelView) -> None:
        check_mc_dropout(self.name, view)

    @contextmanager
    def scoring(self, view: ModelView, context: QueryContext) -> Iterator[None]:
        """Dropout on (and only dropout), with masks drawn from the query's own seed."""
        device = next(view.model.parameters()).device
        layers = dropout_layers(view.model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
            torch.manual_seed(int(context.rng.integers(2**63 - 1)))
            modes = [layer.training for layer in layers]
            try:
                yield  # stream() puts the model in eval mode inside this context, so score() turns dropout on
            finally:
                for layer, mode in zip(layers, modes):
                    layer.train(mode)

    def score(self, batch: BatchOutputs) -> torch.Tensor:
        model, task = batch.view.model, batch.view.task
        for layer in dropout_layers(model):
            layer.train()
        passes = [model(batch.inputs) for _ in range(self.iterations)]
        try:
            values = torch.stack([task.probabilities(p) for p in passes])  # (T, B, classes)
            spread = values.float().var(dim=0).sum(dim=1)
        except UsageError:  # no class probabilities: the predicted values themselves (regression)
            values = torch.stack([p.float().reshape(p.shape[0], -1) for p in passes])  # (T, B, D)
            spread = values.var(dim=0).mean(dim=1)
        return spread
