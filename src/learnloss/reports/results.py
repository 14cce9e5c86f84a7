"""The ``results.json`` file of one active-learning run: schema, atomic writing, validated loading.

A run writes ``DIR/results.json``::

    {
      "config":         {...every resolved setting; at least "strategy", "dataset", "seed", "protocol"...},
      "environment":    {...see environment_info()...},
      "primary_metric": "test_accuracy",
      "cycles": [
        {"cycle": int, "n_labeled": int, "test_accuracy": float | null,
         "lpm_ranking_accuracy": float | null, "lpm_spearman": float | null,
         "train_seconds": float, "query_seconds": float, "selected": [int, ...]},
        ...
      ],
      "aubc": float | null
    }

A cycle carries ``test_<metric>`` for every metric of the run's task (classification: ``test_accuracy``; a
regression task: ``test_r2`` and ``test_rmse``). ``primary_metric`` names the cycle key of the learning curve
(AUBC, final value, plots, comparisons); a file without it is read as ``"test_accuracy"`` (files written before
tasks named their metrics). ``lpm_ranking_accuracy`` is the ranking accuracy of Yoo & Kweon, "Learning Loss for
Active Learning", CVPR 2019 (see :func:`learnloss.metrics.ranking_accuracy`); ``aubc`` the area under the budget
curve of Zhan et al. 2021 (see :func:`learnloss.metrics.aubc`); both are ``null`` when undefined.
Non-finite floats are always written as ``null`` so the file stays valid JSON (:mod:`learnloss.jsonio`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.atomic import atomic_write
from learnloss.errors import UsageError
from learnloss.jsonio import write_json

__all__ = [
    "CYCLE_FIELDS",
    "DEFAULT_PRIMARY_METRIC",
    "REQUIRED_CONFIG_FIELDS",
    "RESULTS_FILENAME",
    "ResultsFormatError",
    "ResultsNotFoundError",
    "environment_info",
    "common_primary_metric",
    "load_results",
    "metric_label",
    "primary_metric",
    "read_results_document",
    "resolve_results_path",
    "validate_results",
    "write_json_atomic",
]

RESULTS_FILENAME = "results.json"
REQUIRED_CONFIG_FIELDS: tuple[str, ...] = ("strategy", "dataset", "seed", "protocol")
#: The learning-curve metric of a ``results.json`` without a ``primary_metric`` field.
DEFAULT_PRIMARY_METRIC = "test_accuracy"
_METRIC_PREFIX = "test_"

_INT = "int"
_NUM = "number"
_NUM_OR_NULL = "number or null"
_INT_LIST = "list of int"
#: Fields every cycle has, besides the primary metric (see :func:`primary_metric`), which is a number or null.
CYCLE_FIELDS: dict[str, str] = {
    "cycle": _INT,
    "n_labeled": _INT,
    "lpm_ranking_accuracy": _NUM_OR_NULL,
    "lpm_spearman": _NUM_OR_NULL,
    "train_seconds": _NUM,
    "query_seconds": _NUM,
    "selected": _INT_LIST,
}


class ResultsFormatError(UsageError):
    """A ``results.json`` file is not valid JSON or does not follow the results schema."""


class ResultsNotFoundError(UsageError, FileNotFoundError):
    """No ``results.json`` where one was expected."""


# --------------------------------------------------------------------------------------------- writing


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically: :func:`learnloss.jsonio.write_json`, the one JSON
    writer of learnloss (NaN and infinite floats as ``null``; numpy, tuple, path and dataclass values converted).

    Kept under this name for existing callers.

    Raises:
        TypeError: ``obj`` contains a value JSON cannot represent (the message names ``path``).
        OSError: the directory does not exist or is not writable.
    """
    write_json(path, obj)


def write_text_atomic(path: str | os.PathLike[str], text: str, root: str | os.PathLike[str] | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`learnloss.atomic.atomic_write`): below the folder
    ``root`` (default: its own folder) nothing is followed through a symbolic link, and a link at the file's name is
    replaced, never written through.

    Raises:
        LinkRefusedError: a folder between ``root`` and ``path`` is a symbolic link.
    """
    with atomic_write(path, root=root) as handle:
        handle.write(text)


# --------------------------------------------------------------------------------------------- metric


def primary_metric(results: Mapping[str, Any]) -> str:
    """The cycle key of the learning curve of ``results`` (a loaded ``results.json``): its ``primary_metric``
    field, or ``"test_accuracy"`` for files written before tasks named their metrics."""
    value = results.get("primary_metric")
    return DEFAULT_PRIMARY_METRIC if value is None else str(value)


def common_primary_metric(runs: Iterable[Mapping[str, Any]]) -> str:
    """The primary metric (:func:`primary_metric`) shared by every run of ``runs``.

    Raises:
        UsageError: the runs name different primary metrics (e.g. a classification and a regression run),
            so their curves, AUBCs and final values are not comparable; every metric is listed with its runs.
    """
    by_metric: dict[str, list[str]] = {}
    for run in runs:
        where = run.get("_path") or run.get("config", {}).get("strategy", "?")
        by_metric.setdefault(primary_metric(run), []).append(str(where))
    if len(by_metric) > 1:
        detail = "; ".join(f"{metric}: {', '.join(where)}" for metric, where in sorted(by_metric.items()))
        raise UsageError(
            f"the runs have different primary metrics, so their learning curves are not comparable ({detail}); "
            "compare runs of one task at a time"
        )
    return next(iter(by_metric), DEFAULT_PRIMARY_METRIC)


def metric_label(key: str, short: bool = False) -> str:
    """How a cycle key reads in tables and plots: ``"test accuracy"`` (``short``: ``"test acc"``) for
    ``test_accuracy``, ``"test r2"`` for ``test_r2``, ``"test rmse"`` for ``test_rmse``."""
    words = key.split("_")
    if short:
        words = ["acc" if word == "accuracy" else word for word in words]
    return " ".join(words)


# --------------------------------------------------------------------------------------------- reading


def resolve_results_path(path_or_dir: str | os.PathLike[str]) -> Path:
    """``path_or_dir`` itself if it is a file, else ``path_or_dir/results.json``.

    Raises:
        ResultsNotFoundError: neither exists.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / RESULTS_FILENAME
    if not path.is_file():
        raise ResultsNotFoundError(
            f"no results file at {path}; pass a run directory that contains {RESULTS_FILENAME} "
            "(written when a run finishes its cycles) or the path of the file itself"
        )
    return path


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(value: Any, kind: str) -> bool:
    if kind == _INT:
        return _is_int(value)
    if kind == _NUM:
        return _is_number(value)
    if kind == _NUM_OR_NULL:
        return value is None or _is_number(value)
    if kind == _INT_LIST:
        return isinstance(value, list) and all(_is_int(v) for v in value)
    raise AssertionError(kind)  # pragma: no cover


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_results(results: Any, source: str | os.PathLike[str] = "<results>") -> dict[str, Any]:
    """Check that ``results`` follows the ``results.json`` schema and return it.

    ``source`` names the file in error messages. Every cycle must carry the primary metric
    (:func:`primary_metric`) as a number or null, besides the fields of :data:`CYCLE_FIELDS`. ``cycles`` may be empty (a run that has not finished a
    cycle yet); when not, cycle numbers and label counts must be strictly increasing.

    Raises:
        ResultsFormatError: naming ``source`` and the missing or malformed field.
    """
    where = os.fspath(source)

    def fail(field: str, problem: str) -> ResultsFormatError:
        return ResultsFormatError(
            f"{where}: field {field!r} {problem}; rewrite the file with the current learnloss version or fix "
            "that field by hand"
        )

    if not isinstance(results, dict):
        raise fail("<top level>", f"must be a JSON object, got {type(results).__name__}")
    for key, kind in (("config", dict), ("environment", dict), ("cycles", list)):
        if key not in results:
            raise fail(key, "is missing")
        if not isinstance(results[key], kind):
            raise fail(key, f"must be a JSON {'object' if kind is dict else 'array'}, got {_describe(results[key])}")
    config = results["config"]
    for key in REQUIRED_CONFIG_FIELDS:
        if key not in config:
            raise fail(f"config.{key}", "is missing")
        if key == "seed":
            if not _is_int(config[key]):
                raise fail(f"config.{key}", f"must be an int, got {_describe(config[key])}")
        elif not isinstance(config[key], str) or not config[key]:
            raise fail(f"config.{key}", f"must be a non-empty string, got {_describe(config[key])}")
    metric = results.get("primary_metric", DEFAULT_PRIMARY_METRIC)
    if not isinstance(metric, str) or not metric.startswith(_METRIC_PREFIX) or metric == _METRIC_PREFIX:
        raise fail(
            "primary_metric",
            f"must name a cycle key {_METRIC_PREFIX}<metric> such as 'test_accuracy', got {_describe(metric)}",
        )
    cycle_fields = {**CYCLE_FIELDS, metric: _NUM_OR_NULL}
    previous: dict[str, Any] | None = None
    for i, cycle in enumerate(results["cycles"]):
        if not isinstance(cycle, dict):
            raise fail(f"cycles[{i}]", f"must be a JSON object, got {_describe(cycle)}")
        for key, expected in cycle_fields.items():
            if key not in cycle:
                raise fail(f"cycles[{i}].{key}", "is missing")
            if not _check(cycle[key], expected):
                raise fail(f"cycles[{i}].{key}", f"must be {expected}, got {_describe(cycle[key])}")
        if previous is not None:
            for key in ("cycle", "n_labeled"):
                if cycle[key] <= previous[key]:
                    raise fail(
                        f"cycles[{i}].{key}",
                        f"must be larger than in the previous cycle ({previous[key]}), got {cycle[key]}",
                    )
        previous = cycle
    if "aubc" not in results:
        raise fail("aubc", "is missing")
    if not _check(results["aubc"], _NUM_OR_NULL):
        raise fail("aubc", f"must be a number or null, got {_describe(results['aubc'])}")
    return results


def load_results(path_or_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a ``results.json`` (``path_or_dir`` is the file or the run directory holding it).

    Raises:
        ResultsNotFoundError: there is no such file.
        ResultsFormatError: the file is not valid JSON or misses / mistypes a field; the message names the
            file and the field.
    """
    path = resolve_results_path(path_or_dir)
    return validate_results(read_results_document(path), path)


def read_results_document(path: Path) -> Any:
    """The JSON document of the results file ``path``, not yet validated: the one reader of ``results.json``
    (``compare``, ``evaluate``, ``bench``). Whatever the file holds is refused with one line naming it — nesting
    deeper than Python's parser recurses (:class:`RecursionError`) and integers of more digits than Python converts
    (``sys.get_int_max_str_digits``, a :class:`ValueError`) as well as malformed JSON and bytes that are not UTF-8.

    Raises:
        ResultsFormatError: the file is not UTF-8 or not JSON a results file can be.
        OSError: the file cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsFormatError(f"{path}: not UTF-8 text ({exc}); is this really a results.json?") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; the file may be "
            "truncated or edited by hand -- re-run or repair it"
        ) from None
    except RecursionError:
        raise ResultsFormatError(f"{path}: its JSON is nested too deeply to be a results file (edited or crafted); "
                                 "re-run or repair it") from None
    except ValueError as exc:  # an integer of more digits than int() converts
        raise ResultsFormatError(f"{path}: not a results file ({exc}); re-run or repair it") from None


# --------------------------------------------------------------------------------------------- environment


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment_info(device: str) -> dict[str, Any]:
    """Versions and hardware a run used, for the ``environment`` section of ``results.json``.

    Keys: ``python``, ``platform``, ``torch``, ``cuda`` (torch's CUDA version or ``None``), ``numpy``,
    ``scipy``, ``sklearn``, ``device`` (as given), ``device_name`` (:func:`torch.cuda.get_device_name` for a
    CUDA device, else the processor), ``cpu_count`` and ``torch_threads``.

    Raises:
        UsageError: ``device`` is not a valid torch device string, or names CUDA while CUDA is unavailable.
    """
    import torch

    from learnloss.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        device_name = "Apple MPS"
    else:
        device_name = platform.processor() or platform.machine() or dev.type
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "sklearn": _version("scikit-learn"),
        "device": device,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
