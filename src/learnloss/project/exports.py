"""Files for people: a queried batch (CSV, JSON, Label Studio tasks) and every label with its provenance.

CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) are prefixed with ``'`` (OWASP, "CSV Injection"), and so is text that merely starts with ``'`` before
such a character, so that :func:`unescape_cell` undoes exactly what was added on import. Every file
is written atomically; JSON through :func:`learnloss.jsonio.write_json`, so a missing or non-finite number (the
score of a ``random`` query) is ``null`` in JSON and an empty cell in CSV.

A query batch is written into the project's ``exports/`` folder through :func:`learnloss.atomic.atomic_write` with
the project as the root: ``exports/`` must be a real folder (a symbolic link there is refused before anything is
written) and a link at a file's name is replaced, never written through, so nothing outside the project changes.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learnloss import jsonio
from learnloss.atomic import atomic_write, make_folder, read_file
from learnloss.errors import UsageError
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.labelstudio import LabelStudioSetup, label_studio_task

__all__ = [
    "QueriedItem",
    "csv_records",
    "escape_cell",
    "file_sha256",
    "read_table",
    "unescape_cell",
    "write_csv",
    "write_json",
    "write_query_batch",
]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _formula_like(text: str) -> bool:
    """Whether ``text``, after any leading ``'``, starts like a formula: such text is escaped. A plain number
    (``-0.775617``, ``+3e-4``) is no formula: a spreadsheet reads it as the number it is."""
    bare = text.lstrip("'")
    return bare.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(bare)


def escape_cell(value: Any) -> Any:
    """``value``, with a leading ``'`` when it is text a spreadsheet would evaluate as a formula (or such text
    already prefixed with ``'``, so that :func:`unescape_cell` restores every value exactly)."""
    if isinstance(value, str) and _formula_like(value):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """Undo :func:`escape_cell` on a cell read back from a CSV file."""
    if value.startswith("'") and _formula_like(value[1:]):
        return value[1:]
    return value


def csv_records(text: str, strict: bool = False) -> Iterator[tuple[int, list[str]]]:
    """The records of the CSV ``text``, each with the row number a spreadsheet shows for it: the first line is
    row 1, a blank line is a row (yielded with no cells), a quoted cell spanning lines stays one row.

    Raises:
        csv.Error: malformed CSV; the records before it have been yielded (the failing one is the next number).
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=strict)
    yield from enumerate(reader, start=1)


def read_table(path: Path, what: str = "manifest") -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV file people wrote (UTF-8, with or without a BOM): its header names (stripped, lower-cased) and its
    non-blank rows, each with its spreadsheet row number (:func:`csv_records`) and its cells by header name
    (missing cells are empty; cells beyond the header are ignored).

    Raises:
        UsageError: the file cannot be read, is not UTF-8 text, is malformed CSV, repeats a column name, or its
            header is one cell that splits on ``;`` or tabs (a spreadsheet saved it with another delimiter: the
            message says how to save it with commas).
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise UsageError(f"cannot read the {what} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    number = 0
    try:
        for number, cells in csv_records(text):
            if not cells:
                continue
            if header is None:
                header = [name.strip().lower() for name in cells]
                for delimiter, shown in ((";", "';'"), ("\t", "tabs")):  # a spreadsheet's regional setting
                    if len(cells) == 1 and delimiter in cells[0] \
                            and len(next(csv.reader([cells[0]], delimiter=delimiter), [])) > 1:
                        raise UsageError(f"{path} row {number}: the file seems to be separated by {shown}, not ','; "
                                         "save it as CSV with commas (in LibreOffice: Save As → Text CSV, field "
                                         "delimiter ',')")
                repeated = sorted({name for name in header if name and header.count(name) > 1})
                if repeated:
                    raise UsageError(f"{path} row {number}: the header repeats the column(s) {', '.join(repeated)}")
                continue
            rows.append((number, {name: cells[i] if i < len(cells) else "" for i, name in enumerate(header)}))
    except csv.Error as error:
        raise UsageError(f"{path} row {number + 1}: malformed CSV ({error}); fix or re-save the file") from None
    return header or [], rows


def _csv_cell(value: Any) -> Any:
    """A CSV cell: escaped text (:func:`escape_cell`); ``None`` and NaN / infinite numbers as an empty cell."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return ""
    return escape_cell(value)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]], root: Path | None = None) -> None:
    """Write a UTF-8 CSV with ``header`` and escaped ``rows``, atomically; ``None``, NaN and infinite numbers
    are empty cells. ``root`` is the project folder ``path`` lies in (nothing between them is followed; see
    :func:`learnloss.atomic.atomic_write`); without it (a file the user named) only ``path``'s name is confined.

    Raises:
        LinkRefusedError: a folder between ``root`` and ``path`` is a symbolic link.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_csv_cell(cell) for cell in row] for row in rows)
    with atomic_write(path, root=root) as handle:
        handle.write(buffer.getvalue())


def write_json(path: Path, document: Any, root: Path | None = None) -> None:
    """Write ``document`` as indented UTF-8 JSON, atomically (:func:`learnloss.jsonio.write_json`: NaN and
    infinite numbers as ``null``); ``root`` as for :func:`write_csv`.

    Raises:
        TypeError: ``document`` holds a value JSON cannot represent (the message names ``path``).
        LinkRefusedError: a folder between ``root`` and ``path`` is a symbolic link.
    """
    jsonio.write_json(path, document, root=root)


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _number_cell(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec`` for a CSV cell; empty when missing or not finite."""
    number = _finite(value)
    return "" if number is None else format(number, spec)


@dataclass(frozen=True)
class QueriedItem:
    """One queried item as labelers see it: the model's prediction and its confidence are hints.

    ``score`` is the strategy's score of the item; ``None`` or NaN when the strategy does not score (random).
    """

    item_id: int
    path: str
    rank: int
    score: float | None
    prediction: str
    confidence: float | None


def file_sha256(path: Path) -> str | None:
    """SHA-256 of the regular file at ``path``, or None when there is none — or only a symbolic link, which is never
    read through (a writer replaces it: :func:`learnloss.atomic.atomic_write`)."""
    try:
        return hashlib.sha256(read_file(path)).hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK):
            return None
        raise


def _beside(path: Path) -> Path:
    """A new name next to ``path`` for a re-export: ``query-0.csv`` -> ``query-0.reexport-1.csv`` (the first free)."""
    stem, dot, rest = path.name.partition(".")
    n = 1
    while os.path.lexists(candidate := path.with_name(f"{stem}.reexport-{n}{dot}{rest}")):
        n += 1
    return candidate


def write_query_batch(
    folder: Path, cycle: int, items: Sequence[QueriedItem], schema: AnnotationSchema | Sequence[str],
    info: Mapping[str, Any], setup: LabelStudioSetup, written: Mapping[str, str] | None = None,
    score_meaning: str = "",
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the batch of ``cycle`` for labelers into ``folder``: ``query-<cycle>.csv`` (fill in ``label``),
    ``query-<cycle>.json``, ``query-<cycle>.labelstudio.json`` (tasks with the prediction as a pre-annotation)
    and ``labelstudio-config.xml``. ``schema`` is the project's task and names (or its class names): in a project
    of boxes or keypoints the prediction is JSON (:meth:`AnnotationSchema.prediction`), shown in Label Studio as
    pre-annotated regions, and the CSV and JSON list the batch without a ``label`` to fill in (those labels come
    from Label Studio or COCO). Task image URLs follow ``setup`` (where Label Studio finds the images,
    :class:`~learnloss.project.labelstudio.LabelStudioSetup`); the CSV header
    and the JSON say what the score means (``score_meaning``, the strategy's
    :attr:`~learnloss.strategies.base.Strategy.score_meaning`).

    No label is lost to a re-export: ``written`` maps a file name to the SHA-256 of what learnloss last wrote
    there; a file that exists with other content (a labeler filled it in, or it predates the record) is kept,
    and the new content goes to a new name beside it (``query-<cycle>.reexport-<n>.csv``).

    Returns the paths written, by kind, and the files kept, by kind (the path of each kept file).

    ``folder`` is a folder of a project (``PROJECT/exports``): the project, its parent, is the root of every write,
    so a symbolic link at ``folder`` is refused (:class:`~learnloss.atomic.LinkRefusedError`) before anything is
    written, and a link at a file's name is replaced, never written through.

    A score or confidence that is missing or not finite (a ``random`` query has no score) is ``null`` in the
    JSON files and an empty cell in the CSV."""
    root = folder.parent
    make_folder(root, folder.name)  # refuses a link at folder before anything is read or written
    written = written or {}
    stem = folder / f"query-{cycle}"
    planned = {
        "csv": stem.with_suffix(".csv"),
        "json": stem.with_suffix(".json"),
        "labelstudio": folder / f"query-{cycle}.labelstudio.json",
        "labelstudio_config": folder / "labelstudio-config.xml",
    }
    kept = {kind: path for kind, path in planned.items()
            if (digest := file_sha256(path)) is not None and digest != written.get(path.name)}
    paths = {kind: _beside(path) if kind in kept else path for kind, path in planned.items()}
    if not isinstance(schema, AnnotationSchema):
        schema = AnnotationSchema("classification", tuple(schema))
    meaning = score_meaning or "none: the strategy picks a set and scores no item on its own"
    fill = ("label",) if schema.classes else ()
    write_csv(
        paths["csv"], ("id", "path", *fill, "prediction", "confidence", "rank", f"score ({meaning})"),
        [(i.item_id, i.path, *[""] * len(fill), i.prediction, _number_cell(i.confidence, ".4f"), i.rank,
          _number_cell(i.score, ".6g")) for i in items], root=root,
    )
    names = {"classes": list(schema.names)} if schema.task != "keypoints" else {"keypoints": list(schema.names)}
    write_json(paths["json"], {
        **info, "cycle": cycle, "task": schema.task, **names, "score_meaning": meaning,
        "items": [{"id": i.item_id, "path": i.path, **({"label": None} if schema.classes else {}),
                   "prediction": i.prediction if schema.classes else _decoded(i.prediction),
                   "confidence": i.confidence, "rank": i.rank, "score": i.score} for i in items],
    }, root=root)
    write_json(paths["labelstudio"], [
        label_studio_task(setup, i.item_id, i.path, i.prediction, i.confidence, i.score, i.rank,
                          f"learnloss-cycle-{cycle}",
                          None if schema.classes else _regions(schema, i.prediction))
        for i in items], root=root)
    with atomic_write(paths["labelstudio_config"], root=root) as handle:
        handle.write(schema.label_studio_config())
    return paths, kept


def _regions(schema: AnnotationSchema, prediction: str) -> list[dict[str, Any]]:
    """The pre-annotated regions of a stored prediction of boxes or keypoints; none without one."""
    decoded = _decoded(prediction)
    return [] if decoded is None else schema.label_studio_results(decoded, True, "p")


def _decoded(prediction: str) -> Any:
    """A stored prediction of boxes or keypoints (JSON text), decoded; an empty one (no prediction) is None."""
    try:
        return json.loads(prediction) if prediction else None
    except ValueError:
        return None
