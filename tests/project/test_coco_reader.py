"""One COCO reader (``learnloss.cocojson``) for the ``--dataset coco`` loader and a project's label import: the
files the loader refused used to be imported (two images sharing ``"id": 1`` — one annotation labeled both —,
two categories of one name, ``"image_id": true``). Through the real command line: the same one line from both,
and no store is created or changed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from annotation_support import CLASSES, box_images, coco_document
from tests_support import store_snapshot

from learnloss.cli.main import main
from learnloss.data.coco import load_coco
from learnloss.errors import DatasetFormatError
from learnloss.project.store import ProjectStore


def _shared_image_id(document: dict[str, Any]) -> str:
    document["images"][1]["id"] = document["images"][0]["id"]
    return "image 1: the id appears twice in 'images'; give each image its own id"


def _same_category_name(document: dict[str, Any]) -> str:
    document["categories"][1]["name"] = document["categories"][0]["name"]
    return f"two categories are named {CLASSES[0]!r}; give each category its own name"


def _same_name_other_normalisation(document: dict[str, Any]) -> str:
    document["categories"][0]["name"] = "caf\u00e9"
    document["categories"][1]["name"] = "cafe\u0301"  # the same name in NFD
    return "two categories are named 'cafe\u0301'; give each category its own name"


def _boolean_image_id(document: dict[str, Any]) -> str:
    document["annotations"][0]["image_id"] = True
    return "annotation 1: 'image_id' True is not among the images; fix the id or add the image"


ATTACKS = {"shared image id": _shared_image_id, "same category name": _same_category_name,
           "same name in NFD": _same_name_other_normalisation, "boolean image id": _boolean_image_id}


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    records = box_images(tmp_path / "data", n_train=6, n_test=2)
    return tmp_path / "data", coco_document(records, "detection", {r["path"] for r in records})


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_init_refuses_what_the_loader_refuses_and_creates_no_store(tmp_path, data, capsys, attack):
    root, document = data
    expected = ATTACKS[attack](document)
    labels = tmp_path / "coco.json"
    labels.write_text(json.dumps(document))
    project = tmp_path / "proj"
    capsys.readouterr()
    assert main(["init", str(project), "--images", str(root), "--task", "detection", "--classes", ",".join(CLASSES),
                 "--labels", str(labels), "--epochs", "1", "--image-size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert not (project / "learnloss.db").exists()
    # the loader reads the same file through the same reader: the same line, naming the file
    with pytest.raises(DatasetFormatError) as refused:
        load_coco(labels, images=root, image_size=8, task="detection")
    assert str(refused.value) == f"{labels}: {expected}"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_label_refuses_it_and_the_store_is_untouched(tmp_path, data, capsys, attack):
    root, document = data
    seed = copy.deepcopy(document)
    seed["annotations"] = seed["annotations"][:2]
    (tmp_path / "seed.json").write_text(json.dumps(seed))
    project = tmp_path / "proj"
    assert main(["init", str(project), "--images", str(root), "--task", "detection", "--classes", ",".join(CLASSES),
                 "--labels", str(tmp_path / "seed.json"), "--epochs", "1", "--image-size", "32"]) == 0
    expected = ATTACKS[attack](document)
    (tmp_path / "coco.json").write_text(json.dumps(document))
    with ProjectStore(project) as store:
        before = store_snapshot(store)
    capsys.readouterr()
    assert main(["label", str(project), str(tmp_path / "coco.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and expected in err, err
    with ProjectStore(project) as store:
        assert store_snapshot(store) == before


def test_an_intact_file_still_labels_every_image_once(tmp_path, data, capsys):
    root, document = data
    labels = tmp_path / "coco.json"
    labels.write_text(json.dumps(document))
    project = tmp_path / "proj"
    assert main(["init", str(project), "--images", str(root), "--task", "detection", "--classes", ",".join(CLASSES),
                 "--labels", str(labels), "--epochs", "1", "--image-size", "32"]) == 0
    with ProjectStore(project) as store:
        assert len(store.current_labels()) == len(document["images"])
        assert all(len(label["boxes"]) == 1 for label in store.current_labels().values())
