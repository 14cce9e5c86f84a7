"""COCO JSON: exact boxes and keypoints, category mapping, crowd and extra figures, splits, and each refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from learnloss.data import load_dataset
from learnloss.data.coco import load_coco
from learnloss.data.limits import ResourceLimitError
from learnloss.data.voc import random_split
from learnloss.errors import DatasetFormatError, DatasetNotFoundError, UsageError

PAD = [-1.0, 0.0, 0.0, 0.0, 0.0]
NAMES = ["nose", "left_eye", "right_eye"]


def _images(folder: Path, sizes: dict[int, tuple[int, int]], mode: str = "RGB") -> list[dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for image_id, (width, height) in sizes.items():
        name = f"{image_id:012d}.png"
        Image.new(mode, (width, height), (image_id * 10,) * (1 if mode == "L" else 3)).save(folder / name)
        out.append({"id": image_id, "file_name": name, "width": width, "height": height})
    return out


def _detection(root: Path, split: str = "train2017") -> dict[str, Any]:
    """Images 1 (50x40), 2 (20x20), 3 (10x10, no objects); categories with ids out of order."""
    return {
        "images": _images(root / split, {1: (50, 40), 2: (20, 20), 3: (10, 10)}),
        "categories": [{"id": 3, "name": "zebra"}, {"id": 1, "name": "cat"}, {"id": 7, "name": "bus"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5, 10, 20, 15], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [0, 0, 50, 40], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [2.5, 4, 10, 16.5]},
            {"id": 14, "image_id": 2, "category_id": 1, "bbox": [3, 3, 0, 4]},
            {"id": 15, "image_id": 1, "category_id": 1, "bbox": [-0.5, 30, 50.5, 10.4]},
        ],
    }


def _keypoints(root: Path, split: str = "train2017") -> dict[str, Any]:
    """Image 1 (40x20) with two figures (one labeled keypoint, then two), image 2 with none labeled, image 3 with
    none at all, image 4 with one figure."""
    return {
        "images": _images(root / split, {1: (40, 20), 2: (10, 10), 3: (10, 10), 4: (16, 8)}),
        "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]},
                       {"id": 2, "name": "ball"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "keypoints": [4, 2, 2, 0, 0, 0, 0, 0, 0], "bbox": [0, 0, 9, 9]},
            {"id": 2, "image_id": 1, "category_id": 1, "keypoints": [10, 5, 2, 7, 7, 0, 20, 15, 1],
             "bbox": [0, 0, 4, 4]},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]},
            {"id": 4, "image_id": 2, "category_id": 1, "keypoints": [0] * 9, "bbox": [0, 0, 4, 4]},
            {"id": 5, "image_id": 4, "category_id": 1, "keypoints": [16, 8, 1, 0, 0, 0, 8, 4, 2], "bbox": [0, 0, 4, 4]},
            {"id": 6, "image_id": 4, "category_id": 1, "keypoints": [1, 1, 2] * 3, "iscrowd": 1},
        ],  # fmt: skip
    }


def _save(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _one_line_error(path: Path, kind: type[Exception] = DatasetFormatError, **kwargs: object) -> str:
    with pytest.raises(kind) as info:
        load_coco(path, image_size=8, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    return str(info.value)


def test_detection_boxes_classes_crowd_and_padding(tmp_path: Path) -> None:
    train = _save(tmp_path / "annotations" / "instances_train2017.json", _detection(tmp_path))
    _save(tmp_path / "annotations" / "instances_val2017.json", _detection(tmp_path, "val2017"))
    ds = load_coco(train, image_size=16)
    assert ds.name == "coco" and ds.task == "detection" and ds.classes == ["cat", "zebra", "bus"]
    assert ds.ids_train == ["1", "2", "3"] and ds.ids_test == ["1", "2", "3"]
    assert ds.y_train.shape == (3, 3, 5) and ds.y_train.dtype == torch.float32 and ds.y_test.shape == (3, 3, 5)
    expected = torch.tensor([
        [[1, 5 / 50, 10 / 40, 25 / 50, 25 / 40], [2, 0, 0, 1, 1], [0, 0, 30 / 40, 1, 40 / 40]],  # clipped: 1 px
        [[0, 2.5 / 20, 4 / 20, 12.5 / 20, 20 / 20], PAD, PAD],  # the empty box is skipped
        [PAD, PAD, PAD],  # an image without objects is kept
    ])  # fmt: skip
    assert torch.allclose(ds.y_train, expected) and torch.equal(ds.y_train, ds.y_test)
    assert ds.skipped == {"crowd": 2, "empty box": 2}  # across both files
    assert ds.x_train.shape == (3, 3, 16, 16) and ds.x_train.dtype == torch.uint8
    assert ds.x_test[1].unique().tolist() == [20]  # val2017/000000000002.png, beside the annotations folder


def test_without_a_val_file_a_fixed_random_split(tmp_path: Path) -> None:
    path = _save(tmp_path / "coco.json", _detection(tmp_path, "images"))  # images/ beside the file
    ds = load_coco(path, image_size=8)
    train, test = random_split(3)
    assert ds.ids_train == [str(i + 1) for i in train] and ds.ids_test == [str(i + 1) for i in test]


def test_given_folders_and_test_file(tmp_path: Path) -> None:
    train = _save(tmp_path / "a.json", _detection(tmp_path / "pictures"))
    test = _save(tmp_path / "b.json", _detection(tmp_path / "others"))
    ds = load_coco(train, images=tmp_path / "pictures" / "train2017", test_annotations=test,
                   test_images=tmp_path / "others" / "train2017", image_size=8)  # fmt: skip
    assert ds.ids_test == ["1", "2", "3"] and len(ds.x_test) == 3
    assert "is in none of" in _one_line_error(train, DatasetNotFoundError)


def test_keypoints_one_figure_per_image(tmp_path: Path) -> None:
    path = _save(tmp_path / "annotations" / "person_keypoints_val2017.json", _keypoints(tmp_path, "val2017"))
    ds = load_coco(path, image_size=8)
    assert ds.task == "keypoints" and ds.classes == NAMES
    assert sorted(ds.ids_train + ds.ids_test) == ["1", "4"]  # images 2 and 3 have no labeled keypoint
    rows = dict(zip(ds.ids_train + ds.ids_test, torch.cat([ds.y_train, ds.y_test])))
    assert rows["1"].tolist() == [[10 / 40, 5 / 20, 2], [0, 0, 0], [20 / 40, 15 / 20, 1]]  # the second figure: more
    assert rows["4"].tolist() == [[1, 1, 1], [0, 0, 0], [8 / 16, 4 / 8, 2]]
    assert ds.y_train.dtype == torch.float32 and ds.y_train.shape[1:] == (3, 3)
    assert ds.skipped == {"other figures": 1, "figures without labeled keypoints": 1, "crowd": 1,
                          "images without labeled keypoints": 2}  # fmt: skip
    boxes = load_coco(path, image_size=8, task="detection")
    assert boxes.task == "detection" and boxes.classes == ["person", "ball"]


def test_registered(tmp_path: Path) -> None:
    path = _save(tmp_path / "annotations" / "instances_train2017.json", _detection(tmp_path))
    ds = load_dataset("MS-COCO", data_dir=path, download=False)
    assert ds.name == "coco" and ds.x_train.shape[2:] == (128, 128)
    assert load_dataset("coco", data_dir=tmp_path).ids_train == ds.ids_train  # type: ignore[attr-defined]
    with pytest.raises(DatasetNotFoundError, match="coco: no annotation file given"):
        load_dataset("coco")


def _broken(tmp_path: Path, change: str) -> Path:
    data = _detection(tmp_path)
    if change == "unknown image":
        data["annotations"][0]["image_id"] = 99
    elif change == "unknown category":
        data["annotations"][1]["category_id"] = 2
    elif change == "duplicate image":
        data["images"].append(dict(data["images"][0]))
    elif change == "duplicate category":
        data["categories"].append({"id": 1, "name": "dog"})
    elif change == "outside":
        data["annotations"][0]["bbox"] = [40, 10, 12, 15]
    elif change == "bbox":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif change == "size":
        data["images"][1]["height"] = 0
    elif change == "file name":
        data["images"][1]["file_name"] = "../secret.png"
    elif change == "missing file":
        data["images"][1]["file_name"] = "gone.png"
    elif change == "wrong size":
        data["images"][1]["width"] = 21
    elif change == "crowd":
        data["annotations"][0]["iscrowd"] = 2
    return _save(tmp_path / "instances_train2017.json", data)


@pytest.mark.parametrize(
    "change,expected",
    [("unknown image", "{path}: annotation 10: 'image_id' 99 is not among the images; fix the id or add the image"),
     ("unknown category", "{path}: annotation 11: 'category_id' 2 is not among the categories; fix the id or add "
                          "the category"),
     ("duplicate image", "{path}: image 1: the id appears twice in 'images'; give each image its own id"),
     ("duplicate category", "{path}: category 1: the id appears twice in 'categories'; give each category its own "
                            "id"),
     ("outside", "{path}: annotation 10 (image 1): 'bbox' [40, 10, 12, 15] reaches outside the 50x40 image; fix or "
                 "remove the annotation"),
     ("bbox", "{path}: annotation 10 (image 1): 'bbox' is [1, 2, 3], not four numbers [x, y, width, height]; fix it"),
     ("size", "{path}: image 2: 'height' is 0, not a positive whole number of pixels; write the image's size"),
     ("file name", "{path}: image 2: 'file_name' '../secret.png' is not a relative path inside the images folder; "
                   "write the file's name"),
     ("missing file", "{path}: image 2: {folder}/gone.png does not exist; put the image there or remove it from the "
                      "file"),
     ("wrong size", "{path}: image 2: declares {folder}/000000000002.png as 21x20 pixels but the image is 20x20; "
                    "correct the declared size or replace the image"),
     ("crowd", "{path}: annotation 10: 'iscrowd' is 2; write 0 or 1")],
)  # fmt: skip
def test_refusals_are_one_line_naming_the_file_and_the_item(tmp_path: Path, change: str, expected: str) -> None:
    path = _broken(tmp_path, change)
    assert _one_line_error(path) == expected.format(path=path, folder=tmp_path / "train2017")


def test_keypoint_refusals(tmp_path: Path) -> None:
    data = _keypoints(tmp_path)
    data["annotations"][1]["keypoints"][8] = 3
    path = _save(tmp_path / "person_keypoints_train2017.json", data)
    assert _one_line_error(path) == (f"{path}: annotation 2 (image 1): keypoint 3 has visibility 3; write 0 (not "
                                     "labeled), 1 (occluded) or 2 (visible)")
    data["annotations"][1]["keypoints"][6:9] = [42, 15, 2]
    _save(path, data)
    assert _one_line_error(path) == (f"{path}: annotation 2 (image 1): keypoint 3 at (42, 15) lies outside the 40x20 "
                                     "image; fix it or mark it not labeled (v = 0)")
    data["annotations"][1]["keypoints"] = [1, 2, 2]
    _save(path, data)
    assert "'keypoints' must be 9 numbers" in _one_line_error(path)
    data["categories"][1]["keypoints"] = ["a"]
    _save(path, data)
    assert "keypoint targets need exactly one category with 'keypoints', found 'person', 'ball'" in _one_line_error(
        path, task="keypoints")


def test_malformed_and_oversized_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "instances_train2017.json"
    path.write_text('{"images": [')
    assert _one_line_error(path) == (f"{path}: malformed JSON (Expecting value, line 1, column 13); fix or replace "
                                     "the file")
    path.write_text('{"images": [], "annotations": [], "categories": [{"id": NaN, "name": "x"}]}')
    assert "not valid JSON (NaN is not a JSON number)" in _one_line_error(path)
    path.write_text("[]")
    assert "the top level is not a JSON object" in _one_line_error(path)
    path.write_text('{"images": []}')
    assert "no 'categories' list at the top level" in _one_line_error(path)
    _save(path, _detection(tmp_path))
    monkeypatch.setenv("LEARNLOSS_MAX_BYTES", "1000")
    assert "would take" in _one_line_error(path, ResourceLimitError)


def test_mismatched_val_file_and_bad_arguments(tmp_path: Path) -> None:
    train = _save(tmp_path / "instances_train2017.json", _detection(tmp_path))
    val = _detection(tmp_path, "val2017")
    val["categories"][0]["name"] = "horse"
    _save(tmp_path / "instances_val2017.json", val)
    assert _one_line_error(train).endswith("its categories differ from those of " + f"{train} (ids, names or "
                                           "keypoints); use files of one dataset")
    assert _one_line_error(train, UsageError, task="segmentation") == (
        "coco: unknown task 'segmentation'; choose one of: detection, keypoints")
    assert "coco: " in _one_line_error(tmp_path / "nothing.json", DatasetNotFoundError)
