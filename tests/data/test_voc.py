"""Pascal VOC: exact normalised boxes, classes, padding, difficult flags, splits, and each refusal's one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from learnloss.data import load_dataset
from learnloss.data.image_source import ImageSource
from learnloss.data.voc import AnnotatedDataset, load_voc, random_split
from learnloss.errors import DatasetFormatError, DatasetNotFoundError

# id -> (width, height, objects (name, xmin, ymin, xmax, ymax, difficult))
Objects = list[tuple[str, float, float, float, float, int]]
FILES: dict[str, tuple[int, int, Objects]] = {
    "a": (40, 20, [("dog", 1, 1, 40, 20, 0), ("cat", 11, 6, 20, 15, 1)]),
    "b": (30, 30, [("cat", 4, 7, 9, 30, 0)]),
    "c": (20, 40, [("bird", 1, 2, 1, 3, 0), ("dog", 2, 2, 19, 39, 0), ("dog", 5, 5, 6, 6, 0)]),
    "d": (16, 16, [("bird", 1, 1, 16, 16, 0)]),
    "e": (24, 12, [("cat", 3, 3, 12, 12, 0)]),
}


def _xml(image_id: str, width: int | None, height: int | None, objects: Objects, filename: str | None = None) -> str:
    size = "" if width is None else f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    parts = [f"<annotation><folder>VOC</folder><filename>{filename or image_id + '.jpg'}</filename>{size}"]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")  # fmt: skip
    return "".join(parts) + "</annotation>"


def _write(root: Path, files: dict[str, tuple[int, int, Objects]] = FILES, lists: dict[str, list[str]] | None = None,
           mode: str = "RGB") -> Path:  # fmt: skip
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i, (image_id, (width, height, objects)) in enumerate(files.items()):
        colour = (40 * i,) * (1 if mode == "L" else 3)
        Image.new(mode, (width, height), colour).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, width, height, objects))
    if lists is not None:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for name, ids in lists.items():
            (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def _one_line_error(root: Path, kind: type[Exception] = DatasetFormatError, **kwargs: object) -> str:
    with pytest.raises(kind) as info:
        load_voc(root, image_size=8, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_exact_normalised_boxes_classes_and_padding(tmp_path: Path) -> None:
    ds = load_voc(_write(tmp_path / "voc", lists={"train": ["a", "c", "d"], "val": ["b"]}), image_size=16)
    assert isinstance(ds, AnnotatedDataset) and ds.name == "voc" and ds.task == "detection"
    assert ds.classes == ["bird", "cat", "dog"] and ds.ids_train == ["a", "c", "d"] and ds.ids_test == ["b"]
    assert ds.y_train.dtype == torch.float32 and ds.y_train.shape == (3, 3, 5) and ds.y_test.shape == (1, 3, 5)
    pad = [-1.0, 0.0, 0.0, 0.0, 0.0]
    assert ds.y_train[0].tolist() == [[2, 0, 0, 1, 1], [1, 10 / 40, 5 / 20, 20 / 40, 15 / 20], pad]
    c = [[0, 0, 1 / 40, 1 / 20, 3 / 40], [2, 1 / 20, 1 / 40, 19 / 20, 39 / 40], [2, 4 / 20, 4 / 40, 6 / 20, 6 / 40]]
    assert torch.allclose(ds.y_train[1], torch.tensor(c))
    assert ds.y_train[2].tolist() == [[0, 0, 0, 1, 1], pad, pad]
    assert torch.allclose(ds.y_test[0], torch.tensor([[1, 3 / 30, 6 / 30, 9 / 30, 1], pad, pad]))
    assert ds.difficult_train is not None and ds.difficult_test is not None
    assert ds.difficult_train.tolist() == [[False, True, False], [False] * 3, [False] * 3]
    assert ds.difficult_test.tolist() == [[False] * 3]
    assert ds.x_train.shape == (3, 3, 16, 16) and ds.x_train.dtype == torch.uint8 and ds.x_test.shape == (1, 3, 16, 16)
    assert ds.augment.pad == 0 and not ds.augment.flip


def test_given_classes_fix_the_order(tmp_path: Path) -> None:
    ds = load_voc(_write(tmp_path / "voc"), image_size=8, classes=["dog", "cat", "bird", "horse"])
    assert ds.classes == ["dog", "cat", "bird", "horse"]
    rows = torch.cat([ds.y_train, ds.y_test])[..., 0]
    assert set(rows.unique().tolist()) == {-1.0, 0.0, 1.0, 2.0}


def test_split_lists(tmp_path: Path) -> None:
    lists = {"train": ["a", "b"], "val": ["c"], "trainval": ["a", "b", "c"], "test": ["d", "e"]}
    root = _write(tmp_path / "voc", lists=lists)
    ds = load_voc(root, image_size=8)  # test.txt present: trainval / test
    assert ds.ids_train == ["a", "b", "c"] and ds.ids_test == ["d", "e"]
    ds = load_voc(root, image_size=8, train="train", test="val")
    assert ds.ids_train == ["a", "b"] and ds.ids_test == ["c"]
    (root / "ImageSets" / "Main" / "test.txt").unlink()
    assert load_voc(root, image_size=8).ids_test == ["c"]  # VOC 2012: train / val


def test_without_lists_a_fixed_random_split(tmp_path: Path) -> None:
    ds = load_voc(_write(tmp_path / "voc"), image_size=8)
    train, test = random_split(5)
    ids = sorted(FILES)
    assert ds.ids_train == [ids[i] for i in train] and ds.ids_test == [ids[i] for i in test] and len(test) == 1
    assert load_voc(tmp_path / "voc", image_size=8).ids_test == ds.ids_test


def test_nested_folder_grey_images_and_lazy_reading(tmp_path: Path) -> None:
    _write(tmp_path / "VOCdevkit" / "VOC2007", mode="L", lists={"train": ["a", "b", "c"], "val": ["d", "e"]})
    eager = load_voc(tmp_path, image_size=12)
    assert eager.x_train.shape == (3, 1, 12, 12) and eager.in_channels == 1
    assert eager.x_train[1].unique().tolist() == [40]  # the second image's grey, resized
    lazy = load_voc(tmp_path / "VOCdevkit", image_size=12, lazy=True)
    assert isinstance(lazy.x_train, ImageSource) and torch.equal(lazy.x_train[0:3], eager.x_train)


def test_registered(tmp_path: Path) -> None:
    ds = load_dataset("pascal_voc", data_dir=_write(tmp_path / "voc"), download=False)
    assert ds.name == "voc" and ds.x_train.shape[2:] == (128, 128)
    with pytest.raises(DatasetNotFoundError, match="voc: no folder given"):
        load_dataset("voc")


def _replace(root: Path, image_id: str, xml: str) -> Path:
    (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    return root / "Annotations" / f"{image_id}.xml"


def test_box_outside_or_empty_and_unknown_class(tmp_path: Path) -> None:
    root = _write(tmp_path / "voc")
    path = _replace(root, "b", _xml("b", 30, 30, [("cat", 4, 7, 9, 30, 0), ("cat", 4, 7, 31, 30, 0)]))
    assert _one_line_error(root) == (
        f"{path}: object 2 ('cat'): box (xmin=4, ymin=7, xmax=31, ymax=30) reaches outside the 30x30 image (VOC "
        "corners run from 1 to the width and height); fix or remove the object")
    _replace(root, "b", _xml("b", 30, 30, [("cat", 0, 7, 9, 30, 0)]))
    assert "object 1 ('cat'): box (xmin=0," in _one_line_error(root)
    _replace(root, "b", _xml("b", 30, 30, [("cat", 9, 7, 4, 30, 0)]))
    assert _one_line_error(root) == (
        f"{path}: object 1 ('cat'): empty box (xmin=9, ymin=7, xmax=4, ymax=30); the corners need xmin <= xmax and "
        "ymin <= ymax: fix or remove the object")
    _replace(root, "b", _xml("b", 30, 30, [("cat", 4, 7, 9, 30, 0)]))
    _replace(root, "e", _xml("e", 24, 12, [("cat", 3, 3, 12, 12, 0), ("horse", 3, 3, 12, 12, 0)]))
    message = _one_line_error(root, classes=["bird", "cat", "dog"])
    assert message == (f"{root / 'Annotations' / 'e.xml'}: object 2 ('horse'): unknown class; give it one of the "
                       "classes (bird, cat, dog) or add it to them")


@pytest.mark.parametrize(
    "xml,expected",
    [("<annotation><filename>b.jpg</filename><object><name>cat</name></object></annotation>",
      "{path}: no <size> with <width> and <height>; add the image's size in pixels"),
     ("<annotation><filename>b.jpg</filename><size><width>30</width><height>0</height></size></annotation>",
      "{path}: <size><height> is '0', not a positive whole number of pixels; write the image's size"),
     ("<annotation><filename>b.jpg</filename><size><width>30</width>",
      "{path}: malformed XML (no element found, line 1, column 61); fix or replace the file"),
     ("<annotation><size><width>30</width><height>30</height></size><object><name>cat</name><bndbox>"
      "<xmin>1</xmin><ymin>x</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></object></annotation>",
      "{path}: object 1 ('cat'): <bndbox><ymin> is 'x', not a number; give the corner in pixels"),
     ("<annotation><size><width>30</width><height>30</height></size><object><name>cat</name></object></annotation>",
      "{path}: object 1 ('cat'): no <bndbox>; give xmin, ymin, xmax, ymax"),
     ("<annotation><size><width>30</width><height>30</height></size><object><name>cat</name><difficult>yes"
      "</difficult></object></annotation>", "{path}: object 1 ('cat'): <difficult> is 'yes'; write 0 or 1"),
     ("<annotation><filename>../b.jpg</filename></annotation>",
      "{path}: <filename> '../b.jpg' is not a plain file name in JPEGImages/; write the image's file name only"),
     ("<annotation><filename>gone.jpg</filename></annotation>",
      "{path}: its image {root}/JPEGImages/gone.jpg does not exist; put the image there or remove the annotation"),
     ("<voc/>", "{path}: the root element is <voc>, not <annotation>; is this a VOC annotation file?")],
)  # fmt: skip
def test_malformed_annotations_are_one_line_each(tmp_path: Path, xml: str, expected: str) -> None:
    root = _write(tmp_path / "voc")
    path = _replace(root, "b", xml)
    assert _one_line_error(root) == expected.format(path=path, root=root)


@pytest.mark.parametrize(
    "xml",
    ['<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
     "<annotation><filename>&lol2;</filename></annotation>",
     '<!DOCTYPE annotation SYSTEM "file:///etc/passwd"><annotation/>',
     "<!DOCTYPE annotation><annotation/>"],
)  # fmt: skip
def test_dtds_and_entities_are_refused(tmp_path: Path, xml: str) -> None:
    root = _write(tmp_path / "voc")
    path = _replace(root, "a", xml)
    message = _one_line_error(root)
    assert message.startswith(f"{path}: declares a <!DOCTYPE> or <!ENTITY> (line 1), refused because entities")


def test_an_image_of_another_size_than_declared(tmp_path: Path) -> None:
    root = _write(tmp_path / "voc")
    Image.new("RGB", (31, 30)).save(root / "JPEGImages" / "b.jpg")
    assert _one_line_error(root) == (
        f"{root / 'Annotations' / 'b.xml'}: declares {root / 'JPEGImages' / 'b.jpg'} as 30x30 pixels but the image "
        "is 31x30; correct the declared size or replace the image")


def test_a_missing_image_and_a_broken_image(tmp_path: Path) -> None:
    root = _write(tmp_path / "voc")
    (root / "JPEGImages" / "d.jpg").unlink()
    assert _one_line_error(root) == (f"{root / 'Annotations' / 'd.xml'}: its image {root / 'JPEGImages' / 'd.jpg'} "
                                     "does not exist; put the image there or remove the annotation")
    (root / "JPEGImages" / "d.jpg").write_bytes(b"not a jpeg")
    assert "d.jpg: cannot read the image" in _one_line_error(root)


def test_split_list_problems(tmp_path: Path) -> None:
    root = _write(tmp_path / "voc", lists={"train": ["a", "b", "zz"], "val": ["c"]})
    assert _one_line_error(root) == (
        f"{root / 'ImageSets' / 'Main' / 'train.txt'}: lists 'zz' but {root / 'Annotations' / 'zz.xml'} does not "
        "exist; add the annotation or remove the id from the list")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nc\n")
    assert _one_line_error(root).startswith("voc: 1 ids are in both ")
    (root / "ImageSets" / "Main" / "val.txt").unlink()
    assert _one_line_error(root) == (
        f"voc: split list {root / 'ImageSets' / 'Main' / 'val.txt'} does not exist; add it (one image id per line) "
        "or name existing lists with train=/test=")
    (root / "ImageSets" / "Main" / "val.txt").write_text("../a\n")
    assert "'../a' is not an image id" in _one_line_error(root)


def test_folders_that_are_not_voc(tmp_path: Path) -> None:
    assert _one_line_error(tmp_path / "nowhere", DatasetNotFoundError).startswith("voc: ")
    (tmp_path / "empty").mkdir()
    assert "holds no Annotations/ folder" in _one_line_error(tmp_path / "empty", DatasetNotFoundError)
    _write(tmp_path / "two" / "VOC2007")
    _write(tmp_path / "two" / "VOC2012")
    assert "holds several VOC folders" in _one_line_error(tmp_path / "two")
