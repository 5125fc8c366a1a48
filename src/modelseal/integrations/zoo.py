"""Strong pins from models.lock for files that model zoos download themselves.

Zoos check downloads weakly, if at all: Gluon-CV compares SHA-1 (32 bits of it
with a tag), torch.hub an optional 8+ hex digit prefix of SHA-256 taken from the
same URL, Keras an optional md5 or SHA-256 the caller passes; none of them checks
a cached file against anything strong again. The wrappers here keep each zoo's
own download code and its own check, and add a full SHA-256 pin from the lock:

- `modelseal.integrations.keras.get_file` (keras.utils.get_file),
- `modelseal.integrations.torch.load_state_dict_from_url` (torch.hub),
- `modelseal.integrations.gluoncv.get_model(..., lock=...)` (Gluon-CV's model_store),
- `hf_file` here, for Hugging Face-style `.../{repo}/resolve/{revision}/{path}` URLs.

The rule is the same everywhere (`decide_pin`): the URL (or model name) must have
an entry in the lock whose `sha256` the file matches, on every call, cached or
not. No entry: `UnpinnedDownloadError`, before anything is downloaded. An entry
with `trust = "tofu"` and no digest yet: the digest of the first file seen is
recorded in the lock (and saved), and later files must match it. The file is
read once, hashed while it is copied into private memory or a private 0700
snapshot, and only those bytes reach the framework (see docs/zoo.md for what
each wrapper guarantees).
"""

from __future__ import annotations

import atexit
import dataclasses
import hmac
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from modelseal import audit
from modelseal._internal.tree import walk
from modelseal.errors import IntegrityError, ModelMismatchError, UsageError
from modelseal.loading import Buffer, _MemoryCapture, _SnapshotCapture, capture_sealed
from modelseal.manifest import ALGORITHMS, Manifest, Resource, Serialization
from modelseal.verification import Failure, Finding, Verification

if TYPE_CHECKING:
    from modelseal.cache import Cache
    from modelseal.lock import Lock, LockedModel
    from modelseal.policy import Policy

__all__ = [
    "HfFile",
    "LockSource",
    "PinDecision",
    "PinMismatchError",
    "PinnedFile",
    "UnpinnedDownloadError",
    "check_source",
    "decide_pin",
    "hf_file",
    "hf_url",
    "parse_hf_url",
]

PathLike = str | os.PathLike[str]

logger = logging.getLogger("modelseal.fetch")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class UnpinnedDownloadError(IntegrityError):
    """A zoo file has no SHA-256 pin in the lock (and its entry is not TOFU).

    The zoo's own check (SHA-1, a hash prefix, an md5) may well have passed: it is
    never trusted on its own.
    """


class PinMismatchError(ModelMismatchError):
    """A zoo file differs from its pin; `expected` and `actual` are "sha256:<hex>"."""

    def __init__(
        self, message: str, failure: Failure | None = None, *, expected: str, actual: str, url: str
    ) -> None:
        super().__init__(message, failure)
        self.expected = expected
        self.actual = actual
        self.url = url


@dataclass(frozen=True)
class PinDecision:
    """What to do with a file from `url`: check it against `expected`, or record its digest."""

    url: str
    entry: LockedModel
    expected: str | None
    """The pinned SHA-256 (lowercase hex), or None on the first use of a TOFU entry."""

    @property
    def record(self) -> bool:
        """True when the digest is to be recorded (trust on first use)."""
        return self.expected is None


def decide_pin(entry: LockedModel | None, url: str, *, zoo_check: str = "") -> PinDecision:
    """The pin rule, without I/O: a digest to check, a TOFU digest to record, or a refusal.

    `zoo_check` names the zoo's own check for the message ("gluoncv's SHA-1 table").
    """
    weak = f"; {zoo_check} alone is not trusted" if zoo_check else ""
    if entry is None:
        raise UnpinnedDownloadError(
            f"no pin for {url} in the lock: add one with `modelseal lock add {url} "
            f"--sha256 <hex>` (or --trust-on-first-use){weak}"
        )
    digest = (entry.sha256 or "").strip().lower()
    if digest.startswith("sha256:"):
        digest = digest[len("sha256:") :]
    if digest:
        if not _HEX64.fullmatch(digest):
            raise UsageError(f"lock entry {entry.name}: sha256 is not 64 hex digits: {digest!r}")
        return PinDecision(url, entry, digest)
    if entry.trust == "tofu":
        return PinDecision(url, entry, None)
    raise UnpinnedDownloadError(
        f'lock entry {entry.name} has no sha256 and trust = {entry.trust!r} (not "tofu"): '
        f"nothing to check {url} against{weak}"
    )


def check_source(url: str, policy: Policy | None) -> None:
    """Refuse a download URL before anything is fetched: outside the policy's `[sources]
    allow` list, or (without a policy) not https and not plain http to a loopback host."""
    from modelseal.fetch import SourceNotAllowed

    if policy is not None:
        if policy.source_allowed(url) is None:
            raise SourceNotAllowed(
                f"{url} is not an allowed source of policy {policy.source} ([sources] allow)",
                url=url,
            )
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise UsageError(f"not a URL: {url!r}") from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host in _LOOPBACK:
        return
    raise SourceNotAllowed(
        f"{url}: downloads are https only (plain http only to loopback)", url=url
    )


# -- the lock -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockSource:
    """A lock, and the file it was read from (needed to record a TOFU digest)."""

    lock: Lock
    path: Path | None

    @classmethod
    def of(cls, lock: Lock | PathLike | None) -> LockSource:
        """Load `lock` (a Lock, a path, or None for ./models.lock)."""
        from modelseal.lock import DEFAULT_LOCK_FILE, Lock

        if isinstance(lock, Lock):
            return cls(lock, lock.path)
        if lock is None:
            path = Path(DEFAULT_LOCK_FILE)
            if not path.exists():
                raise UnpinnedDownloadError(
                    f"no {DEFAULT_LOCK_FILE} here ({Path.cwd()}) and no lock= given: zoo "
                    "downloads need a SHA-256 pin from a lock"
                )
        else:
            path = Path(os.fspath(lock))
        return cls(Lock.load(path), path)

    def entry_for(self, url: str) -> LockedModel | None:
        return self.lock.pin_for(url)

    def record(self, decision: PinDecision, sha256_hex: str, size: int) -> LockedModel:
        """Record a TOFU digest: re-read the lock file, fill the entry, save it atomically.

        If another process recorded a digest meanwhile, that one stands and this file must
        match it.
        """
        from modelseal.lock import Lock, exclusive

        if self.path is None:
            raise UsageError(
                f"{decision.url}: a TOFU digest must be recorded, and this lock has no file: "
                "pass lock= as a path"
            )
        with exclusive(self.path):  # two first uses at once: the first recorded digest stands
            current = Lock.load(self.path)
            entry = current.find(decision.entry.name) or decision.entry
            if entry.sha256:
                expected = decide_pin(entry, decision.url).expected
                if expected is None or not hmac.compare_digest(expected, sha256_hex):
                    raise _mismatch(decision.url, expected or "", sha256_hex)
                return entry
            recorded = dataclasses.replace(
                entry,
                sha256=sha256_hex,
                size=size,
                fetched_at=datetime.now(timezone.utc).replace(microsecond=0),
            )
            current.add(recorded).save(self.path)
        logger.warning(
            "%s: trusting on first use: recorded sha256:%s for %s (%d bytes) in %s; review it",
            entry.name,
            sha256_hex,
            decision.url,
            size,
            self.path,
        )
        return recorded


def _mismatch(url: str, expected_hex: str, actual_hex: str, what: str = "") -> PinMismatchError:
    expected, actual = "sha256:" + expected_hex, "sha256:" + actual_hex
    failure = Failure(
        what or url,
        "lock",
        (Finding("changed", "content differs from the pin", ".", expected, actual),),
        None,
        expected,
        actual,
    )
    return PinMismatchError(
        f"{what or url}{f' (from {url})' if what else ''} does not match its pin: "
        f"expected {expected}, got {actual}",
        failure,
        expected=expected,
        actual=actual,
        url=url,
    )


# -- reading a file once, hashed and kept ---------------------------------------------------


@dataclass(frozen=True)
class PinnedFile:
    """A file read once and hashed; its bytes are kept in memory or in a private snapshot."""

    source: Path
    algorithm: str
    digest: str
    """Lowercase hex of what was read (and kept)."""
    size: int
    path: Path | None = None
    """The private snapshot copy (snapshot mode), else None."""
    memory: Buffer | None = dataclasses.field(default=None, repr=False)
    """The bytes (memory mode), else None."""

    def read(self) -> bytes:
        if self.memory is not None:
            return bytes(self.memory)
        assert self.path is not None
        return self.path.read_bytes()


def _capture(
    path: Path, capture: _MemoryCapture | _SnapshotCapture, algorithm: str, what: str
) -> tuple[bytes, int]:
    entries = walk(path, allow_symlinks=False)
    if len(entries) != 1 or entries[0].name != ".":
        raise UsageError(f"{what}: {path} is not a single regular file")
    result = capture_sealed(capture, entries, Serialization(hash_type=algorithm), ["."])
    if result.unreadable:
        raise UsageError(f"{what}: cannot read {path}: {next(iter(result.unreadable.values()))}")
    return result.resources[0].digest, result.total_bytes


@contextmanager
def pinned(
    path: PathLike,
    expected: str | None,
    *,
    url: str,
    name: str | None = None,
    algorithm: str = "sha256",
    snapshot: bool = False,
    snapshot_dir: PathLike | None = None,
    snapshot_name: str | None = None,
    keep: bool = False,
) -> Iterator[PinnedFile]:
    """Read `path` once into private memory (or a 0700 snapshot), hashing it on the way; refuse
    (`PinMismatchError`, audit event) unless it matches `expected` (hex; None = record only).

    The snapshot is removed when the block ends, unless `keep` (then it lives until exit).
    """
    source = Path(os.fspath(path))
    what = name or url
    capture: _MemoryCapture | _SnapshotCapture
    capture = (
        _SnapshotCapture.create(_snapshot_parent(snapshot_dir, keep), snapshot_name or source.name)
        if snapshot
        else _MemoryCapture()
    )
    size = ALGORITHMS[algorithm]
    handed_out = False
    try:
        digest, total = _capture(source, capture, algorithm, what)
        if expected is not None and (
            len(expected) != 2 * size or not hmac.compare_digest(digest.hex(), expected)
        ):
            error = _mismatch(url, expected, digest.hex(), str(source))
            assert error.failure is not None
            error.failure = dataclasses.replace(error.failure, model_name=name)
            audit.emit_failure(error.failure)
            raise error
        if expected is not None:
            manifest = Manifest.build(
                what, Serialization(hash_type=algorithm), [Resource(".", algorithm, digest)]
            )
            audit.emit_success(
                Verification(
                    model=str(source),
                    seal="lock",
                    model_name=what,
                    root_digest="sha256:" + manifest.root_digest.hex(),
                    method="files",
                    hash_type=algorithm,
                    files=1,
                    resources=1,
                    total_bytes=total,
                    signed=False,
                    signers=(),
                )
            )
        if isinstance(capture, _SnapshotCapture):
            found = PinnedFile(source, algorithm, digest.hex(), total, path=capture.path_of("."))
        else:
            found = PinnedFile(source, algorithm, digest.hex(), total, memory=capture.files["."])
        yield found
        handed_out = True
    finally:
        if isinstance(capture, _MemoryCapture):
            capture.files.clear()
        elif keep and handed_out:
            capture.close()
        else:
            capture.remove()


_KEPT_LOCK = threading.Lock()
_KEPT: dict[str, Path] = {}


def _snapshot_parent(snapshot_dir: PathLike | None, keep: bool) -> PathLike | None:
    """Where a snapshot goes: `snapshot_dir`, or for kept snapshots one private 0700 directory
    per process, removed at exit (a path returned to the caller must outlive the call)."""
    if snapshot_dir is not None or not keep:
        return snapshot_dir
    with _KEPT_LOCK:
        key = str(os.getpid())
        if key not in _KEPT:
            root = Path(tempfile.mkdtemp(prefix="modelseal-zoo-"))
            os.chmod(root, 0o700)
            _KEPT[key] = root
            atexit.register(shutil.rmtree, root, True)
        return _KEPT[key]


@contextmanager
def verify_download(
    path: PathLike,
    decision: PinDecision,
    source: LockSource,
    *,
    name: str | None = None,
    snapshot: bool,
    snapshot_dir: PathLike | None = None,
    keep: bool = False,
) -> Iterator[PinnedFile]:
    """`pinned` for a lock decision: check against the pin, or record the TOFU digest."""
    with pinned(
        path,
        decision.expected,
        url=decision.url,
        name=name,
        snapshot=snapshot,
        snapshot_dir=snapshot_dir,
        keep=keep,
    ) as found:
        if decision.record:
            source.record(decision, found.digest, found.size)
        yield found


def extract_snapshot(archive: Path) -> Path:
    """Extract a checked archive (in its private snapshot) beside it, safely: no `..`, no
    absolute names, no links out, caps on size and count (`modelseal.fetch.extract_archive`)."""
    from modelseal.fetch import extract_archive

    name = archive.name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    dest = archive.parent / (name + "_extracted")
    extract_archive(archive, dest)
    return dest


# -- Hugging Face-style file URLs -----------------------------------------------------------


@dataclass(frozen=True)
class HfFile:
    """One file of a Hugging Face-style repository at one revision."""

    endpoint: str
    repo: str
    revision: str
    filename: str

    @property
    def url(self) -> str:
        return hf_url(self.repo, self.filename, self.revision, endpoint=self.endpoint)

    @property
    def immutable(self) -> bool:
        """True when the revision is a full commit id (a branch or tag can move)."""
        return _COMMIT.fullmatch(self.revision) is not None


def _segments(value: str, what: str, max_parts: int | None = None) -> list[str]:
    parts = value.split("/")
    bad = {"", ".", ".."}
    if (
        any(p in bad for p in parts)
        or any(c in value for c in "\\\0?#")
        or (max_parts is not None and len(parts) > max_parts)
    ):
        raise UsageError(f"not a valid {what}: {value!r}")
    return parts


def hf_url(
    repo: str, filename: str, revision: str, *, endpoint: str = "https://huggingface.co"
) -> str:
    """`{endpoint}/{repo}/resolve/{revision}/{filename}`, each segment quoted.

    `repo` is "org/name" (or "name", or "datasets/org/name"); `filename` may hold `/`.
    """
    base = endpoint.rstrip("/")
    try:
        parts = urlsplit(base)
    except ValueError:
        raise UsageError(f"not a valid endpoint: {endpoint!r}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"not a valid endpoint: {endpoint!r}")
    repo_parts = _segments(repo, "repository name", 3)
    if "resolve" in repo_parts:
        raise UsageError(f"not a valid repository name: {repo!r}")
    _segments(revision, "revision")
    file_parts = _segments(filename, "file name")
    return "/".join(
        [
            base,
            *(quote(p, safe="") for p in repo_parts),
            "resolve",
            quote(revision, safe=""),
            *(quote(p, safe="") for p in file_parts),
        ]
    )


def parse_hf_url(url: str) -> HfFile:
    """Split `https://host/{org}/{repo}/resolve/{revision}/{path}` into its parts."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UsageError(f"not a URL: {url!r}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"not a Hugging Face-style file URL: {url}")
    segments = parts.path.split("/")[1:]
    if "resolve" not in segments:
        raise UsageError(f"not a Hugging Face-style file URL (no /resolve/): {url}")
    at = segments.index("resolve")
    if not 1 <= at <= 3 or len(segments) < at + 3:
        raise UsageError(f"not a Hugging Face-style file URL: {url}")
    decoded = [unquote(s) for s in segments]
    repo = "/".join(decoded[:at])
    revision = decoded[at + 1]
    filename = "/".join(decoded[at + 2 :])
    endpoint = f"{parts.scheme}://{parts.netloc}"
    found = HfFile(endpoint, repo, revision, filename)
    hf_url(repo, filename, revision, endpoint=endpoint)  # validates every part
    return found


def hf_file(
    repo: str,
    filename: str,
    revision: str,
    *,
    endpoint: str = "https://huggingface.co",
    lock: Lock | PathLike | None = None,
    cache: Cache | None = None,
    policy: Policy | None = None,
    snapshot: bool = True,
    snapshot_dir: PathLike | None = None,
) -> Path:
    """Download one Hugging Face-style file, pinned by the lock, and return a path to it.

    The URL is `hf_url(repo, filename, revision, endpoint=...)`; its lock entry
    (`Lock.pin_for(url)`) must pin the file's SHA-256 (or be TOFU). A revision that is
    not a full 40-hex commit id is refused unless the lock pins the digest: a branch
    moves, and recording whatever it points at today is not a pin. The file comes from
    the verified cache (`lock.ensure`: re-hashed on every use, fetched from the entry's
    mirrors when missing). With `snapshot=True` (default) the path returned is a private
    copy (0700 directory, removed at exit) hashed again while copied, so nobody who can
    write the cache can swap it before the caller opens it; `snapshot=False` returns the
    cache path itself.
    """
    from modelseal.cache import Cache

    url = hf_url(repo, filename, revision, endpoint=endpoint)
    check_source(url, policy)
    source = LockSource.of(lock)
    decision = decide_pin(source.entry_for(url), url)
    if decision.record and _COMMIT.fullmatch(revision) is None:
        raise UnpinnedDownloadError(
            f"{url}: revision {revision!r} is not a commit id (40 hex digits) and the lock "
            "pins no digest for it: trust on first use of a moving branch is refused"
        )
    from modelseal.lock import resolve

    resolved = resolve(decision.entry, cache=cache if cache is not None else Cache(), policy=policy)
    if resolved.path.is_dir():
        raise UsageError(f"{url}: lock entry {decision.entry.name} is an archive, not one file")
    # On first use of a TOFU entry, what resolve downloaded and cached is what gets recorded.
    expected = decision.expected or resolved.model.sha256
    if not snapshot:
        if decision.record and expected is not None:
            source.record(decision, expected, resolved.path.stat().st_size)
        return resolved.path
    with pinned(
        resolved.path,
        expected,
        url=url,
        name=decision.entry.name,
        snapshot=True,
        snapshot_dir=snapshot_dir,
        snapshot_name=filename.rsplit("/", 1)[-1],
        keep=True,
    ) as found:
        if decision.record:
            source.record(decision, found.digest, found.size)
        assert found.path is not None
        return found.path
