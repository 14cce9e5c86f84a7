"""Import labels from CSV, JSON or a Label Studio JSON export: validate everything, then apply all or nothing.

Accepted files:

* **CSV** (``.csv``, UTF-8): a header with ``label`` and ``id`` and/or ``path`` — the query batch that
  ``learnloss query`` writes, with its ``label`` column filled in, is such a file;
* **JSON** (``.json``): a list of objects with ``label`` and ``id`` (or ``learnloss_id``) and/or ``path``, or
  an object holding such a list as ``items`` (the ``query-N.json`` that ``learnloss query`` writes, its ``label``
  fields filled in) or ``labels``;
* **Label Studio** (``.json``): the JSON export of a project whose tasks ``learnloss query`` wrote (each
  task's ``data.learnloss_id`` names the item; the label is the ``choices`` of its annotations).

Ids are plain ASCII digits (surrounding whitespace is ignored, as in every cell); paths and labels are compared in
Unicode NFC; CSV rows are numbered as a spreadsheet shows them (the header is row 1, blank lines count).
Every problem of the file is collected — not UTF-8, malformed rows, empty labels, unknown ids or paths,
ids that contradict their path, one item twice, unknown classes, a label that contradicts the stored one
without ``relabel`` — and reported together; then nothing is written. A valid file is applied in one
transaction of the project store, which also records the file (name, SHA-256) as every label's source.
Importing the same file again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnloss.errors import UsageError
from learnloss.project.exports import csv_records, unescape_cell
from learnloss.project.paths import UnsafePathError, nfc, safe_relative
from learnloss.project.store import LabelRecord, ProjectStore

__all__ = ["ImportSummary", "LabelFileError", "LabelRow", "import_labels", "parse_label_file"]

MAX_LISTED_PROBLEMS = 20
#: An item id: ASCII digits only (``int()`` would also take ``+16``, ``1_9`` and other scripts' digits).
_ID = re.compile(r"[0-9]+")
_MAX_ID_DIGITS = 18  # every SQLite rowid fits; longer ids are unknown without converting them


class LabelFileError(UsageError):
    """A label file with problems; ``problems`` lists every one, and nothing was imported."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:MAX_LISTED_PROBLEMS])
        more = f"; and {len(self.problems) - MAX_LISTED_PROBLEMS} more" if len(self.problems) > MAX_LISTED_PROBLEMS else ""
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(f"{path}: {count}, nothing was imported: {shown}{more}")


@dataclass(frozen=True)
class LabelRow:
    """One label of a file: where it is (``row 4``, ``task 12``), which item (id and/or path), which class."""

    where: str
    item_id: int | None
    path: str | None
    label: str


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: labels added, relabeled, already stored (unchanged)."""

    file: str
    added: int
    relabeled: int
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.relabeled)


# ----------------------------------------------------------------------------------------------- parsing


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else None


def _row(where: str, raw_id: Any, raw_path: Any, raw_label: Any, problems: list[str]) -> LabelRow | None:
    ident, path, label = _text(raw_id), _text(raw_path), _text(raw_label)
    if raw_label is not None and label is None or raw_id is not None and ident is None \
            or raw_path is not None and path is None:
        problems.append(f"{where}: id, path and label must be text or numbers")
        return None
    if not ident and not path and not label:
        problems.append(f"{where}: empty row; delete it")
        return None
    if not label:
        problems.append(f"{where}: no label; fill it in or delete the {'row' if where.startswith('row') else 'entry'}")
        return None
    item_id = None
    if ident:
        if not _ID.fullmatch(ident):
            shown = ident if len(ident) <= 40 else ident[:40] + "…"
            problems.append(f"{where}: id {shown!r} is not a whole number in plain digits 0-9, as the exported "
                            "files write it")
            return None
        if len(ident) > _MAX_ID_DIGITS:
            problems.append(f"{where}: unknown id {ident[:20]}… ({len(ident)} digits)")
            return None
        item_id = int(ident)
    if not ident and not path:
        problems.append(f"{where}: neither id nor path says which item is labeled {label!r}")
        return None
    if path:
        try:
            path = safe_relative(path, where)
        except UnsafePathError as error:
            problems.append(str(error))
            return None
        path = nfc(path)
    return LabelRow(where, item_id, path or None, nfc(label))


def _parse_csv(text: str, problems: list[str]) -> list[LabelRow]:
    header: list[str] | None = None
    rows: list[LabelRow] = []
    number = 0
    try:
        for number, cells in csv_records(text, strict=True):
            if not cells:  # a blank line: a spreadsheet shows an empty row, and so it is numbered
                continue
            if header is None:
                header = [name.strip().lower() for name in cells]
                if "label" not in header or not {"id", "path"} & set(header):
                    problems.append(f"header: needs a 'label' column and an 'id' or 'path' column, found {header}")
                    return []
                if len(set(header)) != len(header):
                    problems.append(f"header: repeated column names {header}")
                    return []
                continue
            where = f"row {number}"
            if len(cells) != len(header):
                problems.append(f"{where}: {'too many' if len(cells) > len(header) else 'too few'} cells for the "
                                "header")
                continue
            record = {key: unescape_cell(value.strip()) for key, value in zip(header, cells)}  # undo the escaping
            row = _row(where, record.get("id"), record.get("path"), record["label"], problems)
            if row is not None:
                rows.append(row)
    except csv.Error as error:
        problems.append(f"{'header' if header is None else f'row {number + 1}'}: malformed CSV ({error})")
    if header is None and not problems:
        problems.append("header: needs a 'label' column and an 'id' or 'path' column, found nothing")
    return rows


def _label_studio_choice(task: dict[str, Any], where: str, problems: list[str]) -> str | None:
    chosen = set()
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        problems.append(f"{where}: 'annotations' must be a list")
        return None
    for annotation in annotations:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        results = annotation.get("result") or []
        if not isinstance(results, list):
            problems.append(f"{where}: an annotation's 'result' must be a list")
            return None
        for result in results:
            value = result.get("value") if isinstance(result, dict) else None
            choices = value.get("choices") if isinstance(value, dict) else None
            if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
                problems.append(f"{where}: an annotation result is not a single choice")
                return None
            chosen.add(choices[0])
    if not chosen:
        problems.append(f"{where}: no annotation with a choice; export only annotated tasks, or annotate it")
        return None
    if len(chosen) > 1:
        problems.append(f"{where}: its annotations disagree ({', '.join(sorted(chosen))}); resolve them first")
        return None
    return chosen.pop()


def _parse_json(text: str, problems: list[str]) -> tuple[str, list[LabelRow]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        problems.append(f"line {error.lineno}: malformed JSON ({error.msg})")
        return "json", []
    except RecursionError:
        problems.append("malformed JSON: nested too deeply to be a label file")
        return "json", []
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        problems.append("malformed JSON: it holds a number with thousands of digits, which no label file needs")
        return "json", []
    if isinstance(document, dict):
        for key in ("items", "labels"):  # query-N.json keeps its items under "items"
            if isinstance(document.get(key), list):
                document = document[key]
                break
    if not isinstance(document, list):
        problems.append("the JSON must be a list of labels (or of Label Studio tasks), or the query-N.json that "
                        "learnloss query wrote, with its labels filled in")
        return "json", []
    studio = any(isinstance(entry, dict) and "annotations" in entry for entry in document)
    rows = []
    for number, entry in enumerate(document, start=1):
        where = f"{'task' if studio else 'entry'} {number}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object, got {type(entry).__name__}")
            continue
        if studio:
            data: dict[str, Any] = entry["data"] if isinstance(entry.get("data"), dict) else {}
            label = _label_studio_choice(entry, where, problems)
            if label is not None:
                row = _row(where, data.get("learnloss_id"), data.get("path"), label, problems)
                rows.extend([row] if row else [])
        else:
            ident = entry.get("id", entry.get("learnloss_id"))
            row = _row(where, ident, entry.get("path"), entry.get("label"), problems)
            rows.extend([row] if row else [])
    if not document:
        problems.append("the file holds no labels")
    return ("labelstudio" if studio else "json"), rows


def parse_label_file(path: Path) -> tuple[str, list[LabelRow], str, list[str]]:
    """Read ``path``: its format (``csv``, ``json`` or ``labelstudio``), its rows, its SHA-256 and the
    problems found in the file itself (not yet checked against a project)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read the label file {path}: {error.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    problems: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        problems.append(f"line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                        "save it as UTF-8")
        return "unknown", [], digest, problems
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _parse_csv(text, problems)
        if not rows and not problems:
            problems.append("the file holds no labels")
        return "csv", rows, digest, problems
    if suffix == ".json":
        fmt, rows = _parse_json(text, problems)
        return fmt, rows, digest, problems
    raise UsageError(f"{path}: unknown label file type {suffix or '(none)'}; use .csv or .json")


# --------------------------------------------------------------------------------------------- applying


def import_labels(store: ProjectStore, path: str | Path, relabel: bool = False) -> ImportSummary:
    """Validate ``path`` against the project and apply it in one transaction (see the module docstring).

    Raises:
        LabelFileError: the file has problems (all are listed); nothing was written.
        StoreBusyError: another process kept the project busy beyond the store's timeout.
    """
    path = Path(path)
    fmt, rows, digest, problems = parse_label_file(path)
    with store.transaction() as db:  # validate inside the write lock: no other import can interleave
        by_id = dict(store.items(db=db))
        by_path: dict[str, int] = {}
        ambiguous: set[str] = set()  # stores made before names were normalised may hold two spellings of one name
        for known_id, source in by_id.items():
            key = nfc(source)
            if key in by_path:
                ambiguous.add(key)
            by_path[key] = known_id
        stored_classes = store.classes(db)
        class_names = {nfc(name): name for name in stored_classes}  # compared in NFC, stored as registered
        classes = set(stored_classes)
        current = store.current_labels(db)
        queried = store.queried_provenance(db)
        seen: dict[int, str] = {}
        new: list[LabelRecord] = []
        relabels = unchanged = 0
        for row in rows:
            item_id = row.item_id
            if item_id is not None and item_id not in by_id:
                problems.append(f"{row.where}: unknown id {item_id}: not an item of this project")
                continue
            if row.path is not None:
                if row.path in ambiguous:
                    problems.append(f"{row.where}: path {row.path!r} names two items of this project (spelled with "
                                    "different Unicode normalisation); give the item's id instead")
                    continue
                if row.path not in by_path:
                    problems.append(f"{row.where}: unknown path {row.path!r}: not an item of this project")
                    continue
                if item_id is not None and by_path[row.path] != item_id:
                    problems.append(f"{row.where}: id {item_id} is {by_id[item_id]!r}, not {row.path!r}")
                    continue
                item_id = by_path[row.path]
            assert item_id is not None
            if item_id in seen:
                problems.append(f"{row.where}: item {item_id} is labeled again (first at {seen[item_id]})")
                continue
            seen[item_id] = row.where
            label = class_names.get(row.label)
            if label is None:
                problems.append(f"{row.where}: unknown class {row.label!r}; the classes are {', '.join(sorted(classes))}")
                continue
            stored = current.get(item_id)
            if stored == label:
                unchanged += 1
                continue
            if stored is not None and not relabel:
                problems.append(f"{row.where}: item {item_id} is labeled {stored!r}, the file says {label!r}; "
                                "pass --relabel to change it (the old label is kept in the history)")
                continue
            relabels += stored is not None
            cycle, strategy, score, rank = queried.get(item_id, (None, None, None, None))
            new.append(LabelRecord(item_id, label, f"import:{fmt}", cycle, strategy, score, rank))
        if problems:
            raise LabelFileError(path, problems)
        if new:
            import_id = store.add_import(db, path.name, digest, fmt, len(rows))
            store.add_labels(db, new, import_id=import_id)
    return ImportSummary(path.name, len(new) - relabels, relabels, unchanged)
