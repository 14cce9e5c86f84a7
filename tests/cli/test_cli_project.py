"""The labeling commands from the command line: output, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from learnloss.cli.main import main
from tests_support import init_grey_project


@pytest.fixture
def project(tmp_path, capsys):
    code, _ = init_grey_project(tmp_path)
    assert code == 0
    assert "30 pool and 0 test images, 6 labeled" in capsys.readouterr().out
    return tmp_path / "proj"


def test_init_query_label_status_export(project, tmp_path, capsys):
    assert main(["query", str(project), "--k", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "cycle 0: trained; queried 4 items" in out and "query-0.labelstudio.json" in out
    batch = json.loads((project / "exports" / "query-0.json").read_text())
    labels = tmp_path / "answers.json"
    labels.write_text(json.dumps([{"id": item["id"], "label": "a"} for item in batch["items"]]))
    assert main(["label", str(project), str(labels)]) == 0
    assert "answers.json: 4 added, 0 relabeled, 0 already stored" in capsys.readouterr().out
    assert main(["label", str(project), str(labels)]) == 0
    assert "0 added, 0 relabeled, 4 already stored" in capsys.readouterr().out
    assert main(["status", str(project)]) == 0
    out = capsys.readouterr().out
    assert "labeled 10 (0 relabels), 2 imports, 1 cycles" in out and "cycle 0 (queried): 6 labels" in out
    assert main(["export", str(project), "--out", str(tmp_path / "all.csv")]) == 0
    assert "wrote 10 labels" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["label", "PROJECT", "MISSING.csv"], "cannot read the label file"),
        (["label", "PROJECT", "BAD.csv"], "1 problem, nothing was imported: row 2: unknown class 'c'"),
        (["query", "NOWHERE", "--k", "3"], "is not a learnloss project"),
        (["init", "PROJECT", "--images", "NOWHERE"], "already exists"),
        (["export", "PROJECT", "--out", "labels.xlsx"],
         "export format must be one of csv, json, coco, labelstudio, got xlsx"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project, tmp_path, capsys, args, fragment):
    (tmp_path / "BAD.csv").write_text("path,label\n7.png,c\n")
    replace = {"PROJECT": str(project), "NOWHERE": str(tmp_path / "nowhere"), "MISSING.csv": str(tmp_path / "m.csv"),
               "BAD.csv": str(tmp_path / "BAD.csv"), "labels.xlsx": str(tmp_path / "labels.xlsx")}
    capsys.readouterr()
    assert main([replace.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("learnloss: error:") and fragment in err and "Traceback" not in err


def test_a_filled_in_batch_is_never_overwritten_by_a_re_export(project, capsys):
    assert main(["query", str(project), "--k", "4", "--quiet"]) == 0
    exports = project / "exports"
    untouched = (exports / "query-0.json").read_bytes()
    assert main(["query", str(project), "--k", "4", "--quiet"]) == 0  # nothing changed: re-exported in place
    out = capsys.readouterr().out
    assert "kept" not in out and "note" not in out and not list(exports.glob("*.reexport-*"))
    assert (exports / "query-0.json").read_bytes() == untouched

    csv_path = exports / "query-0.csv"
    rows = csv_path.read_text().splitlines()
    filled = "\n".join([rows[0]] + [row.replace(",,", ",a,", 1) for row in rows[1:]]) + "\n"
    csv_path.write_text(filled)  # a labeler fills in the label column, and has not imported it yet
    assert main(["query", str(project), "--k", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert csv_path.read_text() == filled  # the labels are still there
    assert (exports / "query-0.reexport-1.csv").is_file() and "query-0.reexport-1.csv" in out
    assert f"kept {csv_path}" in out and f"learnloss label {project} {csv_path}" in out
    assert "--k 6 is not used: the open batch of cycle 0 was queried with --k 4" in out
    assert main(["label", str(project), str(csv_path)]) == 0
    assert "4 added" in capsys.readouterr().out


# ------------------------------------------------------------------------------- projects of boxes and keypoints


@pytest.fixture(scope="module")
def detection_project(tmp_path_factory):
    """``learnloss init --task detection`` with COCO labels, and one query."""
    from annotation_support import CLASSES, box_images, seed_paths, write_coco

    base = tmp_path_factory.mktemp("detection")
    records = box_images(base / "data")
    coco = write_coco(base / "seed.json", records, "detection", seed_paths(records))
    project = base / "proj"
    assert main(["init", str(project), "--images", str(base / "data"), "--task", "detection", "--classes",
                 ",".join(CLASSES), "--labels", str(coco), "--epochs", "1", "--image-size", "32"]) == 0
    assert main(["query", str(project), "--k", "3", "--quiet", "--device", "cpu"]) == 0
    return project, records


def test_init_of_a_detection_project_without_classes_is_one_line(tmp_path, capsys):
    from annotation_support import box_images

    box_images(tmp_path / "data", n_train=2, n_test=1)
    assert main(["init", str(tmp_path / "proj"), "--images", str(tmp_path / "data"), "--task", "detection"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("learnloss: error: a detection project needs its object classes: give them with "
                                   "--classes")
    assert not (tmp_path / "proj").exists()


def test_a_skeleton_edge_without_a_dash_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["init", str(tmp_path / "proj"), "--images", str(tmp_path), "--task", "keypoints", "--keypoints",
              "head,neck", "--skeleton", "head"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument --skeleton: a skeleton edge is two keypoint names joined by '-', got 'head'" in err
    assert "Traceback" not in err and not (tmp_path / "proj").exists()


def test_status_of_a_detection_project_names_its_task_and_metrics(detection_project, capsys):
    project, _ = detection_project
    capsys.readouterr()
    assert main(["status", str(project)]) == 0
    out = capsys.readouterr().out
    assert f"{project} (images in " in out and "; detection; classes: cat, dog" in out
    (cycle,) = [line for line in out.splitlines() if line.strip().startswith("cycle 0")]
    assert "cycle 0 (queried): 8 labels, test map50 " in cycle and ", test map " in cycle
    assert "accuracy" not in cycle.replace("LPM ranking accuracy", "")
    assert main(["status", str(project), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["task"] == "detection" and {"test_map50", "test_map"} <= set(status["cycles"][0])
    assert "test_accuracy" not in status["cycles"][0]


def test_export_format_coco_writes_coco_json(detection_project, tmp_path, capsys):
    project, records = detection_project
    out = tmp_path / "labels.json"
    assert main(["export", str(project), "--out", str(out), "--format", "coco"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 16 labels to {out}"
    document = json.load(out.open())
    assert len(document["images"]) == 16 and len(document["annotations"]) == 16
    assert [c["name"] for c in document["categories"]] == ["cat", "dog"]
    by_name = {image["file_name"]: image for image in document["images"]}
    first = records[0]
    (annotation,) = [a for a in document["annotations"] if a["image_id"] == by_name[first["path"]]["id"]]
    assert annotation["bbox"] == first["bbox"] and by_name[first["path"]]["width"] == 64
