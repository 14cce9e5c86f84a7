"""A crafted file in the generated-data cache: a few megabytes that declare a gigabyte. The cache's reader checks
every member's header (dtype, size in the archive, the shapes its settings make, LEARNLOSS_MAX_BYTES) before it
decompresses anything, so such a file is generated again without the memory it declares — measured in a real
process (its peak resident memory, ``resource.getrusage``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from learnloss.data.scenes import SceneSettings, make_scenes

SRC = str(Path(__file__).resolve().parents[2] / "src")
GIB = 1024**3

# loads the cached scenes in a fresh process; prints the growth of its peak memory (bytes) and the x_train sum
_PROBE = """
import json, resource, sys
from learnloss.data.scenes import make_scenes
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
data = make_scenes("digits", n_train=30, n_test=10, data_dir=sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"grown": after - before, "sum": int(data.x_train.sum()), "shape": list(data.y_train.shape)}))
"""


def _zeros_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: str) -> None:
    """A member whose header declares ``shape`` of ``dtype`` and whose data is that many zero bytes, written in
    chunks (it compresses to a few MB)."""
    with archive.open(name, "w", force_zip64=True) as f:
        npy_format.write_array_header_2_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        left = int(np.prod(shape)) * np.dtype(dtype).itemsize
        chunk = bytes(16 * 1024 * 1024)
        while left:
            f.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))


def _craft(path: Path, how: str) -> None:
    """Rewrite the real cache file ``path``: with a 1 GiB extra member (``extra``), or with targets of a million
    padding rows per image (``rows``: shapes the settings allow, 800 MB, over LEARNLOSS_MAX_BYTES)."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    crafted = path.with_suffix(".tmp")
    with zipfile.ZipFile(crafted, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in arrays.items():
            if how == "rows" and key in ("y_train", "y_test"):
                _zeros_member(archive, f"{key}.npy", (value.shape[0], 1_000_000, 5), "<f4")
                continue
            with archive.open(f"{key}.npy", "w") as f:
                npy_format.write_array(f, value, allow_pickle=False)
        if how == "extra":
            _zeros_member(archive, "junk.npy", (GIB,), "|u1")
    os.replace(crafted, path)


@pytest.mark.parametrize("how", ["extra", "rows"])
def test_a_small_cache_file_declaring_a_gigabyte_is_generated_again_without_allocating_it(tmp_path, how):
    first = make_scenes("digits", n_train=30, n_test=10, data_dir=tmp_path)
    path = SceneSettings(source="digits", n_train=30, n_test=10).cache_file(tmp_path)
    _craft(path, how)
    assert path.stat().st_size < 20 * 1024**2  # a few MB on disk
    env = {**os.environ, "PYTHONPATH": SRC, "LEARNLOSS_MAX_BYTES": "200000000"}
    result = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["grown"] < 300 * 1024**2, f"peak memory grew by {probe['grown']:,} bytes"
    assert probe["sum"] == int(first.x_train.sum()) and probe["shape"] == list(first.y_train.shape)
    with zipfile.ZipFile(path) as archive:  # written again, as generated
        assert sorted(archive.namelist()) == ["settings.npy", "x_test.npy", "x_train.npy", "y_test.npy",
                                              "y_train.npy"]


def test_a_member_whose_header_and_archive_size_disagree_is_generated_again(tmp_path):
    first = make_scenes("digits", n_train=30, n_test=10, data_dir=tmp_path)
    path = SceneSettings(source="digits", n_train=30, n_test=10).cache_file(tmp_path)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as f:
                header = {"descr": npy_format.dtype_to_descr(value.dtype), "fortran_order": False,
                          "shape": (10**9, *value.shape[1:]) if key == "x_train" else value.shape}
                npy_format.write_array_header_2_0(f, header)
                f.write(value.tobytes())
    again = make_scenes("digits", n_train=30, n_test=10, data_dir=tmp_path)
    assert np.array_equal(again.x_train.numpy(), first.x_train.numpy())


def test_an_intact_cache_is_read_back_exactly(tmp_path, monkeypatch):
    import learnloss.data.scenes as scenes

    first = make_scenes("digits", n_train=30, n_test=10, data_dir=tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated again although cached")

    monkeypatch.setattr(scenes, "generate_scenes", refuse)
    second = make_scenes("digits", n_train=30, n_test=10, data_dir=tmp_path)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(first, key).numpy(), getattr(second, key).numpy())
