"""Evaluating and predicting with a trained run folder or labeling project (runs/evaluate.py)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from learnloss.data.digits import load_digits
from learnloss.errors import UsageError
from learnloss.jsonio import write_json
from learnloss.labeling.workflow import init_project, project_dataset, project_spec, project_status, query_project
from learnloss.project.checkpoint import CheckpointError
from learnloss.project.store import ProjectStore
from learnloss.runs.evaluate import ProjectReader, evaluate_checkpoint, load_trained, predict_images
from learnloss.runs.experiment import run_experiment
from learnloss.runs.presets import resolve_spec

TINY = {"epochs": 2, "initial": 30, "query": 20, "cycles": 2, "subset": 200, "device": "cpu"}
FAST = {"epochs": 2, "milestones": [], "stop_grad_epoch": 1, "image_size": 8, "batch_size": 8}
READER = ProjectReader(project_spec, project_dataset)


def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def _tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_mtime_ns, p.stat().st_size)
                  for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny simulated run on digits, with its results.json as ``learnloss run`` writes it."""
    out = tmp_path_factory.mktemp("sim") / "run"
    results = run_experiment(resolve_spec("quick", TINY), out=out)
    write_json(out / "results.json", results)
    return out


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """40 digits test images saved as 8x8 greyscale PNGs, one folder per class."""
    root = tmp_path_factory.mktemp("digits") / "images"
    data = load_digits()
    for i in range(40):
        path = root / data.classes[int(data.y_test[i])] / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.x_test[i, 0].numpy(), mode="L").save(path)
    return root


# --------------------------------------------------------------------------------------------- simulation


def test_evaluate_reproduces_the_last_cycle_of_results_json(run):
    recorded = json.loads((run / "results.json").read_text())["cycles"][-1]
    result = evaluate_checkpoint(run, device="cpu")
    assert result["kind"] == "simulation" and result["cycle"] == recorded["cycle"] == 1
    assert result["n_labeled"] == 50 and result["test"]["size"] == 450
    assert result["metrics"]["accuracy"] == recorded["test_accuracy"]
    assert result["lpm_ranking_accuracy"] == recorded["lpm_ranking_accuracy"]
    assert result["lpm_spearman"] == recorded["lpm_spearman"]


def test_load_trained_rebuilds_the_stored_specification(run):
    trained = load_trained(run, "cpu")
    assert trained.kind == "simulation" and trained.spec.device == "cpu"
    assert trained.spec.comparable() == resolve_spec("quick", TINY).comparable()
    assert trained.loop.view.learning_loss is not None


def test_labeled_images_and_predictions_agree(run, digit_images, tmp_path):
    by_folder = evaluate_checkpoint(run, images=digit_images, device="cpu")
    assert by_folder["test"] == {"source": str(digit_images), "size": 40}
    manifest = digit_images.parent / "list.csv"  # paths are relative to the manifest's folder
    rows = [(p.relative_to(digit_images.parent).as_posix(), p.parent.name) for p in sorted(digit_images.rglob("*.png"))]
    manifest.write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label in rows))
    by_manifest = evaluate_checkpoint(run, manifest=manifest, device="cpu")
    assert by_manifest["metrics"] == by_folder["metrics"]

    before = _tree(digit_images)
    assert predict_images(run, digit_images, tmp_path / "p.csv", device="cpu") == 40
    assert _tree(digit_images) == before, "predict wrote under the image folder"
    predicted = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert [r["path"] for r in predicted] == sorted(r["path"] for r in predicted)
    correct = sum(r["prediction"] == r["path"].split("/")[0] for r in predicted)
    assert correct / 40 == by_folder["metrics"]["accuracy"]
    assert all(math.isfinite(float(r["predicted_loss"])) and 0 < float(r["confidence"]) <= 1 for r in predicted)


def test_unknown_class_and_bad_layouts_are_refused(run, digit_images, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(digit_images, bad)
    (bad / "zebra").mkdir()
    Image.new("L", (8, 8)).save(bad / "zebra" / "z.png")
    with pytest.raises(UsageError, match="class.*the run does not know: 'zebra'"):
        evaluate_checkpoint(run, images=bad, device="cpu")
    Image.new("L", (8, 8)).save(bad / "loose.png")
    with pytest.raises(UsageError, match="one folder per class"):
        evaluate_checkpoint(run, images=bad, device="cpu")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nbad/zebra/z.png,zebra\n")
    with pytest.raises(UsageError, match="'zebra'"):
        evaluate_checkpoint(run, manifest=manifest, device="cpu")
    manifest.write_text("path,label\n../outside.png,1\n")
    with pytest.raises(UsageError, match="climbs out"):
        evaluate_checkpoint(run, manifest=manifest, device="cpu")


def test_a_damaged_or_missing_checkpoint_is_an_error(run, digit_images, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    checkpoint = copy / "checkpoints" / "cycle-1.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        evaluate_checkpoint(copy, device="cpu")
    checkpoint.unlink()
    with pytest.raises(CheckpointError, match="cannot be read"):
        predict_images(copy, digit_images, tmp_path / "out.csv", device="cpu")


def test_predict_checks_its_arguments_before_loading(run, digit_images, tmp_path):
    with pytest.raises(UsageError, match=r"must end in \.csv or \.json"):
        predict_images(run, digit_images, tmp_path / "p.xlsx")
    with pytest.raises(UsageError, match="lies under --images"):
        predict_images(run, digit_images, digit_images / "p.csv")
    with pytest.raises(UsageError, match="is not a folder"):
        predict_images(run, tmp_path / "nowhere", tmp_path / "p.csv")
    with pytest.raises(UsageError, match="no run or labeling project"):
        evaluate_checkpoint(tmp_path / "nowhere")


def test_predict_refuses_a_run_whose_data_are_not_images(tmp_path, digit_images):
    spec = resolve_spec("quick", {**TINY, "dataset": "diabetes", "model": "mlp", "initial": 20, "query": 10,
                                  "subset": 50, "strategy": "random"})
    run_experiment(spec, out=tmp_path / "reg")
    result = evaluate_checkpoint(tmp_path / "reg", device="cpu")
    assert set(result["metrics"]) == {"r2", "rmse"} and result["lpm_ranking_accuracy"] is None
    with pytest.raises(UsageError, match="not greyscale or RGB images"):
        predict_images(tmp_path / "reg", digit_images, tmp_path / "p.csv", device="cpu")
    with pytest.raises(UsageError, match="task is regression"):
        evaluate_checkpoint(tmp_path / "reg", images=digit_images, device="cpu")


# -------------------------------------------------------------------------------------------- labeling


@pytest.fixture
def project(tmp_path):
    """A labeling project: 24 pool images (6 labeled) and 8 labeled test images; one query trained cycle 0."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    root.mkdir()
    lines = []
    for i in range(32):
        label = "dark" if i % 2 else "light"
        pixels = (rng.integers(0, 60, (10, 10)) + (40 if label == "dark" else 180)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"{i}.png")
        split = "test" if i >= 24 else "pool"
        lines.append(f"{i}.png,{label if i < 6 or split == 'test' else ''},{split}\n")
    (root / "manifest.csv").write_text("path,label,split\n" + "".join(lines))
    init_project(tmp_path / "proj", manifest=root / "manifest.csv", classes=["dark", "light"], settings=FAST)
    with pytest.raises(UsageError, match="no trained cycle yet"):
        evaluate_checkpoint(tmp_path / "proj", device="cpu", project=READER)
    query_project(tmp_path / "proj", k=4, device="cpu")
    return tmp_path / "proj"


def test_project_evaluate_and_predict(project, tmp_path):
    result = evaluate_checkpoint(project, device="cpu", project=READER)
    recorded = project_status(project)["cycles"][-1]
    assert result["kind"] == "labeling" and result["cycle"] == 0 and result["test"]["size"] == 8
    assert result["metrics"]["accuracy"] == recorded["test_accuracy"]
    assert result["lpm_ranking_accuracy"] == recorded["lpm_ranking_accuracy"]

    new = tmp_path / "new"
    (new / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 14), (200, 10, 10)).save(new / "sub" / "red.jpg")  # another size and colour mode
    Image.new("L", (8, 8), 30).save(new / "=evil().png")
    Image.new("L", (8, 8), 220).save(new / "b.png")
    before = _tree(new)
    assert predict_images(project, new, tmp_path / "p.csv", device="cpu", project=READER) == 3
    assert predict_images(project, new, tmp_path / "p.json", device="cpu", project=READER) == 3
    assert _tree(new) == before
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert [r["path"] for r in rows] == ["'=evil().png", "b.png", "sub/red.jpg"]
    document = _strict_json((tmp_path / "p.json").read_text())
    assert document["classes"] == ["dark", "light"] and document["count"] == 3
    items = document["predictions"]
    assert [item["path"] for item in items] == ["=evil().png", "b.png", "sub/red.jpg"]
    for row, item in zip(rows, items):
        assert item["prediction"] in ("dark", "light") and row["prediction"] == item["prediction"]
        assert math.isfinite(item["predicted_loss"]) and float(row["predicted_loss"]) == pytest.approx(
            item["predicted_loss"])
        assert 0.5 <= item["confidence"] <= 1


def test_project_needs_a_reader_and_refuses_data_dir(project, tmp_path):
    with pytest.raises(UsageError, match="labeling project: pass project=ProjectReader"):
        evaluate_checkpoint(project, device="cpu")
    with pytest.raises(UsageError, match="--data-dir is for a simulated run"):
        evaluate_checkpoint(project, device="cpu", data_dir=tmp_path, project=READER)


def test_project_without_test_items_asks_for_labeled_images(project, tmp_path):
    with ProjectStore(project) as store, store.transaction() as db:
        db.execute("UPDATE labels SET current = 0 WHERE item_id IN (SELECT id FROM items WHERE split = 'test')")
    with pytest.raises(UsageError, match="no labeled test items.*--images DIR"):
        evaluate_checkpoint(project, device="cpu", project=READER)
    labeled = tmp_path / "labeled"
    for name, grey in (("dark", 60), ("light", 200)):
        (labeled / name).mkdir(parents=True)
        Image.new("L", (10, 10), grey).save(labeled / name / "x.png")
    result = evaluate_checkpoint(project, images=labeled, device="cpu", project=READER)
    assert result["test"]["size"] == 2 and 0 <= result["metrics"]["accuracy"] <= 1
