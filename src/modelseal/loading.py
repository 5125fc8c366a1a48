"""Verified bytes for any loader, with no window between the check and the load.

`open_verified` reads each file of a model exactly once, hashes it, and keeps
the very bytes it hashed: in memory (the default; hand `model.open(name)` or
`model.read(name)` to a loader that takes bytes or file objects), or in a
private snapshot directory (mode 0700, files 0600) for loaders that insist on
a path. Whoever can write the model directory can swap a file at any moment;
nothing they swap in after the read is ever seen by the loader.
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelseal._internal import names
from modelseal._internal.tree import FileEntry
from modelseal.errors import UsageError
from modelseal.hashing import HashResult, capture_entries, hash_entries
from modelseal.manifest import Serialization
from modelseal.signing import keys
from modelseal.verification import Verification, run_verification

if TYPE_CHECKING:
    from modelseal.policy import Policy

_SINGLE = names.SINGLE_FILE_NAME


Buffer = bytearray | mmap.mmap
"""Private, writable memory holding one verified file."""


def _private_memory(size: int) -> Buffer:
    """Anonymous memory, faulted in by the read itself (on the copy thread) rather than
    zero-filled up front, in huge pages where the kernel offers them."""
    if size == 0:
        return bytearray()
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= 2 << 20 and hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            memory.madvise(mmap.MADV_HUGEPAGE)
    return memory


class _MemoryCapture:
    """Each file read straight into private memory of its own size."""

    def __init__(self) -> None:
        self.files: dict[str, Buffer] = {}

    def buffer(self, entry: FileEntry) -> memoryview | None:
        data = _private_memory(entry.size)
        self.files[entry.name] = data
        return memoryview(data)

    def sink(self, entry: FileEntry) -> int:  # pragma: no cover - buffers are never empty
        raise AssertionError("memory capture reads into its buffers")


class _SnapshotCapture:
    """Each file copied into a fresh private directory, and hashed from that copy."""

    @classmethod
    def create(
        cls, snapshot_dir: str | os.PathLike[str] | None, single_file_name: str
    ) -> _SnapshotCapture:
        """A capture into a new 0700 temporary directory (under `snapshot_dir` if given)."""
        root = Path(tempfile.mkdtemp(prefix="modelseal-", dir=snapshot_dir))
        os.chmod(root, 0o700)
        return cls(root, single_file_name)

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __init__(self, root: Path, single_file_name: str) -> None:
        self.root = root
        self._single = single_file_name
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self.names: list[str] = []

    def path_of(self, name: str) -> Path:
        return self.root / (self._single if name == names.SINGLE_FILE_NAME else name)

    def buffer(self, entry: FileEntry) -> memoryview | None:
        return None

    def sink(self, entry: FileEntry) -> int:
        target = self.path_of(entry.name)
        with self._lock:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(target, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
            self._fds[entry.name] = fd
            self.names.append(entry.name)
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def capture_sealed(
    capture: _MemoryCapture | _SnapshotCapture,
    entries: list[FileEntry],
    serialization: Serialization,
    sealed: Iterable[str],
    workers: int | None = None,
) -> HashResult:
    """Keep (and hash) the files the seal lists; only hash the others, for the report.

    A file the seal does not list fails the verification anyway: it is never copied, so an
    attacker cannot make the verifier copy a huge planted file.
    """
    wanted = frozenset(sealed)
    kept = [e for e in entries if e.name in wanted]
    extra = [e for e in entries if e.name not in wanted]
    try:
        result = capture_entries(kept, serialization, capture, workers=workers)
    finally:
        if isinstance(capture, _SnapshotCapture):
            capture.close()
    if not extra:
        return result
    others = hash_entries(extra, serialization, workers=workers)
    return HashResult(
        result.resources + others.resources,
        {**result.unreadable, **others.unreadable},
        result.total_bytes + others.total_bytes,
    )


@dataclass(frozen=True)
class VerifiedModel:
    """A verified model: its report, and the bytes that were verified."""

    verification: Verification
    path: Path | None = None
    """The model inside the private snapshot (snapshot mode), else None."""
    _files: dict[str, Buffer] = field(default_factory=dict, repr=False)
    _names: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The verified files, as names relative to the model root ('.' for a single file)."""
        return self._names

    def _check(self, name: str) -> str:
        if name not in self._names:
            raise UsageError(f"{name!r} is not a verified file of this model")
        return name

    def buffer(self, name: str = _SINGLE) -> memoryview:
        """A read-only view of the verified bytes, without copying them."""
        name = self._check(name)
        if self.path is not None:
            raise UsageError("a snapshot keeps files on disk: use .path or .open()")
        return memoryview(self._files[name]).toreadonly()

    def take(self, name: str = _SINGLE) -> Buffer:
        """Hand over the writable memory holding a verified file (memory mode), without a
        copy: for loaders that build arrays over it. The file can then not be read again."""
        name = self._check(name)
        if self.path is not None:
            raise UsageError("a snapshot keeps files on disk: use .path or .open()")
        try:
            return self._files.pop(name)
        except KeyError:
            raise UsageError(f"{name!r} was already taken") from None

    def read(self, name: str = _SINGLE) -> bytes:
        """The verified bytes of one file."""
        name = self._check(name)
        if self.path is not None:
            return self.file_path(name).read_bytes()
        return bytes(self._files[name])

    def open(self, name: str = _SINGLE) -> io.BufferedIOBase:
        """A read-only, seekable file object over the verified bytes."""
        name = self._check(name)
        if self.path is not None:
            return open(self.file_path(name), "rb")
        return io.BufferedReader(_ViewReader(self.buffer(name)))

    def file_path(self, name: str = _SINGLE) -> Path:
        """Where a verified file sits in the snapshot (snapshot mode only)."""
        name = self._check(name)
        if self.path is None:
            raise UsageError("not a snapshot: pass snapshot=True to open_verified")
        if name == names.SINGLE_FILE_NAME:
            return self.path
        return self.path / name


class _ViewReader(io.RawIOBase):
    """A raw, read-only, seekable stream over a memoryview (no copy of the whole)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        memoryview(buffer).cast("B")[:n] = chunk
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        position = base + offset
        if position < 0:  # as a real file does: OSError(EINVAL)
            raise OSError(errno.EINVAL, "Invalid argument: seek before the start")
        self._pos = position
        return position

    def tell(self) -> int:
        return self._pos


@contextmanager
def open_verified(
    model: str | os.PathLike[str],
    *,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey] = (),
    allow_unsigned: bool = False,
    signature: str | os.PathLike[str] | None = None,
    allow_symlinks: bool = False,
    snapshot: bool = False,
    snapshot_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    policy: Policy | None = None,
    unsafe_skip_verification: bool = False,
    model_name: str | None = None,
) -> Iterator[VerifiedModel]:
    """Verify `model` while reading it once, and give the verified bytes to the caller.

        with modelseal.open_verified("model.pt", public_keys=["trainer.pub"]) as m:
            state = torch.load(m.open(), weights_only=True)

    Raises `IntegrityError` (and keeps nothing) when verification fails.
    `unsafe_skip_verification=True` (or MODELSEAL_UNSAFE_SKIP=1) reads without checking: an
    emergency escape, a CRITICAL audit event each time. `model_name` refuses a seal made for
    any other model name (the signer chooses the name a policy decides by). With
    `snapshot=True` the files are copied into a private temporary directory,
    removed when the block ends; `m.path` is the model inside it.
    """
    model_path = Path(model)
    capture: _MemoryCapture | _SnapshotCapture
    if snapshot:
        capture = _SnapshotCapture.create(snapshot_dir, model_path.name or "model")
    else:
        capture = _MemoryCapture()

    def read_and_keep(
        entries: list[FileEntry], serialization: Serialization, sealed: frozenset[str]
    ) -> HashResult:
        return capture_sealed(capture, entries, serialization, sealed, workers)

    try:
        verification = run_verification(
            model_path,
            public_keys=public_keys,
            allow_unsigned=allow_unsigned,
            signature=signature,
            allow_symlinks=allow_symlinks,
            reader=read_and_keep,
            policy=policy,
            unsafe_skip_verification=unsafe_skip_verification,
            model_name=model_name,
        )
        if isinstance(capture, _SnapshotCapture):
            is_file = capture.names == [names.SINGLE_FILE_NAME]
            verified = VerifiedModel(
                verification,
                path=capture.path_of(names.SINGLE_FILE_NAME) if is_file else capture.root,
                _names=tuple(sorted(capture.names)),
            )
        else:
            verified = VerifiedModel(
                verification, _files=capture.files, _names=tuple(sorted(capture.files))
            )
        yield verified
    finally:
        if isinstance(capture, _MemoryCapture):
            capture.files.clear()
        else:
            capture.remove()
