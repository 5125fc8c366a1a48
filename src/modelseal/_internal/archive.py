"""Safe extraction of zip and tar archives (gz, bz2, xz or plain), as model zoos ship them.

The rules are simple on purpose, so they are easy to trust:
- names must be safe model resource names (modelseal._internal.names): no absolute paths, no
  `..`, no backslashes, NUL or control characters; a leading "./" is tolerated;
- only regular files and directories: every symlink and hardlink is refused (even one that
  would stay inside), as are devices, FIFOs and anything else;
- no two members may share a name, also after case folding and Unicode NFC, and a file may
  not also be used as a directory;
- caps on the member count and on the bytes actually written (headers of zip bombs lie);
- encrypted zip entries are refused;
- files are written 0644 and directories 0755 (no setuid or other bits from the archive).
Everything lands in a fresh temporary directory beside the destination, which is renamed into
place only when every member was extracted; on any refusal it is removed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from modelseal._internal import names
from modelseal._internal.download import DEFAULT_MAX_BYTES
from modelseal.errors import IntegrityError, UsageError

DEFAULT_MAX_FILES = 100_000
ARCHIVE_SUFFIXES = (
    ".zip",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".tar",
)
_CHUNK = 1024 * 1024

try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover - a Python built without lzma
    _LZMAError = tarfile.TarError  # type: ignore[misc, assignment]


class UnsafeArchiveError(IntegrityError):
    """An archive member modelseal refuses to extract; `member` names it (when there is one)."""

    def __init__(self, message: str, *, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def archive_suffix(name: str) -> str | None:
    """The archive suffix `name` ends with (case-insensitive), or None."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return suffix
    return None


class _Extractor:
    """Checks each member and writes it into `root`, counting files and bytes."""

    def __init__(self, archive: Path, root: Path, max_files: int, max_bytes: int) -> None:
        self.archive = archive
        self.root = root
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.members = 0
        self.files = 0
        self.written = 0
        self.seen: dict[str, str] = {}  # folded name -> name
        self.file_names: set[str] = set()  # folded names of files
        self.dir_names: set[str] = set()  # folded names of directories (also implied ones)

    def refuse(self, member: str, problem: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"archive {self.archive.name}: member {member!r}: {problem}; nothing was extracted",
            member=member,
        )

    def name(self, raw: str, is_dir: bool) -> str | None:
        """The checked name of a member (None for the archive's own root "./")."""
        self.members += 1
        if self.members > self.max_files:
            raise self.refuse(raw, f"more than {self.max_files} members (the cap)")
        name = raw[:-1] if is_dir and raw.endswith("/") else raw
        while name.startswith("./"):
            name = name[2:]
        if name in ("", ".") and is_dir:
            return None
        problem = names.name_problem(name)
        if problem is not None or name == names.SINGLE_FILE_NAME:
            raise self.refuse(raw, problem or "not a valid name")
        folded = names.fold(name)
        if folded in self.seen:
            raise self.refuse(raw, f"a second member named like {self.seen[folded]!r}")
        self.seen[folded] = name
        parts = folded.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.file_names:
                raise self.refuse(raw, "its parent directory is also a file in the archive")
            self.dir_names.add(parent)
        if is_dir:
            if folded in self.file_names:
                raise self.refuse(raw, "also a file in the archive")
            self.dir_names.add(folded)
        else:
            if folded in self.dir_names:
                raise self.refuse(raw, "also a directory in the archive")
            self.file_names.add(folded)
        return name

    def directory(self, name: str) -> None:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o755)  # noqa: S103 - a model directory others may read

    def file(self, raw: str, name: str, source: IO[bytes]) -> None:
        self.files += 1
        path = self.root / name
        parent = path.parent
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise self.refuse(
                        raw, f"the archive expands to more than {self.max_bytes} bytes (the cap)"
                    )
                out.write(chunk)
        os.chmod(path, 0o644)

    def finish(self) -> None:
        if self.files == 0:
            raise UnsafeArchiveError(
                f"archive {self.archive.name} holds no files; nothing was extracted"
            )
        # Every directory, the root (mkdtemp made it 0700) and implied parents too, gets 0755.
        for dirpath, _dirs, _files in os.walk(self.root):
            os.chmod(dirpath, 0o755)  # noqa: S103 - as above


def _zip(archive: Path, extractor: _Extractor) -> None:
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeArchiveError(
            f"archive {archive.name} is not a valid zip file: {_one_line(exc)}"
        ) from None
    with handle:
        infos = handle.infolist()
        if len(infos) > extractor.max_files:
            raise extractor.refuse(
                infos[extractor.max_files].filename,
                f"more than {extractor.max_files} members (the cap)",
            )
        declared = sum(info.file_size for info in infos)
        if declared > extractor.max_bytes:
            raise UnsafeArchiveError(
                f"archive {archive.name} declares {declared} bytes, over the cap of "
                f"{extractor.max_bytes}; nothing was extracted"
            )
        for info in infos:
            raw = info.filename
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                raise extractor.refuse(raw, "a symlink (links are never extracted)")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise extractor.refuse(raw, "not a regular file or directory")
            if info.flag_bits & 0x1:
                raise extractor.refuse(raw, "encrypted")
            is_dir = info.is_dir() or kind == stat.S_IFDIR
            name = extractor.name(raw, is_dir)
            if name is None:
                continue
            if is_dir:
                extractor.directory(name)
                continue
            try:
                with handle.open(info) as source:
                    extractor.file(raw, name, source)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise extractor.refuse(raw, f"cannot be read: {_one_line(exc)}") from None
            except (ValueError, OSError) as exc:
                if isinstance(exc, OSError) and exc.filename:
                    raise
                raise extractor.refuse(raw, f"cannot be read: {_one_line(exc)}") from None


def _tar(archive: Path, extractor: _Extractor) -> None:
    try:
        handle = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by `with` below
    except RecursionError:  # the first member's chained headers, read by open()
        raise UnsafeArchiveError(
            f"archive {archive.name} chains too many extended headers; nothing was extracted"
        ) from None
    except (tarfile.TarError, OSError, EOFError):
        raise UnsafeArchiveError(
            f"archive {archive.name} is neither a zip nor a (gz/bz2/xz) tar archive"
        ) from None
    data_filter = getattr(tarfile, "data_filter", None)
    with handle:
        try:
            for member in _members(handle):
                raw = member.name
                if member.issym() or member.islnk():
                    raise extractor.refuse(raw, "a link (links are never extracted)")
                if not (member.isreg() or member.isdir()):
                    raise extractor.refuse(raw, "not a regular file or directory")
                name = extractor.name(raw, member.isdir())
                if name is None:
                    continue
                if data_filter is not None:  # a second opinion, never the only one
                    try:
                        data_filter(member, str(extractor.root))
                    except tarfile.FilterError as exc:
                        raise extractor.refuse(
                            raw, f"refused by tarfile's data filter: {_one_line(exc)}"
                        ) from None
                if member.isdir():
                    extractor.directory(name)
                    continue
                source = handle.extractfile(member)
                if source is None:
                    raise extractor.refuse(raw, "has no data")
                with source:
                    extractor.file(raw, name, source)
        except RecursionError:  # tarfile follows chained pax / GNU long-name headers recursively
            raise UnsafeArchiveError(
                f"archive {archive.name} chains too many extended headers; nothing was extracted"
            ) from None
        except (tarfile.TarError, EOFError, zlib.error, _LZMAError) as exc:
            raise UnsafeArchiveError(
                f"archive {archive.name} is corrupt: {_one_line(exc)}; nothing was extracted"
            ) from None


def _members(handle: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members one at a time: no list of a million headers held in memory before the cap."""
    while True:
        member = handle.next()
        if member is None:
            return
        yield member


def _is_zip(archive: Path) -> bool:
    with open(archive, "rb") as handle:
        head = handle.read(4)
    return head in (b"PK\x03\x04", b"PK\x05\x06")


def extract_archive(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Extract the zip or tar `archive` into the new directory `dest` (it must not exist).

    The kind is read from the file's content, not its name. Raises UnsafeArchiveError (naming
    the member) on anything the module docstring refuses; `dest` then does not exist.
    """
    source = Path(archive)
    target = Path(dest)
    if max_files <= 0 or max_bytes <= 0:
        raise UsageError("max_files and max_bytes must be positive")
    if os.path.lexists(target):
        raise UsageError(f"cannot extract into {target}: it already exists")
    try:
        is_zip = _is_zip(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".modelseal-extract-", dir=target.parent))
    except OSError as exc:
        raise UsageError(f"cannot extract {source}: {exc.strerror or exc}") from None
    try:
        extractor = _Extractor(source, tmp, max_files, max_bytes)
        if is_zip:
            _zip(source, extractor)
        else:
            _tar(source, extractor)
        extractor.finish()
        os.rename(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        where = f" {exc.filename}" if exc.filename else ""
        raise UsageError(f"cannot extract {source}:{where} {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "ARCHIVE_SUFFIXES",
    "DEFAULT_MAX_FILES",
    "UnsafeArchiveError",
    "archive_suffix",
    "extract_archive",
]
