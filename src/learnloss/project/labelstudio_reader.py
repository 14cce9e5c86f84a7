"""Reading Label Studio annotations: one set of rules for ``learnloss label`` (Label Studio's JSON export) and the
ML backend's webhook (``learnloss serve``), so that what one stores the other stores too.

The rules (Label Studio's task and annotation objects: ``tasks/models.py`` of Label Studio):

* **Which item a task names.** ``data.learnloss_id`` (an item id: :func:`parse_item_id`), ``data.path`` (a path
  relative to the data root) and the task's image URL (``data.image``, or another key for tasks a storage sync made)
  must agree: a path and a URL that name different images, or an image URL that is not under this project's
  Label Studio URL prefix (another project's image), refuse the task (:class:`TaskItem` ``refusal``). The id and the
  path are then checked against the store (:func:`~learnloss.project.importer.apply_label_rows`: ``id 4 is
  '11.png', not '29.png'``).
* **Cancelled or skipped annotations** (``was_cancelled`` or ``skipped`` true; Label Studio's *Skip* button) are not
  labels: left out and reported. Flags must be true, false or absent.
* **Results.** A ``choices`` result is the label of a classification project (exactly one choice); a result of another
  control that is not a label — a comment (``textarea``), a rating, a number — and a relation are ignored. A region
  (``rectanglelabels``, ``keypointlabels``, ...) in a classification project, a result that is not an object, and a
  ``value`` that is not an object are problems. An annotation without a choice is skipped (reported). Boxes and
  keypoints are read by :meth:`AnnotationSchema.from_label_studio
  <learnloss.project.annotations.AnnotationSchema.from_label_studio>`. The live annotations of one task must agree.
* **Event order.** An annotation's time is its ``updated_at`` (else its ``created_at``); the label it gives carries
  that time and the annotation's id (:class:`LabelRow`), and the store keeps them with the label, so an annotation
  older than the one that set the stored label is skipped ("older than the stored label") instead of reverting it.

Text that reaches a message is shown with :func:`shown` (lone surrogates escaped, long text cut), so a refusal is
always one line of valid UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from learnloss.errors import UsageError
from learnloss.project.annotations import AnnotationSchema
from learnloss.project.labelstudio import LabelStudioSetup
from learnloss.project.paths import UnsafePathError, nfc, safe_relative

__all__ = [
    "AnnotationError", "LabelRow", "MAX_ID_DIGITS", "TaskItem", "TaskReading", "annotation_time", "is_cancelled",
    "parse_item_id", "read_choice", "read_task", "shown", "task_item",
]

#: An item id: ASCII digits only (``int()`` and ``str.isdigit()`` also take ``+16``, ``1_9``, ``²`` and other
#: scripts' digits).
_ID = re.compile(r"[0-9]+")
#: Every SQLite rowid fits in 18 digits; longer ids are unknown without converting them.
MAX_ID_DIGITS = 18
#: The data keys a task's image URL is under: ``image`` (the labeling configuration learnloss writes, ``$image``)
#: and ``$undefined$`` (Label Studio's key for a file a storage sync found when the configuration names none).
IMAGE_KEYS = ("image", "$undefined$")
#: The longest annotation time accepted (ISO 8601 with microseconds and an offset is 32 characters).
_MAX_TIME_CHARS = 40
#: The longest annotation id accepted (Label Studio's are numbers).
_MAX_ANNOTATION_ID_CHARS = 100


class AnnotationError(UsageError):
    """One problem of a Label Studio task or annotation (the message says where and what to do)."""


def shown(value: Any, limit: int = 40) -> str:
    """``value`` as text safe for any message: lone surrogates and other characters UTF-8 cannot encode escaped
    (``\\udc00``), cut to ``limit`` characters with ``…``."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_item_id(value: Any, where: str) -> int:
    """The item id ``value`` names: an ``int`` (not a ``bool``) or text of plain ASCII digits 0-9 (surrounding
    whitespace ignored), of at most :data:`MAX_ID_DIGITS` digits — the one parser of every id a label file, a task
    or a request gives.

    Raises:
        AnnotationError: anything else (a negative number, ``'²'``, ``'+1'``, ``1.0``, ``True``), or an id too long to
            be an item's (reported as unknown).
    """
    if isinstance(value, bool):
        raise AnnotationError(f"{where}: id {value!r} is not a whole number (a true/false value)")
    if isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits): far beyond any id
            raise AnnotationError(f"{where}: unknown id (a number of about {int(value.bit_length() * 0.30103) + 1} "
                                  "digits)") from None
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise AnnotationError(f"{where}: id {shown(value)!r} is not a whole number in plain digits 0-9, as the "
                              "exported files write it")
    if not _ID.fullmatch(text):
        raise AnnotationError(f"{where}: id {shown(text)!r} is not a whole number in plain digits 0-9, as the "
                              "exported files write it")
    if len(text) > MAX_ID_DIGITS:
        raise AnnotationError(f"{where}: unknown id {text[:20]}… ({len(text)} digits)")
    return int(text)


def _flag(annotation: Mapping[str, Any], key: str, where: str) -> bool:
    value = annotation.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise AnnotationError(f"{where}: the annotation's '{key}' must be true or false, got {shown(value)!r}")


def is_cancelled(annotation: Mapping[str, Any], where: str) -> bool:
    """Whether the annotation was cancelled or skipped in Label Studio (``was_cancelled`` or ``skipped`` true).

    Raises:
        AnnotationError: a flag that is not true, false or absent.
    """
    cancelled = _flag(annotation, "was_cancelled", where)
    return _flag(annotation, "skipped", where) or cancelled


def annotation_time(annotation: Mapping[str, Any], where: str) -> str | None:
    """The time of an annotation — its ``updated_at``, else its ``created_at`` — as ISO 8601 in UTC with
    microseconds (comparable as text), or None when it has neither. A time without an offset is UTC (as Label
    Studio writes them).

    Raises:
        AnnotationError: a time that is not ISO 8601 text.
    """
    for key in ("updated_at", "created_at"):
        value = annotation.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > _MAX_TIME_CHARS:
            raise AnnotationError(f"{where}: the annotation's '{key}' is not a time, got {shown(value)!r}")
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise AnnotationError(f"{where}: the annotation's '{key}' is not an ISO 8601 time, got "
                                  f"{shown(value)!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        try:
            return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
        except OverflowError:
            raise AnnotationError(f"{where}: the annotation's '{key}' is out of range, got {shown(value)!r}") from None
    return None


def _region_kind(result: Mapping[str, Any]) -> str | None:
    """The region type of a result (``rectanglelabels``, ``keypointlabels``, ...), if it is one."""
    kind = result.get("type")
    if isinstance(kind, str) and kind.lower().endswith("labels"):
        return kind
    value = result.get("value")
    named = [key for key in value if isinstance(key, str) and key.endswith("labels")] if isinstance(value, Mapping) \
        else []
    return named[0] if named else None


def read_choice(results: Sequence[Any], where: str) -> str | None:
    """The single choice of one annotation's ``results`` (NFC), or None when it has no choice (only results of
    other controls: a comment, a rating).

    Raises:
        AnnotationError: a result that is not an object, a value that is not an object, a ``choices`` that is not
            exactly one text, several choices, or a region (a classification project labels a class).
    """
    chosen: list[str] = []
    for result in results:
        if not isinstance(result, Mapping):
            raise AnnotationError(f"{where}: an annotation result is not a single choice (not an object)")
        if result.get("type") == "relation":
            continue  # a relation drawn between regions: no label
        value = result.get("value")
        if not isinstance(value, Mapping):
            raise AnnotationError(f"{where}: an annotation result is not a single choice (its 'value' is not an "
                                  "object)")
        kind = _region_kind(result)
        if kind is not None:
            raise AnnotationError(f"{where}: an annotation result is not a single choice (a {shown(kind)!r} region; "
                                  "a classification project reads one choice: label with labelstudio-config.xml)")
        if "choices" not in value:
            continue  # another control's result (a comment, a rating): not a label
        choices = value["choices"]
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
            count = f"{len(choices)} choices" if isinstance(choices, list) else "not a list"
            raise AnnotationError(f"{where}: an annotation result is not a single choice ({count}); choose one class "
                                  "per task")
        chosen.append(nfc(choices[0].strip()))
    distinct = sorted(set(chosen))
    if len(distinct) > 1:
        raise AnnotationError(f"{where}: the annotation chooses several classes "
                              f"({', '.join(shown(c) for c in distinct)}); choose one class per task")
    return distinct[0] if distinct else None


@dataclass(frozen=True)
class LabelRow:
    """One label of a file or an event: where it is (``row 4``, ``task 12``), which item (id and/or path), which
    class — or, in a detection or keypoints project, the checked ``target`` (:mod:`learnloss.project.annotations`;
    ``label`` is None) and, when the file gave it in pixels, the image ``size`` (width, height) the file declares,
    which must be the image's own. A label from Label Studio carries the id of the annotation that gave it and that
    annotation's time (:func:`annotation_time`): the store keeps both, and an older annotation never replaces it."""

    where: str
    item_id: int | None
    path: str | None
    label: str | None
    target: Any = None
    size: tuple[float, float] | None = None
    annotation: str | None = None
    annotated_at: str | None = None


@dataclass(frozen=True)
class TaskItem:
    """The item a Label Studio task names: its ``item_id`` (``data.learnloss_id``) and ``path`` (``data.path`` or the
    path its image URL names), either None when the task does not give it; ``refusal`` says why the task cannot be
    trusted to name an item of this project (an image URL of another project, a path and a URL that disagree)."""

    item_id: int | None
    path: str | None
    refusal: str | None = None

    @property
    def named(self) -> bool:
        """Whether the task names an item (and is not refused)."""
        return self.refusal is None and (self.item_id is not None or self.path is not None)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def task_item(data: Mapping[str, Any], setup: LabelStudioSetup | None, where: str) -> TaskItem:
    """The item the task ``data`` names (see the module docstring): ``learnloss_id``, ``path`` and the image URL,
    which must agree. Without a ``setup`` (a store without images) the URL is not read.

    Raises:
        AnnotationError: a ``learnloss_id`` that is not an item id, or a ``path`` that is not a safe relative path.
    """
    raw_id, raw_path = data.get("learnloss_id"), data.get("path")
    item_id = None if _empty(raw_id) else parse_item_id(raw_id, where)
    path: str | None = None
    if not _empty(raw_path):
        if not isinstance(raw_path, str):
            raise AnnotationError(f"{where}: data.path must be text, got {shown(raw_path)!r}")
        try:
            path = nfc(safe_relative(raw_path.strip(), where))
        except UnsafePathError as error:
            raise AnnotationError(shown(str(error), 300)) from None
    if setup is None:
        return TaskItem(item_id, path)
    from_urls: set[str] = set()
    for key, value in data.items():
        if key in ("learnloss_id", "path") or not isinstance(value, str) or not value.strip():
            continue
        found = setup.item_path(value.strip())
        if found is None:
            if key in IMAGE_KEYS:
                return TaskItem(item_id, path, f"{where}: the image URL {shown(value, 80)!r} is not under this "
                                f"project's {setup.url_prefix} (an image of another project, or served elsewhere); "
                                "label the tasks learnloss wrote for this project")
            continue
        try:
            from_urls.add(nfc(safe_relative(found, where)))
        except UnsafePathError as error:
            return TaskItem(item_id, path, shown(str(error), 300))
    if len(from_urls) > 1:
        return TaskItem(item_id, path, f"{where}: the task's image URLs name different images "
                        f"({', '.join(repr(shown(p)) for p in sorted(from_urls))})")
    url_path = next(iter(from_urls), None)
    if path is not None and url_path is not None and path != url_path:
        return TaskItem(item_id, path, f"{where}: data.path {shown(path)!r} and the image URL ({shown(url_path)!r}) "
                        "name different images")
    return TaskItem(item_id, path if path is not None else url_path)


@dataclass(frozen=True)
class TaskReading:
    """What a Label Studio task with its annotations gives: a ``row`` to store, or why it is ``skipped`` (both None
    after ``problems`` were added)."""

    row: LabelRow | None = None
    skipped: str | None = None


def _named(where: str, data: Mapping[str, Any]) -> str:
    """``where`` with the item the task names, to list a skipped task: ``task 3 (learnloss_id 17)``."""
    for name in ("learnloss_id", "path"):
        value = data.get(name)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip():
            return f"{where} ({name} {shown(str(value).strip())})"
    return where


def read_task(data: Any, annotations: Any, schema: AnnotationSchema | None, setup: LabelStudioSetup | None,
              where: str, problems: list[str]) -> TaskReading:
    """Read one Label Studio task — its ``data`` and its ``annotations`` (a task of a JSON export holds them all; an
    event of the webhook one) — by the rules of the module docstring: the row it gives (the label of its live
    annotations, which must agree; its time is the newest of theirs), or why it is skipped; neither after adding
    its problems to ``problems``. ``schema`` None reads classes (a store made before projects had tasks)."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        problems.append(f"{where}: a task's 'data' must be an object")
        return TaskReading()
    annotations = [] if annotations is None else annotations
    if not isinstance(annotations, list):
        problems.append(f"{where}: 'annotations' must be a list of objects")
        return TaskReading()
    if not all(isinstance(annotation, Mapping) for annotation in annotations):
        problems.append(f"{where}: an annotation must be an object")
        return TaskReading()
    before = len(problems)
    live: list[Mapping[str, Any]] = []
    times: list[tuple[str, str | None]] = []
    for annotation in annotations:
        try:
            if is_cancelled(annotation, where):
                continue
            at = annotation_time(annotation, where)
        except AnnotationError as error:
            problems.append(str(error))
            continue
        ident = annotation.get("id")
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (int, str))
                                  or isinstance(ident, int) and ident.bit_length() > 64
                                  or isinstance(ident, str) and len(ident) > _MAX_ANNOTATION_ID_CHARS):
            problems.append(f"{where}: the annotation's 'id' must be Label Studio's annotation id (a number), got "
                            f"{shown(ident)!r}")
            continue
        live.append(annotation)
        times.append((at or "", None if ident is None else str(ident)))
    if len(problems) > before:
        return TaskReading()
    if not live:
        return TaskReading(skipped=f"{_named(where, data)}: " + (
            "skipped in Label Studio (cancelled)" if annotations else "no annotation yet"))
    classes = schema is None or schema.classes
    values: list[Any] = []
    for annotation in live:
        results = annotation.get("result")
        results = [] if results is None else results
        if not isinstance(results, list):
            problems.append(f"{where}: an annotation's 'result' must be a list")
            return TaskReading()
        if classes:
            try:
                values.append(read_choice(results, where))
            except AnnotationError as error:
                problems.append(str(error))
                return TaskReading()
        else:
            assert schema is not None
            target = schema.from_label_studio(results, where, problems)
            if target is None:
                return TaskReading()
            values.append(target)
    if classes:
        chosen = sorted({value for value in values if value is not None})
        if len(chosen) > 1:
            problems.append(f"{where}: its annotations disagree ({', '.join(shown(c) for c in chosen)}); resolve them "
                            "first")
            return TaskReading()
        if not chosen:
            return TaskReading(skipped=f"{_named(where, data)}: annotated without a choice")
        label, target, what = chosen[0], None, repr(shown(chosen[0]))
    else:
        assert schema is not None
        if any(not schema.same(value, values[0]) for value in values[1:]):
            problems.append(f"{where}: its {len(live)} annotations differ ({', '.join(map(schema.describe, values))});"
                            " keep one (delete or cancel the others in Label Studio) and export again")
            return TaskReading()
        if schema.task == "keypoints" and not values[0]["keypoints"]:
            return TaskReading(skipped=f"{_named(where, data)}: annotated without any keypoint")
        label, target, what = None, values[0], f"with {schema.describe(values[0])}"
    try:
        item = task_item(data, setup, where)
    except AnnotationError as error:
        problems.append(str(error))
        return TaskReading()
    if item.refusal is not None:
        problems.append(item.refusal)
        return TaskReading()
    if not item.named:
        problems.append(f"{where}: neither id nor path says which item is labeled {what} (a task names it by "
                        "data.learnloss_id, data.path or an image URL of this project; Label Studio's own task id is "
                        "not an item id); label tasks that learnloss query wrote")
        return TaskReading()
    newest, annotation_id = max(times, key=lambda pair: pair[0])
    return TaskReading(row=LabelRow(where, item.item_id, item.path, label, target, annotation=annotation_id,
                                    annotated_at=newest or None))
