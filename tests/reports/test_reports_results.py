"""results.json: atomic writing, NaN as null, validated loading, environment info."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from learnloss.errors import UsageError
from learnloss.reports import (
    ResultsFormatError,
    ResultsNotFoundError,
    environment_info,
    load_results,
    metric_label,
    primary_metric,
    validate_results,
    write_json_atomic,
)
from learnloss.jsonio import write_json


class NotSerialisable:
    pass


def test_write_json_atomic_roundtrip_and_conversions(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json_atomic(path, {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(3), "d": (1, 2),
                             "e": tmp_path, "f": np.bool_(True)})
    assert json.loads(path.read_text()) == {"a": 3, "b": 0.5, "c": [0, 1, 2], "d": [1, 2], "e": str(tmp_path),
                                            "f": True}
    assert os.listdir(tmp_path) == ["out.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_json_atomic_writes_nan_and_inf_as_null(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json_atomic(path, {"x": math.nan, "y": [math.inf, -math.inf, 1.0], "z": np.float64("nan")})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": None, "y": [None, None, 1.0], "z": None}


def test_write_json_atomic_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"old": true}\n')
    # the first keys serialise fine, so the failure happens midway through writing the temporary file
    bad: dict[str, Any] = {"a": list(range(1000)), "b": "x" * 10_000, "z": NotSerialisable()}
    with pytest.raises(TypeError, match="results.json"):
        write_json_atomic(path, bad)
    assert path.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["results.json"]


def test_write_json_atomic_replaces_existing(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json_atomic(path, {"v": 1})
    write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert os.listdir(tmp_path) == ["results.json"]


def test_load_results_from_dir_and_file(tmp_path: Path, make_results: Any) -> None:
    results = make_results(ranking=[0.6, math.nan, None])
    write_json_atomic(tmp_path / "results.json", results)
    loaded = load_results(tmp_path)
    assert loaded["cycles"][1]["lpm_ranking_accuracy"] is None
    assert loaded["config"]["strategy"] == "random"
    assert load_results(tmp_path / "results.json") == loaded


def _write_raw(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("config"), "'config' is missing"),
        (lambda r: r.pop("aubc"), "'aubc' is missing"),
        (lambda r: r.__setitem__("cycles", {}), "'cycles' must be a JSON array"),
        (lambda r: r["config"].pop("protocol"), "'config.protocol' is missing"),
        (lambda r: r["config"].__setitem__("seed", "0"), "'config.seed' must be an int"),
        (lambda r: r["cycles"][1].pop("test_accuracy"), r"'cycles\[1\].test_accuracy' is missing"),
        (lambda r: r["cycles"][0].__setitem__("n_labeled", 1.5), r"'cycles\[0\].n_labeled' must be int"),
        (lambda r: r["cycles"][2].__setitem__("selected", [1, "2"]), r"'cycles\[2\].selected' must be list of int"),
        (lambda r: r["cycles"][0].__setitem__("lpm_spearman", "high"), r"'cycles\[0\].lpm_spearman'"),
        (lambda r: r["cycles"][2].__setitem__("n_labeled", 1000), r"'cycles\[2\].n_labeled' must be larger"),
        (lambda r: r.__setitem__("aubc", "0.7"), "'aubc' must be a number or null"),
    ],
)
def test_load_results_names_file_and_field(tmp_path: Path, make_results: Any, mutate: Any, field: str) -> None:
    results = make_results()
    mutate(results)
    path = _write_raw(tmp_path, results)
    with pytest.raises(ResultsFormatError, match=field) as info:
        load_results(tmp_path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, UsageError)


def test_load_results_invalid_json_and_missing(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"config": ')
    with pytest.raises(ResultsFormatError, match="invalid JSON at line 1"):
        load_results(tmp_path)
    with pytest.raises(ResultsNotFoundError, match="no results file"):
        load_results(tmp_path / "nowhere")
    with pytest.raises(ResultsFormatError, match="top level"):
        load_results(_write_raw(tmp_path, [1, 2]))


def test_write_json_atomic_is_the_package_writer() -> None:
    import learnloss.reports.results as results_module

    assert not hasattr(results_module, "_jsonable")
    assert results_module.write_json is write_json


def test_primary_metric_defaults_to_test_accuracy(make_results: Any) -> None:
    assert primary_metric(make_results()) == "test_accuracy"
    assert primary_metric(make_results(metric="test_r2")) == "test_r2"
    assert metric_label("test_accuracy") == "test accuracy" and metric_label("test_accuracy", short=True) == "test acc"
    assert metric_label("test_r2") == "test r2" == metric_label("test_r2", short=True)


def test_validate_results_requires_the_primary_metric_on_every_cycle(tmp_path: Path, make_results: Any) -> None:
    results = make_results(metric="test_r2")
    results["cycles"][0]["test_r2"] = None  # undefined: allowed
    assert "test_accuracy" not in results["cycles"][1]
    write_json_atomic(tmp_path / "results.json", results)
    assert load_results(tmp_path)["cycles"][0]["test_r2"] is None
    results["cycles"][2].pop("test_r2")
    with pytest.raises(ResultsFormatError, match=r"'cycles\[2\].test_r2' is missing"):
        validate_results(results)
    results = make_results(metric="test_r2")
    results["cycles"][1]["test_r2"] = "high"
    with pytest.raises(ResultsFormatError, match=r"'cycles\[1\].test_r2' must be number or null"):
        validate_results(results)
    for bad in ("r2", "test_", 3):
        with pytest.raises(ResultsFormatError, match="'primary_metric' must name a cycle key"):
            validate_results(make_results(metric=bad))


def test_validate_results_accepts_empty_cycles(make_results: Any) -> None:
    results = make_results(accuracies=(), n_labeled=())
    assert validate_results(results) is results


def test_environment_info_cpu() -> None:
    import torch

    info = environment_info("cpu")
    for key in ("python", "platform", "torch", "numpy", "sklearn", "device", "device_name", "cpu_count",
                "torch_threads"):
        assert key in info
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    json.dumps(info)
    with pytest.raises(UsageError, match="invalid device"):
        environment_info("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            environment_info("cuda")
