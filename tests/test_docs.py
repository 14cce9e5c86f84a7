"""Documentation is executed and complete: README examples run, every public object has a docstring."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

import learnloss

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run():
    blocks = _python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:  # later blocks reuse earlier imports, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["to_label"].shape == (10,)
    assert len(namespace["loop"].pool.labeled_indices) == 300


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
