"""The run specification: every setting of a run in one typed, documented, validated object.

A :class:`RunSpec` is resolved once — protocol preset, then explicit settings (:func:`resolve_spec`) — and then
carried as it is: ``learnloss run``, ``bench``, ``init``/``query`` and the Python API all build their loop from it
through :func:`learnloss.runs.builder.build_loop`; it is serialised as ``results.json``'s ``config`` and stored in
a project. Its defaults are the paper's CIFAR-10 recipe (Yoo & Kweon, CVPR 2019, Sec. 4.1): ``RunSpec()`` *is*
the ``paper`` protocol.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from learnloss.active.loop import RESET_POLICIES
from learnloss.errors import UsageError
from learnloss.inference.precision import PRECISIONS
from learnloss.training.trainer import OPTIMIZERS

__all__ = [
    "LEGACY_VALUES",
    "LOCATION_SETTINGS",
    "PRECISIONS",
    "RESET_POLICIES",
    "RunSpec",
    "SEMI_SETTINGS",
    "from_json",
    "spec_differences",
]


#: Settings that say where a run executes and finds its data, not what it computes: a stored run may be resumed
#: or counted as done with other values of these.
LOCATION_SETTINGS = frozenset({"device", "data_dir", "download"})

#: What a run stored before these settings existed ran with, where that is not today's default: the fast path
#: (bf16 where native, channels-last) became the paper recipe's default after runs had been stored in fp32/NCHW.
LEGACY_VALUES: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}

#: Stage B's settings (the semi-supervised LPM), read only by a run whose strategy asks for that stage.
SEMI_SETTINGS = frozenset({"semi_epochs", "semi_lr", "semi_threshold", "semi_lpm_loss", "semi_unlabeled", "semi_views"})


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class RunSpec:
    """Every setting of one active-learning run (simulated or labeling). Build it with :func:`resolve_spec`.

    Counts are validated here (positive, finite, known names) when the object is created, so a bad setting
    fails before any data is loaded; counts that depend on the data (the budget against the pool) are checked by
    the loop.
    """

    protocol: str = field(default="paper", metadata=_doc("the preset the settings were resolved from"))
    strategy: str = field(default="learning-loss", metadata=_doc("strategy specification, NAME[(INNER)][:KEY=VALUE]"))
    seed: int = field(default=0, metadata=_doc("seed of every random choice: same seed, same selection"))
    # data and task
    dataset: str = field(default="cifar10", metadata=_doc("registered dataset name"))
    data_dir: str | None = field(default=None, metadata=_doc("folder (or file) holding the dataset's files"))
    download: bool = field(default=True, metadata=_doc("download missing dataset files"))
    task: str | None = field(default=None, metadata=_doc("task (None: the dataset's own)"))
    image_size: int | None = field(default=None, metadata=_doc("labeling projects: images resized to this square"))
    # model and loss prediction module
    model: str = field(default="resnet18", metadata=_doc("registered model name"))
    dropout: float = field(default=0.0, metadata=_doc("dropout before the classifier (the paper has none)"))
    layers: tuple[str, ...] | None = field(default=None, metadata=_doc("layers tapped by the LPM (None: the model's)"))
    embedding_layer: str | None = field(default=None, metadata=_doc("embedding layer (None: the model's)"))
    lpm_width: int = field(default=128, metadata=_doc("width of each LPM level (128 in the paper)"))
    # the loop
    initial: int = field(default=1000, metadata=_doc("random initial labels"))
    query: int = field(default=1000, metadata=_doc("K, labels added per cycle"))
    cycles: int = field(default=10, metadata=_doc("training cycles (cycles - 1 queries)"))
    subset: int | None = field(default=10000, metadata=_doc("M, unlabeled samples scored per cycle (None: all)"))
    reset: str = field(default="warm", metadata=_doc("warm-start or re-initialise the model each cycle"))
    # training (Sec. 4.1)
    epochs: int = field(default=200, metadata=_doc("epochs per cycle"))
    batch_size: int = field(default=128, metadata=_doc("mini-batch size"))
    optimizer: str = field(default="sgd", metadata=_doc(
        "optimiser of the model and the LPM: sgd (the paper's), adam or rmsprop (the paper's pose recipe)"))
    lr: float = field(default=0.1, metadata=_doc("learning rate of the model and the LPM"))
    momentum: float = field(default=0.9, metadata=_doc("SGD momentum"))
    weight_decay: float = field(default=5e-4, metadata=_doc("SGD weight decay"))
    milestones: tuple[int, ...] = field(default=(160,), metadata=_doc("epochs where the LR is multiplied by gamma"))
    gamma: float = field(default=0.1, metadata=_doc("LR decay factor"))
    lpm_weight: float = field(default=1.0, metadata=_doc("λ, weight of the loss-prediction loss (Eq. 5)"))
    margin: float = field(default=1.0, metadata=_doc("ξ, margin of the ranking loss (Eq. 2)"))
    lpm_loss: str = field(default="ranking", metadata=_doc(
        "ranking (the hinge of Eq. 2), logistic (pairwise BCE, RankNet) or mse (the paper's ablation)"))
    stop_grad_epoch: int | None = field(default=120, metadata=_doc("epoch from which the LPM's gradient is cut"))
    augment: bool = field(default=True, metadata=_doc("training augmentation (pad-crop, flip)"))
    drop_easy: float = field(default=0.0, metadata=_doc(
        "fraction of labeled samples with the lowest loss (previous cycle's model) the target skips; SSL-LPM code"))
    # stage B, the semi-supervised LPM (Hwang, Choi & Choi, IEEE Access 2024): run when the strategy asks for it
    semi_epochs: int = field(default=30, metadata=_doc("stage B: epochs of LPM fine-tuning per querying cycle"))
    semi_lr: float = field(default=0.01, metadata=_doc("stage B: SGD learning rate of the LPM"))
    semi_threshold: float = field(default=0.9, metadata=_doc("stage B: τ, confidence a pseudo-label needs"))
    semi_lpm_loss: str = field(default="logistic", metadata=_doc("stage B: ranking loss (logistic, ranking or mse)"))
    semi_unlabeled: int | None = field(default=None, metadata=_doc(
        "stage B: unlabeled samples drawn per epoch (None: all of them)"))
    semi_views: int | None = field(default=None, metadata=_doc(
        "stage B: augmentation draws run through the frozen model, the other epochs reuse them (None: every epoch)"))
    # where and how it runs
    device: str = field(default="auto", metadata=_doc("auto, cpu, cuda[:N] or mps"))
    precision: str = field(default="auto", metadata=_doc(
        "autocast dtype: auto (bf16 where the device computes it natively, else fp32), fp32 (none), bf16 or fp16"))
    channels_last: bool = field(default=True, metadata=_doc("channels-last memory format for 4-D inputs"))
    compile: bool = field(default=False, metadata=_doc("torch.compile the target model"))

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        from learnloss.strategies import parse_strategy

        set_(self, "strategy", str(parse_strategy(self.strategy)) if isinstance(self.strategy, str) else self.strategy)
        if self.layers is not None:
            set_(self, "layers", tuple(str(layer) for layer in self.layers))
        set_(self, "milestones", tuple(sorted(int(m) for m in self.milestones)))
        self.validate()

    # ------------------------------------------------------------------------------------------- checks

    def validate(self) -> None:
        """Check every setting that needs no data; raise a :class:`UsageError` naming the flag to change."""
        for name in ("initial", "query", "cycles", "epochs", "batch_size", "lpm_width", "semi_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UsageError(f"--{_flag(name)} must be a positive whole number, got {value!r}")
        for name in ("subset", "image_size", "semi_unlabeled", "semi_views"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise UsageError(f"--{_flag(name)} must be positive, got {value!r}")
        if self.subset is not None and self.subset < self.query:
            raise UsageError(f"--subset ({self.subset}) must be at least --query ({self.query})")
        for name in ("lr", "momentum", "weight_decay", "gamma", "lpm_weight", "margin", "dropout", "drop_easy", "semi_lr",
                     "semi_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"--{_flag(name)} must be a finite non-negative number, got {value!r}")
        if self.lr == 0:
            raise UsageError("--lr must be positive, got 0")
        if not self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.drop_easy < 1:
            raise UsageError(f"--drop-easy must be a fraction in [0, 1), got {self.drop_easy}")
        if self.semi_lr == 0:
            raise UsageError("--semi-lr must be positive, got 0")
        if not self.semi_threshold <= 1:
            raise UsageError(f"--semi-threshold must be a probability in [0, 1], got {self.semi_threshold}")
        if self.stop_grad_epoch is not None and (not isinstance(self.stop_grad_epoch, int) or self.stop_grad_epoch < 0):
            raise UsageError(f"--stop-grad-epoch must be an epoch ≥ 0 or 'never', got {self.stop_grad_epoch!r}")
        if any(m < 0 for m in self.milestones):
            raise UsageError(f"--milestones must be epochs ≥ 0, got {list(self.milestones)}")
        if self.layers is not None and not self.layers:
            raise UsageError("--layers must name at least one layer")
        for name, choices in (("reset", RESET_POLICIES), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in choices:
                raise UsageError(f"--{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UsageError(f"--seed must be a whole number, got {self.seed!r}")
        self._check_names()

    def _check_names(self) -> None:
        from learnloss.data.registry import canonical_name
        from learnloss.lpm.losses import get_lpm_loss
        from learnloss.models import model_builder
        from learnloss.strategies import build_strategy
        from learnloss.tasks import build_task

        build_strategy(self.strategy)
        model_builder(self.model)
        get_lpm_loss(self.lpm_loss)
        get_lpm_loss(self.semi_lpm_loss)
        if self.task is not None:
            build_task(self.task)
        if self.dataset != "project":  # a labeling project's images are the dataset
            canonical_name(self.dataset)

    # ----------------------------------------------------------------------------------------- JSON form

    def to_dict(self) -> dict[str, Any]:
        """The specification as plain JSON: ``subset``, ``semi_unlabeled`` and ``semi_views`` None are ``"all"``, ``stop_grad_epoch`` None is ``"never"``,
        tuples are lists. :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            out[item.name] = list(value) if isinstance(value, tuple) else value
        out["subset"] = "all" if self.subset is None else self.subset
        out["semi_unlabeled"] = "all" if self.semi_unlabeled is None else self.semi_unlabeled
        out["semi_views"] = "all" if self.semi_views is None else self.semi_views
        out["stop_grad_epoch"] = "never" if self.stop_grad_epoch is None else self.stop_grad_epoch
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: RunSpec | None = None) -> RunSpec:
        """A specification from :meth:`to_dict`'s form (keys that are not settings, such as the derived facts of a
        ``results.json`` config, are ignored); settings it lacks come from ``base`` — if None, from
        :data:`LEGACY_VALUES` (what a run stored before the setting existed ran with), else the defaults."""
        known = {item.name for item in fields(cls)}
        given = {key: value for key, value in values.items() if key in known}
        if base is None:
            given = {**{key: value for key, value in LEGACY_VALUES.items() if key not in given}, **given}
        return (base or cls()).replace(**from_json(given))

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def unused(self) -> frozenset[str]:
        """Settings this run never reads: stage B's (``semi_*``) unless its strategy asks for that stage."""
        from learnloss.strategies import build_strategy

        if "semi-lpm" in build_strategy(self.strategy).training_stages:
            return frozenset()
        return SEMI_SETTINGS

    def comparable(self) -> dict[str, Any]:
        """:meth:`to_dict` without the settings that say where a run executes (:data:`LOCATION_SETTINGS`) and those
        it never reads (:meth:`unused`): two runs that differ only there compute the same thing."""
        skip = LOCATION_SETTINGS | self.unused()
        return {key: value for key, value in self.to_dict().items() if key not in skip}


def from_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings in :meth:`RunSpec.to_dict`'s JSON form as :class:`RunSpec` field values."""
    out = dict(values)
    for key in ("subset", "semi_unlabeled", "semi_views"):
        if out.get(key) == "all":
            out[key] = None
    if out.get("stop_grad_epoch") == "never":
        out["stop_grad_epoch"] = None
    for key in ("milestones", "layers"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    return out


def _flag(name: str) -> str:
    return name.replace("_", "-")


def spec_differences(stored: Mapping[str, Any], requested: RunSpec) -> list[str]:
    """The settings of ``requested`` that a stored specification (``to_dict`` form) contradicts, as
    ``"name: stored X, requested Y"``; where runs execute (:data:`LOCATION_SETTINGS`) and settings the run never
    reads (:meth:`RunSpec.unused`) never count.

    A setting the stored form lacks (it was written before the setting existed) counts as what such runs ran with:
    its :data:`LEGACY_VALUES` entry, else its default — so old runs stay resumable. The one comparison used by bench
    resume and ``run --resume``.
    """
    wanted = requested.comparable()
    defaults = {**RunSpec().to_dict(), **LEGACY_VALUES}
    differ = []
    for key in sorted(wanted):
        have = stored.get(key, defaults[key])
        if have != wanted[key]:
            differ.append(f"{key}: stored {have!r}, requested {wanted[key]!r}")
    return differ
