"""The layers of ARCHITECTURE.md hold: no module imports from a higher layer or from a sibling package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "learnloss"


def _layers() -> dict[str, int]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "ARCHITECTURE.md has no ```layers block"
    layers = {}
    for line in block.group(1).splitlines():
        level, name = line.split()[:2]
        layers[name] = int(level)
    return layers


LAYERS = _layers()


def _unit(module: str) -> str | None:
    """The layer unit of a dotted learnloss module: its package (``learnloss.lpm.taps`` -> ``lpm``) or top-level
    module (``learnloss.errors`` -> ``errors``); None for the package's own ``__init__``/``__main__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in ("__init__", "__main__") else None


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] + (["__init__"] if len(parts) == 2 else [])
        out.append((".".join(parts), path))
    return out


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "learnloss":
            found += [(node.lineno, f"learnloss.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{module}: use absolute imports (line {node.lineno})")
    return [(line, name) for line, name in found if name == "learnloss" or name.startswith("learnloss.")]


def test_every_package_has_a_layer():
    units = {_unit(module) for module, _ in _modules()} - {None}
    assert units <= LAYERS.keys(), f"add these to ARCHITECTURE.md's layers: {sorted(units - LAYERS.keys())}"


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_no_import_climbs(module, path):
    unit = _unit(module)
    if unit is None:
        return  # the public API re-exports from every layer
    problems = []
    for line, imported in _imports(path, module):
        target = _unit(imported)
        if target is None:
            problems.append(f"line {line}: imports the top-level package {imported}")
        elif target != unit and LAYERS[target] >= LAYERS[unit]:
            problems.append(f"line {line}: {unit} (layer {LAYERS[unit]}) imports {imported} (layer {LAYERS[target]})")
    assert not problems, f"{module}: " + "; ".join(problems)


def test_the_checker_catches_a_climbing_import(tmp_path):
    """The rule itself: a training module importing the loop would be a climb."""
    assert LAYERS["active"] > LAYERS["training"]
    assert LAYERS["inference"] < LAYERS["strategies"] and LAYERS["inference"] < LAYERS["training"]
    fake = tmp_path / "fake.py"
    fake.write_text("from learnloss.active.loop import ActiveLearningLoop\n", encoding="utf-8")
    [(line, imported)] = _imports(fake, "learnloss.training.fake")
    assert LAYERS[_unit(imported)] >= LAYERS["training"]
