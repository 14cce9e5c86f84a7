"""Documentation is executed and complete: README examples run, every public object has a docstring."""

from __future__ import annotations

import doctest
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import learnloss

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", flags=re.S | re.M)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Example:
    """A ```python block of the README, the ```text block that shows its output, and the prose after that."""

    line: int
    code: str
    expected: str | None
    prose: str


def _examples() -> list[Example]:
    """Every ```python block, paired with the next fenced block when it is ```text (its output) and the prose up to
    the next fenced block or heading (where the example's claims are stated)."""
    text = README.read_text()
    fences = list(_FENCE.finditer(text))
    examples = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        after = fences[i + 1] if i + 1 < len(fences) else None
        adjacent = after is not None and "\n#" not in text[fence.end():after.start()]  # no heading between them
        shown = after if adjacent and after is not None and after.group(1) == "text" else None
        rest = fences[i + 1 + (shown is not None):]
        prose = text[(shown or fence).end():rest[0].start() if rest else len(text)].split("\n#", 1)[0]
        examples.append(Example(text.count("\n", 0, fence.start()) + 1, fence.group(2),
                                shown.group(2) if shown is not None else None, prose))
    return examples


def _shape(output: str) -> tuple[list[str], list[list[float]]]:
    """Each line of ``output`` with its decimals replaced by ``#`` (whole numbers kept), and the decimals of each."""
    lines = [line.rstrip() for line in output.strip("\n").splitlines()]
    decimals = [[float(n) for n in _NUMBER.findall(line) if "." in n] for line in lines]
    return [_NUMBER.sub(lambda m: "#" if "." in m.group() else m.group(), line) for line in lines], decimals


# --------------------------------------------------------------------------- what each example claims


@dataclass(frozen=True)
class Claim:
    """What the README says of an example's output (``states``: phrases of its prose) and its check of the decimals
    each output line holds; the check holds for the output shown in the README and for the output of every run."""

    marker: str  # a piece of the example's code that identifies it
    states: tuple[str, ...]
    check: Callable[[list[list[float]]], None]


def _attach(values: list[list[float]]) -> None:
    (pool_error,), (top_error,), (share,) = values
    assert pool_error < 0.15, f"the model errs on {pool_error} of the pool"
    assert top_error > pool_error, f"the 100 ranked first err less often ({top_error}) than the pool ({pool_error})"
    assert share > 0.55, f"the top-ranked half holds only {share} of the errors"


def _loop(values: list[list[float]]) -> None:
    assert len(values) == 4
    accuracy, ranking = values[-1]
    assert accuracy > 0.9, f"test accuracy {accuracy} at 400 labels"
    assert ranking > 0.55, f"final LPM ranking accuracy {ranking}"


def _spec(values: list[list[float]]) -> None:
    assert values[0] == [2.0]  # beta=2.0, the canonical spelling
    assert values[-1][0] > 0.95, f"test accuracy {values[-1][0]} at 300 labels"


def _ssl(values: list[list[float]]) -> None:
    (ranking,), _, (accuracy,) = values
    assert ranking > 0.55, f"ranking accuracy on the candidates {ranking}"
    assert accuracy > 0.85, f"test accuracy {accuracy} at 200 labels"


def _detector(values: list[list[float]]) -> None:
    (pool_loss,), (top_loss,), (ranking,) = values
    assert top_loss > pool_loss, f"the 100 ranked first lose {top_loss}, less than the pool's {pool_loss}"
    assert ranking > 0.5, f"LPM ranking accuracy {ranking} on the pool's pairs"


CLAIMS = (
    Claim('learnloss.attach(net, ["1", "3"]', ("fewer than 0.15", "more than 0.55"), _attach),
    Claim("ActiveLearningLoop(", ("above 0.9 at 400 labels", "above 0.55"), _loop),
    Claim('"stochastic(margin):beta=2"', ("above 0.95 at 300 labels",), _spec),
    Claim('"ssl-lpm"', ("above 0.55", "above 0.85 at 200 labels"), _ssl),
    Claim("class MyDetector", ("lose more than the pool does", "more than 0.5"), _detector),
)


def _claim(example: Example) -> Claim | None:
    return next((claim for claim in CLAIMS if claim.marker in example.code), None)


EXAMPLES = _examples()


def test_readme_examples_are_found_and_claims_match_them():
    assert len(EXAMPLES) >= 4
    for claim in CLAIMS:
        matching = [example.line for example in EXAMPLES if claim.marker in example.code]
        assert len(matching) == 1, f"the claim on {claim.marker!r} matches the examples at lines {matching}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"README.md:{example.line}" for example in EXAMPLES])
def test_readme_example_runs_alone_and_prints_what_it_shows(example: Example, tmp_path: Path):
    """Each example runs as it stands, alone, in a fresh process (one thread, an empty working folder) — so a reader
    can copy any one of them — and prints what the README shows: the same lines and words and whole numbers (label
    counts, sizes), and decimals (accuracies, which differ in the last bits between CPUs) within what the README
    says of them."""
    assert example.expected is not None, (
        f"the ```python block at README.md:{example.line} must be followed by a ```text block showing its output")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", example.code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"README.md:{example.line} failed:\n{result.stderr[-4000:]}"
    shown, shown_values = _shape(example.expected)
    printed, printed_values = _shape(result.stdout)
    assert printed == shown, (
        f"README.md:{example.line} printed\n{result.stdout}\nbut the README shows\n{example.expected}")
    claim = _claim(example)
    if claim is not None:
        for phrase in claim.states:
            assert phrase in " ".join(example.prose.split()), f"README.md:{example.line} no longer says {phrase!r}"
        claim.check(shown_values)  # the output shown in the README satisfies what the README says of it
        claim.check(printed_values)


def test_readme_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = next(line for line in README.read_text().splitlines() if "pytest" in line and "pip install" in line)
    assert test_command.strip() in ci


def test_docstring_examples_pass():
    import importlib

    result = doctest.testmod(importlib.import_module("learnloss.lpm.attach"), raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", sorted(learnloss.__all__))
def test_public_objects_have_docstrings(name):
    obj = getattr(learnloss, name)
    assert inspect.getdoc(obj), f"learnloss.{name} has no docstring"
    if inspect.isclass(obj):
        for method_name, method in vars(obj).items():
            if callable(method) and not method_name.startswith("_"):
                assert inspect.getdoc(getattr(obj, method_name)), f"learnloss.{name}.{method_name} has no docstring"
