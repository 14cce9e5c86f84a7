"""A labeling project's query selects exactly what it selected before the run specification and the one loop.

The expected picks were made by learnloss at commit 527d0bb (the labeling workflow's own stand-in loop) on the
images and labels this test writes: 150 of scikit-learn's digits as PNGs, 40 labeled, ``query --k 10`` with the
project's default strategy, then the 10 queried labeled and ``query --k 10 --strategy margin``. Floating point
differs in the last bits between CPUs (kernel dispatch), so the pin holds on one machine and its versions; on
another it may differ in order, and the README says so.
"""

from __future__ import annotations

import csv
import json

import pytest
from sklearn.datasets import load_digits

from learnloss.labeling.workflow import query_project
from learnloss.project.importer import import_labels
from learnloss.project.store import ProjectStore
from tests_support import digits_project

FIRST = ["img133.png", "img050.png", "img043.png", "img110.png", "img111.png", "img103.png", "img120.png",
         "img125.png", "img068.png", "img054.png"]
FIRST_SCORES = [0.27505, 0.197355, 0.15955, 0.119518, 0.118552, 0.10054, 0.092621, 0.060819, 0.047263, 0.036777]
SECOND_MARGIN = ["img049.png", "img071.png", "img058.png", "img124.png", "img097.png", "img044.png", "img143.png",
                 "img066.png", "img064.png", "img118.png"]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _project(tmp_path, digits):
    return digits_project(tmp_path)


def test_query_selects_what_it_selected_before(tmp_path, digits):
    project = _project(tmp_path, digits)
    outcome = query_project(project, 10, device="cpu")
    assert [item.path for item in outcome.items] == FIRST
    assert [round(item.score, 6) for item in outcome.items] == pytest.approx(FIRST_SCORES, abs=2e-6)
    answers = tmp_path / "round1.csv"
    with open(answers, "w", newline="") as handle:
        csv.writer(handle).writerows(
            [("path", "label"), *[(path, str(digits.target[int(path[3:6])])) for path in FIRST]])
    with ProjectStore(project) as store:
        import_labels(store, answers)
    second = query_project(project, 10, strategy="margin", device="cpu")
    assert second.cycle == 1 and [item.path for item in second.items] == SECOND_MARGIN
    written = json.loads((project / "exports" / "query-1.json").read_text())
    assert [item["path"] for item in written["items"]] == SECOND_MARGIN
