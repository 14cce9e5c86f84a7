"""Weight initialisation and the optional classifier dropout shared by the bundled models."""

from __future__ import annotations

from torch import nn

from learnloss.errors import UsageError


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (He et al., ICCV 2015), batch norm weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def classifier_dropout(p: float) -> nn.Module:
    """Dropout before the classifier: ``nn.Dropout(p)``, or ``nn.Identity()`` when ``p == 0``.

    Dropout there is what MC-dropout baselines (BALD, Gal et al., ICML 2017) sample at query time; the paper's
    ResNet has none, so the default everywhere is 0.

    Raises:
        UsageError: ``p`` is not in ``[0, 1)``.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise UsageError(f"dropout must be a probability in [0, 1), got {p!r}; use e.g. --dropout 0.3")
    return nn.Dropout(float(p)) if p > 0 else nn.Identity()
