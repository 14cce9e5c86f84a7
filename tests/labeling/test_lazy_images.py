"""A labeling project reads its images per batch (a bounded cache, parallel decoding), never all up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from learnloss.data import ImageSource, image_source
from learnloss.data.images import read_images
from learnloss.labeling.workflow import init_project, project_dataset, project_spec, query_project
from learnloss.project.store import ProjectStore

FAST = {"epochs": 2, "milestones": [], "stop_grad_epoch": 1, "image_size": 8, "batch_size": 8}


def _project(tmp_path, name="proj"):
    """24 images of two classes told apart by brightness (sizes differ: they are resized), 6 labeled, and 4
    labeled test images in ``test/``."""
    root = tmp_path / f"{name}-photos"
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(28):
        label = "dark" if i % 2 else "light"
        pixels = (rng.integers(0, 60, (10 + i % 3, 12)) + (40 if label == "dark" else 180)).astype(np.uint8)
        rel = f"test/{i}.png" if i >= 24 else f"{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(root / rel)
        rows.append(f"{rel},{label if i < 6 or i >= 24 else ''},{'test' if i >= 24 else 'pool'}")
    manifest = root / "all.csv"
    manifest.write_text("\n".join(rows) + "\n")
    init_project(tmp_path / name, manifest=manifest, classes=["dark", "light"], settings=FAST)
    return tmp_path / name, root


def test_the_dataset_of_a_project_decodes_per_batch(tmp_path):
    project, root = _project(tmp_path)
    with ProjectStore(project) as store:
        dataset, pool_ids = project_dataset(store, project_spec(store))
    assert isinstance(dataset.x_train, ImageSource) and isinstance(dataset.x_test, ImageSource)
    assert len(pool_ids) == 24 and dataset.x_train.shape == (24, 1, 8, 8) and dataset.x_test.shape == (4, 1, 8, 8)
    assert dataset.x_test.decoded == 0  # nothing of the test split was read yet
    assert dataset.x_train.decoded == 24  # the channel statistics read the small pool once; the cache keeps it
    pool_paths = dataset.x_train.paths
    expected = torch.from_numpy(read_images(pool_paths, "L", (8, 8), resize=True))
    assert torch.equal(dataset.x_train[:], expected) and dataset.x_train.decoded == 24
    assert torch.equal(dataset.x_test[[3, 0]], torch.from_numpy(read_images(
        [dataset.x_test.paths[3], dataset.x_test.paths[0]], "L", (8, 8), resize=True)))
    assert sorted(p.name for p in dataset.x_test.paths) == [f"{i}.png" for i in range(24, 28)]


def test_a_query_selects_the_same_whatever_the_cache_holds(tmp_path, monkeypatch):
    outcomes = []
    for name, cache_bytes in (("roomy", None), ("tiny", 3 * 64)):
        if cache_bytes is not None:
            monkeypatch.setattr(image_source, "DECODE_CACHE_BYTES", cache_bytes)
        project, _ = _project(tmp_path, name)
        outcome = query_project(project, k=5, device="cpu")
        outcomes.append([(item.path, item.score, item.prediction) for item in outcome.items])
    assert len(outcomes[0]) == 5 and outcomes[0] == outcomes[1]


@pytest.mark.parametrize("workers", [1, 3])
def test_decoding_threads_do_not_change_what_is_read(tmp_path, workers):
    project, _ = _project(tmp_path)
    with ProjectStore(project) as store:
        dataset, _ = project_dataset(store, project_spec(store))
    assert isinstance(dataset.x_train, ImageSource)
    other = ImageSource(dataset.x_train.paths, "L", (8, 8), workers=workers, cache_bytes=0)
    assert torch.equal(other[torch.arange(23, -1, -1)], dataset.x_train[torch.arange(23, -1, -1)])
