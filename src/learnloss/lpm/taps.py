"""Feature taps: forward hooks that capture the outputs of named submodules of any ``nn.Module``.

The loss prediction module of Yoo & Kweon (CVPR 2019, Fig. 2) reads mid-level features of the target network
and globally average-pools each of them to one vector per sample. Instead of asking the user to change
``forward()`` to return them, :class:`FeatureTaps` registers forward hooks on submodules named as in
``model.named_modules()`` and keeps the output of the last forward pass.

Pooling needs to know which dimensions of an output are the batch, the channels and the positions to average
over — its *layout*:

* ``"channels-first"``: ``(B, C, *spatial)`` of any rank ≥ 2 — feature maps ``(B, C, H, W)``, ``Conv1d``
  outputs ``(B, C, L)``, volumes ``(B, C, D, H, W)``, and plain vectors ``(B, C)``;
* ``"batch-first"``: a sequence ``(B, T, C)``, averaged over ``T``;
* ``"sequence-first"``: a sequence ``(T, B, C)`` (``nn.LSTM`` or ``nn.Transformer*`` with
  ``batch_first=False``), averaged over ``T``;
* a callable ``f(tensor) -> (B, C) tensor`` for any other output.

Ranks 2 and ≥ 4 are channels-first. A rank-3 output is inferred only where it is certain (the module type, or
a batch dimension that can only be dim 1); otherwise :meth:`FeatureTaps.probe` refuses and asks for the layout
rather than guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from learnloss.errors import FeatureShapeError, LayerNotFoundError, UsageError

__all__ = ["BATCH_FIRST", "CHANNELS_FIRST", "LAYOUTS", "SEQUENCE_FIRST", "FeatureTaps", "Layout", "pool_features"]

CHANNELS_FIRST = "channels-first"
BATCH_FIRST = "batch-first"
SEQUENCE_FIRST = "sequence-first"
#: The layout names :func:`pool_features` and :class:`FeatureTaps` accept (besides a callable).
LAYOUTS: tuple[str, ...] = (CHANNELS_FIRST, BATCH_FIRST, SEQUENCE_FIRST)

#: A layer's layout: one of :data:`LAYOUTS`, or a callable that pools the output to ``(B, C)`` itself.
Layout = Union[str, Callable[[torch.Tensor], torch.Tensor]]

_VALID = f"valid layouts: {', '.join(map(repr, LAYOUTS))} or a callable f(tensor) -> (B, C) tensor"

# Modules whose rank-3 output is (B, C, L) by definition.
_CHANNELS_FIRST_1D: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.BatchNorm1d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.GroupNorm,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.LPPool1d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveAvgPool1d,
    nn.Dropout1d,
)
# Modules whose rank-3 output is (B, T, C) or (T, B, C) according to their ``batch_first``.
_SEQUENCE_MODULES: tuple[type[nn.Module], ...] = (
    nn.RNNBase,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
)


def _first_tensor(output: object) -> torch.Tensor | None:
    """A module's output, or the first element of a tuple/list output (e.g. ``nn.LSTM``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _check_layout(layout: object) -> Layout:
    """``layout`` itself if it is a valid layout; a :class:`UsageError` listing the valid ones otherwise."""
    if callable(layout) or (isinstance(layout, str) and layout in LAYOUTS):
        return layout  # type: ignore[return-value]
    raise UsageError(f"unknown feature layout {layout!r}; {_VALID}")


def _layout_name(layout: Layout) -> str:
    return repr(layout) if isinstance(layout, str) else f"callable {getattr(layout, '__name__', type(layout).__name__)}"


def pool_features(feature: torch.Tensor, layout: Layout = CHANNELS_FIRST) -> torch.Tensor:
    """Global average pooling of one tapped output to ``(B, C)`` (the GAP of Yoo & Kweon, CVPR 2019, Fig. 2).

    Args:
        feature: the tapped output.
        layout: ``"channels-first"`` — ``(B, C, *spatial)`` maps of any rank and size are averaged over the
            spatial dimensions, and ``(B, C)`` vectors are returned unchanged; ``"batch-first"`` — ``(B, T, C)``
            sequences are averaged over ``T``; ``"sequence-first"`` — ``(T, B, C)`` sequences are averaged over
            ``T``; or a callable, whose ``(B, C)`` result is returned.

    Raises:
        UsageError: ``layout`` is not a valid layout.
        FeatureShapeError: ``feature`` does not have the rank the layout needs, or a callable did not return a
            ``(B, C)`` tensor.
    """
    layout = _check_layout(layout)
    if callable(layout):
        pooled = layout(feature)
        if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2:
            got = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
            raise FeatureShapeError(
                f"layout {_layout_name(layout)} turned an output of shape {tuple(feature.shape)} into {got}; "
                "a layout callable must return a (B, C) tensor"
            )
        return pooled
    if layout == CHANNELS_FIRST:
        if feature.dim() < 2:
            raise FeatureShapeError(
                f"a 'channels-first' output needs shape (B, C, *spatial), got {tuple(feature.shape)}"
            )
        if feature.dim() == 2:
            return feature
        return feature.flatten(2).mean(dim=2)
    if feature.dim() != 3:
        shape = "(B, T, C)" if layout == BATCH_FIRST else "(T, B, C)"
        raise FeatureShapeError(f"a {layout!r} output needs shape {shape}, got {tuple(feature.shape)}")
    return feature.mean(dim=1 if layout == BATCH_FIRST else 0)


def _pool_layer(name: str, feature: torch.Tensor, layout: Layout) -> torch.Tensor:
    """:func:`pool_features`, with the layer named in any error."""
    try:
        return pool_features(feature, layout)
    except FeatureShapeError as error:
        raise FeatureShapeError(f"layer {name!r}: {error}") from None


def _batch_first(module: nn.Module) -> bool | None:
    """The ``batch_first`` of a recurrent or transformer module: on itself, its ``self_attn`` or first layer."""
    value = getattr(module, "batch_first", None)
    if isinstance(value, bool):
        return value
    attention = getattr(module, "self_attn", None)
    if isinstance(attention, nn.Module) and isinstance(getattr(attention, "batch_first", None), bool):
        return bool(getattr(attention, "batch_first"))
    layers = getattr(module, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return _batch_first(layers[0])
    encoder = getattr(module, "encoder", None)  # nn.Transformer
    if isinstance(encoder, nn.Module) and encoder is not module:
        return _batch_first(encoder)
    return None


def _layout_of_module(module: nn.Module) -> str | None:
    """The layout of a rank-3 output of ``module`` when its type makes it certain, else ``None``."""
    if isinstance(module, _CHANNELS_FIRST_1D):
        return CHANNELS_FIRST
    if isinstance(module, _SEQUENCE_MODULES):
        batch_first = _batch_first(module)
        if batch_first is not None:
            return BATCH_FIRST if batch_first else SEQUENCE_FIRST
    return None


class FeatureTaps:
    """Capture the outputs of named submodules during forward passes, and pool them to ``(B, C)``.

    Args:
        model: any ``nn.Module``; its ``forward`` is not changed.
        layers: dotted submodule names, as listed by ``model.named_modules()``.
        layouts: optional map from a tapped layer's name to its layout — ``"channels-first"``,
            ``"batch-first"``, ``"sequence-first"`` or a callable ``f(tensor) -> (B, C) tensor`` (see
            :func:`pool_features`). Layers not in the map have their layout inferred by :meth:`probe`.

    After ``model(x)``, :attr:`features` holds one tensor per layer, in the order of ``layers``, and
    :meth:`pooled` their ``(B, C)`` vectors. :attr:`layouts` holds each layer's resolved layout once
    :meth:`probe` ran. Call :meth:`remove` (or use the object as a context manager) to detach the hooks.

    Raises:
        LayerNotFoundError: a name is not a submodule (the message lists the available names).
        UsageError: ``layers`` is empty or repeats a name, a layout is unknown, or ``layouts`` names a layer
            that is not tapped.
    """

    def __init__(
        self, model: nn.Module, layers: Sequence[str], layouts: Mapping[str, Layout] | None = None
    ) -> None:
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
        if layouts is None:
            layouts = {}
        if not isinstance(layouts, Mapping):
            raise UsageError(
                f"layouts must map layer names to layouts, e.g. {{'{layers[0]}': 'batch-first'}}, "
                f"got {type(layouts).__name__}"
            )
        untapped = [name for name in layouts if name not in layers]
        if untapped:
            raise UsageError(
                f"layouts names {', '.join(map(repr, untapped))}, which "
                f"{'is' if len(untapped) == 1 else 'are'} not tapped; tapped layers: {', '.join(layers)}"
            )
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self.requested_layouts: dict[str, Layout] = {name: _check_layout(layouts[name]) for name in layouts}
        #: The layout of each layer, in the order of :attr:`layers`; ``None`` until :meth:`probe` resolves it.
        self.layouts: tuple[Layout, ...] | None = None
        self._modules: tuple[nn.Module, ...] = tuple(modules[name] for name in self.layers)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [
            module.register_forward_hook(self._make_hook(name)) for name, module in zip(self.layers, self._modules)
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

    def pooled(self, detach: bool = False) -> list[torch.Tensor]:
        """The ``(B, C)`` vector of every tapped layer of the last forward pass, pooled according to its layout.

        This is the global average pooling that opens each level of the loss prediction module (Yoo & Kweon,
        CVPR 2019, Fig. 2). With ``detach=True`` the outputs are detached before pooling (the stop-gradient).
        If :meth:`probe` has not run, the layouts are resolved from this forward pass (without the batch-size
        checks that :meth:`probe` makes).
        """
        features = self.features
        layouts = self._layouts(features)
        if detach:
            features = [feature.detach() for feature in features]
        return [_pool_layer(*entry) for entry in zip(self.layers, features, layouts)]

    def pooled_layer(self, name: str) -> torch.Tensor:
        """:meth:`pooled` of the one tapped layer ``name`` (an embedding), without pooling the others."""
        features = self.features
        index = self.layers.index(name)
        return _pool_layer(name, features[index], self._layouts(features)[index])

    def _layouts(self, features: list[torch.Tensor]) -> tuple[Layout, ...]:
        """:attr:`layouts`, resolved from ``features`` (without the batch-size checks of :meth:`probe`) when
        :meth:`probe` has not run."""
        if self.layouts is None:
            self.layouts = tuple(
                self._resolve(name, module, feature, None)
                for name, module, feature in zip(self.layers, self._modules, features)
            )
        return self.layouts

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

    def _resolve(self, name: str, module: nn.Module, feature: torch.Tensor, batch: int | None) -> Layout:
        """The layout of ``name``'s output: stated, or inferred where certain; refuse ambiguity or contradiction.

        ``batch`` is the batch size of the forward pass that produced ``feature`` (``None`` if unknown).
        """
        shape, kind = tuple(feature.shape), type(module).__name__
        stated = self.requested_layouts.get(name)
        if stated is not None and callable(stated):
            return stated  # its result is checked by probe
        if feature.dim() < 2:
            raise FeatureShapeError(
                f"layer {name!r} ({kind}) output has shape {shape}, which cannot be pooled to (B, C); the loss "
                "prediction module needs (B, C), (B, T, C) or (B, C, H, W) outputs — tap another layer"
            )
        layout: Layout | None
        if stated is not None:
            layout, source = stated, "stated"
        elif feature.dim() != 3:
            layout, source = CHANNELS_FIRST, "inferred from its rank"
        else:
            layout, source = _layout_of_module(module), f"inferred from {kind}"
            if layout is None and batch is not None and shape[0] != batch and shape[1] == batch:
                layout, source = SEQUENCE_FIRST, f"inferred from the batch size {batch}"
            if layout is None:
                raise FeatureShapeError(
                    f"layer {name!r} ({kind}) outputs shape {shape}, whose layout is ambiguous: (B, C, L) or "
                    f"(B, T, C)? state it, e.g. layouts={{{name!r}: 'batch-first'}}; {_VALID}"
                )
        if layout != CHANNELS_FIRST and feature.dim() != 3:
            raise FeatureShapeError(
                f"layer {name!r} ({kind}) outputs shape {shape}, but layout {layout!r} ({source}) needs a "
                f"rank-3 sequence; state the right layout ({_VALID})"
            )
        batch_dim = 1 if layout == SEQUENCE_FIRST else 0
        if batch is not None and shape[batch_dim] != batch:
            raise FeatureShapeError(
                f"layer {name!r} ({kind}) output has shape {shape} for a batch of {batch}, but layout {layout!r} "
                f"({source}) puts the batch in dim {batch_dim}; state the right layout ({_VALID}) or tap another "
                "layer"
            )
        return layout

    def probe(self, example_input: torch.Tensor) -> list[int]:
        """Run one forward pass (eval mode, no gradient), resolve :attr:`layouts`, return each layer's width.

        A layer's layout is the one stated in ``layouts``, else: channels-first for outputs of rank 2 and ≥ 4;
        for rank 3, channels-first for ``Conv1d``-like modules (1-D convolutions, norms and pools),
        batch- or sequence-first from the ``batch_first`` of ``nn.RNN``/``LSTM``/``GRU``, ``nn.Transformer*``
        and ``nn.MultiheadAttention``, and sequence-first when dim 1, and not dim 0, is the batch size.

        Raises:
            FeatureShapeError: naming the layer, when an output cannot be pooled to ``(B, C)``, does not keep
                the batch dimension, contradicts its stated layout, or is a rank-3 output whose layout is
                ambiguous (the message says how to state it).
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
        layouts: list[Layout] = []
        widths = []
        for name, module, feature in zip(self.layers, self._modules, features):
            layout = self._resolve(name, module, feature, batch)
            if not callable(layout) and not feature.is_floating_point():
                raise FeatureShapeError(f"layer {name!r} outputs {feature.dtype}; tap a layer with float outputs")
            pooled = _pool_layer(name, feature, layout)
            if pooled.shape[0] != batch or not pooled.is_floating_point():
                raise FeatureShapeError(
                    f"layer {name!r} ({type(module).__name__}): layout {_layout_name(layout)} pooled its output of "
                    f"shape {tuple(feature.shape)} to {tuple(pooled.shape)} {pooled.dtype} for a batch of {batch}; "
                    "it must return a float (B, C) tensor"
                )
            layouts.append(layout)
            widths.append(int(pooled.shape[1]))
        self.layouts = tuple(layouts)
        return widths
