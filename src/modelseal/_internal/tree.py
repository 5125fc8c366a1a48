"""Walk a model on disk and list the regular files that make it up, refusing anything unsafe.

Each file is recorded with its (device, inode) so that the hasher can check,
after opening it, that it opened the very file the walk saw and not something
swapped in since (a symlink, a FIFO, another file).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelseal._internal import names
from modelseal.errors import UnsafeModelError, UsageError


@dataclass(frozen=True)
class FileEntry:
    """A regular file of the model, as the walk saw it."""

    name: str
    path: str
    size: int
    device: int
    inode: int


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a special file"


def _entry(name: str, path: str, st: os.stat_result) -> FileEntry:
    return FileEntry(name, path, st.st_size, st.st_dev, st.st_ino)


def _inside(root_real: str, target: str) -> bool:
    return target == root_real or target.startswith(root_real.rstrip("/") + "/")


def walk(
    model: Path,
    *,
    allow_symlinks: bool,
    ignored: frozenset[str] | tuple[str, ...] = (),
) -> list[FileEntry]:
    """Every regular file of `model` (a file or a directory), minus the ignored names.

    Raises UsageError when the model does not exist, UnsafeModelError for a
    symlink (unless allowed, and never one that leaves the model root), a
    special file, or a name that is not safe.
    """
    try:
        st = os.lstat(model)
    except FileNotFoundError:
        raise UsageError(f"model not found: {model}") from None
    except OSError as exc:
        raise UsageError(f"cannot read model {model}: {exc.strerror}") from None

    if stat.S_ISLNK(st.st_mode):
        if not allow_symlinks:
            raise UnsafeModelError(f"the model path {model} is a symlink (not allowed)")
        st = os.stat(model)
        model = Path(os.path.realpath(model))
    if stat.S_ISREG(st.st_mode):
        return [_entry(names.SINGLE_FILE_NAME, os.fspath(model), st)]
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeModelError(f"the model path {model} is {_kind(st.st_mode)}")

    root_real = os.path.realpath(model)
    found: list[FileEntry] = []
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    _walk_dir(os.fspath(model), "", root_real, allow_symlinks, ignored, visited, found)
    return found


def _walk_dir(
    directory: str,
    prefix: str,
    root_real: str,
    allow_symlinks: bool,
    ignored: frozenset[str] | tuple[str, ...],
    visited: set[tuple[int, int]],
    found: list[FileEntry],
) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise UnsafeModelError(
            f"cannot list directory {prefix or '.'}: {exc.strerror}",
            name=prefix.rstrip("/") or None,
        ) from None
    for entry in entries:
        name = prefix + entry.name
        if any(names.is_under(name, path) for path in ignored):
            continue
        problem = names.name_problem(name)
        if problem is not None:
            raise UnsafeModelError(f"unsafe file name in the model: {problem}", name=name)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone since the directory was listed: it is not part of the model now
        except OSError as exc:
            raise UnsafeModelError(f"cannot read {name}: {exc.strerror}", name=name) from None
        path = entry.path
        if stat.S_ISLNK(st.st_mode):
            if not allow_symlinks:
                raise UnsafeModelError(f"{name} is a symlink (symlinks are not allowed)", name=name)
            target = os.path.realpath(path)
            if not _inside(root_real, target):
                raise UnsafeModelError(f"{name} is a symlink that leaves the model root", name=name)
            try:
                st = os.stat(target)
            except OSError:
                raise UnsafeModelError(f"{name} is a dangling symlink", name=name) from None
            path = target
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                raise UnsafeModelError(
                    f"{name} leads to a directory already walked (a loop)", name=name
                )
            visited.add(key)
            _walk_dir(path, name + "/", root_real, allow_symlinks, ignored, visited, found)
        elif stat.S_ISREG(st.st_mode):
            found.append(_entry(name, path, st))
        else:
            raise UnsafeModelError(f"{name} is {_kind(st.st_mode)}, not a regular file", name=name)
