"""A labeling project's query is reproducible on one machine and still selects what it selected before the run
specification and the one loop.

Why the pin is an overlap, not a list: a query trains the model on 40 labels before it scores, and training
amplifies the last-bit differences between CPUs (kernel dispatch) and thread counts into visibly different scores —
measured on one Intel Xeon, the first query's top score was 0.411 with 2 threads and 0.463 with 1, and the pin made at
commit 527d0bb on another CPU differs from both from its 4th item on. Its head is stable: the first ten picks shared
9 of 10 items with the pin on both thread counts and on an Intel Xeon @ 2.60 GHz without AVX512-BF16. A strategy that
picks at random shares 10 · 10 / 110 ≈ 0.9 of the 110 unlabeled items with the pin on average, and one that ranks the
other way round shares none, so requiring 7 of 10 still fails for any change that breaks the default strategy, on any
CPU. What holds exactly is reproducibility on one machine: the same project queried twice in one process selects the
same items with the same scores (same machine, same thread count, same computation — bit-identical).

The second round (``--strategy margin`` after labeling the first ten) compounds two trainings and is not pinned
across machines; its contract is checked instead.
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

#: The first ten picks of ``query --k 10`` with the project's default strategy, made at commit 527d0bb.
FIRST = ["img133.png", "img050.png", "img043.png", "img110.png", "img111.png", "img103.png", "img120.png",
         "img125.png", "img068.png", "img054.png"]
#: How many of :data:`FIRST` a query must select on any CPU (see the module docstring).
AGREEING = 7


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _label(tmp_path, project, digits, paths):
    answers = tmp_path / "round1.csv"
    with open(answers, "w", newline="") as handle:
        csv.writer(handle).writerows(
            [("path", "label"), *[(path, str(digits.target[int(path[3:6])])) for path in paths]])
    with ProjectStore(project) as store:
        import_labels(store, answers)


def test_query_is_reproducible_and_agrees_with_the_pin(tmp_path, digits):
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    project = digits_project(tmp_path / "a")
    outcome = query_project(project, 10, device="cpu")
    picked = [item.path for item in outcome.items]
    shared = set(picked) & set(FIRST)
    assert len(shared) >= AGREEING, f"{picked} shares only {len(shared)} of 10 with the pinned {FIRST}"
    scores = [item.score for item in outcome.items]
    assert scores == sorted(scores, reverse=True)  # the highest predicted losses first

    again = query_project(digits_project(tmp_path / "b"), 10, device="cpu")
    assert [item.path for item in again.items] == picked
    assert [item.score for item in again.items] == scores  # same machine, same threads: bit-identical

    _label(tmp_path, project, digits, picked)
    second = query_project(project, 10, strategy="margin", device="cpu")
    chosen = [item.path for item in second.items]
    assert second.cycle == 1 and len(set(chosen)) == 10 and not set(chosen) & set(picked)
    assert not {path for path in chosen if int(path[3:6]) < 40}  # never an item labeled at init
    written = json.loads((project / "exports" / "query-1.json").read_text())
    assert [item["path"] for item in written["items"]] == chosen
