#!/usr/bin/env bash
# Copy what benchmarks/gpu/run.sh needs on a machine without network into data-carry/ (ignored by git):
#   data-carry/fashion-mnist/*.gz   Fashion-MNIST's four gzipped IDX files (~30 MB), found where learnloss finds
#                                   them (--data-dir, $LEARNLOSS_DATA, ~/.cache/learnloss, the Debian package
#                                   dataset-fashion-mnist's /usr/share/datasets/fashion-mnist);
#   data-carry/wheels/*.whl         the serve extra (FastAPI and its dependencies) for CPython 3.12 on x86-64,
#                                   where the target machine's Python lacks it (pip download; skipped offline).
# Usage: benchmarks/gpu/prepare.sh [DATA_DIR]      (then carry data-carry; see benchmarks/gpu/README.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/data-carry"
python="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$dest/fashion-mnist" "$dest/wheels"

# 1. Fashion-MNIST, located by learnloss itself (the same search run.sh's --data-dir feeds)
PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$dest/fashion-mnist" "${1:-}" <<'PY'
import shutil, sys
from pathlib import Path
from learnloss.data.locate import locate
from learnloss.data.sources import SOURCES

dest, given = Path(sys.argv[1]), sys.argv[2] or None
found = locate(SOURCES["fashion-mnist"], given)
if found is None:
    sys.exit("prepare.sh: Fashion-MNIST not found; install the Debian package dataset-fashion-mnist, or pass the "
             "folder holding train-images-idx3-ubyte.gz and the three other IDX files")
for path in found.values():
    if path.parent.resolve() != dest.resolve():
        shutil.copyfile(path, dest / path.name)
print(f"prepare.sh: Fashion-MNIST from {next(iter(found.values())).parent} -> {dest}")
PY

# 2. the serve extra as wheels (the versions pinned here run on the target's Python 3.12)
if [ "${LEARNLOSS_GPU_NO_WHEELS:-0}" != 1 ]; then
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$dest/wheels" fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 \
      annotated-types==0.8.0 typing-inspection==0.4.5 \
    || echo "prepare.sh: could not download the serve wheels (offline?); the served-app test will skip there"
fi
du -sh "$dest" | sed 's/^/prepare.sh: data-carry holds /'
total=$(du -sb "$dest" | cut -f1)
if [ "$total" -gt $((40 * 1024 * 1024)) ]; then
  echo "prepare.sh: warning: $total bytes; with the tracked tree (~22 MB) the 64 MiB carry limit is near" >&2
fi
