"""How Label Studio sees a project: the image URLs of its tasks, the settings that make them load, the labeling
configuration, and tasks with the model's prediction as a pre-annotation.

Label Studio (≥ 1.20) serves a file of the local disk only when all of these hold (``io_storages/localfiles`` of
Label Studio): it was started with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<root>``; the task's URL is ``/data/local-files/?d=<path under root>``; and
some project of the user has a *Local files* source storage whose absolute path holds the file. It refuses a storage
on the document root itself ("cannot be the same as LOCAL_FILES_DOCUMENT_ROOT … add a subdirectory"), so the data
root of a project must lie strictly inside the document root. The default document root is the data root's parent
(or ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` when it is set and holds the data root), the storage is the data root,
and a task's image URL is ``/data/local-files/?d=<data root's name>/<item path>``.

Images served some other way (a web server, a bucket) are named by a URL prefix instead: the item path, URL-quoted,
is appended to it.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from learnloss.errors import UsageError

__all__ = [
    "CONFIG_FROM_NAME",
    "CONFIG_TO_NAME",
    "ChoicesControl",
    "LOCAL_FILES_URL",
    "LabelStudioSetup",
    "choices_control",
    "label_studio_config",
    "label_studio_task",
    "xml_attribute",
]

#: Label Studio serves local files under this URL, ``d`` naming the file relative to its document root.
LOCAL_FILES_URL = "/data/local-files/?d="
#: The environment variable that sets Label Studio's document root for local files.
DOCUMENT_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
#: Names of the controls of the labeling configuration learnloss writes.
CONFIG_FROM_NAME = "label"
CONFIG_TO_NAME = "image"


def xml_attribute(text: str) -> str:
    """``text`` escaped for an XML attribute value in double quotes."""
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def label_studio_config(classes: Sequence[str]) -> str:
    """A Label Studio labeling configuration: one image (``$image``), one single-choice question over ``classes``."""
    choices = "\n".join(f'    <Choice value="{xml_attribute(name)}"/>' for name in classes)
    return (
        f'<View>\n  <Image name="{CONFIG_TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{CONFIG_FROM_NAME}" toName="{CONFIG_TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


@dataclass(frozen=True)
class ChoicesControl:
    """The single-choice question of a labeling configuration: its name (``from_name`` of results), the object it
    labels (``to_name``) and its choices."""

    from_name: str
    to_name: str
    choices: tuple[str, ...]


def choices_control(config: str) -> ChoicesControl:
    """The ``<Choices>`` control of the Label Studio labeling configuration ``config`` (its XML).

    Raises:
        UsageError: the configuration is not XML, or has no ``<Choices>`` control with a name, a ``toName`` and
            choices, or has more than one.
    """
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as error:
        raise UsageError(f"the labeling configuration is not valid XML ({error})") from None
    controls = [element for element in root.iter() if element.tag == "Choices"]
    if len(controls) != 1:
        raise UsageError(f"the labeling configuration has {len(controls)} <Choices> controls; learnloss needs exactly "
                         "one (use the configuration learnloss wrote: exports/labelstudio-config.xml)")
    control = controls[0]
    name, to_name = control.get("name"), control.get("toName")
    choices = tuple(value for element in control.iter("Choice") if (value := element.get("value")) is not None)
    if not name or not to_name or not choices:
        raise UsageError("the <Choices> control of the labeling configuration needs a name, a toName and choices")
    return ChoicesControl(name, to_name, choices)


def _inside(path: Path, root: Path) -> bool:
    return root in path.parents


@dataclass(frozen=True)
class LabelStudioSetup:
    """Where Label Studio finds a project's images: the data root, Label Studio's document root for local files
    (``None`` when images are served some other way) and the URL prefix of every task's image.

    Build it with :meth:`for_project`; store it with :meth:`to_meta` and read it back with :meth:`from_meta`.
    """

    data_root: Path
    document_root: Path | None
    url_prefix: str

    @classmethod
    def for_project(cls, data_root: str | Path, document_root: str | Path | None = None,
                    url_prefix: str | None = None) -> LabelStudioSetup:
        """The setup of a project over ``data_root``: images served by Label Studio's local-files storage under
        ``document_root`` (default: ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` when it is set and holds the data
        root, else the data root's parent), or under ``url_prefix`` when given (then ``document_root`` is unused).

        Raises:
            UsageError: both are given; the document root does not strictly hold the data root; the URL prefix
                is empty or holds whitespace.
        """
        root = Path(data_root).resolve()
        if url_prefix is not None:
            if document_root is not None:
                raise UsageError("give --ls-document-root or --ls-url-prefix, not both")
            prefix = url_prefix.strip()
            if not prefix or any(char.isspace() for char in prefix):
                raise UsageError(f"--ls-url-prefix must be a URL without spaces, got {url_prefix!r}")
            return cls(root, None, prefix)
        if document_root is None:
            env = os.environ.get(DOCUMENT_ROOT_ENV)
            candidate = Path(env).expanduser().resolve() if env else None
            document = candidate if candidate is not None and _inside(root, candidate) else root.parent
        else:
            document = Path(document_root).expanduser().resolve()
        if not _inside(root, document):
            why = ("is the data root itself; Label Studio refuses a storage on its document root, so choose a folder "
                   "above it" if document == root else "does not hold the data root")
            raise UsageError(f"the Label Studio document root {document} {why} ({root}); give --ls-document-root "
                             "with a folder above the data root")
        return cls(root, document, LOCAL_FILES_URL + quote(root.relative_to(document).as_posix()) + "/")

    @classmethod
    def from_meta(cls, data_root: str | Path, stored: Any) -> LabelStudioSetup:
        """The setup stored in a project's meta (``label_studio``), or the default for ``data_root`` when a project
        made by an older learnloss stored none."""
        if isinstance(stored, Mapping) and isinstance(stored.get("url_prefix"), str):
            document = stored.get("document_root")
            return cls(Path(data_root).resolve(), Path(document) if isinstance(document, str) else None,
                       stored["url_prefix"])
        return cls.for_project(data_root)

    def to_meta(self) -> dict[str, Any]:
        """The setup as the project stores it."""
        return {"document_root": None if self.document_root is None else str(self.document_root),
                "url_prefix": self.url_prefix}

    def image_url(self, item_path: str) -> str:
        """The URL of the item ``item_path`` (relative to the data root) in a Label Studio task."""
        return self.url_prefix + quote(item_path)

    def item_path(self, url: str) -> str | None:
        """The item path an image URL of a task names, or None when the URL is not one of this setup's."""
        if self.url_prefix.startswith(LOCAL_FILES_URL) and self.document_root is not None:
            query = urlsplit(url).query
            if not urlsplit(url).path.rstrip("/").endswith("/data/local-files"):
                return None
            named = parse_qs(query).get("d")
            if not named:
                return None
            folder = unquote(self.url_prefix[len(LOCAL_FILES_URL):]).strip("/")
            path = PurePosixPath(named[0].lstrip("/"))
            try:
                return path.relative_to(folder).as_posix()
            except ValueError:
                return None
        if url.startswith(self.url_prefix):
            return unquote(url[len(self.url_prefix):])
        return None

    def instructions(self, config: Path | None = None, tasks: Path | None = None) -> list[str]:
        """The exact Label Studio settings that make these tasks' images load, one step per line."""
        lines = ["Label Studio (1.20 or newer) settings for this project:"]
        step = 1
        if self.document_root is not None:
            lines.append(f"  {step}. start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
                         f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={self.document_root}")
            step += 1
        if config is not None:
            lines.append(f"  {step}. create a project; Settings → Labeling Interface → Code: paste {config}")
            step += 1
        if self.document_root is not None:
            lines.append(f"  {step}. Settings → Cloud Storage → Add Source Storage → Local files, absolute local path "
                         f"{self.data_root} (Save; no need to sync)")
            step += 1
        else:
            lines.append(f"  {step}. images load from {self.url_prefix}<path>; serve the data root {self.data_root} "
                         "there")
            step += 1
        if tasks is not None:
            lines.append(f"  {step}. Import {tasks}; label; Export as JSON, JSON-MIN or CSV and run learnloss label "
                         "on the file")
        return lines


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def label_studio_task(setup: LabelStudioSetup, item_id: int, path: str, prediction: str, confidence: float | None,
                      score: float | None, rank: int | None, model_version: str,
                      results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Label Studio task for one item, with the model's prediction as a pre-annotation: the predicted class as a
    choice, or the given ``results`` (boxes or keypoints as regions; :meth:`AnnotationSchema.label_studio_results
    <learnloss.project.annotations.AnnotationSchema.label_studio_results>`).

    ``data`` holds the image URL, ``learnloss_id`` (the key every import reads back), ``path``, ``rank``, the
    strategy's ``score`` and the model's ``prediction`` and ``confidence``. The prediction's ``score`` is the
    strategy's score, so that Label Studio's Data Manager sorts tasks by it (left out when the strategy does not
    score, as ``random``); ``null`` stands for a missing or non-finite number in ``data``.
    """
    if results is None:
        results = [{"from_name": CONFIG_FROM_NAME, "to_name": CONFIG_TO_NAME, "type": "choices",
                    "value": {"choices": [prediction]}}]
    annotation: dict[str, Any] = {"model_version": model_version, "result": results}
    if (finite := _finite(score)) is not None:
        annotation["score"] = finite
    return {
        "data": {"image": setup.image_url(path), "learnloss_id": item_id, "path": path, "rank": rank,
                 "score": _finite(score), "prediction": prediction, "confidence": _finite(confidence)},
        "predictions": [annotation],
    }
