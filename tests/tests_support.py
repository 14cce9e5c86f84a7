"""Test helpers: a tiny learnable image dataset and a tiny model, so loop tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from learnloss.data.dataset import AugmentSpec, Dataset


class TinyNet(nn.Module):
    """Conv → BN → ReLU → dropout → GAP → FC; BN and dropout make train/eval mode observable."""

    default_taps = ("conv", "hidden")
    embedding_layer = "hidden"

    def __init__(self, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.hidden = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.drop(self.conv(x).mean(dim=(2, 3)))))


def make_dataset(n_train: int = 120, n_test: int = 60, seed: int = 0) -> Dataset:
    """Three classes told apart by mean brightness, stored as uint8 8x8 images."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 3, (n,), generator=g)
        x = (y[:, None, None, None] * 70 + 30 + torch.randint(0, 60, (n, 1, 8, 8), generator=g)).clamp(0, 255)
        return x.to(torch.uint8), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset("tiny", x_train, y_train, x_test, y_test, ["a", "b", "c"], AugmentSpec(pad=1, flip=True))


def init_grey_project(tmp_path: Path) -> tuple[int, np.random.Generator]:
    """``learnloss init`` of ``tmp_path/proj``: 30 random grey 8x8 images in ``tmp_path/photos``, classes a and b,
    the first 6 labeled alternately, 2 epochs. Returns the exit code and the image generator (for more images)."""
    from PIL import Image

    from learnloss.cli.main import main

    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(root / f"{i}.png")
    seed = tmp_path / "seed.csv"
    seed.write_text("path,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(6)))
    code = main(["init", str(tmp_path / "proj"), "--images", str(root), "--classes", "a,b", "--labels", str(seed),
                 "--image-size", "8", "--epochs", "2"])
    return code, rng


def queried_grey_project(tmp_path: Path) -> Path:
    """:func:`init_grey_project` after one ``query --k 4`` (cycle 0 trained), and ``tmp_path/labeled/{a,b}/{0,1,2}.png``
    (12x12 grey) to evaluate it on; the project's folder."""
    from PIL import Image

    from learnloss.cli.main import main

    code, rng = init_grey_project(tmp_path)
    assert code == 0
    assert main(["query", str(tmp_path / "proj"), "--k", "4", "--quiet", "--device", "cpu"]) == 0
    for name in ("a", "b"):
        (tmp_path / "labeled" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8), mode="L").save(
                tmp_path / "labeled" / name / f"{i}.png")
    return tmp_path / "proj"


def store_snapshot(store) -> list[list[tuple]]:
    """Every row of a project store's labels, imports and queries: compare before and after a refused write."""
    return [list(store.db.execute(f"SELECT * FROM {table} ORDER BY 1")) for table in ("labels", "imports", "queries")]


def write_file(folder: Path, name: str, content: str | bytes) -> Path:
    """``content`` (text as UTF-8) written to ``folder/name``; its path."""
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def digits_project(tmp_path: Path, images: int = 150, labeled: int = 40) -> Path:
    """A labeling project of the first ``images`` of scikit-learn's digits as greyscale PNGs (``imgNNN.png``), the
    first ``labeled`` of them labeled by init."""
    import csv

    from PIL import Image
    from sklearn.datasets import load_digits

    from learnloss.labeling.workflow import init_project

    digits = load_digits()
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    for i in range(images):
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8), mode="L").save(folder / f"img{i:03d}.png")
        if i < labeled:
            rows.append((f"img{i:03d}.png", str(digits.target[i])))
    seed = tmp_path / "seed.csv"
    with open(seed, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])
    project = tmp_path / "project"
    init_project(project, images=folder, classes=[str(c) for c in range(10)], labels=seed)
    return project


def tapped_outputs(model: nn.Module, names: tuple[str, ...] | list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of each module named in ``names`` for one forward pass of ``model`` on ``x``."""
    modules = dict(model.named_modules())
    outs: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: outs.__setitem__(n, out)) for n in names]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outs


def tapped_shapes(model: nn.Module, names: tuple[str, ...] | list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of each named module's output for one forward pass without gradients."""
    with torch.no_grad():
        return {name: tuple(out.shape) for name, out in tapped_outputs(model, names, x).items()}
