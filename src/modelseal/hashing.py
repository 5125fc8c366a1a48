"""The hashing engine: every file of a model, streamed once, on all cores.

hashlib and blake3 release the GIL while hashing large buffers, so a thread
pool hashes several files (or several shards of one file) at the same time.
Each worker reads with `preadv` into its own reusable buffer, so memory stays
bounded whatever the model size, and no byte is read twice.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import stat
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelseal._internal import names
from modelseal._internal.tree import FileEntry, walk
from modelseal.errors import UnsafeModelError, UsageError
from modelseal.manifest import Manifest, Method, Resource, Serialization, shard_name

CHUNK_SIZE = 1 << 20
"""Bytes per read when reading (not mapping): amortizes syscalls, stays in cache."""

MAP_WINDOW = 8 << 20
"""Bytes mapped at a time: hashing straight from the page cache skips a copy (about 20%
faster than reading), and one window per thread keeps the resident size small."""

USE_MMAP = os.environ.get("MODELSEAL_MMAP", "1") != "0"
"""Set MODELSEAL_MMAP=0 to read instead of map (see `_mapped_windows` on truncation races)."""

_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class Progress(Protocol):
    """Receives progress: `start` once with the total, then `advance` from worker threads."""

    def start(self, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class _Hasher(Protocol):
    def update(self, data: Any, /) -> object: ...

    def digest(self) -> bytes: ...


def new_hasher(algorithm: str, *, threads: int = 1) -> _Hasher:
    """A fresh hash object for `algorithm` (blake3 needs the `blake3` extra)."""
    if algorithm == "blake3":
        try:
            import blake3
        except ImportError:
            raise UsageError(
                "blake3 needs the optional package: pip install 'modelseal[blake3]'"
            ) from None
        hasher: _Hasher = blake3.blake3(max_threads=threads if threads > 1 else 1)
        return hasher
    return hashlib.new(algorithm)


def hash_bytes(data: bytes, algorithm: str = "sha256") -> bytes:
    """Digest of an in-memory buffer."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.digest()


@dataclass(frozen=True)
class _Task:
    entry: FileEntry
    start: int
    end: int
    name: str


class FileChangedError(Exception):
    """The file on disk is not the one the walk saw, or changed while being read."""


_local = threading.local()


def _buffer() -> memoryview:
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = memoryview(bytearray(CHUNK_SIZE))
        _local.view = view
    return view


def _open_checked(entry: FileEntry) -> int:
    """Open the file the walk saw, refusing a swap for a link, FIFO, device or other inode."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    fd = os.open(entry.path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (entry.device, entry.inode):
            raise FileChangedError("replaced since the model was listed")
        if st.st_size != entry.size:
            raise FileChangedError("size changed since the model was listed")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_windows(fd: int, start: int, end: int) -> Iterator[memoryview]:
    """The bytes [start, end) of `fd`, copied into a reusable per-thread buffer."""
    view = _buffer()
    offset = start
    while offset < end:
        got = os.preadv(fd, [view[: min(len(view), end - offset)]], offset)
        if got <= 0:
            raise FileChangedError("file was truncated while being read")
        yield view[:got]
        offset += got


def _mapped_windows(fd: int, start: int, end: int, size: int) -> Iterator[memoryview]:
    """The bytes [start, end) of `fd`, mapped window by window: no copy out of the page cache.

    Each window is unmapped before the next, so memory stays bounded. The size is
    checked before each window; a truncation racing with the hash itself can still
    raise SIGBUS, which ends the process (fail closed, never a pass).
    """
    offset = start
    while offset < end:
        if os.fstat(fd).st_size != size:
            raise FileChangedError("size changed while the file was being read")
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        length = min(MAP_WINDOW, end - offset) + (offset - base)
        mapping = mmap.mmap(fd, length, flags=_MAP_FLAGS, prot=mmap.PROT_READ, offset=base)
        try:
            with memoryview(mapping) as whole, whole[offset - base :] as window:
                yield window
                offset += len(window)
        finally:
            mapping.close()


def _hash_range(task: _Task, algorithm: str, threads: int, progress: Progress | None) -> bytes:
    hasher = new_hasher(algorithm, threads=threads)
    fd = _open_checked(task.entry)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, task.start, task.end - task.start, os.POSIX_FADV_SEQUENTIAL)
        windows = (
            _mapped_windows(fd, task.start, task.end, task.entry.size)
            if USE_MMAP
            else _read_windows(fd, task.start, task.end)
        )
        for window in windows:
            hasher.update(window)
            if progress is not None:
                progress.advance(len(window))
        if os.fstat(fd).st_size != task.entry.size:
            raise FileChangedError("size changed while the file was being read")
    finally:
        os.close(fd)
    return hasher.digest()


def _tasks(entries: Iterable[FileEntry], serialization: Serialization) -> list[_Task]:
    tasks: list[_Task] = []
    for entry in entries:
        if serialization.method is Method.SHARDS:
            size = serialization.shard_size or 1
            start = 0
            while True:
                end = min(start + size, entry.size)
                tasks.append(_Task(entry, start, end, shard_name(entry.name, start, end)))
                start = end
                if start >= entry.size:
                    break
        else:
            tasks.append(_Task(entry, 0, entry.size, entry.name))
    # Largest first keeps every core busy until the end.
    tasks.sort(key=lambda t: t.end - t.start, reverse=True)
    return tasks


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class HashResult:
    """Digests of what could be read, and why the rest could not."""

    resources: tuple[Resource, ...]
    unreadable: dict[str, str]
    total_bytes: int


def hash_entries(
    entries: list[FileEntry],
    serialization: Serialization,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> HashResult:
    """Hash the given files in parallel; failures are collected per file, never raised."""
    tasks = _tasks(entries, serialization)
    if progress is not None:
        progress.start(sum(e.size for e in entries))
    workers = workers or default_workers()
    algorithm = serialization.hash_type
    # blake3 parallelizes one file by itself; give it the cores when there is one file.
    inner = workers if algorithm == "blake3" and len(tasks) == 1 else 1
    labels = serialization.resource_algorithm
    resources: list[Resource] = []
    unreadable: dict[str, str] = {}

    def run(task: _Task) -> tuple[_Task, bytes | None, str | None]:
        try:
            return task, _hash_range(task, algorithm, inner, progress), None
        except FileChangedError as exc:
            return task, None, str(exc)
        except OSError as exc:
            return task, None, exc.strerror or str(exc)

    results: Iterator[tuple[_Task, bytes | None, str | None]]
    if workers == 1 or len(tasks) <= 1:
        results = map(run, tasks)
        outcomes = list(results)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            outcomes = list(pool.map(run, tasks))
    for task, digest, error in outcomes:
        if digest is None:
            unreadable[task.entry.name] = error or "unreadable"
            continue
        is_shard = serialization.method is Method.SHARDS
        resources.append(
            Resource(
                task.name,
                labels,
                digest,
                task.start if is_shard else None,
                task.end if is_shard else None,
            )
        )
    if unreadable:
        # Drop the readable shards of a file that had an unreadable one.
        resources = [r for r in resources if r.path not in unreadable]
    return HashResult(tuple(resources), unreadable, sum(e.size for e in entries))


class Capture(Protocol):
    """Keeps the bytes being hashed, so that what was verified is what gets loaded."""

    def buffer(self, entry: FileEntry) -> memoryview | None:
        """Called once per file first: where the whole file is read to (memory capture),
        or None when the bytes go to `sink` instead."""
        ...

    def sink(self, entry: FileEntry) -> int:
        """A private file descriptor (read-write) that receives a copy of `entry`."""
        ...


PIPELINE_CHUNK = 8 << 20
"""Capture reads one chunk ahead of the hash, on another thread: the copy costs no wall time
on a machine with two cores or more."""

_COPY_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


class _Keeper:
    """Copies bytes of one file into its capture, and shows them again for hashing.

    The hash is always taken over the kept copy (private memory, or the private snapshot
    file), never over the original a second time: what is hashed is what gets loaded.
    """

    def __init__(self, target: memoryview | None, sink: int | None) -> None:
        self._target = target
        self._sink = sink
        self._copy_range = sink is not None and hasattr(os, "copy_file_range")

    def fill(self, src: int, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            if self._target is not None:
                got = os.preadv(src, [self._target[offset:end]], offset)
            elif self._sink is None:  # pragma: no cover - a keeper has a target or a sink
                raise AssertionError("nowhere to keep the bytes")
            elif self._copy_range:
                try:
                    got = os.copy_file_range(src, self._sink, end - offset, offset, offset)
                except OSError as exc:
                    if exc.errno not in _COPY_FALLBACK:
                        raise
                    self._copy_range = False
                    continue
            else:
                view = _buffer()[: min(CHUNK_SIZE, end - offset)]
                got = os.preadv(src, [view], offset)
                if got > 0:
                    os.pwrite(self._sink, view[:got], offset)
            if got <= 0:
                raise FileChangedError("file was truncated while being read")
            offset += got

    @contextmanager
    def view(self, offset: int, length: int) -> Iterator[memoryview]:
        if self._target is not None:
            with self._target[offset : offset + length] as window:
                yield window
            return
        if length == 0 or self._sink is None:
            yield memoryview(b"")
            return
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(
            self._sink,
            length + offset - base,
            flags=mmap.MAP_SHARED,
            prot=mmap.PROT_READ,
            offset=base,
        )
        try:
            with memoryview(mapping) as whole, whole[offset - base :] as window:
                yield window
        finally:
            mapping.close()


def _pieces(size: int, step: int) -> list[tuple[int, int, bool]]:
    """(start, end, begins_a_shard) chunks that never straddle a shard boundary."""
    pieces: list[tuple[int, int, bool]] = []
    shard_start = 0
    while True:
        shard_end = min(shard_start + step, size)
        offset = shard_start
        first = True
        while first or offset < shard_end:
            end = min(offset + PIPELINE_CHUNK, shard_end)
            pieces.append((offset, end, first))
            first = False
            offset = end
        shard_start = shard_end
        if shard_start >= size:
            return pieces


def _capture_file(
    entry: FileEntry, serialization: Serialization, capture: Capture
) -> list[Resource]:
    """Read one file once: keep its bytes, hash the kept bytes (per shard if asked).

    Large files are copied one chunk ahead of the hash on a second thread; both release
    the GIL, so the copy overlaps the hash instead of adding to it.
    """
    sharded = serialization.method is Method.SHARDS
    step = (serialization.shard_size or 1) if sharded else max(entry.size, 1)
    target = capture.buffer(entry)
    fd = _open_checked(entry)
    try:
        keeper = _Keeper(target, capture.sink(entry) if target is None else None)
        pieces = _pieces(entry.size, step)
        digests = _hash_kept(fd, keeper, pieces, serialization.hash_type)
        if os.fstat(fd).st_size != entry.size:
            raise FileChangedError("size changed while the file was being read")
    finally:
        os.close(fd)
    starts = [start for start, _, first in pieces if first]
    ends = [*starts[1:], entry.size]
    return [
        Resource(
            shard_name(entry.name, start, end) if sharded else entry.name,
            serialization.resource_algorithm,
            digest,
            start if sharded else None,
            end if sharded else None,
        )
        for start, end, digest in zip(starts, ends, digests, strict=True)
    ]


def _hash_kept(
    fd: int, keeper: _Keeper, pieces: list[tuple[int, int, bool]], algorithm: str
) -> list[bytes]:
    ready: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
    stop = threading.Event()

    def copy_all() -> None:
        try:
            for start, end, _ in pieces:
                if stop.is_set():
                    return
                keeper.fill(fd, start, end - start)
                ready.put(None)
        except BaseException as exc:  # handed to the hashing thread, which raises it
            ready.put(exc)

    ahead = len(pieces) > 1
    copier = threading.Thread(target=copy_all, name="modelseal-capture", daemon=True)
    if ahead:
        copier.start()
    digests: list[bytes] = []
    hasher: _Hasher | None = None
    try:
        for start, end, first in pieces:
            if ahead:
                error = ready.get()
                if error is not None:
                    raise error
            else:
                keeper.fill(fd, start, end - start)
            if first:
                if hasher is not None:
                    digests.append(hasher.digest())
                hasher = new_hasher(algorithm)
            assert hasher is not None
            with keeper.view(start, end - start) as window:
                hasher.update(window)
    finally:
        stop.set()
        if ahead:
            copier.join()
    assert hasher is not None
    digests.append(hasher.digest())
    return digests


def capture_entries(
    entries: list[FileEntry],
    serialization: Serialization,
    capture: Capture,
    *,
    workers: int | None = None,
) -> HashResult:
    """Like `hash_entries`, but every byte hashed is also kept by `capture`.

    Each file is read exactly once, sequentially, in one thread; files in parallel.
    """

    def run(entry: FileEntry) -> tuple[FileEntry, list[Resource] | None, str | None]:
        try:
            return entry, _capture_file(entry, serialization, capture), None
        except FileChangedError as exc:
            return entry, None, str(exc)
        except OSError as exc:
            return entry, None, exc.strerror or str(exc)

    workers = workers or default_workers()
    if workers == 1 or len(entries) <= 1:
        outcomes = [run(entry) for entry in entries]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(entries))) as pool:
            outcomes = list(pool.map(run, entries))
    resources: list[Resource] = []
    unreadable: dict[str, str] = {}
    for entry, found, error in outcomes:
        if found is None:
            unreadable[entry.name] = error or "unreadable"
        else:
            resources.extend(found)
    return HashResult(tuple(resources), unreadable, sum(e.size for e in entries))


def model_name_of(model: Path) -> str:
    """The default model name: the last component of the resolved path."""
    return model.name or Path(os.path.realpath(model)).name


def list_model(model: Path, serialization: Serialization) -> list[FileEntry]:
    """The files of `model` the serialization covers; refuses unsafe trees."""
    ignored = serialization.ignore_paths if model.is_dir() else ()
    return walk(model, allow_symlinks=serialization.allow_symlinks, ignored=ignored)


def hash_model(
    model: str | os.PathLike[str],
    serialization: Serialization | None = None,
    *,
    model_name: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Hash a model (a file or a directory tree) into a manifest.

    Raises UnsafeModelError for an unsafe or empty model, and UsageError when a
    file cannot be read.
    """
    path = Path(model)
    serialization = serialization or Serialization()
    entries = list_model(path, serialization)
    if not entries:
        raise UnsafeModelError(f"the model {path} has no files: an empty model cannot be sealed")
    collision = names.first_collision(e.name for e in entries)
    if collision is not None:
        raise UnsafeModelError(
            f"file names collide after case folding / Unicode normalization: {collision!r}"
        )
    result = hash_entries(entries, serialization, workers=workers, progress=progress)
    if result.unreadable:
        name, reason = next(iter(sorted(result.unreadable.items())))
        raise UsageError(f"cannot read {name} in {path}: {reason}")
    return Manifest.build(model_name or model_name_of(path), serialization, result.resources)
