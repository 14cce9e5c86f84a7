"""Resolving the ``--device`` setting to a ``torch.device``: the one place a device name is validated."""

from __future__ import annotations

import torch

from learnloss.errors import UsageError

SUPPORTED = ("cpu", "cuda", "mps")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; other names must be a usable ``cpu``, ``cuda[:N]`` or ``mps``.

    Raises:
        UsageError: the name is not a device, or names an accelerator this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"invalid device {name!r} (--device): {exc}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in SUPPORTED:
        raise UsageError(f"invalid device {name!r} (--device): use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r} names CUDA but CUDA is not available; use --device cpu or auto")
    return device
