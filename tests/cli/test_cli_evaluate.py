"""``learnloss evaluate`` and ``learnloss predict`` from the command line: output, exit codes, one-line errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
from PIL import Image

from learnloss.cli.main import main
from tests_support import queried_grey_project
from learnloss.jsonio import write_json
from learnloss.runs.experiment import run_experiment
from learnloss.runs.presets import resolve_spec


def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-sim") / "run"
    spec = resolve_spec("quick", {"epochs": 2, "initial": 30, "query": 20, "cycles": 2, "subset": 200, "device": "cpu"})
    write_json(out / "results.json", run_experiment(spec, out=out))  # as learnloss run writes it
    return out


@pytest.fixture
def project(tmp_path, capsys):
    """A project of 30 grey 8x8 images, classes a and b, 6 labeled, no test items; one query trained cycle 0."""
    project = queried_grey_project(tmp_path)
    capsys.readouterr()
    return project


def test_evaluate_a_run_prints_its_recorded_accuracy(run, capsys):
    recorded = json.loads((run / "results.json").read_text())["cycles"][-1]
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {recorded['test_accuracy']:.4f} on 450 samples" in out
    assert f"LPM ranking accuracy {recorded['lpm_ranking_accuracy']:.4f}" in out
    assert main(["evaluate", str(run), "--device", "cpu", "--json"]) == 0
    result = _strict_json(capsys.readouterr().out)
    assert result["metrics"]["accuracy"] == recorded["test_accuracy"] and result["cycle"] == 1


def test_evaluate_and_predict_a_project(project, tmp_path, capsys):
    labeled = tmp_path / "labeled"
    assert main(["evaluate", str(project), "--images", str(labeled), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "(labeling): cycle 0, 6 labels" in out and " on 6 samples" in out and "LPM ranking accuracy" in out
    for name in ("p.csv", "p.json"):
        assert main(["predict", str(project), "--images", str(labeled), "--out", str(tmp_path / name)]) == 0
        assert f"wrote 6 predictions to {tmp_path / name}" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    items = _strict_json((tmp_path / "p.json").read_text())["predictions"]
    assert [r["path"] for r in rows] == [i["path"] for i in items] == [f"{c}/{i}.png" for c in "ab" for i in range(3)]
    assert all(i["prediction"] in ("a", "b") and math.isfinite(i["predicted_loss"]) for i in items)


@pytest.mark.parametrize(
    ("args", "fragment", "code"),
    [
        (["evaluate", "NOWHERE"], "holds no run or labeling project", 2),
        (["predict", "NOWHERE", "--images", "LABELED", "--out", "p.csv"], "holds no run or labeling project", 2),
        (["evaluate", "PROJECT"], "no labeled test items", 2),
        (["evaluate", "PROJECT", "--images", "ZEBRA"], "the run does not know: 'zebra'", 2),
        (["predict", "PROJECT", "--images", "LABELED", "--out", "p.xlsx"], "--out must end in .csv or .json", 2),
        (["predict", "PROJECT", "--images", "LABELED", "--out", "LABELED/p.csv"], "lies under --images", 2),
        (["evaluate", "PROJECT", "--images", "LABELED", "--data-dir", "LABELED"], "--data-dir is for a simulated", 2),
        (["evaluate", "DAMAGED", "--images", "LABELED"], "does not match the checksum", 1),
    ],
)
def test_bad_input_is_one_line_and_exits_non_zero(project, tmp_path, capsys, args, fragment, code):
    zebra = tmp_path / "zebra"
    (zebra / "zebra").mkdir(parents=True)
    Image.new("L", (8, 8)).save(zebra / "zebra" / "z.png")
    if "DAMAGED" in args:
        (checkpoint,) = (project / "checkpoints").glob("*.pt")
        checkpoint.write_bytes(checkpoint.read_bytes()[:-10])
    replace = {"PROJECT": str(project), "DAMAGED": str(project), "NOWHERE": str(tmp_path / "nowhere"),
               "LABELED": str(tmp_path / "labeled"), "ZEBRA": str(zebra), "p.csv": str(tmp_path / "p.csv"),
               "p.xlsx": str(tmp_path / "p.xlsx"), "LABELED/p.csv": str(tmp_path / "labeled" / "p.csv")}
    assert main([replace.get(a, a) for a in args]) == code
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("learnloss: error:") and err.count("\n") == 1 and fragment in err
    assert "Traceback" not in err and captured.out == ""
    assert not (tmp_path / "labeled" / "p.csv").exists() and not (tmp_path / "p.xlsx").exists()
