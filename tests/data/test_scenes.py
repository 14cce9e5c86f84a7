"""Detection scenes: exact boxes, seeded generation, the cache, glyph splits and the target format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learnloss.data import load_dataset
from learnloss.data import scenes as scenes_module
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.data.idx import FASHION_MNIST_CLASSES
from learnloss.data.cache import cache_folder
from learnloss.data.scenes import (
    PAD_ROW, SceneSettings, generate_scenes, make_scenes, pad_objects, place_glyph, render_scene,
)  # fmt: skip
from learnloss.errors import DatasetNotFoundError, UsageError

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="the Fashion-MNIST files of the Debian package are not installed in /usr/share/datasets/fashion-mnist",
)


def _block(size: int, rows: tuple[int, int], cols: tuple[int, int], value: int = 200) -> np.ndarray:
    glyph = np.zeros((size, size), dtype=np.uint8)
    glyph[rows[0] : rows[1], cols[0] : cols[1]] = value
    return glyph


def _digits(tmp_path: Path, **kwargs: object) -> Dataset:
    settings = {"source": "digits", "n_train": 30, "n_test": 10, "data_dir": tmp_path, **kwargs}
    return make_scenes(**settings)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- exact boxes


def test_place_glyph_returns_the_tight_box_of_the_placed_pixels() -> None:
    canvas = np.zeros((20, 20), dtype=np.uint8)
    glyph = _block(8, rows=(2, 6), cols=(1, 7))  # rows 2..5, columns 1..6
    assert place_glyph(canvas, glyph, top=5, left=7) == (8, 7, 14, 11)
    assert (canvas[7:11, 8:14] == 200).all() and int(canvas.sum()) == 200 * 24


def test_place_glyph_clips_to_the_canvas_and_composites_by_maximum() -> None:
    canvas = np.zeros((20, 20), dtype=np.uint8)
    canvas[0:3, 16:20] = 250
    canvas[0, 19] = 0
    # the glyph's rows 2..5 land on -1..2, its columns 1..6 on 16..21: visible rows 0..2, columns 16..19
    assert place_glyph(canvas, _block(8, (2, 6), (1, 7), value=100), top=-3, left=15) == (16, 0, 20, 3)
    assert canvas[0, 19] == 100 and (canvas[0:3, 16:19] == 250).all()


def test_place_glyph_draws_nothing_for_a_degenerate_visible_box() -> None:
    canvas = np.zeros((20, 20), dtype=np.uint8)
    glyph = _block(8, (2, 6), (1, 7))
    assert place_glyph(canvas, glyph, top=0, left=18) is None  # one visible column
    assert place_glyph(canvas, glyph, top=30, left=0) is None  # wholly outside
    assert place_glyph(canvas, np.zeros((8, 8), dtype=np.uint8), top=0, left=0) is None  # blank
    assert not canvas.any()


def test_render_scene_gives_the_exact_normalised_box_of_a_known_glyph() -> None:
    settings = SceneSettings(source="digits", n_train=1, n_test=0, canvas=16, objects=(1, 1), scale=(16, 16))
    glyph = _block(16, rows=(3, 10), cols=(4, 13))  # a full-canvas glyph can only be placed at (0, 0)
    image, rows = render_scene(np.random.default_rng(0), glyph[None], np.array([3]), settings)
    assert rows.dtype == np.float32 and rows.tolist() == [[3.0, 4 / 16, 3 / 16, 13 / 16, 10 / 16]]
    assert np.array_equal(image, glyph)


def test_a_resized_glyph_keeps_its_tight_box() -> None:
    settings = SceneSettings(source="digits", n_train=1, n_test=0, canvas=32, objects=(1, 1), scale=(12, 12))
    glyph = np.full((8, 8), 255, dtype=np.uint8)  # a constant stays constant when resized: the box is 12 x 12
    image, rows = render_scene(np.random.default_rng(5), glyph[None], np.array([0]), settings)
    _, x0, y0, x1, y1 = (rows[0] * np.array([1, 32, 32, 32, 32])).tolist()
    assert (x1 - x0, y1 - y0) == (12, 12)
    assert (image[int(y0) : int(y1), int(x0) : int(x1)] == 255).all() and int((image > 0).sum()) == 144


# --------------------------------------------------------------------------- the targets


def test_targets_are_normalised_tight_boxes_with_padding_after_the_objects(tmp_path: Path) -> None:
    ds = _digits(tmp_path, n_train=60, n_test=20)
    assert ds.name == "digit-scenes" and ds.task == "detection" and ds.classes == [str(d) for d in range(10)]
    assert ds.augment == AugmentSpec() and ds.x_train.dtype == torch.uint8 and ds.x_train.shape == (60, 1, 64, 64)
    assert ds.y_train.dtype == torch.float32 and ds.y_train.shape[2] == 5
    assert ds.y_test.shape[1:] == ds.y_train.shape[1:]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        real = y[:, :, 0] >= 0
        counts = real.sum(dim=1)
        assert counts.min() >= 1 and counts.max() <= 4
        assert torch.equal(real, torch.arange(y.shape[1])[None, :] < counts[:, None])  # objects first, then padding
        assert (y[~real] == torch.tensor(PAD_ROW)).all()
        boxes = y[real][:, 1:]
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
        classes = y[real][:, 0]
        assert torch.equal(classes, classes.round()) and classes.min() >= 0 and classes.max() <= 9
        for image, rows in zip(x[:, 0], y):
            for row in rows[rows[:, 0] >= 0]:
                x0, y0, x1, y1 = (int(v) for v in (row[1:] * 64).round())
                region = image[y0:y1, x0:x1]  # each edge of a tight box touches a drawn pixel
                assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
    most = max(int((y[:, :, 0] >= 0).sum(dim=1).max()) for y in (ds.y_train, ds.y_test))
    assert ds.y_train.shape[1] == most  # M: the most objects of any scene


def test_a_single_object_box_is_the_tight_box_of_the_whole_scene(tmp_path: Path) -> None:
    ds = _digits(tmp_path, n_train=20, n_test=0, objects=(1, 1))
    assert ds.y_train.shape == (20, 1, 5) and ds.x_test.shape == (0, 1, 64, 64)
    for image, (_, *box) in zip(ds.x_train[:, 0].numpy(), ds.y_train[:, 0].tolist()):
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        assert [v * 64 for v in box] == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def test_pad_objects() -> None:
    out = pad_objects([np.array([[2, 0.1, 0.2, 0.3, 0.4]], dtype=np.float32), np.zeros((0, 5), dtype=np.float32)])
    assert out.shape == (2, 1, 5) and out.dtype == np.float32
    assert out[1, 0].tolist() == list(PAD_ROW) and np.allclose(out[0, 0], [2, 0.1, 0.2, 0.3, 0.4])
    assert pad_objects([], None).shape == (0, 1, 5) and pad_objects([np.zeros((0, 5))], 3).shape == (1, 3, 5)
    with pytest.raises(ValueError):
        pad_objects([np.zeros((2, 5))], 1)


def test_test_scenes_use_only_test_glyphs() -> None:
    settings = SceneSettings(source="digits", n_train=40, n_test=40, canvas=32, objects=(1, 3), scale=(8, 16))
    train = np.stack([_block(8, (1, 7), (2, 6), value=100)] * 5)
    test = np.stack([_block(8, (1, 7), (2, 6), value=255)] * 3)
    arrays = generate_scenes(settings, train, np.zeros(5, dtype=np.int64), test, np.ones(3, dtype=np.int64))
    assert arrays["x_train"].max() == 100 and arrays["x_test"].max() == 255
    assert set(np.unique(arrays["y_train"][:, :, 0])) <= {-1.0, 0.0}
    assert set(np.unique(arrays["y_test"][:, :, 0])) <= {-1.0, 1.0}


# --------------------------------------------------------------------------- seeds and the cache


def test_same_seed_gives_identical_scenes_and_another_seed_others(tmp_path: Path) -> None:
    a, b = _digits(tmp_path / "a"), _digits(tmp_path / "b")  # generated twice, in separate caches
    other = _digits(tmp_path / "c", seed=1)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert not torch.equal(a.x_train, other.x_train)
    more_tests = _digits(tmp_path / "d", n_test=12)  # the training split does not depend on n_test
    assert torch.equal(a.x_train, more_tests.x_train) and torch.equal(a.x_test, more_tests.x_test[:10])


def test_the_second_call_loads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _digits(tmp_path)
    files = list(tmp_path.iterdir())
    settings = SceneSettings(source="digits", n_train=30, n_test=10)
    assert files == [settings.cache_file(tmp_path)] and files[0].name.startswith("digit-scenes-")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated again although cached")

    monkeypatch.setattr(scenes_module, "generate_scenes", refuse)
    second = _digits(tmp_path)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other arrays"])
def test_a_damaged_cache_is_generated_again(tmp_path: Path, damage: str) -> None:
    first = _digits(tmp_path)
    path = SceneSettings(source="digits", n_train=30, n_test=10).cache_file(tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        np.savez(path, x_train=np.zeros(3))
    again = _digits(tmp_path)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_train, again.y_train)
    with np.load(path) as archive:  # written again, intact
        assert np.array_equal(archive["x_train"], first.x_train.numpy())


def test_every_parameter_changes_the_cache_file_name(tmp_path: Path) -> None:
    base = SceneSettings()
    variants = [SceneSettings(source="digits"), SceneSettings(n_train=10), SceneSettings(n_test=10),
                SceneSettings(canvas=32), SceneSettings(objects=(1, 3)), SceneSettings(scale=(12, 30)),
                SceneSettings(seed=1)]  # fmt: skip
    names = {s.cache_file(tmp_path).name for s in [base, *variants]}
    assert len(names) == 1 + len(variants)
    from_lists = SceneSettings(objects=[1, 4], scale=[12, 32])  # type: ignore[arg-type]
    assert from_lists.cache_file(tmp_path) == base.cache_file(tmp_path)


def test_cache_folder_default_and_environment(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_folder("scenes") == isolated / ".cache" / "learnloss" / "scenes"
    monkeypatch.setenv("LEARNLOSS_CACHE", str(isolated / "elsewhere"))
    assert cache_folder("scenes") == isolated / "elsewhere" / "scenes"
    assert cache_folder("scenes", isolated / "given") == isolated / "given"
    make_scenes("digits", n_train=3, n_test=1)
    assert len(list((isolated / "elsewhere" / "scenes").glob("digit-scenes-*.npz"))) == 1


def test_an_unwritable_cache_still_gives_the_scenes(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    ds = _digits(blocker / "cache", n_train=5, n_test=2)
    assert ds.x_train.shape == (5, 1, 64, 64)


# --------------------------------------------------------------------------- settings and sources


@pytest.mark.parametrize(
    "kwargs,message",
    [({"source": "mnist"}, "scenes: unknown glyph source 'mnist'; choose one of: digits, fashion-mnist"),
     ({"n_train": 0}, "scenes: n_train must be a whole number of at least 1, got 0"),
     ({"objects": (3, 1)}, "scenes: objects (3, 1) has its low end above its high end; give (low, high)"),
     ({"objects": (0, 0)}, "scenes: objects (0, 0) must allow at least one object per scene, e.g. (1, 4)"),
     ({"scale": (1, 8)}, "scenes: scale (1, 8) must draw glyphs of at least 2 pixels"),
     ({"scale": 12}, "scenes: scale must be two whole numbers (low, high), got 12")],
)  # fmt: skip
def test_bad_settings_are_one_line_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        SceneSettings(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_missing_fashion_files_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist: files not found"):
        make_scenes("fashion-mnist", n_train=2, n_test=1, data_dir=tmp_path, download=False)
    assert not list(tmp_path.glob("*.npz"))


def test_registered_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[SceneSettings] = []

    def tiny(settings: SceneSettings, *glyphs: np.ndarray) -> dict[str, np.ndarray]:
        """A few blank scenes in place of the default 5,000 (drawing them would slow the suite)."""
        calls.append(settings)
        empty = [np.zeros((0, 5), dtype=np.float32)] * 3
        x = np.zeros((3, 1, settings.canvas, settings.canvas), dtype=np.uint8)
        return {"x_train": x, "y_train": pad_objects(empty), "x_test": x, "y_test": pad_objects(empty)}

    monkeypatch.setattr(scenes_module, "generate_scenes", tiny)
    ds = load_dataset("Digit_Scenes", data_dir=tmp_path, download=False)
    assert ds.name == "digit-scenes" and ds.task == "detection" and ds.classes == [str(d) for d in range(10)]
    assert calls == [SceneSettings(source="digits", n_train=4000, n_test=1000, canvas=64, objects=(1, 4),
                                   scale=(12, 32), seed=0)]  # fmt: skip
    with pytest.raises(DatasetNotFoundError):  # the Fashion-MNIST files are nowhere here
        load_dataset("fmnist_scenes", data_dir=tmp_path, download=False)


@needs_fashion
def test_fashion_scenes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNLOSS_DATA", str(FASHION))
    ds = make_scenes(n_train=20, n_test=5, data_dir=tmp_path)
    assert ds.name == "scenes" and ds.classes == FASHION_MNIST_CLASSES and ds.x_train.shape == (20, 1, 64, 64)
    widths = (ds.y_train[..., 3] - ds.y_train[..., 1])[ds.y_train[..., 0] >= 0] * 64
    assert widths.max() <= 32 and widths.min() >= 2
    monkeypatch.delenv("LEARNLOSS_DATA")  # cached now: the source files are not needed again
    again = make_scenes(n_train=20, n_test=5, data_dir=tmp_path)
    assert torch.equal(ds.x_test, again.x_test)
