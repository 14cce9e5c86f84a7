"""What every benchmark result records about where it came from: the code version and the environment.

The code version is the git commit when the folder is a git checkout (with whether tracked files differ from it),
and always a SHA-256 of the tree the benchmarks run — every file under ``src/``, ``benchmarks/`` and ``tests/``
and ``pyproject.toml``, byte for byte, in sorted path order, without caches and without ``benchmarks/results``
(what runs, not what was recorded) — so a copy of the working tree without ``.git`` (a machine the tree was sent
to) still names exactly what ran, and the same tree gives the same hash on any machine.

The environment is Python, PyTorch with its CUDA and cuDNN versions, the GPU (``torch.cuda.get_device_name``,
capability, memory, the driver as ``nvidia-smi`` reports it) and the processor.

Usage: ``python benchmarks/gpu/provenance.py [--device auto|cpu|cuda]`` prints both as one JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: What the tree hash covers, relative to the repository's root.
HASHED = ("pyproject.toml", "src", "benchmarks", "tests")
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _files(root: Path) -> list[Path]:
    found: list[Path] = []
    for name in HASHED:
        path = root / name
        if path.is_file():
            found.append(path)
            continue
        for folder, dirs, files in os.walk(path):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")
                             and here / d != root / "benchmarks" / "results")  # the record, not the code
            found.extend(here / f for f in files if not f.endswith(_SKIPPED_SUFFIXES))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def tree_sha256(root: Path = ROOT) -> str:
    """SHA-256 over (relative path, NUL, SHA-256 of the content, newline) of every hashed file, in path order."""
    digest = hashlib.sha256()
    for path in _files(root):
        if path.is_symlink() or not path.is_file():
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    if shutil.which("git") is None or not (root / ".git").exists():
        return None
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(root: Path = ROOT) -> dict[str, Any]:
    """``{"git_commit", "git_dirty", "tree_sha256"}``; the git fields are None outside a git checkout."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status),
            "tree_sha256": tree_sha256(root)}


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "auto") -> dict[str, Any]:
    """Python, torch (with CUDA and cuDNN), the GPU when ``device`` is not ``cpu`` and CUDA is there, the CPU."""
    import torch

    cuda = device != "cpu" and torch.cuda.is_available()
    gpu: dict[str, Any] | None = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
               "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
               "nvidia_smi": _nvidia_smi()}
    return {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": "cuda" if cuda else "cpu", "device_name": gpu["name"] if gpu else cpu_model(), "gpu": gpu,
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def provenance(device: str = "auto") -> dict[str, Any]:
    """``{"code_version": ..., "environment": ...}``; the code version is read from
    ``$LEARNLOSS_CODE_VERSION`` (JSON, as ``run.sh`` exports it once for all its steps) when set."""
    given = os.environ.get("LEARNLOSS_CODE_VERSION")
    version = json.loads(given) if given else code_version()
    return {"code_version": version, "environment": environment(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--code-only", action="store_true", help="print the code version only (no torch import)")
    args = parser.parse_args()
    document = code_version() if args.code_only else provenance(args.device)
    json.dump(document, sys.stdout, indent=None if args.code_only else 2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
