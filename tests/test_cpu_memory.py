"""``keep_freed_memory``: after it, a large tensor freed and allocated again reuses the process's memory instead of
page-faulting fresh memory from the kernel each time; ``LEARNLOSS_MALLOC=system`` leaves glibc as it is.

Each case runs in a fresh interpreter: the settings change the whole process, and pytest's must stay as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys, torch
from learnloss.cpu_memory import keep_freed_memory
applied = keep_freed_memory()
again = keep_freed_memory()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(64 << 18, dtype=torch.float32)  # 64 MiB, above glibc's largest dynamic mmap threshold
    x.fill_(1.0)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "again": again, "faults": faults}))
"""

PAGES_PER_64_MIB = (64 << 20) // os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 16384
glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                           reason="glibc's mallopt")


def _probe(**env: str) -> dict:
    base = {key: value for key, value in os.environ.items() if key != "LEARNLOSS_MALLOC"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_a_freed_tensor_is_reused_instead_of_faulted_in_again():
    kept = _probe()
    assert kept["applied"] and kept["again"]
    # the first allocation faults its pages in once; later ones reuse them (glibc may move the block once or
    # twice as the heap settles, so allow two re-faults out of seven)
    assert kept["faults"][0] > PAGES_PER_64_MIB // 2
    assert sum(f < PAGES_PER_64_MIB // 20 for f in kept["faults"][1:]) >= 5, kept["faults"]


@glibc
def test_learnloss_malloc_system_leaves_glibc_returning_memory_to_the_kernel():
    system = _probe(LEARNLOSS_MALLOC="system")
    assert system["applied"] is False and system["again"] is False
    assert min(system["faults"][1:]) > PAGES_PER_64_MIB // 2, system["faults"]  # mapped, faulted, unmapped each time
