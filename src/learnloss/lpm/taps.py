"""Feature taps: forward hooks that capture the outputs of named submodules of any ``nn.Module``.

The loss prediction module of Yoo & Kweon (CVPR 2019, Fig. 2) reads mid-level features of the target network.
Instead of asking the user to change ``forward()`` to return them, :class:`FeatureTaps` registers forward
hooks on submodules named as in ``model.named_modules()`` and keeps the output of the last forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from learnloss.errors import FeatureShapeError, LayerNotFoundError, UsageError


def _first_tensor(output: object) -> torch.Tensor | None:
    """A module's output, or the first element of a tuple/list output (e.g. ``nn.LSTM``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def pool_features(feature: torch.Tensor) -> torch.Tensor:
    """Global average pooling of one tapped output to ``(B, C)``.

    ``(B, C, *spatial)`` maps (any spatial size, 1-D to 3-D) are averaged over the spatial dimensions,
    ``(B, T, C)`` sequences over ``T``, and ``(B, C)`` vectors are returned unchanged.
    """
    if feature.dim() == 2:
        return feature
    if feature.dim() == 3:
        return feature.mean(dim=1)
    return feature.flatten(2).mean(dim=2)


class FeatureTaps:
    """Capture the outputs of named submodules during forward passes.

    Args:
        model: any ``nn.Module``; its ``forward`` is not changed.
        layers: dotted submodule names, as listed by ``model.named_modules()``.

    After ``model(x)``, :attr:`features` holds one tensor per layer, in the order of ``layers``. Call
    :meth:`remove` (or use the object as a context manager) to detach the hooks.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        if isinstance(layers, str) or len(layers) == 0:
            raise UsageError("layers must be a non-empty list of submodule names, e.g. ['layer1', 'layer2']")
        if len(set(layers)) != len(layers):
            raise UsageError(f"layers contains duplicate names: {list(layers)}")
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules or name == ""]
        if missing:
            available = [name for name in modules if name]
            raise LayerNotFoundError(
                f"model {type(model).__name__} has no submodule named {', '.join(map(repr, missing))}; "
                f"available layer names: {', '.join(available)}"
            )
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(self._make_hook(name)) for name in self.layers
        ]

    def _make_hook(self, name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            tensor = _first_tensor(output)
            if tensor is None:
                raise FeatureShapeError(
                    f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, not a tensor; "
                    "tap a layer whose output is a tensor (B, C), (B, T, C) or (B, C, H, W)"
                )
            self._outputs[name] = tensor

        return hook

    @property
    def features(self) -> list[torch.Tensor]:
        """The tapped outputs of the last forward pass, in the order of :attr:`layers`."""
        missing = [name for name in self.layers if name not in self._outputs]
        if missing:
            raise FeatureShapeError(
                f"layers {missing} did not run in the last forward pass of {type(self.model).__name__}; "
                "tap layers that every forward pass goes through"
            )
        return [self._outputs[name] for name in self.layers]

    def clear(self) -> None:
        """Forget the captured outputs (frees their memory)."""
        self._outputs.clear()

    def remove(self) -> None:
        """Remove the hooks; the model behaves exactly as before the taps were attached."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def probe(self, example_input: torch.Tensor) -> list[int]:
        """Run one forward pass (eval mode, no gradient) and return each layer's channel width.

        Fails up front, naming the layer, when an output cannot be pooled to ``(B, C)`` or does not keep the
        batch dimension.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(example_input)
            features = self.features
        finally:
            self.model.train(was_training)
            self._outputs.clear()
        batch = example_input.shape[0]
        widths = []
        for name, feature in zip(self.layers, features):
            if feature.dim() < 2 or feature.shape[0] != batch:
                raise FeatureShapeError(
                    f"layer {name!r} output has shape {tuple(feature.shape)} for a batch of {batch}; the loss "
                    "prediction module needs (B, C), (B, T, C) or (B, C, H, W) outputs — tap another layer"
                )
            if not feature.is_floating_point():
                raise FeatureShapeError(f"layer {name!r} outputs {feature.dtype}; tap a layer with float outputs")
            widths.append(int(pool_features(feature).shape[1]))
        return widths
