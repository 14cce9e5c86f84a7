"""The one table of named presets (protocols), and the one place a specification is resolved from one.

:func:`resolve_spec` applies a preset's settings over :class:`~learnloss.runs.spec.RunSpec`'s defaults (the
paper's recipe), then the explicit settings; when ``epochs`` is given but the LR milestones or the stop-gradient
epoch are not, those are scaled with it (the paper's 160/200 and 120/200 stay at 80 % and 60 % of training).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from learnloss.errors import UnknownNameError, UsageError
from learnloss.runs.spec import RunSpec, from_json

__all__ = ["BENCHMARKS", "LABELING_PRESETS", "PRESETS", "available_protocols", "resolve_spec"]

#: Stage B (the semi-supervised LPM) sized for 2 CPU cores: the paper's 30 epochs of fresh views of every unlabeled
#: image would cost many times the joint stage, so each epoch draws 3,000 unlabeled images and the frozen model runs
#: over 2 epochs' draws only; the LPM's 30 epochs at lr 0.01 reuse their features (SemiConfig.views). Only
#: strategies that ask for stage B (ssl-lpm) read these settings.
_CPU_STAGE_B: dict[str, Any] = {"semi_unlabeled": 3000, "semi_views": 2}

#: The CPU presets' numerics. Their committed evidence (benchmarks/results/quick, fmnist-cpu, fmnist-lt-cpu) and
#: the labeling tests' pinned selections were made in fp32, so these presets stay fp32 and NCHW: same seed, same
#: selection as before on one machine. bf16 + channels-last is measured to keep their label efficiency (quick, 5
#: paired seeds: AUBC +0.002 ± 0.019 for learning loss, +0.002 ± 0.008 for random; benchmarks/results/precision)
#: and trains the small CNN 1.2-1.8x faster on an AVX512-BF16 CPU: pass --precision auto --channels-last for it.
_FP32: dict[str, Any] = {"precision": "fp32", "channels_last": False}

#: The paper's per-task recipes beyond classification (Yoo & Kweon, CVPR 2019, Sec. 4.2-4.3), shared by the CPU
#: protocols and the labeling presets of the same task. Detection: a CenterNet head on a small FPN
#: (models/detector.py), trained with Adam as CenterNet trains, λ = 1. Keypoints: a one-stack hourglass
#: (models/hourglass.py), the paper's pose recipe: RMSprop at 2.5e-4 without momentum, λ = 1e-4.
_DETECTION: dict[str, Any] = {"model": "detector", "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}
_KEYPOINTS: dict[str, Any] = {"model": "hourglass", "optimizer": "rmsprop", "lr": 2.5e-4, "momentum": 0.0,
                              "weight_decay": 0.0, "lpm_weight": 1e-4}
#: What every labeling preset shares: the project's images are the dataset; each query re-initialises the model,
#: trains on every label so far and scores the whole unlabeled pool.
_PROJECT: dict[str, Any] = {"dataset": "project", "subset": None, "reset": "reinit", "initial": 1, "query": 1,
                            "cycles": 1, **_FP32}

#: Settings of each preset that differ from :class:`RunSpec`'s defaults (the paper's CIFAR-10 recipe).
PRESETS: dict[str, dict[str, Any]] = {
    # Yoo & Kweon (CVPR 2019), Sec. 4.1: CIFAR-10, ResNet-18, 1k initial + 1k per cycle, M = 10k, 10 cycles. Like
    # every GPU-sized preset it runs bf16 + channels-last where the device computes bf16 natively (RunSpec's
    # defaults precision="auto", channels_last=True), fp32 elsewhere.
    "paper": {},
    # Digits on a CPU in well under a minute: the loop end to end, not a benchmark of the method.
    "quick": {
        "dataset": "digits", "model": "small-cnn", "initial": 100, "query": 100, "cycles": 5, "subset": None,
        "epochs": 30, "batch_size": 32, "lr": 0.05, "milestones": (24,), "stop_grad_epoch": 18,
        "dropout": 0.3,  # so Baal's MC-dropout BALD runs on the same network as every other strategy
        **_FP32,
    },
    # Fashion-MNIST on 2 CPU cores, a few minutes per run. The small CNN trains ~40x faster than ResNet-18 on a
    # CPU; 500 -> 3,000 labels is where Fashion-MNIST's curve still climbs steeply, so the choice of samples
    # shows; 5 queries of K = 500 from M = 5,000 keep the paper's M/K = 10; 15 epochs fit every labeled set
    # (training accuracy saturates) while a run stays near 1.5 minutes.
    "fmnist-cpu": {
        "dataset": "fashion-mnist", "model": "small-cnn", "dropout": 0.3, "initial": 500, "query": 500, "cycles": 6,
        "subset": 5000, "epochs": 15, "batch_size": 64, "lr": 0.05, "milestones": (12,), "stop_grad_epoch": 9,
        **_CPU_STAGE_B, **_FP32,
    },
    # fmnist-cpu on a long-tailed pool (fashion-mnist-lt: 6,000 ... 60 images per class, ratio 100, 14,886 in all;
    # balanced test split), the same budgets: the imbalanced setting the semi-supervised LPM paper also evaluates.
    "fmnist-lt-cpu": {
        "dataset": "fashion-mnist-lt", "model": "small-cnn", "dropout": 0.3, "initial": 500, "query": 500,
        "cycles": 6, "subset": 5000, "epochs": 15, "batch_size": 64, "lr": 0.05, "milestones": (12,),
        "stop_grad_epoch": 9, **_CPU_STAGE_B, **_FP32,
    },
    # The semi-supervised LPM's own setting (Hwang, Choi & Choi, IEEE Access 2024, public code): CIFAR-100,
    # ResNet-18, 2,500 initial + 2,500 per cycle, 6 cycles, the whole pool scored (shortlist 25,000 = 10 K, one
    # pick per cluster of K = 2,500), stage B 30 epochs at lr 0.01 over every unlabeled image. GPU.
    "ssl-paper": {
        # memory-mb: complete linkage on the 25,000 shortlist holds ~16 bytes per pair (strategies/diverse.py)
        "dataset": "cifar100", "strategy": "ssl-lpm:memory-mb=4800", "initial": 2500, "query": 2500, "cycles": 6, "subset": None,
    },
    # The paper's CIFAR-10 recipe (ResNet-18, 1k + 1k x 9, M = 10k, 200 epochs) applied to Fashion-MNIST: GPU.
    "fmnist-paper": {"dataset": "fashion-mnist"},
    # The paper's other tasks (Yoo & Kweon, CVPR 2019, Sec. 4.2-4.3), sized for 2 CPU cores on offline data.
    # Detection: 64x64 scenes of 1-4 Fashion-MNIST glyphs (data/scenes.py); the LPM's gradient cut at 80 % of
    # training, as the paper cut it (240 of 300 epochs).
    "detection-cpu": {
        "dataset": "scenes", **_DETECTION, "initial": 200, "query": 200, "cycles": 5, "subset": 2000, "epochs": 20,
        "batch_size": 32, "milestones": (16,), "stop_grad_epoch": 16, **_FP32,
    },
    # Keypoints: 64x64 stick figures with 14 keypoints (data/figures.py); the LPM's gradient cut at 60 % of
    # training, as the paper cut it (75 of 125 epochs).
    "keypoints-cpu": {
        "dataset": "figures", **_KEYPOINTS, "initial": 200, "query": 200, "cycles": 5, "subset": 2000, "epochs": 20,
        "batch_size": 32, "milestones": (16,), "stop_grad_epoch": 12, **_FP32,
    },
    # Regression: scikit-learn's diabetes (442 patients, a real clinical outcome; data/diabetes.py) with an MLP
    # whose dropout lets MC-dropout variance, regression's uncertainty baseline, run on the same network. On 40-140
    # labels the network overfits when warm-started cycle after cycle (random's R² fell from 0.30 to 0.23 over 100
    # epochs a cycle); re-initialised with 50 epochs a cycle it climbed from about 0.3 to 0.43 in 3 seeds.
    "regression-cpu": {
        "dataset": "diabetes", "model": "mlp", "dropout": 0.3, "optimizer": "adam", "lr": 1e-3,
        "weight_decay": 0.0, "initial": 40, "query": 20, "cycles": 6, "subset": None, "epochs": 50,
        "batch_size": 16, "milestones": (40,), "stop_grad_epoch": 30, "reset": "reinit", **_FP32,
    },
    # Labeling projects (learnloss init/query). Each query trains from the initial weights on every label so far
    # and scores the whole unlabeled pool. The LPM learns on detached features from the first epoch
    # (stop_grad_epoch 0): on the fmnist-cpu benchmark the paper's joint training lowered the target's accuracy at
    # small label budgets, and cutting the LPM's gradient from the start raised learning loss's AUBC in every
    # seed (+0.016, p = 0.005; benchmarks/results/fmnist-cpu/report.md).
    "labeling": {
        **_PROJECT, "model": "small-cnn", "image_size": 32, "epochs": 30, "batch_size": 32, "lr": 0.05,
        "milestones": (24,), "stop_grad_epoch": 0,
    },
    # Labeling projects of boxes and keypoints (learnloss init --task detection|keypoints): the task's recipe and
    # the stop-gradient fraction of detection-cpu and keypoints-cpu, on 64×64 images.
    "labeling-detection": {
        **_PROJECT, **_DETECTION, "task": "detection", "image_size": 64, "epochs": 30, "batch_size": 16,
        "milestones": (24,), "stop_grad_epoch": 24,
    },
    "labeling-keypoints": {
        **_PROJECT, **_KEYPOINTS, "task": "keypoints", "image_size": 64, "epochs": 30, "batch_size": 16,
        "milestones": (24,), "stop_grad_epoch": 18,
    },
}

#: The preset a labeling project of each task starts from.
LABELING_PRESETS = {"classification": "labeling", "detection": "labeling-detection", "keypoints": "labeling-keypoints"}

#: What ``learnloss bench --protocol P`` runs by default: arm specs (``strategy[:setting=value...]``) and seeds.
#: The paper's baselines (random, entropy, core-set, learning loss with its MSE ablation), margin, the true-loss
#: upper bound, and Baal's MC-dropout heuristics where the model has dropout.
_CPU_ARMS = (
    "random", "entropy", "margin", "core-set", "learning-loss", "learning-loss:lpm-loss=mse", "true-loss",
    "baal-entropy", "baal-bald",
)
#: The arms of the semi-supervised LPM's evidence (issue 9): the baselines, BADGE, learning loss, the full
#: method and its two ablations (``ssl-lpm:semi=false`` selects exactly as ``diverse(learning-loss)``).
_SSL_ARMS = (
    "random", "entropy", "margin", "badge", "learning-loss", "ssl-lpm:semi=false", "ssl-lpm", "ssl-lpm:cluster=false",
)
BENCHMARKS: dict[str, dict[str, Any]] = {
    "detection-cpu": {"arms": ("random", "core-set", "uncertainty", "learning-loss"), "seeds": (0, 1, 2)},
    "keypoints-cpu": {"arms": ("random", "core-set", "uncertainty", "learning-loss"), "seeds": (0, 1, 2)},
    "regression-cpu": {"arms": ("random", "core-set", "mc-variance", "learning-loss"), "seeds": (0, 1, 2)},
    "fmnist-lt-cpu": {"arms": _SSL_ARMS, "seeds": (0, 1, 2)},
    "ssl-paper": {"arms": ("random", "margin", "learning-loss", "ssl-lpm:memory-mb=4800"), "seeds": (0, 1, 2)},
    "quick": {"arms": _CPU_ARMS, "seeds": (0, 1, 2, 3, 4)},
    "fmnist-cpu": {"arms": _CPU_ARMS, "seeds": (0, 1, 2)},
    "fmnist-paper": {"arms": ("random", "entropy", "learning-loss"), "seeds": (0, 1, 2)},
    "paper": {"arms": ("random", "entropy", "core-set", "learning-loss", "learning-loss:lpm-loss=mse"),
              "seeds": (0, 1, 2, 3, 4)},
}

EPOCH_SCALED = ("milestones", "stop_grad_epoch")
"""Settings given in epochs: when only ``epochs`` is overridden they are scaled with it."""


def available_protocols() -> list[str]:
    """The preset names, sorted."""
    return sorted(PRESETS)


def resolve_spec(protocol: str = "quick", settings: Mapping[str, Any] | None = None) -> RunSpec:
    """The specification of ``protocol`` with ``settings`` (those not None) applied, validated.

    ``settings`` may use the JSON form (``subset="all"``, ``stop_grad_epoch="never"``, lists).

    Raises:
        UnknownNameError: an unknown protocol.
        UsageError: a setting that is not one, or an invalid value.
    """
    if protocol not in PRESETS:
        raise UnknownNameError("protocol", protocol, available_protocols())
    preset = RunSpec(**PRESETS[protocol], protocol=protocol)
    given = from_json({key: value for key, value in (settings or {}).items() if value is not None})
    unknown = sorted(set(given) - RunSpec.__dataclass_fields__.keys())
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)}; see learnloss run --help")
    epochs = given.get("epochs")
    if isinstance(epochs, int) and epochs > 0:
        ratio = epochs / preset.epochs
        if "milestones" not in given:
            given["milestones"] = tuple(round(m * ratio) for m in preset.milestones)
        if "stop_grad_epoch" not in given and preset.stop_grad_epoch is not None:
            given["stop_grad_epoch"] = round(preset.stop_grad_epoch * ratio)
    return preset.replace(**given)
