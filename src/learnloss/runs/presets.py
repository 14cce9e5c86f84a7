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
    "dropout": 0.0,  # before the classifier; the paper's ResNet has none
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
        "dropout": 0.3,  # so Baal's MC-dropout BALD runs on the same network as every other strategy
    },
    # Fashion-MNIST on 2 CPU cores, a few minutes per run. The small CNN trains ~40x faster than ResNet-18 on a
    # CPU; 500 -> 3,000 labels is where Fashion-MNIST's curve still climbs steeply, so the choice of samples
    # shows; 5 queries of K = 500 from M = 5,000 keep the paper's M/K = 10; 15 epochs fit every labeled set
    # (training accuracy saturates) while a run stays near 1.5 minutes.
    "fmnist-cpu": {
        **PAPER_TRAINING,
        "dataset": "fashion-mnist",
        "model": "small-cnn",
        "dropout": 0.3,
        "initial": 500,
        "query": 500,
        "cycles": 6,
        "subset": 5000,
        "epochs": 15,
        "batch_size": 64,
        "lr": 0.05,
        "milestones": [12],
        "stop_grad_epoch": 9,
    },
    # The paper's CIFAR-10 recipe (ResNet-18, 1k + 1k x 9, M = 10k, 200 epochs) applied to Fashion-MNIST: GPU.
    "fmnist-paper": {
        **PAPER_TRAINING,
        "dataset": "fashion-mnist",
        "model": "resnet18",
        "initial": 1000,
        "query": 1000,
        "cycles": 10,
        "subset": 10000,
    },
}

#: What ``learnloss bench --protocol P`` runs by default: arm specs (``strategy[:setting=value,...]``) and seeds.
#: The paper's baselines (random, entropy, core-set, learning loss with its MSE ablation), margin, the true-loss
#: upper bound, and Baal's MC-dropout heuristics where the model has dropout.
_CPU_ARMS = (
    "random", "entropy", "margin", "core-set", "learning-loss", "learning-loss:lpm-loss=mse", "true-loss",
    "baal-entropy", "baal-bald",
)
BENCHMARKS: dict[str, dict[str, Any]] = {
    "quick": {"arms": _CPU_ARMS, "seeds": (0, 1, 2, 3, 4)},
    "fmnist-cpu": {"arms": _CPU_ARMS, "seeds": (0, 1, 2)},
    "fmnist-paper": {"arms": ("random", "entropy", "learning-loss"), "seeds": (0, 1, 2)},
    "paper": {"arms": ("random", "entropy", "core-set", "learning-loss", "learning-loss:lpm-loss=mse"),
              "seeds": (0, 1, 2, 3, 4)},
}

#: Settings that say where a run executes and finds its data, not what it computes: a stored run may be resumed
#: or counted as done with other values of these.
LOCATION_SETTINGS = frozenset({"device", "data_dir", "download"})

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
