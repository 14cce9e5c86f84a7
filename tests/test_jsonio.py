"""The one JSON writer: NaN/inf as null, numpy and path values, atomic writes."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

from learnloss.jsonio import dumps, to_jsonable, write_json


def _strict_loads(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"invalid JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Point:
    x: float
    tags: tuple[str, ...]


def test_non_finite_floats_become_null() -> None:
    obj = {"nan": math.nan, "inf": [math.inf, -math.inf], "np": np.float32("nan"), "ok": 0.5,
           "arr": np.array([1.0, np.nan, np.inf])}
    assert to_jsonable(obj) == {"nan": None, "inf": [None, None], "np": None, "ok": 0.5, "arr": [1.0, None, None]}
    text = dumps(obj)
    assert "NaN" not in text and "Infinity" not in text
    assert _strict_loads(text)["arr"] == [1.0, None, None]


def test_numpy_paths_tuples_dataclasses_and_keys() -> None:
    obj = {
        "i": np.int64(3), "f": np.float16(0.5), "b": np.bool_(False), "a": np.arange(4).reshape(2, 2),
        "t": (1, (2, 3)), "p": Path("a") / "b.png", "pp": PurePosixPath("/x/y"), "d": Point(math.nan, ("u",)),
        1: "int key", np.int32(2): "numpy key", "s": "ünïcode", "none": None, "bool": True,
    }
    converted = to_jsonable(obj)
    assert converted == {
        "i": 3, "f": 0.5, "b": False, "a": [[0, 1], [2, 3]], "t": [1, [2, 3]], "p": os.path.join("a", "b.png"),
        "pp": "/x/y", "d": {"x": None, "tags": ["u"]}, "1": "int key", "2": "numpy key", "s": "ünïcode",
        "none": None, "bool": True,
    }
    assert type(converted["i"]) is int and type(converted["f"]) is float and type(converted["b"]) is bool
    assert '"ünïcode"' in dumps(obj), "non-ASCII is kept, not escaped"
    assert dumps({"a": [1]}, indent=2) == '{\n  "a": [\n    1\n  ]\n}'


@pytest.mark.parametrize("bad", [{1, 2}, object(), b"bytes", complex(1, 2)])
def test_values_json_cannot_hold_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        dumps({"x": bad})


def test_a_circular_reference_is_refused(tmp_path: Path) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="circular"):
        to_jsonable(loop)
    with pytest.raises(TypeError, match="loop.json"):
        write_json(tmp_path / "loop.json", {"x": loop})
    assert os.listdir(tmp_path) == []


def test_write_json_indents_ends_with_newline_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json(path, {"v": 1, "x": math.inf})
    assert path.read_text(encoding="utf-8") == '{\n  "v": 1,\n  "x": null\n}\n'
    write_json(path, [np.float64(2.5)], indent=None)
    assert path.read_text(encoding="utf-8") == "[2.5]\n"
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_failing_serialisation_leaves_the_existing_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text('{"old": true}\n', encoding="utf-8")
    with pytest.raises(TypeError, match="out.json") as info:
        write_json(path, {"a": list(range(1000)), "z": object()})
    assert "cannot write" in str(info.value)
    assert path.read_text(encoding="utf-8") == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["out.json"], "no temporary file left behind"


def test_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_json(tmp_path / "missing" / "out.json", {})
