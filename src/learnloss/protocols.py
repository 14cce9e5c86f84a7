"""Named presets of every experiment setting; explicit settings override them."""

from __future__ import annotations

from typing import Any

from learnloss.errors import UnknownNameError

COMMON: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "reset": "warm",
    "layers": None,  # None: the model's default taps
    "embedding_layer": None,  # None: the model's default embedding layer
    "data_dir": None,
    "download": True,
}

PAPER_TRAINING: dict[str, Any] = {
    **COMMON,
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "milestones": [160],
    "gamma": 0.1,
    "lpm_weight": 1.0,
    "margin": 1.0,
    "lpm_loss": "ranking",
    "stop_grad_epoch": 120,
    "lpm_width": 128,
    "augment": True,
}

PROTOCOLS: dict[str, dict[str, Any]] = {
    # Yoo & Kweon (CVPR 2019), Sec. 4.1: CIFAR-10, ResNet-18, 1k initial + 1k per cycle, M = 10k, 10 cycles.
    "paper": {
        **PAPER_TRAINING,
        "dataset": "cifar10",
        "model": "resnet18",
        "initial": 1000,
        "query": 1000,
        "cycles": 10,
        "subset": 10000,
    },
    # Digits on a CPU in well under a minute: the loop end to end, not a benchmark of the method.
    "quick": {
        **PAPER_TRAINING,
        "dataset": "digits",
        "model": "small-cnn",
        "initial": 100,
        "query": 100,
        "cycles": 5,
        "subset": "all",
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.05,
        "milestones": [24],
        "stop_grad_epoch": 18,
    },
}

EPOCH_SCALED = ("milestones", "stop_grad_epoch")
"""Settings given in epochs: when only ``epochs`` is overridden they are scaled with it."""


def available_protocols() -> list[str]:
    return sorted(PROTOCOLS)


def resolve_settings(protocol: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The protocol's settings with ``overrides`` (those not None) applied.

    When ``epochs`` is overridden but the milestones or the stop-gradient epoch are not, those are scaled in
    proportion (the paper's 120/200 and 160/200 stay at 60 % and 80 % of training).
    """
    try:
        settings = dict(PROTOCOLS[protocol])
    except KeyError:
        raise UnknownNameError("protocol", protocol, available_protocols()) from None
    given = {key: value for key, value in overrides.items() if value is not None}
    if "epochs" in given and given["epochs"] > 0:
        ratio = given["epochs"] / settings["epochs"]
        if "milestones" not in given:
            given["milestones"] = [round(m * ratio) for m in settings["milestones"]]
        if "stop_grad_epoch" not in given and isinstance(settings["stop_grad_epoch"], int):
            given["stop_grad_epoch"] = round(settings["stop_grad_epoch"] * ratio)
    settings.update(given)
    settings["protocol"] = protocol
    return settings
