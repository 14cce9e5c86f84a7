"""Paths a user supplies (manifests, label files) stay inside the project's data root, and item names are ones every
command can address.

An item's name is its path relative to the data root, in POSIX form and Unicode NFC. Files are found by that name
whatever the normalisation of the names on disk (:class:`ItemLocator`: macOS writes NFD, most tools NFC), and a name
two files share after normalisation is refused as ambiguous. :func:`name_problem` says why a name found on disk
cannot be an item: label files and spreadsheets trim whitespace, read a backslash as a folder separator, and cannot
carry control characters, so such names are refused up front with the advice to rename.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

from learnloss.errors import UsageError
from learnloss.project.exports import unescape_cell

__all__ = ["AmbiguousNameError", "ItemLocator", "UnsafePathError", "name_problem", "nfc", "resolve_inside",
           "safe_relative"]

#: Invisible characters that reorder text (bidirectional controls): a name holding one displays as another name.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class UnsafePathError(UsageError):
    """A path that is absolute, climbs out with ``..``, or leads outside the data root through a symlink."""


class AmbiguousNameError(UnsafePathError):
    """Two files of one folder have names that differ only in Unicode normalisation."""


def nfc(text: str) -> str:
    """``text`` in Unicode normal form C, the form every item name, class name and label is compared in."""
    return unicodedata.normalize("NFC", text)


def name_problem(name: str) -> str | None:
    """Why the relative POSIX path ``name`` (as found on disk or written in a manifest) cannot be an item that every
    command — query exports, spreadsheets, label imports — can address; ``None`` when it can.

    Refused: names that are not valid UTF-8, hold a backslash (read as a folder separator in manifests and label
    files), a control character, a line separator or a bidirectional control, a part with leading or trailing
    whitespace (trimmed by label files and spreadsheets), or a leading ``'`` before a formula character (the
    spreadsheet escape, which label files undo). Names starting with ``=``, ``+``, ``-`` or ``@`` work: CSV files
    escape them.
    """
    for char in name:
        if "\ud800" <= char <= "\udfff":
            return "the name is not valid UTF-8; rename the file"
    if "\\" in name:
        return "the name holds a backslash, which manifests and label files read as a folder separator; rename the file"
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc" or category in ("Zl", "Zp") or char in _BIDI_CONTROLS:
            return f"the name holds the control character U+{ord(char):04X}; rename the file"
    for part in name.split("/"):
        if part != part.strip():
            return ("a part of the name starts or ends with whitespace, which spreadsheets and label files trim; "
                    "rename the file")
    if unescape_cell(name) != name:
        return ("the name starts with ' before a formula character, which label files read as a spreadsheet "
                "escape; rename the file")
    return None


def safe_relative(text: str, where: str = "") -> str:
    """Normalise ``text`` to a relative POSIX path, refusing absolute paths, drive letters and ``..`` parts.

    Raises:
        UnsafePathError: the path could leave the data root (``where`` says which row or file it came from).
    """
    origin = f"{where}: " if where else ""
    if not text or not text.strip():
        raise UnsafePathError(f"{origin}empty path")
    if "\x00" in text:
        raise UnsafePathError(f"{origin}path {text!r} contains a NUL byte")
    posix = PurePosixPath(text.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(text).drive:
        raise UnsafePathError(f"{origin}path {text!r} is absolute; give it relative to the data root")
    if ".." in posix.parts:
        raise UnsafePathError(f"{origin}path {text!r} climbs out of the data root with '..'")
    parts = [part for part in posix.parts if part not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"{origin}path {text!r} names the data root itself, not a file")
    return "/".join(parts)


def _check_inside(root: Path, path: Path, relative: str, where: str) -> None:
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        origin = f"{where}: " if where else ""
        raise UnsafePathError(f"{origin}path {relative!r} leads outside the data root {root} (through a symlink)")


def resolve_inside(root: Path, relative: str, where: str = "") -> Path:
    """``root / relative`` after :func:`safe_relative`, refused when symlinks lead it outside ``root``.

    Raises:
        UnsafePathError: as :func:`safe_relative`, or the resolved path is outside ``root``.
    """
    path = root / safe_relative(relative, where)
    _check_inside(root, path, relative, where)
    return path


class ItemLocator:
    """Finds the files of items under ``root`` by name, whatever the Unicode normalisation of the names on disk.

    Each part of a name is matched to the one entry of its folder with the same NFC form; folder listings are read
    once per locator (make a new one when the disk may have changed).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[Path, dict[str, list[str]]] = {}

    def _listing(self, folder: Path) -> dict[str, list[str]]:
        listing = self._listings.get(folder)
        if listing is None:
            try:
                names = os.listdir(folder)
            except OSError:  # missing, not a folder, unreadable: the file is then simply not found
                names = []
            listing = {}
            for entry in names:
                listing.setdefault(nfc(entry), []).append(entry)
            self._listings[folder] = listing
        return listing

    def find(self, name: str, where: str = "") -> Path:
        """The path of the item ``name`` under the root (which may not exist: check it).

        Raises:
            UnsafePathError: ``name`` is absolute, climbs out, or leads outside the root through a symlink.
            AmbiguousNameError: a folder holds two entries whose names differ only in Unicode normalisation.
        """
        relative = safe_relative(name, where)
        current = self.root
        for part in relative.split("/"):
            entries = self._listing(current).get(nfc(part), [])
            if len(entries) > 1:
                origin = f"{where}: " if where else ""
                spellings = " and ".join(ascii(entry) for entry in sorted(entries))
                raise AmbiguousNameError(
                    f"{origin}{name!r}: the folder {current} holds {spellings}, names that differ only in their "
                    "Unicode normalisation; rename all but one"
                )
            current = current / (entries[0] if entries else part)
        _check_inside(self.root, current, name, where)
        return current
