"""Numeric precision and memory format of a model's passes: one setting carried to training, evaluation and
scoring alike.

``auto`` is bf16 where the device computes it natively — CUDA GPUs that support bf16 (Ampere and later), CPUs with
AVX512-BF16 or AMX — and fp32 elsewhere (:meth:`Precision.resolve`); the choice comes from measurements
(``benchmarks/results/speed``: ResNet-18 + LPM trains 2.4× faster in bf16 + channels-last on an AVX512-BF16 CPU,
and bf16 kept the label efficiency of fp32 in paired seeds). ``fp32`` runs as PyTorch does by default. ``bf16`` and ``fp16`` run the forward passes under
:func:`torch.autocast` (matrix products and convolutions in the lower precision, reductions and losses in float32
as autocast decides); ``fp16`` training also scales the loss (:class:`torch.amp.GradScaler`) so small gradients do
not underflow. ``channels_last`` stores 4-D activations and inputs as NHWC, which convolution kernels on GPUs and
recent CPUs prefer. ``compile`` runs the target model through :func:`torch.compile` (in place,
:meth:`torch.nn.Module.compile`, so its module names, hooks and checkpoints stay as they are); the first passes
of each shape pay the compilation (``benchmarks/results/speed`` says when that pays back).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch import nn

from learnloss.errors import UsageError

__all__ = ["PRECISIONS", "Precision", "bf16_native"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively: a CUDA GPU with bf16 support, or a CPU with
    AVX512-BF16 or AMX tiles (without them, oneDNN emulates bf16 and it is slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(probe()) for probe in probes if probe is not None)
    return False


@dataclass(frozen=True)
class Precision:
    """How the passes of a model run.

    Attributes:
        dtype: ``fp32`` (no autocast), ``bf16``, ``fp16``, or ``auto`` (resolved per device by :meth:`resolve`).
        channels_last: NHWC memory format for the model and its 4-D inputs.
        compile: compile the target model with :func:`torch.compile`.
    """

    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32 (and for ``auto`` not yet resolved)."""
        return _DTYPES.get(self.dtype)

    def resolve(self, device: torch.device) -> Precision:
        """This precision with ``auto`` replaced by what ``device`` runs natively: bf16 where
        :func:`bf16_native` says so, else fp32."""
        if self.dtype != "auto":
            return self
        return replace(self, dtype="bf16" if bf16_native(device) else "fp32")

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
        """The model in the memory format, compiled if asked (in place; returned for chaining)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
        if self.compile:
            model.compile()
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
