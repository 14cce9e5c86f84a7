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
        (["export", "PROJECT", "--out", "labels.xlsx"], "export format must be csv or json"),
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
