"""Numeric precision and memory format of a model's passes: one setting carried to training, evaluation and
scoring alike.

``fp32`` runs as PyTorch does by default. ``bf16`` and ``fp16`` run the forward passes under
:func:`torch.autocast` (matrix products and convolutions in the lower precision, reductions and losses in float32
as autocast decides); ``fp16`` training also scales the loss (:class:`torch.amp.GradScaler`) so small gradients do
not underflow. ``channels_last`` stores 4-D activations and inputs as NHWC, which convolution kernels on GPUs and
recent CPUs prefer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from learnloss.errors import UsageError

__all__ = ["PRECISIONS", "Precision"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How the passes of a model run.

    Attributes:
        dtype: ``fp32`` (no autocast), ``bf16`` or ``fp16``.
        channels_last: NHWC memory format for the model and its 4-D inputs.
    """

    dtype: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return _DTYPES.get(self.dtype)

    def check(self, device: torch.device) -> None:
        """Refuse a precision the device cannot run (fp16 autocast needs an accelerator)."""
        if self.dtype == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        """The context every forward pass of the model runs in (nothing for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model in the memory format (in place; returned for chaining)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model expects."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 training, None otherwise."""
        if self.dtype != "fp16":
            return None
        return torch.amp.GradScaler(device.type)
