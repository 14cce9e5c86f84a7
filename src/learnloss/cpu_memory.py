"""Keeping freed tensor memory in the process on Linux/glibc, so that CPU passes stop paying the kernel for it.

PyTorch's CPU tensors are allocated with ``malloc``. glibc serves any request above its *mmap threshold*
(128 KiB at start, raised dynamically up to 32 MiB) with a fresh ``mmap``, and gives it back with ``munmap`` when
the tensor is freed; below it, freed memory at the top of the heap above ``M_TRIM_THRESHOLD`` is returned too. A
ResNet-18 activation at batch 512 on 32×32 inputs is 128 MiB in float32, so every convolution of every batch
maps, page-faults, zeroes and unmaps fresh memory: on the 2-core machine of ``benchmarks/results/speed`` evaluation
ran at 90 img/s with 32 s of system CPU for 4,096 images, and at 182 img/s with none once the settings below
were applied (the same effect is why PyTorch's performance guide recommends jemalloc or tcmalloc on CPUs).

:func:`keep_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold to its maximum with
``mallopt`` (glibc's documented interface, reached through :mod:`ctypes`): the heap keeps what the largest pass
needed and reuses it. The cost is resident memory that stays at its peak (about +250 MiB for that evaluation) —
the trade every caching allocator makes. The ``learnloss`` command applies it at start; library users call it
themselves (it changes the whole process). ``LEARNLOSS_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30
_FALLBACK_MMAP_THRESHOLD = 32 << 20  # glibc before 2.26 refuses more than HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the kernel (see the module's text).

    Idempotent; does nothing (and returns False) off Linux, without glibc, or with ``LEARNLOSS_MALLOC=system``.
    Returns whether the settings are in effect.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("LEARNLOSS_MALLOC", "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, _FALLBACK_MMAP_THRESHOLD)):
        return False
    _applied = bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _applied
