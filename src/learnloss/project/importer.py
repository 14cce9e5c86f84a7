"""Import labels from CSV, JSON or a Label Studio export: validate everything, then apply all or nothing.

Accepted files, each with the format name recorded with the import (and in every label's source,
``import:<format>``):

* ``csv`` (``.csv``, UTF-8, comma-separated): a header with ``label`` and ``id`` and/or ``path`` — the query
  batch that ``learnloss query`` writes, with its ``label`` column filled in, is such a file;
* ``json`` (``.json``): a list of objects with ``label`` and ``id`` and/or ``path``, or an object holding such a
  list as ``items`` (the ``query-N.json`` that ``learnloss query`` writes, its ``label`` fields filled in) or
  ``labels``;
* ``labelstudio`` (``.json``): Label Studio's JSON export (a list of tasks with ``annotations``) of a project
  whose tasks ``learnloss query`` wrote: each task's ``data.learnloss_id`` (or ``data.path``, or its image URL)
  names the item, the label is the single choice of its annotations that were not cancelled or skipped (several
  must agree). Its tasks are read by :mod:`learnloss.project.labelstudio_reader`, the reader of the ML backend's
  webhook too: results of other controls (a comment, a rating) are ignored, a task's id, path and image URL must
  agree and the URL be this project's, and an annotation older than the one that set the stored label is skipped;
* ``labelstudio-min`` (``.json``): Label Studio's JSON-MIN export, recognised by its ``annotation_id`` fields: a
  list of flat objects, one per annotation (or per task without one), holding the task's data (``learnloss_id``,
  ``path``, ...), Label Studio's task ``id``, the choice under ``label`` (the Choices control of
  ``labelstudio-config.xml``; a string, or ``{"choices": [...]}`` when several were chosen) and ``annotator``,
  ``annotation_id``, ``created_at``, ``updated_at``, ``lead_time``; the objects of one task (same ``id``) are its
  annotations and must agree;
* ``labelstudio-csv`` (``.csv``): Label Studio's CSV export, recognised by its ``annotation_id`` column: the
  same fields as columns, in any order (a choice cell may hold ``{"choices": [...]}`` as JSON).

Whenever an entry or a row has a ``learnloss_id`` field or column, that is the item's id and ``id`` is ignored
(in a Label Studio export, ``id`` is Label Studio's own task id, never an item id; a Label Studio export uses
``learnloss_id`` or ``path`` only). In the Label Studio formats a task that is not labeled — no annotation yet,
every annotation cancelled (skipped in Label Studio; JSON-MIN and CSV exports leave such a task out altogether),
or annotated without a choice — is left out and listed in :attr:`ImportSummary.skipped`; in ``csv`` and ``json``
files an empty label is a problem. A CSV file separated by ``;`` or tabs (a spreadsheet's regional setting, or
Label Studio's TSV export) is refused with a hint to save or export it with commas.

Ids are plain ASCII digits (surrounding whitespace is ignored, as in every cell); paths and labels are compared in
Unicode NFC; CSV rows are numbered as a spreadsheet shows them (the header is row 1, blank lines count).
Every problem of the file is collected — not UTF-8, malformed rows, empty labels, unknown ids or paths,
ids that contradict their path, one item twice, annotations that disagree, several choices, unknown classes, a
label that contradicts the stored one without ``relabel`` — and reported together; then nothing is written. A
valid file is applied in one transaction of the project store, which also records the file (name, SHA-256) as
every label's source; a file that changes no label (all its tasks skipped, say) is not recorded. Importing the
same file again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from learnloss.cocojson import CocoAnnotation, is_coco, read_coco
from learnloss.errors import DatasetFormatError, UsageError
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.exports import csv_records, unescape_cell
from learnloss.project.labelstudio import LabelStudioSetup
from learnloss.project.labelstudio_reader import (
    AnnotationError, LabelRow, annotation_time, parse_item_id, read_task, shown,
)
from learnloss.project.labelstudio_reader import task_item as read_task_item
from learnloss.project.paths import UnsafePathError, nfc, safe_relative
from learnloss.project.store import LabelRecord, ProjectStore

__all__ = [
    "ImportSummary", "LabelFile", "LabelFileError", "LabelRow", "apply_label_rows", "import_labels", "parse_label_file",
]

MAX_LISTED_PROBLEMS = 20
#: The name of the Choices control in ``labelstudio-config.xml``: a Label Studio export keys the choice by it.
_CONTROL = "label"
#: The fields of a Label Studio JSON-MIN entry or CSV row besides the choice: the task's data as ``learnloss
#: query`` writes it, Label Studio's task id and the annotation's metadata.
_STUDIO_FIELDS = frozenset({"image", "learnloss_id", "path", "rank", "score", "id", "annotator", "annotation_id",
                            "created_at", "updated_at", "lead_time", "agreement", "history"})
_COMMAS_HINT = "save it as CSV with commas (in LibreOffice: Save As → Text CSV, field delimiter ',')"


class LabelFileError(UsageError):
    """A label file with problems; ``problems`` lists every one, and nothing was imported."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:MAX_LISTED_PROBLEMS])
        more = f"; and {len(self.problems) - MAX_LISTED_PROBLEMS} more" if len(self.problems) > MAX_LISTED_PROBLEMS else ""
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(f"{path}: {count}, nothing was imported: {shown}{more}")


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: labels added, relabeled, already stored (unchanged), and the tasks of a Label Studio
    export that were left out because they are not labeled, each with where and why
    (``task 3 (learnloss_id 17): skipped in Label Studio (cancelled)``)."""

    file: str
    added: int
    relabeled: int
    unchanged: int
    skipped: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.relabeled)


class LabelFile(NamedTuple):
    """A label file as read, before it is checked against a project (:func:`parse_label_file`)."""

    #: ``csv``, ``json``, ``labelstudio``, ``labelstudio-min``, ``labelstudio-csv`` (``unknown`` if not UTF-8).
    fmt: str
    rows: list[LabelRow]
    #: SHA-256 of the file's bytes.
    sha256: str
    #: Every problem of the file itself; any of them refuses the whole file.
    problems: list[str]
    #: The Label Studio tasks left out because they are not labeled, each with where and why.
    skipped: list[str]


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
    named = _item(where, ident, path, repr(label), problems)
    return None if named is None else LabelRow(where, named[0], named[1], nfc(label))


def _item(where: str, ident: str | None, path: str | None, what: str, problems: list[str]
          ) -> tuple[int | None, str | None] | None:
    """The item id and path (checked: plain digits, a safe relative path in NFC) a row names for the label ``what``,
    or None after adding the problem."""
    item_id = None
    if ident:
        try:
            item_id = parse_item_id(ident, where)  # the one parser of an item id (ASCII digits, bounded)
        except AnnotationError as error:
            problems.append(str(error))
            return None
    if not ident and not path:
        problems.append(f"{where}: neither id nor path says which item is labeled {what}")
        return None
    if path:
        try:
            path = safe_relative(path, where)
        except UnsafePathError as error:
            problems.append(str(error))
            return None
        path = nfc(path)
    return item_id, path or None


def _target_row(where: str, raw_id: Any, raw_path: Any, target: Any, schema: AnnotationSchema, problems: list[str],
                size: tuple[float, float] | None = None) -> LabelRow | None:
    """A row labeling the item named by ``raw_id`` / ``raw_path`` with a checked ``target``."""
    ident, path = _text(raw_id), _text(raw_path)
    if raw_id is not None and ident is None or raw_path is not None and path is None:
        problems.append(f"{where}: learnloss_id and path must be text or numbers")
        return None
    named = _item(where, ident, path, f"with {schema.describe(target)}", problems)
    return None if named is None else LabelRow(where, named[0], named[1], None, target, size)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _named(where: str, ident: Any, path: Any) -> str:
    """``where`` with the item it names, to list a skipped task: ``task 3 (learnloss_id 17)``."""
    for name, value in (("learnloss_id", ident), ("path", path)):
        text = _text(value)
        if text:
            return f"{where} ({name} {text if len(text) <= 40 else text[:40] + '…'})"
    return where


@dataclass(frozen=True)
class _StudioEntry:
    """An entry of Label Studio's JSON-MIN export or a row of its CSV export: one annotation of a task, or a task
    without any."""

    where: str
    task: str | None  # Label Studio's task id: the entries of one task are its annotations; never an item id
    ident: Any  # the task's learnloss_id, as written
    path: Any
    label: str | None  # the single choice; None when there is none
    annotated: bool  # an annotation (with or without a choice), not a task without any
    image: Any = None  # the task's image URL
    annotation: Any = None  # Label Studio's annotation id
    times: tuple[Any, Any] = (None, None)  # the annotation's created_at and updated_at, as written


def _studio_choice(value: Any, where: str, problems: list[str], cell: bool) -> tuple[bool, str | None]:
    """Whether the ``label`` value of a JSON-MIN entry or CSV row (``cell``) is well-formed, and its single choice
    (``None`` when there is none). Label Studio writes one choice as its text, several as ``{"choices": [...]}``
    (as JSON text in a CSV cell), several results of one annotation as a list of these."""
    if cell and isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            pass  # a class name that merely starts with a bracket
    choices: list[Any] = []
    for part in value if isinstance(value, list) else [value]:
        if isinstance(part, dict) and isinstance(part.get("choices"), list):
            choices.extend(part["choices"])
        else:
            choices.append(part)
    texts = [_text(choice) for choice in choices if choice is not None]
    if any(text is None for text in texts):
        problems.append(f"{where}: the '{_CONTROL}' value is not a choice of a class; label the tasks with "
                        "labelstudio-config.xml as the labeling config")
        return False, None
    distinct = sorted({nfc(text) for text in texts if text})
    if len(distinct) > 1:
        problems.append(f"{where}: more than one choice ({', '.join(distinct)}); choose one class per task")
        return False, None
    return True, (distinct[0] if distinct else None)


def _studio_entry(where: str, entry: dict[str, Any], problems: list[str], cell: bool) -> _StudioEntry | None:
    """An entry of a JSON-MIN export, or a row of a CSV export (``cell``); ``None`` after a problem."""
    ok, label = _studio_choice(entry.get(_CONTROL), where, problems, cell)
    if not ok:
        return None
    task = _text(entry.get("id"))
    return _StudioEntry(where, task or None, entry.get("learnloss_id"), entry.get("path"), label,
                        _present(entry.get("annotation_id")), entry.get("image"), entry.get("annotation_id"),
                        (entry.get("created_at"), entry.get("updated_at")))


def _check_control(fields: set[str], where: str, problems: list[str]) -> None:
    """In an export where no task has a ``label``, other fields than Label Studio's and the tasks' own mean that the
    labeling config names its Choices control otherwise: a problem, rather than every task skipped."""
    others = sorted(name for name in fields - _STUDIO_FIELDS if name and not name.startswith("_data_"))
    if others:
        problems.append(f"{where}: no task has a '{_CONTROL}' choice, but there is {', '.join(map(repr, others))}; "
                        f"learnloss reads the Choices control named '{_CONTROL}', as in labelstudio-config.xml: use "
                        "that labeling config and export again")


def _flat_time(entry: _StudioEntry) -> str:
    """The time of a JSON-MIN entry's or a CSV row's annotation (:func:`annotation_time`), ``""`` for none. These
    columns are metadata of a flat export, which spreadsheets may have rewritten: one that is not a time gives the
    label no time (it then replaces, and is replaced by, any other label as a label file without times does)."""
    try:
        return annotation_time({"created_at": entry.times[0], "updated_at": entry.times[1]}, entry.where) or ""
    except AnnotationError:
        return ""


def _studio_rows(entries: list[_StudioEntry], problems: list[str], setup: LabelStudioSetup | None = None
                 ) -> tuple[list[LabelRow], list[str]]:
    """The labels of a JSON-MIN or CSV export and the tasks it leaves out. The entries of one Label Studio task
    (same ``id``, ``learnloss_id`` and ``path``) are its annotations: their choices must agree. As in Label Studio's
    JSON export (:mod:`learnloss.project.labelstudio_reader`), the task's image URL must be one of ``setup``'s and
    name the same image as its path, and the label carries the time of its newest annotation."""
    tasks: dict[object, list[_StudioEntry]] = {}
    for entry in entries:
        key = (entry.task, repr(entry.ident), repr(entry.path)) if entry.task is not None else id(entry)
        tasks.setdefault(key, []).append(entry)
    rows: list[LabelRow] = []
    skipped: list[str] = []
    for group in tasks.values():
        labeled = [entry for entry in group if entry.label is not None]
        chosen = sorted({entry.label for entry in labeled if entry.label is not None})
        if len(chosen) > 1:
            others = ", ".join(entry.where for entry in labeled[1:])
            problems.append(f"{labeled[0].where}: the annotations of Label Studio task {group[0].task} disagree "
                            f"({', '.join(chosen)}; also at {others}); resolve them first")
            continue
        if not chosen:
            first = group[0]
            why = "annotated without a choice" if any(entry.annotated for entry in group) else "no annotation yet"
            skipped.append(f"{_named(first.where, first.ident, first.path)}: {why}")
            continue
        entry = labeled[0]
        if not _present(entry.ident) and not _present(entry.path):
            problems.append(f"{entry.where}: no learnloss_id or path says which item is labeled {chosen[0]!r} (Label "
                            "Studio's own task id is not an item id); label tasks that learnloss query wrote")
            continue
        row = _row(entry.where, entry.ident, entry.path, chosen[0], problems)
        if row is None:
            continue
        if setup is not None and isinstance(entry.image, str) and entry.image.strip():
            named = read_task_item({"path": row.path, "image": entry.image}, setup, entry.where)
            if named.refusal is not None:
                problems.append(named.refusal)
                continue
            row = replace(row, path=named.path)
        newest, annotation = max(((_flat_time(e), e.annotation) for e in labeled), key=lambda pair: pair[0])
        rows.append(replace(row, annotation=None if not _present(annotation) else _text(annotation),
                            annotated_at=newest or None))
    return rows, skipped


def _delimiter_hint(text: str) -> str | None:
    """The problem to report when the header of the CSV ``text`` has the needed columns once split on ``;`` or
    tabs (a spreadsheet's regional setting, or Label Studio's TSV export), else ``None``."""
    first = next((line for line in io.StringIO(text, newline="") if line.strip()), "").rstrip("\r\n")
    for delimiter, shown in ((";", "';'"), ("\t", "tabs")):
        if delimiter not in first:
            continue
        try:
            names = {name.strip().lower() for name in next(csv.reader([first], delimiter=delimiter), [])}
        except csv.Error:
            continue
        if "annotation_id" in names and {"learnloss_id", "path"} & names:
            return (f"header: the file seems to be separated by {shown}, not ',' (Label Studio's TSV export); "
                    "export the project from Label Studio as CSV or JSON-MIN instead")
        if "label" in names and {"id", "learnloss_id", "path"} & names:
            return f"header: the file seems to be separated by {shown}, not ','; {_COMMAS_HINT}"
    return None


def _csv_header_problem(header: list[str], text: str) -> str | None:
    """What is wrong with the ``header`` of a CSV label file (with a hint when another delimiter would fix it)."""
    if "annotation_id" in header:  # Label Studio's CSV export: `label` is missing while no task has a choice
        if not {"learnloss_id", "path"} & set(header):
            return (f"header: Label Studio's CSV export needs the tasks' 'learnloss_id' or 'path' column, found "
                    f"{header}; export a project whose tasks learnloss query wrote (query-N.labelstudio.json)")
    elif "label" not in header or not {"id", "learnloss_id", "path"} & set(header):
        return _delimiter_hint(text) or (f"header: needs a 'label' column and an 'id' or 'path' column, found "
                                         f"{header}")
    if len(set(header)) != len(header):
        return f"header: repeated column names {header}"
    return None


def _parse_csv(text: str, problems: list[str], setup: LabelStudioSetup | None = None
               ) -> tuple[str, list[LabelRow], list[str]]:
    """The format (``csv`` or ``labelstudio-csv``), rows and skipped tasks of the CSV ``text``."""
    header: list[str] | None = None
    rows: list[LabelRow] = []
    entries: list[_StudioEntry] = []  # the rows of Label Studio's CSV export
    number = 0
    try:
        for number, cells in csv_records(text, strict=True):
            if not cells:  # a blank line: a spreadsheet shows an empty row, and so it is numbered
                continue
            if header is None:
                header = [name.strip().lower() for name in cells]
                problem = _csv_header_problem(header, text)
                if problem:
                    problems.append(problem)
                    return "csv", [], []
                continue
            where = f"row {number}"
            if len(cells) != len(header):
                problems.append(f"{where}: {'too many' if len(cells) > len(header) else 'too few'} cells for the "
                                "header")
                continue
            record = {key: unescape_cell(value.strip()) for key, value in zip(header, cells)}  # undo the escaping
            if "annotation_id" in header:
                entry = _studio_entry(where, record, problems, cell=True)
                entries.extend([entry] if entry else [])
                continue
            ident = record["learnloss_id"] if "learnloss_id" in record else record.get("id")
            row = _row(where, ident, record.get("path"), record["label"], problems)
            if row is not None:
                rows.append(row)
    except csv.Error as error:
        problems.append((_delimiter_hint(text) if header is None else None)
                        or f"{'header' if header is None else f'row {number + 1}'}: malformed CSV ({error})")
    if header is None and not problems:
        problems.append("header: needs a 'label' column and an 'id' or 'path' column, found nothing")
    if header is not None and "annotation_id" in header:
        if _CONTROL not in header:
            _check_control(set(header), "header", problems)
        studio_rows, skipped = _studio_rows(entries, problems, setup)
        return "labelstudio-csv", studio_rows, skipped
    return "csv", rows, []


def _parse_json(text: str, problems: list[str], schema: AnnotationSchema | None = None,
                setup: LabelStudioSetup | None = None) -> tuple[str, list[LabelRow], list[str]]:
    """The format (``json``, ``labelstudio`` or ``labelstudio-min``), rows and skipped tasks of the JSON
    ``text``; the tasks of a Label Studio export are read by :func:`~learnloss.project.labelstudio_reader.read_task`
    (the webhook's reader), their image URLs checked against ``setup``."""
    document = _load_json(text, problems)
    if problems:
        return "json", [], []
    if isinstance(document, dict):
        for key in ("items", "labels"):  # query-N.json keeps its items under "items"
            if isinstance(document.get(key), list):
                document = document[key]
                break
    if not isinstance(document, list):
        problems.append("the JSON must be a list of labels (or of Label Studio tasks), or the query-N.json that "
                        "learnloss query wrote, with its labels filled in")
        return "json", [], []
    studio = any(isinstance(entry, dict) and "annotations" in entry for entry in document)
    minimal = not studio and any(isinstance(entry, dict) and "annotation_id" in entry for entry in document)
    rows: list[LabelRow] = []
    skipped: list[str] = []
    entries: list[_StudioEntry] = []  # of a JSON-MIN export
    for number, entry in enumerate(document, start=1):
        where = f"{'task' if studio else 'entry'} {number}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object, got {type(entry).__name__}")
            continue
        if studio:
            reading = read_task(entry.get("data"), entry.get("annotations"), schema, setup, where, problems)
            rows.extend([reading.row] if reading.row else [])
            skipped.extend([reading.skipped] if reading.skipped else [])
        elif minimal:
            studio_entry = _studio_entry(where, entry, problems, cell=False)
            entries.extend([studio_entry] if studio_entry else [])
        else:
            ident = entry["learnloss_id"] if "learnloss_id" in entry else entry.get("id")
            row = _row(where, ident, entry.get("path"), entry.get("label"), problems)
            rows.extend([row] if row else [])
    if not document:
        problems.append("the file holds no labels")
    if minimal:
        if not any(isinstance(entry, dict) and _CONTROL in entry for entry in document):
            _check_control({key for entry in document if isinstance(entry, dict) for key in entry}, "entries",
                           problems)
        rows, skipped = _studio_rows(entries, problems, setup)
        return "labelstudio-min", rows, skipped
    return ("labelstudio" if studio else "json"), rows, skipped


def _load_json(text: str, problems: list[str]) -> Any:
    """The JSON document of ``text``, or None after adding why it is not one."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        problems.append(f"line {error.lineno}: malformed JSON ({error.msg})")
    except RecursionError:
        problems.append("malformed JSON: nested too deeply to be a label file")
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        problems.append("malformed JSON: it holds a number with thousands of digits, which no label file needs")
    return None


def _studio_targets(document: list[Any], schema: AnnotationSchema, setup: LabelStudioSetup | None,
                    problems: list[str]) -> tuple[list[LabelRow], list[str]]:
    """The boxes or keypoints of Label Studio's JSON export: per task, the target of its annotations that were not
    cancelled (several must agree), read by :func:`~learnloss.project.labelstudio_reader.read_task` (the webhook's
    reader). A task without a live annotation is skipped; so is, in a keypoints project, an annotation without any
    keypoint. In a detection project an annotation without a box labels its image as holding no object."""
    rows: list[LabelRow] = []
    skipped: list[str] = []
    for number, task in enumerate(document, start=1):
        where = f"task {number}"
        if not isinstance(task, dict):
            problems.append(f"{where}: expected an object, got {type(task).__name__}")
            continue
        reading = read_task(task.get("data"), task.get("annotations"), schema, setup, where, problems)
        rows.extend([reading.row] if reading.row else [])
        skipped.extend([reading.skipped] if reading.skipped else [])
    return rows, skipped


def _coco_targets(document: dict[str, Any], schema: AnnotationSchema, problems: list[str]
                  ) -> tuple[list[LabelRow], list[str]]:
    """The boxes or keypoints of a COCO JSON file, one row per image (its ``file_name`` is the item's path, its
    ``width`` and ``height`` must be the image's). Crowd annotations (``iscrowd``) are left out and listed. An image
    without annotations is skipped and listed — tools export every image of a task, annotated or not — unless it
    says ``"no_objects": true`` (as ``learnloss export --format coco`` writes for an image labeled as holding no
    object), which labels it so in a detection project."""
    try:
        coco = read_coco(document)  # the one COCO reader, the --dataset coco loader's too
    except DatasetFormatError as error:
        problems.append(str(error))
        return [], []
    by_category = {c.id: {"id": c.id, "name": c.name, "keypoints": list(c.keypoints)} for c in coco.categories}
    by_image: dict[int, list[CocoAnnotation]] = {}
    for annotation in coco.annotations:
        by_image.setdefault(annotation.image_id, []).append(annotation)
    rows: list[LabelRow] = []
    skipped: list[str] = []
    for image in coco.images:
        name, width, height = image.file_name, image.width, image.height
        where = f"image {image.id} ({name})"
        own_annotations = by_image.get(image.id, [])
        crowd = [a for a in own_annotations if a.crowd]
        if crowd:
            skipped.append(f"{where}: {len(crowd)} crowd annotation(s) left out")
        own = [a.raw for a in own_annotations if not a.crowd]
        if not own and not (schema.task == "detection" and image.raw.get("no_objects") is True):
            skipped.append(f"{where}: no annotation, left unlabeled" + (
                " (an image holding no object says \"no_objects\": true)" if schema.task == "detection" else ""))
            continue
        target = schema.from_coco(own, by_category, float(width), float(height), where, problems)
        if target is None:
            continue
        if schema.task == "keypoints" and not target["keypoints"]:
            skipped.append(f"{where}: no keypoint labeled")
            continue
        row = _target_row(where, None, name, target, schema, problems, (float(width), float(height)))
        rows.extend([row] if row else [])
    return rows, skipped


def _parse_targets(text: str, suffix: str, schema: AnnotationSchema, problems: list[str],
                   setup: LabelStudioSetup | None = None) -> tuple[str, list[LabelRow], list[str]]:
    """The format (``labelstudio`` or ``coco``), rows and skipped tasks or images of a detection or keypoints
    project's label file."""
    hint = "export the Label Studio project as JSON, or give COCO JSON"
    if suffix != ".json":
        problems.append(f"a {schema.task} project reads {schema.what} from Label Studio's JSON export or COCO JSON, "
                        f"not {suffix or 'this file'}; {hint}")
        return "unknown", [], []
    document = _load_json(text, problems)
    if problems:
        return "json", [], []
    if is_coco(document):
        rows, skipped = _coco_targets(document, schema, problems)
        if not rows and not skipped and not problems:
            problems.append("the file holds no labels")
        return "coco", rows, skipped
    if isinstance(document, list) and any(isinstance(entry, dict) and "annotations" in entry for entry in document):
        rows, skipped = _studio_targets(document, schema, setup, problems)
        return "labelstudio", rows, skipped
    if isinstance(document, list) and any(isinstance(entry, dict) and "annotation_id" in entry for entry in document):
        problems.append(f"this is Label Studio's JSON-MIN export, which drops what a {schema.task} project needs; "
                        f"{hint}")
    else:
        problems.append(f"the JSON is neither Label Studio's JSON export (a list of tasks with 'annotations') nor COCO "
                        f"(an object with 'images', 'annotations' and 'categories'); {hint}")
    return "json", [], []


def parse_label_file(path: Path, schema: AnnotationSchema | None = None, setup: LabelStudioSetup | None = None
                     ) -> LabelFile:
    """Read ``path``: its format (see the module docstring), its rows, its SHA-256, the problems found in the file
    itself (not yet checked against a project) and the Label Studio tasks it leaves out, each with where and why.
    A detection or keypoints ``schema`` reads boxes or keypoints (Label Studio's JSON export or COCO JSON); the
    image URLs of Label Studio tasks are checked against the project's ``setup`` (when given)."""
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
        return LabelFile("unknown", [], digest, problems, [])
    suffix = path.suffix.lower()
    if schema is not None and not schema.classes:
        fmt, rows, skipped = _parse_targets(text, suffix, schema, problems, setup)
        return LabelFile(fmt, rows, digest, problems, skipped)
    if suffix == ".csv":
        fmt, rows, skipped = _parse_csv(text, problems, setup)
        if not rows and not skipped and not problems:
            problems.append("the file holds no labels")
        return LabelFile(fmt, rows, digest, problems, skipped)
    if suffix == ".json":
        fmt, rows, skipped = _parse_json(text, problems, schema, setup)
        return LabelFile(fmt, rows, digest, problems, skipped)
    raise UsageError(f"{path}: unknown label file type {suffix or '(none)'}; use .csv or .json")


# --------------------------------------------------------------------------------------------- applying


#: The pixel size (width, height) of the image of an item id: what a label file's pixel coordinates are checked
#: against (the labeling workflow reads the image's header).
ImageSize = Callable[[int], tuple[int, int]]


def import_labels(store: ProjectStore, path: str | Path, relabel: bool = False, image_size: ImageSize | None = None
                  ) -> ImportSummary:
    """Validate ``path`` against the project and apply it in one transaction (see the module docstring). The
    tasks of a Label Studio export that are not labeled are left out and listed in the summary's ``skipped``. A
    detection or keypoints project reads boxes or keypoints (:func:`parse_label_file`); ``image_size`` checks the
    image sizes a COCO file declares.

    Raises:
        LabelFileError: the file has problems (all are listed); nothing was written.
        StoreBusyError: another process kept the project busy beyond the store's timeout.
    """
    path = Path(path)
    root = store.meta("data_root")
    setup = LabelStudioSetup.from_meta(root, store.meta("label_studio")) if isinstance(root, str) else None
    fmt, rows, digest, problems, skipped = parse_label_file(path, store.annotation_schema(), setup)
    return apply_label_rows(store, rows, path, digest, fmt, relabel=relabel, problems=problems, skipped=skipped,
                            image_size=image_size)


def _size_problem(row: LabelRow, item_id: int, image_size: ImageSize | None) -> str | None:
    """Why the pixel size ``row`` declares is not its image's own (its coordinates would land elsewhere), if so."""
    if row.size is None:
        return None
    if image_size is None:
        return f"{row.where}: pixel coordinates cannot be checked against the image here; import the file with " \
               "learnloss label"
    try:
        width, height = image_size(item_id)
    except UsageError as error:
        return f"{row.where}: {error}"
    if (round(row.size[0]), round(row.size[1])) != (width, height):
        return (f"{row.where}: the file says the image is {row.size[0]:g}×{row.size[1]:g} pixels, but it is "
                f"{width}×{height}; its coordinates belong to another version of the image — export the labels of "
                "these images again")
    return None


def apply_label_rows(
    store: ProjectStore, rows: Sequence[LabelRow], path: Path, digest: str, fmt: str, relabel: bool = False,
    problems: Sequence[str] = (), skipped: Sequence[str] = (), image_size: ImageSize | None = None,
) -> ImportSummary:
    """Validate ``rows`` against the project and apply them in one transaction, all or nothing: the second half of
    :func:`import_labels`, for labels that come from elsewhere than a file (Label Studio's webhook). ``path`` (its
    name) and ``digest`` are recorded as the labels' source, ``fmt`` as ``import:<fmt>``; ``problems`` already
    found refuse the rows too; ``skipped`` is passed on to the summary. Rows with a target (boxes, keypoints) need
    a project of that task; rows with a pixel ``size`` are checked with ``image_size``. A row from a Label Studio
    annotation older than the one that set the stored label (:attr:`LabelRow.annotated_at`) is skipped ("older
    than the stored label"), never applied; one that confirms the stored label records its newer time. A row naming
    a retired item says so, and how to label the image again.

    Raises:
        LabelFileError: ``problems`` or the rows' own (all are listed); nothing was written.
        StoreBusyError: another process kept the project busy beyond the store's timeout.
    """
    problems = list(problems)
    with store.transaction() as db:  # validate inside the write lock: no other import can interleave
        by_id = dict(store.items(db=db))
        by_path: dict[str, int] = {}
        ambiguous: set[str] = set()  # stores made before names were normalised may hold two spellings of one name
        for known_id, source in by_id.items():
            key = nfc(source)
            if key in by_path:
                ambiguous.add(key)
            by_path[key] = known_id
        schema = store.annotation_schema(db)
        stored_classes = store.classes(db)
        class_names = {nfc(name): name for name in stored_classes}  # compared in NFC, stored as registered
        classes = set(stored_classes)
        current = store.current_labels(db)
        queried = store.queried_provenance(db)
        annotated = store.label_annotations(db)
        retired = {item_id: (source, at, reason) for item_id, source, at, reason in store.retired_items(db)}
        retired_paths = {nfc(source): item_id for item_id, (source, _, _) in retired.items()}
        seen: dict[int, str] = {}
        new: list[LabelRecord] = []
        notes: list[tuple[int, str | None, str]] = []
        skipped = list(skipped)
        relabels = unchanged = 0
        for row in rows:
            item_id = row.item_id
            gone = item_id if item_id in retired else retired_paths.get(row.path or "") if item_id is None else None
            if gone is not None:
                source, at, reason = retired[gone]
                problems.append(_retired_problem(row.where, gone, source, at, reason))
                continue
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
            if (row.target is None) != schema.classes:
                problems.append(f"{row.where}: this is a {schema.task} project, whose labels are {schema.what}; the "
                                f"file gives {'a class' if row.target is None else 'boxes or keypoints'}")
                continue
            if row.target is not None:
                size_problem = _size_problem(row, item_id, image_size)
                if size_problem:
                    problems.append(size_problem)
                    continue
                label, target, said = None, row.target, schema.describe(row.target)
            else:
                label, target = class_names.get(row.label or ""), None
                if label is None:
                    problems.append(f"{row.where}: unknown class {row.label!r}; the classes are "
                                    f"{', '.join(sorted(classes))}")
                    continue
                said = repr(label)
            stored = current.get(item_id)
            before = annotated.get(item_id)
            if stored is not None and (stored == label if target is None else schema.same(stored, target)):
                unchanged += 1
                if row.annotated_at is not None and (before is None or before[1] < row.annotated_at):
                    notes.append((item_id, row.annotation, row.annotated_at))
                continue
            if stored is not None and before is not None and row.annotated_at is not None \
                    and row.annotated_at < before[1]:
                skipped.append(f"{row.where}: older than the stored label (annotation {shown(row.annotation)} of "
                               f"{row.annotated_at}; the label of item {item_id} is from annotation "
                               f"{shown(before[0])} of {before[1]})")
                continue
            if stored is not None and not relabel:
                was = repr(stored) if target is None else f"with {schema.describe(stored)}"
                problems.append(f"{row.where}: item {item_id} is labeled {was}, the file says "
                                f"{said if target is None else 'otherwise (' + said + ')'}; pass --relabel to change "
                                "it (the old label is kept in the history)")
                continue
            relabels += stored is not None
            cycle, strategy, score, rank = queried.get(item_id, (None, None, None, None))
            new.append(LabelRecord(item_id, label, f"import:{fmt}", cycle, strategy, score, rank, target,
                                   row.annotation, row.annotated_at))
        if problems:
            raise LabelFileError(path, problems)
        if new:
            import_id = store.add_import(db, path.name, digest, fmt, len(rows))
            store.add_labels(db, new, import_id=import_id)
        for item_id, annotation, at in notes:
            store.note_annotation(db, item_id, annotation, at)
    return ImportSummary(path.name, len(new) - relabels, relabels, unchanged, tuple(skipped))


def _retired_problem(where: str, item_id: int, source: str, at: str, reason: str) -> str:
    """Why a label for the retired item ``item_id`` is refused, and how to label its image again."""
    why = f": {shown(reason, 80)}" if reason else ""
    return (f"{where}: item {item_id} ({shown(source, 80)!r}) is retired (removed from this project at {at}{why}); "
            "its labels and history are kept, but a retired item is not labeled, trained on or queried. To label "
            "the image again, copy it under a new name inside the data root and register it with learnloss add "
            "PROJECT --images FOLDER")
