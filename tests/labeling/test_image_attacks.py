"""Hostile and unusual image files against the commands that read images: init, add, query, serve's /predict,
evaluate and predict all go through the one decoder and the one listing (data/images.py).

Real files (written by Pillow or NumPy, or chunk by chunk where Pillow cannot write the damage), real symlinks,
real processes with a real PATH lookup, and FastAPI's test client over the real app.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image, PngImagePlugin
from tests_support import queried_grey_project

from learnloss.cli.main import main
from learnloss.data.limits import ResourceLimitError
from learnloss.errors import DatasetFormatError, UsageError
from learnloss.labeling.workflow import add_items, init_project, project_dataset, project_spec, query_project
from learnloss.project.store import ProjectStore

FAST = {"epochs": 2, "milestones": [], "stop_grad_epoch": 1, "image_size": 8, "batch_size": 8}
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")
REFUSED_EPS = ("cannot read the image (a EPS file, not one of the accepted image formats: PNG, JPEG, BMP, GIF, TIFF, "
               "WebP, PBM/PGM/PPM); convert it to one of them or remove it")


def _photos(root: Path, n: int = 8, size: int = 8) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(root / f"{i}.png")


def _seed(tmp_path: Path) -> Path:
    seed = tmp_path / "seed.csv"
    seed.write_text("path,label\n0.png,a\n1.png,b\n")
    return seed


def _snapshot(project: Path) -> list[list[tuple]]:
    with ProjectStore(project) as store:
        return [list(store.db.execute(f"SELECT * FROM {table} ORDER BY 1"))
                for table in ("items", "labels", "meta", "cycles", "queries")]


def _fake_gs(tmp_path: Path) -> tuple[Path, Path]:
    """A folder holding a ``gs`` that records that it ran (Pillow's EPS plugin looks it up on PATH), and the file
    it writes."""
    folder = tmp_path / "bin"
    folder.mkdir()
    marker = tmp_path / "gs-ran"
    (folder / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    (folder / "gs").chmod(0o755)
    return folder, marker


def _learnloss(args: list[str], path_first: Path) -> subprocess.CompletedProcess[str]:
    """``learnloss ARGS`` as a real process whose PATH starts with ``path_first``."""
    env = dict(os.environ, PATH=f"{path_first}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "learnloss", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.startswith("learnloss: error:") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# ----------------------------------------------------------------------------------------- C2: PostScript


def test_postscript_named_png_is_refused_by_init_add_and_query_and_runs_nothing(tmp_path):
    """``odd/eps.png`` holding PostScript: init and add refuse it naming the accepted formats; swapped in after
    init, query refuses it; a fake ``gs`` first on PATH is never run."""
    bin_folder, marker = _fake_gs(tmp_path)
    photos = tmp_path / "photos"
    _photos(photos)
    (photos / "odd").mkdir()
    (photos / "odd" / "eps.png").write_bytes(EPS)
    project = tmp_path / "proj"
    init = ["init", str(project), "--images", str(photos), "--classes", "a,b", "--labels", str(_seed(tmp_path)),
            "--image-size", "8", "--epochs", "2"]
    err = _one_line(_learnloss(init, bin_folder))
    assert f"'odd/eps.png': {REFUSED_EPS}" in err and "nothing was created" in err
    assert not project.exists()
    shutil.move(str(photos / "odd"), str(tmp_path / "odd"))
    assert main(init) == 0
    shutil.move(str(tmp_path / "odd"), str(photos / "odd"))
    err = _one_line(_learnloss(["add", str(project), "--images", str(photos)], bin_folder))
    assert f"'odd/eps.png': {REFUSED_EPS}" in err
    (photos / "odd" / "eps.png").unlink()
    before = _snapshot(project)
    (photos / "5.png").write_bytes(EPS)  # swapped in after init
    err = _one_line(_learnloss(["query", str(project), "--k", "2", "--device", "cpu", "--quiet"], bin_folder))
    assert f"5.png: {REFUSED_EPS}" in err
    doctor = _learnloss(["doctor", str(project)], bin_folder)  # doctor reads headers through the same decoder
    assert doctor.returncode == 1 and "5.png" in doctor.stdout and REFUSED_EPS in doctor.stdout
    assert not marker.exists(), "Ghostscript was started"
    assert _snapshot(project) == before


def test_serve_predict_decodes_through_the_one_decoder(tmp_path, monkeypatch):
    """/predict of an item whose file became PostScript: 400 with the decoder's line, and no ``gs`` run."""
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from learnloss.labeling.backend import LabelStudioBackend, ServeConfig
    from learnloss.runs.evaluate import ProjectReader
    from learnloss.serve.app import create_app

    photos = tmp_path / "photos"
    _photos(photos)
    init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    query_project(tmp_path / "proj", k=2, device="cpu")
    bin_folder, marker = _fake_gs(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks Ghostscript up again on first use
    backend = LabelStudioBackend(tmp_path / "proj", ServeConfig(), ProjectReader(project_spec, project_dataset),
                                 query_project)
    assert backend.load()
    with ProjectStore(tmp_path / "proj") as store:
        item = {source: ident for ident, source in store.items()}["6.png"]
    (photos / "6.png").write_bytes(EPS)
    client = fastapi_testclient.TestClient(create_app(backend), base_url="http://127.0.0.1")
    answer = client.post("/predict", json={"tasks": [{"id": 1, "data": {"learnloss_id": item, "path": "6.png"}}]})
    assert answer.status_code == 400
    assert answer.json()["error"] == f"{photos / '6.png'}: {REFUSED_EPS}"
    assert not marker.exists(), "Ghostscript was started"


# -------------------------------------------------------------------------------------------- M12: depths


def test_16_bit_and_float_images_keep_their_range_in_a_project(tmp_path):
    """A 12-bit-in-16-bit PNG (sBIT 12) and a float TIFF in [0, 1] in a project: the query's dataset holds them
    scaled to 8 bits (Pillow's own conversion clips at 255: a handful of distinct values, and 0 and 1)."""
    photos = tmp_path / "photos"
    _photos(photos, n=6, size=16)
    twelve = (np.arange(256).reshape(16, 16) * 4095 // 255).astype(np.uint16)  # 12-bit values, 16 below 255
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    Image.fromarray(twelve).save(photos / "twelve.png", pnginfo=info)
    unit = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(unit, mode="F").save(photos / "unit.tif")
    assert np.unique(np.asarray(Image.open(photos / "twelve.png").convert("L"))).size == 17
    assert np.unique(np.asarray(Image.open(photos / "unit.tif").convert("L"))).size == 2
    init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path),
                 settings={**FAST, "image_size": 16})
    with ProjectStore(tmp_path / "proj") as store:
        dataset, pool_ids = project_dataset(store, project_spec(store))
        names = dict(store.items())
    rows = {names[ident]: row for row, ident in enumerate(pool_ids)}
    x = dataset.x_train[torch.tensor([rows["twelve.png"], rows["unit.tif"]])]
    expected_twelve = (twelve.astype(np.int64) * 255 + 2047) // 4095
    assert np.array_equal(x[0, 0].numpy(), expected_twelve) and np.unique(x[0, 0].numpy()).size == 256
    assert np.abs(x[1, 0].numpy().astype(float) - unit * 255).max() <= 0.5 + 1e-3
    assert int(x[1, 0].min()) == 0 and int(x[1, 0].max()) == 255
    assert len(query_project(tmp_path / "proj", k=2, device="cpu").items) == 2


def test_a_float_image_outside_0_1_stops_a_query_with_one_line(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    (photos / "4.png").unlink()
    Image.fromarray(np.full((8, 8), 200.0, dtype=np.float32), mode="F").save(photos / "4.png", format="TIFF")
    before = _snapshot(tmp_path / "proj")
    with pytest.raises(DatasetFormatError) as info:
        query_project(tmp_path / "proj", k=2, device="cpu")
    assert str(info.value).startswith(f"{photos / '4.png'}: a floating-point image with values from 200 to 200; ")
    assert _snapshot(tmp_path / "proj") == before


# --------------------------------------------------------------------------------- m6, m7: truncated, huge


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _grey_png(width: int, height: int, rows: int) -> bytes:
    """An 8-bit grey PNG declaring ``width`` × ``height`` whose complete zlib stream holds ``rows`` rows."""
    raw = b"".join(b"\x00" + bytes([200]) * width for _ in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def test_a_png_holding_64_of_its_9000_rows_stops_a_query(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    (photos / "3.png").write_bytes(_grey_png(9000, 9000, 64))
    before = _snapshot(tmp_path / "proj")
    with pytest.raises(DatasetFormatError) as info:
        query_project(tmp_path / "proj", k=2, device="cpu")
    message = str(info.value)
    assert message.startswith(f"{photos / '3.png'}: the image file is truncated (its data hold 576,064 of the "
                              "81,009,000 bytes its 9000x9000 header declares") and "\n" not in message
    assert _snapshot(tmp_path / "proj") == before


def test_the_documented_pixel_limit_applies_at_init_and_at_query(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    (photos / "huge.png").write_bytes(_grey_png(30000, 30000, 1))
    limit = "declares 30000 × 30000 = 900,000,000 pixels, more than the limit of 89,478,485; if the image is " \
            "genuine, raise LEARNLOSS_MAX_IMAGE_PIXELS"
    with pytest.raises(UsageError) as info:
        init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    assert f"'huge.png': {limit}" in str(info.value) and "178" not in str(info.value)
    (photos / "huge.png").unlink()
    init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    (photos / "2.png").write_bytes(_grey_png(30000, 30000, 1))  # swapped in after init
    with pytest.raises(ResourceLimitError) as info:
        query_project(tmp_path / "proj", k=2, device="cpu")
    assert str(info.value) == f"{photos / '2.png'}: {limit}"


# ------------------------------------------------------------------------------- m8: links out of --images


@pytest.fixture
def trained_project(tmp_path, capsys):
    """A project of 30 grey 8x8 images trained once, and ``labeled/{a,b}/*.png`` with ``labeled/b/link.png`` a
    symlink to an image outside ``labeled``."""
    project = queried_grey_project(tmp_path)
    labeled = tmp_path / "labeled"
    Image.new("L", (12, 12), 7).save(tmp_path / "secret.png")
    (labeled / "b" / "link.png").symlink_to(tmp_path / "secret.png")
    capsys.readouterr()
    return project, labeled


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_refuse_links_leading_out_of_images(trained_project, tmp_path, capsys, command):
    project, labeled = trained_project
    extra = ["--out", str(tmp_path / "p.csv")] if command == "predict" else []
    assert main([command, str(project), "--images", str(labeled), "--device", "cpu", *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"learnloss: error: {labeled}: 1 image(s) are symbolic links leading outside the folder "
                            "('b/link.png'); copy the images into the folder or remove the links\n")
    assert not (tmp_path / "p.csv").exists()
    (labeled / "b" / "link.png").unlink()
    assert main([command, str(project), "--images", str(labeled), "--device", "cpu", *extra]) == 0


def test_init_and_add_refuse_the_links_evaluate_refuses(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    Image.new("L", (8, 8), 7).save(tmp_path / "secret.png")
    (photos / "new").mkdir()
    (photos / "new" / "link.png").symlink_to(tmp_path / "secret.png")
    refusal = f"'new/link.png': a symlink leads it outside the data root {photos}"
    with pytest.raises(UsageError, match="nothing was created") as info:
        init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    assert refusal in str(info.value)
    (photos / "new" / "link.png").unlink()
    init_project(tmp_path / "proj", images=photos, classes=["a", "b"], labels=_seed(tmp_path), settings=FAST)
    (photos / "new" / "link.png").symlink_to(tmp_path / "secret.png")
    Image.new("L", (8, 8), 9).save(photos / "new" / "fine.png")
    with pytest.raises(UsageError) as info:
        add_items(tmp_path / "proj", images=photos / "new")
    assert refusal in str(info.value)
    (photos / "new" / "link.png").unlink()
    assert add_items(tmp_path / "proj", images=photos / "new")["added"] == 1
