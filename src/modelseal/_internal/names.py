"""Rules for resource names: the one place that decides what a safe name is.

A name is a POSIX path relative to the model root. Anything that could
escape the root, mean different things on different systems, or collide
with another name after case folding or Unicode normalization is refused.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

SINGLE_FILE_NAME = "."
"""The one resource name of a model that is a single file (OMS convention)."""


def name_problem(name: str) -> str | None:
    """Why `name` is not a safe resource name, or None when it is."""
    if name == SINGLE_FILE_NAME:
        return None
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in name"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/"):
        return "absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return "drive-letter path"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "name is not valid UTF-8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "control character in name"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"path component {part!r} is not allowed"
    return None


def check_name(name: str) -> None:
    """Raise ValueError when `name` is not a safe resource name."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{problem}: {name!r}")


def fold(name: str) -> str:
    """The form two names share when a case-insensitive or normalizing system would merge them."""
    return unicodedata.normalize("NFC", name).casefold()


def first_collision(names: Iterable[str]) -> tuple[str, str] | None:
    """Two distinct names that are equal after folding (or the same name twice)."""
    seen: dict[str, str] = {}
    for name in names:
        key = fold(name)
        if key in seen:
            return seen[key], name
        seen[key] = name
    return None


def sort_key(name: str) -> tuple[str, ...]:
    """Order names by path components, as upstream's PurePosixPath ordering does.

    Sorting the same way as upstream gives the same root digest for the same
    model, whichever tool sealed it.
    """
    return tuple(name.split("/"))


def is_under(name: str, prefix: str) -> bool:
    """True when `name` is `prefix` or lies inside the directory `prefix`."""
    return name == prefix or name.startswith(prefix.rstrip("/") + "/")
