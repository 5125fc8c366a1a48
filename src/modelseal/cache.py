"""A content-addressed cache of downloaded models, verified on every use.

Files live at `<root>/sha256/<hex[:2]>/<hex>`, extracted archives at `<root>/models/<root hex>/`
(and `<root>/bindings/<archive hex>` records which root an archive extracted to).
Nothing is trusted because it is cached: `get` re-hashes the file on every call, and an entry
whose bytes no longer match its name is removed (and logged), never returned. Everything is
written to a temporary name inside the cache and renamed into place, so a reader never sees half
an entry and concurrent writers of the same content simply replace each other.

The cache directory is created 0700 and must belong to the current user and not be writable by
anyone else: whoever can write the cache can swap a file between the check and the load.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelseal.errors import IntegrityError, UsageError

CACHE_ENV = "MODELSEAL_CACHE"
"""Environment variable naming the cache directory (overrides the user cache directory)."""

logger = logging.getLogger("modelseal.fetch.cache")

_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class CacheError(IntegrityError):
    """Bytes offered to the cache do not match the digest they are to be stored under."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class CacheCheck:
    """A read-only look at one entry: `status` is "ok", "missing" or "mismatch"."""

    status: str
    path: Path
    actual: str | None = None
    """"sha256:<hex>" of what is there (mismatch), or the root digest of an extracted model."""
    detail: str = ""


def default_root() -> Path:
    """$MODELSEAL_CACHE, else $XDG_CACHE_HOME/modelseal, else ~/.cache/modelseal."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "modelseal"
    return Path.home() / ".cache" / "modelseal"


def normalize_hex(digest: str) -> str:
    """Lowercase hex of a SHA-256 given as hex or "sha256:<hex>"; UsageError otherwise."""
    value = digest.strip().lower().removeprefix("sha256:")
    if not _HEX.fullmatch(value):
        raise UsageError(f"not a SHA-256 digest (64 hex digits): {digest!r}")
    return value


def file_sha256(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a regular file, streamed; a link or special file raises OSError."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        hasher = hashlib.sha256()
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        size = 0
        while True:
            got = handle.readinto(view)
            if not got:
                break
            hasher.update(view[:got])
            size += got
    return hasher.hexdigest(), size


class Cache:
    """The verified download cache. Cheap to construct; the directory is made on first write."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    # -- layout --------------------------------------------------------------------------

    def path_for(self, sha256_hex: str) -> Path:
        """Where the file with this digest lives (whether or not it is there)."""
        hexdigest = normalize_hex(sha256_hex)
        return self.root / "sha256" / hexdigest[:2] / hexdigest

    def model_path_for(self, root_digest: str) -> Path:
        """Where the extracted model with this root digest lives."""
        return self.root / "models" / normalize_hex(root_digest)

    # -- files ---------------------------------------------------------------------------

    def check(self, sha256_hex: str) -> CacheCheck:
        """Re-hash the entry without changing anything (for reports such as `lock verify`)."""
        expected = normalize_hex(sha256_hex)
        path = self.path_for(expected)
        self._check_private()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return CacheCheck("missing", path)
        except OSError as exc:
            return CacheCheck("mismatch", path, None, f"unreadable: {exc.strerror}")
        if not stat.S_ISREG(st.st_mode):
            return CacheCheck("mismatch", path, None, "not a regular file")
        try:
            actual, _ = file_sha256(path)
        except OSError as exc:
            return CacheCheck("mismatch", path, None, f"unreadable: {exc.strerror or exc}")
        if not hmac.compare_digest(actual, expected):
            return CacheCheck("mismatch", path, "sha256:" + actual, "content differs from its name")
        return CacheCheck("ok", path, "sha256:" + actual)

    def get(self, sha256_hex: str) -> Path | None:
        """The cached file with this digest, re-hashed now; a bad entry is removed (None)."""
        found = self.check(sha256_hex)
        if found.status == "ok":
            return found.path
        if found.status == "mismatch":
            logger.warning(
                "removed corrupt cache entry %s (%s%s)",
                found.path,
                found.detail,
                f": got {found.actual}" if found.actual else "",
            )
            _remove_any(found.path)
        return None

    def put(self, path: str | os.PathLike[str], sha256_hex: str) -> Path:
        """Copy `path` into the cache under `sha256_hex`, hashing the copy as it is written.

        Raises CacheError (nothing is stored) when the bytes do not have that digest.
        """
        expected = normalize_hex(sha256_hex)
        target = self.path_for(expected)
        self._makedirs(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=".put-", suffix=".tmp", dir=target.parent)
        try:
            hasher = hashlib.sha256()
            with open(fd, "wb") as out, open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = hasher.hexdigest()
            if not hmac.compare_digest(actual, expected):
                raise CacheError(
                    f"{path} does not match the digest it is to be cached under: "
                    f"expected sha256:{expected}, got sha256:{actual}",
                    expected="sha256:" + expected,
                    actual="sha256:" + actual,
                )
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            _remove_any(Path(tmp))
            raise
        return target

    def adopt(self, path: Path, sha256_hex: str) -> Path:
        """Rename a file already verified as `sha256_hex` (in this cache's staging area) into
        place, without reading it again."""
        target = self.path_for(sha256_hex)
        self._makedirs(target.parent)
        os.replace(path, target)
        return target

    # -- extracted models ----------------------------------------------------------------

    def check_model(self, root_digest: str, files: Sequence[str] = ()) -> CacheCheck:
        """Re-hash an extracted model; "mismatch" when its root digest or file list differ."""
        expected = normalize_hex(root_digest)
        path = self.model_path_for(expected)
        self._check_private()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return CacheCheck("missing", path)
        if not stat.S_ISDIR(st.st_mode):
            return CacheCheck("mismatch", path, None, "not a directory")
        try:
            actual, names = model_digest(path)
        except (UsageError, IntegrityError) as exc:
            return CacheCheck("mismatch", path, None, str(exc))
        if not hmac.compare_digest(actual, expected):
            return CacheCheck("mismatch", path, "sha256:" + actual, "extracted files differ")
        if files and set(files) != set(names):
            extra = sorted(set(names) - set(files))
            gone = sorted(set(files) - set(names))
            what = "; ".join(
                part
                for part in (
                    f"unexpected {', '.join(extra)}" if extra else "",
                    f"missing {', '.join(gone)}" if gone else "",
                )
                if part
            )
            return CacheCheck("mismatch", path, "sha256:" + actual, f"file list differs: {what}")
        return CacheCheck("ok", path, "sha256:" + actual)

    def get_model(self, root_digest: str, files: Sequence[str] = ()) -> Path | None:
        """The extracted model, re-hashed now; a bad one is removed (None)."""
        found = self.check_model(root_digest, files)
        if found.status == "ok":
            return found.path
        if found.status == "mismatch":
            logger.warning("removed corrupt extracted model %s (%s)", found.path, found.detail)
            _remove_any(found.path)
        return None

    def adopt_model(self, directory: Path, root_digest: str) -> Path:
        """Rename a verified extracted model (in the staging area) into place. When another
        process got there first, theirs stays (the caller re-checks it)."""
        target = self.model_path_for(root_digest)
        self._makedirs(target.parent)
        try:
            os.rename(directory, target)
        except OSError:
            if not target.is_dir():
                raise
        return target

    def bind(self, sha256_hex: str, root_digest: str) -> None:
        """Record that the verified archive `sha256_hex` extracted to the model `root_digest`.
        A cached model is only served for an archive pin it is bound to: a lock whose
        root_digest was edited to name another cached model must not get that model."""
        archive, root = normalize_hex(sha256_hex), normalize_hex(root_digest)
        target = self.root / "bindings" / archive
        self._makedirs(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=".bind-", dir=target.parent)
        try:
            with open(fd, "w", encoding="ascii") as out:
                out.write(root)
            os.replace(tmp, target)
        except BaseException:
            _remove_any(Path(tmp))
            raise

    def bound_root(self, sha256_hex: str) -> str | None:
        """The root digest (hex) the archive `sha256_hex` was extracted to, if recorded."""
        path = self.root / "bindings" / normalize_hex(sha256_hex)
        self._check_private()
        try:
            with open(path, "rb") as handle:
                text = handle.read(65).decode("ascii", "replace")
        except OSError:
            return None
        return text if _HEX.fullmatch(text) else None

    # -- staging -------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private directory on the cache's file system, removed afterwards."""
        base = self.root / "tmp"
        self._makedirs(base)
        directory = Path(tempfile.mkdtemp(prefix="stage-", dir=base))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _check_private(self) -> None:
        """Refuse a cache root another user owns or others may write, for reads as for writes:
        whoever can write it can swap an entry between our re-hash and the caller's load."""
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return  # nothing cached yet; _makedirs creates it private
        except OSError as exc:
            raise UsageError(f"cannot use the cache {self.root}: {exc.strerror or exc}") from None
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise UsageError(f"the cache {self.root} belongs to another user")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(
                f"the cache {self.root} is writable by others; make it private (chmod 700)"
            )

    def _makedirs(self, directory: Path) -> None:
        """Create `directory` (0700) under the root, after checking the root is private."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._check_private()
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the cache directory {directory}: {exc}") from None


def model_digest(directory: Path) -> tuple[str, tuple[str, ...]]:
    """Root digest (hex) and file names of an extracted model, hashed the way a seal beside it
    would be (its `model.sig` and `.git*` left out), so it agrees with `modelseal hash/seal`."""
    from modelseal.hashing import hash_model
    from modelseal.sealing import serialization_for
    from modelseal.verification import default_seal_path

    serialization = serialization_for(directory, seal_path=default_seal_path(directory))
    manifest = hash_model(directory, serialization)
    return manifest.root_digest.hex(), tuple(manifest.files)


def _remove_any(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


__all__ = [
    "CACHE_ENV",
    "Cache",
    "CacheCheck",
    "CacheError",
    "default_root",
    "file_sha256",
    "model_digest",
    "normalize_hex",
]
