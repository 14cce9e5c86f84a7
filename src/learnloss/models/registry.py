"""Names of the bundled target models, and the tapping metadata they carry.

Each bundled model declares two class attributes read by the loss prediction module of Yoo & Kweon,
"Learning Loss for Active Learning" (CVPR 2019):

* ``default_taps``: dotted module names (as in ``named_modules()``) whose forward outputs feed the module;
* ``embedding_layer``: the tap whose globally average-pooled output is the penultimate embedding
  (used by embedding-based baselines such as core-set).

User models need not have them; :func:`default_taps` and :func:`embedding_layer` then ask for explicit names.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from learnloss.errors import LayerNotFoundError, UnknownNameError, UsageError
from learnloss.models.detector import CenterNetFPN
from learnloss.models.hourglass import HourglassNet
from learnloss.models.mlp import MLP
from learnloss.models.resnet import resnet
from learnloss.models.small_cnn import SmallCNN

__all__ = ["available_models", "build_model", "default_taps", "embedding_layer", "input_dims", "model_builder"]


ModelBuilder = Callable[..., nn.Module]
"""``(in_channels, num_classes, dropout=0.0) -> model``; for ``mlp`` on ``(N, D)`` inputs, ``in_channels`` is the
feature count ``D`` and ``num_classes`` the output width (classes, or regression target components)."""


def _resnet_builder(depth: int) -> ModelBuilder:
    def build(in_channels: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
        return resnet(depth, in_channels, num_classes, dropout=dropout)

    build.__doc__ = f"CIFAR-style ResNet-{depth} (He et al. 2016)."
    return build


_MODELS: dict[str, ModelBuilder] = {
    "resnet18": _resnet_builder(18),
    "resnet34": _resnet_builder(34),
    "resnet50": _resnet_builder(50),
    "resnet101": _resnet_builder(101),
    "resnet152": _resnet_builder(152),
    "small-cnn": SmallCNN,
    "mlp": MLP,
    "hourglass": HourglassNet,
    "detector": CenterNetFPN,
}


_VECTOR_MODELS = frozenset({"mlp"})


def input_dims(name: str) -> int:
    """How many dimensions one input sample of the registered model ``name`` has: 1 for a vector model (``mlp``,
    ``(D,)``), 3 for an image model (``(C, H, W)``)."""
    return 1 if _normalise(name) in _VECTOR_MODELS else 3


def available_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def build_model(name: str, in_channels: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Build the registered model ``name`` (case-insensitive) for ``in_channels`` inputs and ``num_classes``,
    with ``dropout`` before its classifier.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the registered names).
        UsageError: ``in_channels`` or ``num_classes`` is not a positive integer, or ``dropout`` not in [0, 1).
    """
    return model_builder(name)(in_channels, num_classes, dropout=dropout)


def model_builder(name: str) -> ModelBuilder:
    """The factory ``(in_channels, num_classes, dropout=0.0) -> model`` registered as ``name`` (case-insensitive), so a name
    can be checked before the data that fixes those sizes is loaded.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the registered names).
    """
    key = _normalise(name) if isinstance(name, str) else name
    if key not in _MODELS:
        raise UnknownNameError("model", str(name), available_models())
    return _MODELS[key]


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def _check_layers(model: nn.Module, names: tuple[str, ...], attribute: str) -> None:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise LayerNotFoundError(
            f"{_model_name(model)}.{attribute} names {', '.join(map(repr, missing))}, "
            f"which the model does not have; pass layer names explicitly"
        )


def default_taps(model: nn.Module) -> tuple[str, ...]:
    """The layer names whose outputs a loss prediction module reads by default (``model.default_taps``).

    Raises:
        UsageError: the model declares no ``default_taps``; pass layer names explicitly.
        LayerNotFoundError: a declared name is not a submodule of the model.
    """
    taps = getattr(model, "default_taps", None)
    if isinstance(taps, str):
        taps = (taps,)
    if not taps:
        raise UsageError(
            f"model {_model_name(model)} declares no default_taps; pass the layer names to tap explicitly "
            f"(dotted names from model.named_modules())"
        )
    taps = tuple(taps)
    _check_layers(model, taps, "default_taps")
    return taps


def embedding_layer(model: nn.Module) -> str:
    """The layer whose (globally average-pooled) output is the penultimate embedding (``model.embedding_layer``).

    Raises:
        UsageError: the model declares no ``embedding_layer``; pass the layer name explicitly.
        LayerNotFoundError: the declared name is not a submodule of the model.
    """
    layer = getattr(model, "embedding_layer", None)
    if not isinstance(layer, str) or not layer:
        raise UsageError(
            f"model {_model_name(model)} declares no embedding_layer; pass the embedding layer name explicitly "
            f"(a dotted name from model.named_modules())"
        )
    _check_layers(model, (layer,), "embedding_layer")
    return layer
