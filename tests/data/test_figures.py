"""Keypoint figures: visibility rules, left and right, the target format, seeds and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learnloss.data import load_dataset
from learnloss.data import figures as figures_module
from learnloss.data.dataset import AugmentSpec
from learnloss.data.figures import (
    FLIP_PAIRS, KEYPOINTS, SKELETON, Figure, FigureSettings, keypoint_targets, make_figures, render_figure,
)  # fmt: skip
from learnloss.errors import UsageError

K = {name: i for i, name in enumerate(KEYPOINTS)}


def _figures(count: int, seed: int = 0, **kwargs: object) -> list[Figure]:
    settings = FigureSettings(n_train=1, n_test=0, **kwargs)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    return [render_figure(rng, settings) for _ in range(count)]


def test_keypoint_targets_apply_the_visibility_rules() -> None:
    occluded = np.zeros((64, 64), dtype=bool)
    occluded[6, 5] = True  # row 6, column 5
    points = np.array([[-3.0, 10.0], [10.0, 64.0], [5.5, 6.5], [20.25, 30.75], [63.9, 0.0]])
    rows = keypoint_targets(points, occluded, 64)
    assert rows.dtype == np.float32
    assert rows.tolist() == [[0, 0, 0], [0, 0, 0], [5.5 / 64, 6.5 / 64, 1], [20.25 / 64, 30.75 / 64, 2],
                             [np.float32(63.9 / 64), 0, 2]]  # fmt: skip


def test_rendered_visibility_matches_the_canvas_and_the_occluders() -> None:
    counts = np.zeros(3, dtype=int)
    for figure in _figures(150):
        rows = keypoint_targets(figure.points, figure.occluded, 64)
        inside = ((figure.points >= 0) & (figure.points < 64)).all(axis=1)
        assert np.array_equal(rows[:, 2] == 0, ~inside) and (rows[~inside, :2] == 0).all()
        cols, lines = (figure.points[inside] // 1).astype(int).T
        assert np.array_equal(rows[inside, 2] == 1, figure.occluded[lines, cols])
        visible = rows[:, 2] == 2  # a visible keypoint lies on the figure's bright strokes
        vis_cols, vis_rows = (figure.points[visible] // 1).astype(int).T
        on_strokes = figure.image[vis_rows, vis_cols]
        assert (on_strokes >= 100).all() and (on_strokes.mean() >= 140 or not visible.any())
        counts += np.bincount(rows[:, 2].astype(int), minlength=3)
    share = counts / counts.sum()
    assert 0.005 < share[0] < 0.2 and 0.03 < share[1] < 0.4 and share[2] > 0.5, share


def test_left_is_the_figures_own_left() -> None:
    for figure in _figures(100, rotation=0.0):  # upright, facing the viewer: its left is on the image's right
        p = figure.points
        assert p[K["left_shoulder"], 0] > p[K["right_shoulder"], 0] and p[K["left_hip"], 0] > p[K["right_hip"], 0]
        assert p[K["head"], 1] < p[K["neck"], 1] < p[K["left_hip"], 1]
    for figure in _figures(100, rotation=180.0):  # turned any way, never mirrored
        p = figure.points
        across = p[K["left_shoulder"]] - p[K["right_shoulder"]]
        up = p[K["neck"]] - (p[K["left_hip"]] + p[K["right_hip"]]) / 2
        assert across[0] * up[1] - across[1] * up[0] < 0


def test_skeleton_and_flip_pairs() -> None:
    assert len(KEYPOINTS) == len(set(KEYPOINTS)) == 14
    reached, frontier = {0}, [0]
    while frontier:  # the skeleton connects every keypoint
        node = frontier.pop()
        for a, b in SKELETON:
            for near in ((b,) if a == node else (a,) if b == node else ()):
                if near not in reached:
                    reached.add(near)
                    frontier.append(near)
    assert reached == set(range(len(KEYPOINTS)))
    for left, right in FLIP_PAIRS:
        assert KEYPOINTS[left].replace("left_", "right_") == KEYPOINTS[right]


def test_dataset_shapes_and_targets(tmp_path: Path) -> None:
    ds = make_figures(n_train=40, n_test=10, data_dir=tmp_path)
    assert ds.name == "figures" and ds.task == "keypoints" and ds.classes == KEYPOINTS and ds.augment == AugmentSpec()
    assert ds.x_train.shape == (40, 1, 64, 64) and ds.x_train.dtype == torch.uint8 and ds.x_test.shape[0] == 10
    assert ds.y_train.shape == (40, 14, 3) and ds.y_train.dtype == torch.float32 and ds.y_test.shape == (10, 14, 3)
    for y in (ds.y_train, ds.y_test):
        v = y[..., 2]
        assert set(v.unique().tolist()) <= {0.0, 1.0, 2.0}
        assert (y[v == 0] == 0).all() and (y[v > 0][:, :2] >= 0).all() and (y[v > 0][:, :2] < 1).all()


def test_same_seed_identical_other_seed_different(tmp_path: Path) -> None:
    a = make_figures(n_train=8, n_test=4, data_dir=tmp_path / "a")
    b = make_figures(n_train=8, n_test=4, data_dir=tmp_path / "b")
    c = make_figures(n_train=8, n_test=4, seed=1, data_dir=tmp_path / "c")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, key), getattr(b, key))
        assert not torch.equal(getattr(a, key), getattr(c, key))
    assert not torch.equal(a.x_train[:4], a.x_test)  # each split has its own generator


def test_the_cache_is_loaded_regenerated_and_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_figures(n_train=6, n_test=2, data_dir=tmp_path)
    path = FigureSettings(n_train=6, n_test=2).cache_file(tmp_path)
    assert list(tmp_path.iterdir()) == [path] and path.name.startswith("figures-")
    path.write_bytes(path.read_bytes()[:100])  # damaged: generated again
    second = make_figures(n_train=6, n_test=2, data_dir=tmp_path)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)

    def refuse(*args: object) -> None:
        raise AssertionError("generated again although cached")

    monkeypatch.setattr(figures_module, "generate_figures", refuse)
    third = make_figures(n_train=6, n_test=2, data_dir=tmp_path)
    assert torch.equal(first.x_test, third.x_test)
    variants = [FigureSettings(n_train=5), FigureSettings(n_test=5), FigureSettings(canvas=32),
                FigureSettings(height=(0.5, 0.9)), FigureSettings(rotation=10), FigureSettings(occlusion=0.1),
                FigureSettings(seed=3)]  # fmt: skip
    names = {s.cache_file(tmp_path).name for s in [FigureSettings(), *variants]}
    assert len(names) == 1 + len(variants)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"n_test": -1}, "figures: n_test must be a whole number of at least 0, got -1"),
     ({"height": (0.9, 0.5)}, "figures: height (0.9, 0.5) must satisfy 0.0 < low <= high <= 2.0"),
     ({"rotation": 200}, "figures: rotation must be a number from 0.0 to 180.0, got 200"),
     ({"occlusion": "half"}, "figures: occlusion must be a number from 0.0 to 1.0, got 'half'")],
)  # fmt: skip
def test_bad_settings_are_one_line_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        FigureSettings(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[FigureSettings] = []

    def tiny(settings: FigureSettings) -> dict[str, np.ndarray]:
        """A few blank figures in place of the default 5,000 (drawing them would slow the suite)."""
        calls.append(settings)
        x, y = np.zeros((3, 1, 64, 64), dtype=np.uint8), np.zeros((3, len(KEYPOINTS), 3), dtype=np.float32)
        return {"x_train": x, "y_train": y, "x_test": x, "y_test": y}

    monkeypatch.setattr(figures_module, "generate_figures", tiny)
    ds = load_dataset("Stick_Figures", data_dir=tmp_path, download=False)
    assert ds.name == "figures" and ds.task == "keypoints" and ds.classes == KEYPOINTS
    assert calls == [FigureSettings(n_train=4000, n_test=1000, canvas=64, height=(0.45, 0.9), rotation=30.0,
                                    occlusion=0.5, seed=0)]  # fmt: skip
