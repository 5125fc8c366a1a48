"""models.lock: the models an application uses, where they come from, and their digests.

The lock is TOML kept in the application's repository and reviewed like code. Reading is strict
(a typo must never silently drop a pin): unknown keys, malformed digests, plain-http URLs other
than loopback, duplicate names or URLs, unknown trust values are refused with a `LockError` naming
the entry. Writing is deterministic (models sorted by name, keys in a fixed order) so a change to
the lock is a small, readable diff.

`ensure` is the one call that turns a lock entry into a verified local path: the cached copy
(re-hashed now), else the entry's mirrors in order; when every mirror fails, a verified cached
copy is still used and the fallback is logged on the "modelseal.fetch" logger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from modelseal._internal import names as _names
from modelseal._internal.files import read_capped, write_atomic
from modelseal._internal.toml import one_line, parse_toml
from modelseal.cache import Cache, model_digest, normalize_hex
from modelseal.errors import (
    Error,
    IntegrityError,
    ModelMismatchError,
    SignatureError,
    UsageError,
)

if TYPE_CHECKING:
    from modelseal.hashing import Progress
    from modelseal.policy import Policy
    from modelseal.signing import keys

MAX_LOCK_FILE = 1024 * 1024
"""Locks larger than this are refused before parsing (bounded input)."""

DEFAULT_LOCK_FILE = "models.lock"
LOCK_VERSION = 1
TRUST_PINNED = "pinned"
TRUST_TOFU = "tofu"
TRUST_VALUES = (TRUST_PINNED, TRUST_TOFU)

HEADER = (
    "# models.lock: written by `modelseal lock`; review changes like code.\n"
    "# Each [[models]] entry pins a download: its mirrors (tried in order) and its SHA-256.\n"
)
DEFAULT_MAX_BYTES = 64 * 2**30

logger = logging.getLogger("modelseal.fetch")

_KEYS = ("name", "urls", "sha256", "size", "trust", "fetched_at", "root_digest", "files", "signer")
_REQUIRED = ("name", "urls")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


class LockError(UsageError):
    """The lock file is unreadable, too large, or not a lock modelseal fully understands."""


class _EntryError(LockError):
    """An invalid LockedModel; `problem` is the reason without the entry's name."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


# -- the data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockedModel:
    """One pinned download. `sha256` is lowercase hex of the downloaded bytes; it is None only
    for a trust-on-first-use entry whose digest has not been recorded yet. `root_digest` (and
    `files`) are set for archives: the root digest of the extracted model."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None
    trust: str = TRUST_PINNED
    fetched_at: datetime | None = None
    root_digest: str | None = None
    files: tuple[str, ...] = ()
    signer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "files", tuple(self.files))
        if isinstance(self.sha256, str) and self.sha256:
            digest = self.sha256.strip().lower().removeprefix("sha256:")
            object.__setattr__(self, "sha256", digest)
        elif self.sha256 == "":
            object.__setattr__(self, "sha256", None)
        problem = entry_problem(self)
        if problem is not None:
            raise _EntryError(f"lock entry {self.name!r}: {problem}", problem)

    @property
    def is_archive(self) -> bool:
        """Whether this entry is extracted (it records the extracted model's root digest)."""
        return self.root_digest is not None

    @property
    def digest(self) -> str | None:
        """The pin as "sha256:<hex>", or None (TOFU not yet recorded)."""
        return f"sha256:{self.sha256}" if self.sha256 else None

    def to_toml(self) -> dict[str, Any]:
        """The entry as TOML data, keys in the lock's fixed order, empty fields left out."""
        values: dict[str, Any] = {
            "name": self.name,
            "urls": list(self.urls),
            "sha256": self.sha256,
            "size": self.size,
            "trust": self.trust,
            "fetched_at": self.fetched_at,
            "root_digest": self.root_digest,
            "files": list(self.files) or None,
            "signer": self.signer,
        }
        return {key: values[key] for key in _KEYS if values[key] is not None}

    def to_json(self) -> dict[str, Any]:
        data = self.to_toml()
        if self.fetched_at is not None:
            data["fetched_at"] = self.fetched_at.isoformat()
        return data


def entry_problem(model: LockedModel) -> str | None:
    """What is wrong with an entry (None when nothing is): the rules the parser enforces."""
    if not isinstance(model.name, str) or not _NAME.fullmatch(model.name) or not model.name.strip():
        return "name must be a non-empty string without control characters (at most 200)"
    if not model.urls:
        return "urls must list at least one URL"
    for url in model.urls:
        if not isinstance(url, str):
            return "urls must be strings"
        problem = url_problem(url)
        if problem is not None:
            return f"url {url!r}: {problem}"
    if len({normalize_url(u) for u in model.urls}) != len(model.urls):
        return "urls lists the same URL twice"
    if model.trust not in TRUST_VALUES:
        return (
            f"trust must be one of {', '.join(repr(t) for t in TRUST_VALUES)}, not {model.trust!r}"
        )
    if model.sha256 is None:
        if model.trust != TRUST_TOFU:
            return 'sha256 is required (only a trust = "tofu" entry may omit it until first use)'
    elif not isinstance(model.sha256, str) or not _HEX.fullmatch(model.sha256):
        return "sha256 must be 64 hex digits (the SHA-256 of the downloaded file)"
    if model.size is not None and (type(model.size) is not int or model.size < 0):
        return "size must be a whole number of bytes"
    if model.fetched_at is not None and (
        not isinstance(model.fetched_at, datetime) or model.fetched_at.utcoffset() is None
    ):
        return "fetched_at must be a timezone-aware date-time (end it with Z)"
    if model.root_digest is not None and (
        not isinstance(model.root_digest, str) or not _DIGEST.fullmatch(model.root_digest)
    ):
        return "root_digest must be 'sha256:<64 hex digits>'"
    if model.files and model.root_digest is None:
        return "files is only for archives, with root_digest"
    for name in model.files:
        problem = _names.name_problem(name) if isinstance(name, str) else "not a string"
        if problem is not None:
            return f"files: {name!r}: {problem}"
    if len(set(model.files)) != len(model.files):
        return "files lists the same name twice"
    if model.signer is not None and (
        not isinstance(model.signer, str) or not _DIGEST.fullmatch(model.signer)
    ):
        return "signer must be a key id 'sha256:<64 hex digits>'"
    return None


def url_problem(url: str) -> str | None:
    """Why `url` may not be a download source: https only (plain http to loopback only), no
    credentials, no fragment, no whitespace."""
    if not url or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must be a URL without spaces or control characters"
    if "\\" in url:
        return "must not contain a backslash (URL parsers disagree on where its host ends)"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "is not a valid URL"
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.fragment:
        return "must not have a fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and host in _LOOPBACK:
        return None
    return "must be https (plain http only to a loopback host, for tests)"


def normalize_url(url: str) -> str:
    """A URL as compared for pins: scheme and host lowercased, default port and empty path
    made explicit the same way. Path and query are kept exactly (they are case-sensitive)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"https": 443, "http": 80}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def is_archive_url(url: str) -> bool:
    """Whether the URL's file name says it is an archive zoos ship (zip, tar, tar.gz, ...)."""
    from modelseal._internal.archive import archive_suffix

    return archive_suffix(PurePosixPath(urlsplit(url).path).name) is not None


def default_name(url: str) -> str:
    """A model name from a URL: its file name, without an archive suffix."""
    from modelseal._internal.archive import archive_suffix

    name = PurePosixPath(unquote(urlsplit(url).path)).name
    suffix = archive_suffix(name)
    if suffix:
        return name[: -len(suffix)]
    return name or (urlsplit(url).hostname or "model")


# -- the lock --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    """A validated lock: models sorted by name, names and URLs unique. Immutable: `add`
    returns a new lock; `save` writes it."""

    models: tuple[LockedModel, ...] = ()
    path: Path | None = None
    """The file it was loaded from (where `save()` writes by default)."""

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.models, key=lambda m: m.name))
        object.__setattr__(self, "models", ordered)
        names: set[str] = set()
        owners: dict[str, str] = {}
        for model in ordered:
            if model.name in names:
                raise LockError(f"lock entry {model.name!r}: the name is used twice")
            names.add(model.name)
            for url in model.urls:
                other = owners.setdefault(normalize_url(url), model.name)
                if other != model.name:
                    raise LockError(
                        f"lock entry {model.name!r}: url {url} is also a source of {other!r}"
                    )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Lock:
        """Read and validate a lock file (at most MAX_LOCK_FILE bytes)."""
        lock_path = Path(path)
        data = read_capped(lock_path, MAX_LOCK_FILE, "lock file", LockError)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise LockError(f"lock {lock_path} is not UTF-8 text") from None
        return dataclasses.replace(cls.loads(text, str(lock_path)), path=lock_path)

    @classmethod
    def loads(cls, text: str, source: str = "<lock>") -> Lock:
        """Validate lock `text`; errors name `source` and the entry."""
        if len(text.encode("utf-8", "surrogatepass")) > MAX_LOCK_FILE:
            raise LockError(f"lock {source} is larger than {MAX_LOCK_FILE} bytes")
        return _parse(_parse_toml(text, source), source)

    def dumps(self) -> str:
        """The lock as TOML: a comment header, then the models sorted by name."""
        import tomli_w

        body = tomli_w.dumps(
            {"version": LOCK_VERSION, "models": [m.to_toml() for m in self.models]}
        )
        return HEADER + body

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the lock atomically (to `path`, else where it was loaded from)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise UsageError("this lock was not loaded from a file: give a path to save it to")
        write_atomic(target, self.dumps().encode("utf-8"), "lock file")
        return target

    def find(self, name_or_url: str) -> LockedModel | None:
        """The entry with this name, else the entry listing this URL."""
        for model in self.models:
            if model.name == name_or_url:
                return model
        return self.pin_for(name_or_url)

    def pin_for(self, url: str) -> LockedModel | None:
        """The entry that lists `url` among its mirrors (compared after `normalize_url`)."""
        wanted = normalize_url(url)
        for model in self.models:
            if any(normalize_url(u) == wanted for u in model.urls):
                return model
        return None

    def add(self, model: LockedModel) -> Lock:
        """A new lock with `model` added, replacing the entry of the same name."""
        kept = tuple(m for m in self.models if m.name != model.name)
        return dataclasses.replace(self, models=(*kept, model))

    def remove(self, name: str) -> Lock:
        """A new lock without the entry `name` (UsageError when there is none)."""
        if self.find(name) is None or all(m.name != name for m in self.models):
            raise UsageError(f"no model named {name!r} in the lock")
        return dataclasses.replace(self, models=tuple(m for m in self.models if m.name != name))


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    return parse_toml(text, "lock", source, LockError)


def _parse(data: Mapping[str, Any], source: str) -> Lock:
    def fail(entry: str, problem: str) -> LockError:
        return LockError(one_line(f"lock {source}: {entry}: {problem}"))

    unknown = sorted(set(data) - {"version", "models"})
    if unknown:
        raise fail("top level", f"unknown key {unknown[0]!r} (allowed: version, models)")
    if "version" not in data:
        raise fail("top level", "missing required key 'version'")
    if type(data["version"]) is not int or data["version"] != LOCK_VERSION:
        raise fail("version", f"must be {LOCK_VERSION}, not {data['version']!r}")
    items = data.get("models", [])
    if not isinstance(items, list):
        raise fail("models", "must be an array of tables ([[models]])")
    models: list[LockedModel] = []
    seen: dict[str, int] = {}
    owners: dict[str, int] = {}
    for i, item in enumerate(items):
        entry = f"models[{i}]"
        if not isinstance(item, dict):
            raise fail(entry, "must be a table ([[models]])")
        if isinstance(item.get("name"), str):
            entry = f"models[{i}] ({item['name']!r})"
        unknown = sorted(set(item) - set(_KEYS))
        if unknown:
            raise fail(entry, f"unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
        for key in _REQUIRED:
            if key not in item:
                raise fail(entry, f"missing required key {key!r}")
        for key in ("name", "sha256", "trust", "root_digest", "signer"):
            if key in item and not isinstance(item[key], str):
                raise fail(entry, f"{key} must be a string")
        for key in ("urls", "files"):
            if key in item and (
                not isinstance(item[key], list) or not all(isinstance(v, str) for v in item[key])
            ):
                raise fail(entry, f"{key} must be an array of strings")
        if "sha256" in item and not _HEX.fullmatch(item["sha256"].lower().removeprefix("sha256:")):
            raise fail(entry, "sha256 must be 64 hex digits (the SHA-256 of the downloaded file)")
        if "fetched_at" in item and not isinstance(item["fetched_at"], datetime):
            raise fail(entry, "fetched_at must be a TOML date-time such as 2026-01-01T00:00:00Z")
        try:
            model = LockedModel(
                name=item["name"],
                urls=tuple(item["urls"]),
                sha256=item.get("sha256"),
                size=item.get("size"),
                trust=item.get("trust", TRUST_PINNED),
                fetched_at=item.get("fetched_at"),
                root_digest=item.get("root_digest"),
                files=tuple(item.get("files", ())),
                signer=item.get("signer"),
            )
        except _EntryError as exc:
            raise fail(entry, exc.problem) from None
        earlier = seen.setdefault(model.name, i)
        if earlier != i:
            raise fail(entry, f"the name {model.name!r} is already used by models[{earlier}]")
        for url in model.urls:
            first = owners.setdefault(normalize_url(url), i)
            if first != i:
                raise fail(entry, f"url {url} is already a source of models[{first}]")
        models.append(model)
    return Lock(tuple(models))


# -- ensure: a verified local copy of one entry ----------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A verified local copy of a lock entry, and how it was obtained."""

    path: Path
    """The verified file, or the extracted model directory for an archive."""
    model: LockedModel
    """The entry; with its digest (and size, fetched_at, root_digest, files) filled when they
    were recorded just now (trust on first use, or `lock add`)."""
    source: str
    """"cache", or the mirror URL that served it."""
    fallback: bool = False
    """True when every mirror failed and a verified cached copy was used."""
    failures: tuple[str, ...] = ()
    """One line per mirror that failed, in the order tried."""


def ensure(
    locked: LockedModel,
    *,
    cache: Cache | None = None,
    policy: Policy | None = None,
    **options: Any,
) -> Path:
    """A verified local path for `locked`: see `resolve` (same options)."""
    return resolve(locked, cache=cache, policy=policy, **options).path


def resolve(
    locked: LockedModel,
    *,
    cache: Cache | None = None,
    policy: Policy | None = None,
    refresh: bool = False,
    extract: bool | None = None,
    allow_http_loopback: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 3,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> Resolved:
    """Get `locked` into the verified cache and return where it is.

    1. The cached copy, re-hashed now (never trusted because it is cached; a bad copy is
       removed). `refresh=True` skips this step and downloads again.
    2. Else the entry's mirrors in order, each through the policy's allowlist (a policy whose
       allowlist admits none of the entry's URLs refuses the entry, cached or not); a mirror
       that fails or serves other bytes is skipped for the next one.
    3. When every mirror fails, a verified cached copy is used and a WARNING naming the
       failures is logged on "modelseal.fetch"; without one, the first integrity failure (a
       digest mismatch, a refused source) is raised, else the download error.

    A TOFU entry without a digest is downloaded and its digest returned in `Resolved.model`
    (the caller records it in the lock). Archives (`root_digest` set, or `extract=True`) are
    extracted safely into the cache and the extracted model is checked against the recorded
    root digest and file list on every call.
    """
    cache = cache if cache is not None else Cache()
    extract = locked.is_archive if extract is None else extract
    if locked.is_archive and not extract:
        raise UsageError(f"lock entry {locked.name!r} is an archive: it must be extracted")
    if policy is not None and not any(policy.source_allowed(u) for u in locked.urls):
        from modelseal.fetch import SourceNotAllowed

        raise SourceNotAllowed(
            f"lock entry {locked.name!r}: none of its sources is allowed by the policy "
            f"{policy.source}: {', '.join(locked.urls)}"
        )
    if not refresh:
        found = _from_cache(locked, cache, extract)
        if found is not None:
            return found
    fetch_options = {
        "policy": policy,
        "max_bytes": max_bytes,
        "retries": retries,
        "timeout": timeout,
        "allow_http_loopback": allow_http_loopback,
        "progress": progress,
    }
    failures: list[tuple[str, Error]] = []
    with cache.staging() as stage:
        for url in locked.urls:
            try:
                return _from_mirror(locked, url, cache, stage, extract, fetch_options, failures)
            except Error as exc:
                failures.append((url, exc))
                logger.info("%s: mirror %s failed: %s", locked.name, url, one_line(str(exc)))
    lines = tuple(f"{url}: {one_line(str(exc))}" for url, exc in failures)
    found = _from_cache(locked, cache, extract)
    if found is not None:
        logger.warning(
            "%s: every source failed (%s); using the verified cached copy %s",
            locked.name,
            "; ".join(lines),
            found.path,
        )
        return dataclasses.replace(found, fallback=True, failures=lines)
    raise _summarize(locked, failures)


def _from_cache(locked: LockedModel, cache: Cache, extract: bool) -> Resolved | None:
    if locked.sha256 is None:
        return None  # TOFU, not recorded: nothing to check a cached copy against
    if extract and locked.root_digest is not None and _bound(cache, locked):
        model_dir = cache.get_model(locked.root_digest, locked.files)
        if model_dir is not None:
            return Resolved(model_dir, locked, "cache")
    path = cache.get(locked.sha256)
    if path is None:
        return None
    _check_size(locked, path.stat().st_size)
    if extract:
        with cache.staging() as stage:
            model_dir, root, files = _extract(locked, path, cache, stage)
        if locked.root_digest is None:
            locked = dataclasses.replace(locked, root_digest="sha256:" + root, files=files)
        return Resolved(model_dir, locked, "cache")
    return Resolved(path, locked, "cache")


def _from_mirror(
    locked: LockedModel,
    url: str,
    cache: Cache,
    stage: Path,
    extract: bool,
    options: dict[str, Any],
    failures: list[tuple[str, Error]],
) -> Resolved:
    from modelseal.fetch import SourceNotAllowed, download_verified

    policy: Policy | None = options["policy"]
    if policy is not None and policy.source_allowed(url) is None:
        raise SourceNotAllowed(f"{url} is not an allowed source of the policy {policy.source}")
    target = stage / f"download-{len(failures)}"
    digest, size, _final, _resumed = download_verified(url, target, sha256=locked.sha256, **options)
    actual = normalize_hex(digest)
    if locked.sha256 is not None and not hmac.compare_digest(actual, locked.sha256):
        # download_verified checks this already; a second look costs nothing.
        from modelseal.fetch import DigestMismatch

        raise DigestMismatch(f"{url}: expected sha256:{locked.sha256}, got sha256:{actual}")
    _check_size(locked, size)
    path = cache.adopt(target, actual)
    model = locked
    if locked.sha256 is None:
        logger.warning(
            "%s: trusting on first use: recorded sha256:%s from %s (%d bytes); review it",
            locked.name,
            actual,
            url,
            size,
        )
    if locked.sha256 is None or locked.size is None:
        model = dataclasses.replace(model, sha256=actual, size=size)
    if model.fetched_at is None or locked.sha256 is None:
        model = dataclasses.replace(model, fetched_at=_now())
    if extract:
        path, root, files = _extract(model, path, cache, stage)
        if model.root_digest is None:
            model = dataclasses.replace(model, root_digest="sha256:" + root, files=files)
    return Resolved(path, model, url)


def _extract(
    locked: LockedModel, archive: Path, cache: Cache, stage: Path
) -> tuple[Path, str, tuple[str, ...]]:
    """Extract a verified archive into the cache and check the result against the lock."""
    from modelseal.fetch import extract_archive

    if locked.root_digest is not None and _bound(cache, locked):
        found = cache.get_model(locked.root_digest, locked.files)
        if found is not None:
            return found, normalize_hex(locked.root_digest), locked.files
    dest = stage / f"model-{os.urandom(6).hex()}"
    extract_archive(archive, dest)
    root, files = model_digest(dest)
    expected = normalize_hex(locked.root_digest) if locked.root_digest else root
    if not hmac.compare_digest(root, expected):
        raise ModelMismatchError(
            f"lock entry {locked.name!r}: the extracted archive has root digest sha256:{root}, "
            f"the lock records {locked.root_digest}"
        )
    if locked.files and set(locked.files) != set(files):
        raise ModelMismatchError(
            f"lock entry {locked.name!r}: the extracted archive holds {', '.join(files)}; "
            f"the lock records {', '.join(locked.files)}"
        )
    path = cache.adopt_model(dest, root)
    if dest.exists():  # another process installed it first: check theirs
        found = cache.get_model(root, files)
        if found is None:
            raise ModelMismatchError(f"the cached model {path} changed while it was installed")
    if locked.sha256 is not None:
        cache.bind(locked.sha256, root)
    return path, root, files


def _bound(cache: Cache, locked: LockedModel) -> bool:
    """Whether the cached model named by `root_digest` was extracted from the archive the entry
    pins: a root digest is only trusted together with the archive's sha256."""
    return (
        locked.sha256 is not None
        and locked.root_digest is not None
        and cache.bound_root(locked.sha256) == normalize_hex(locked.root_digest)
    )


def _check_size(locked: LockedModel, size: int) -> None:
    if locked.size is not None and locked.size != size:
        raise ModelMismatchError(
            f"lock entry {locked.name!r}: the file matching its sha256 has {size} bytes, "
            f"the lock records size = {locked.size}"
        )


def _summarize(locked: LockedModel, failures: Sequence[tuple[str, Error]]) -> Error:
    """The error to raise when every mirror failed: integrity failures first."""
    if len(failures) == 1:
        return failures[0][1]
    for _url, exc in failures:
        if isinstance(exc, IntegrityError):
            return exc
    from modelseal.fetch import DownloadError

    return DownloadError(
        f"lock entry {locked.name!r}: every source failed: "
        + "; ".join(f"{url}: {one_line(str(exc))}" for url, exc in failures)
    )


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# -- sync and verify -------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    """What `sync` did for one entry. `status`: "ok" (the cached copy verified), "fetched",
    "recorded" (a TOFU digest recorded now), "fallback" (every mirror failed; the verified
    cached copy is used), "failed" (see `error`)."""

    name: str
    status: str
    model: LockedModel
    path: Path | None = None
    source: str | None = None
    detail: str = ""
    error: Error | None = dataclasses.field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "path": str(self.path) if self.path is not None else None,
            "source": self.source,
            "sha256": self.model.digest,
            "root_digest": self.model.root_digest,
            "detail": self.detail,
            "error": type(self.error).__name__ if self.error is not None else None,
        }


def sync(
    lock: Lock,
    *,
    cache: Cache | None = None,
    policy: Policy | None = None,
    out: str | os.PathLike[str] | None = None,
    names: Iterable[str] | None = None,
    **options: Any,
) -> list[SyncResult]:
    """Fetch what is missing from the cache, verify what is present, for every entry (or the
    entries in `names`). Failures are reported per entry, not raised, so one bad pin does not
    hide the others. With `out`, each verified model is also copied to `out/<name>` (a file,
    or a directory for an archive). Recorded TOFU digests: `updated_lock(lock, results)`.
    """
    cache = cache if cache is not None else Cache()
    wanted = set(names) if names is not None else None
    if wanted is not None:
        unknown = sorted(wanted - {m.name for m in lock.models})
        if unknown:
            raise UsageError(f"no model named {unknown[0]!r} in the lock")
    selected = [m for m in lock.models if wanted is None or m.name in wanted]
    if out is not None:
        _check_out_names([m.name for m in selected], Path(out))
    results: list[SyncResult] = []
    for model in selected:
        try:
            got = resolve(model, cache=cache, policy=policy, **options)
            if out is not None:
                materialize(got, Path(out))
        except Error as exc:
            results.append(SyncResult(model.name, "failed", model, detail=str(exc), error=exc))
            continue
        if got.fallback:
            status = "fallback"
        elif got.source == "cache":
            status = "ok"
        else:
            status = "recorded" if model.sha256 is None else "fetched"
        results.append(
            SyncResult(model.name, status, got.model, got.path, got.source, "; ".join(got.failures))
        )
    return results


def _check_out_names(model_names: Sequence[str], out: Path) -> None:
    """Refuse names whose copies under `out` would land on or inside one another (also after
    case folding): "bert/weights.bin" would overwrite a file of the verified copy of "bert"."""
    seen: dict[str, str] = {}
    for name in model_names:
        seen.setdefault(_names.fold(name), name)
    for name in model_names:
        parts = _names.fold(name).split("/")
        for i in range(1, len(parts) + 1):
            other = seen.get("/".join(parts[:i]))
            if other is not None and other != name:
                raise UsageError(
                    f"the lock's models {other!r} and {name!r} would overlap under {out}: "
                    "rename one of them"
                )


def seal_url(url: str) -> str:
    """Where a publisher following the OpenSSF Model Signing convention puts the seal of the
    file at `url`: the same path plus ".sig" (`model.pt` -> `model.pt.sig`), query kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + ".sig", fragment=""))


def check_signer(
    got: Resolved,
    public_keys: Sequence[keys.PublicKey],
    *,
    cache: Cache,
    policy: Policy | None = None,
    allow_http_loopback: bool = False,
    retries: int = 3,
    timeout: float = 30.0,
) -> str:
    """Fetch the seal published beside the file that was just pinned and verify the file with
    it against `public_keys`; return the id of the (first) key that vouched for it. Any
    failure -- no seal, a seal by another key, a seal of other bytes -- is a SignatureError
    (exit 1): the caller then leaves the lock unchanged."""
    from modelseal.fetch import download_verified
    from modelseal.signing.bundle import MAX_SEAL_BYTES
    from modelseal.verification import verify

    name = got.model.name
    # The seal comes from the mirror that served the file; after a fallback to the cached
    # copy (every mirror failed), from the first mirror that still serves one.
    sources = list(got.model.urls) if got.source == "cache" else [got.source]
    reasons: list[str] = []
    with cache.staging() as stage:
        seal_path = stage / "model.sig"
        for source in sources:
            where = seal_url(source)
            try:
                download_verified(
                    where,
                    seal_path,
                    sha256=None,  # the signature, not a digest, decides whether it is good
                    policy=policy,
                    max_bytes=MAX_SEAL_BYTES,
                    retries=retries,
                    timeout=timeout,
                    allow_http_loopback=allow_http_loopback,
                )
            except Error as exc:
                reasons.append(f"{where}: {one_line(str(exc))}")
                continue
            break
        else:
            raise SignatureError(
                f"lock entry {name!r}: no seal to check the signature with: " + "; ".join(reasons)
            )
        try:
            verified = verify(got.path, public_keys=list(public_keys), signature=seal_path)
        except IntegrityError as exc:
            failure = exc.failure
            if failure is not None and failure.expected_root and failure.actual_root:
                reason = (
                    f"it seals other bytes (sealed root {failure.expected_root}, "
                    f"this file {failure.actual_root})"
                )
            else:
                reason = one_line(str(exc))
            raise SignatureError(
                f"lock entry {name!r}: the seal {where} does not vouch for the file: {reason}"
            ) from None
    if not verified.signers:  # pragma: no cover - verify() with keys never passes unsigned
        raise SignatureError(f"lock entry {name!r}: the seal {where} carries no trusted signature")
    return verified.signers[0]


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str]) -> Iterator[None]:
    """Serialise read-modify-write of a lock file between processes: an advisory `flock` on
    its directory (the file itself is replaced by a rename on every save, so it cannot carry
    the lock). Re-read the lock inside the block, then save."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks
        yield
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def save_entries(path: str | os.PathLike[str], entries: Iterable[LockedModel]) -> Lock:
    """Add (or replace) `entries` in the lock file at `path` under `exclusive`: what other
    processes recorded meanwhile is kept, not overwritten by a stale copy."""
    with exclusive(path):
        current = Lock.load(path) if os.path.exists(path) else Lock(path=Path(path))
        for entry in entries:
            current = current.add(entry)
        current.save(path)
        return current


def updated_lock(lock: Lock, results: Iterable[SyncResult]) -> Lock:
    """`lock` with the digests `sync` recorded (TOFU first use) filled in."""
    for result in results:
        if result.status == "recorded":
            lock = lock.add(result.model)
    return lock


def materialize(resolved: Resolved, out: Path) -> Path:
    """Copy a verified model to `out/<name>`, hashing the copy (it must match the pin); the
    previous copy there is replaced only once the new one is complete."""
    problem = _names.name_problem(resolved.model.name)
    if problem is None and resolved.model.name == _names.SINGLE_FILE_NAME:
        problem = "it would be the directory itself"
    if problem is not None:
        raise UsageError(
            f"model name {resolved.model.name!r} cannot be a path under {out}: {problem}"
        )
    target = out / resolved.model.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.tmp")
    try:
        if resolved.path.is_dir():
            shutil.copytree(resolved.path, tmp, symlinks=True)
            root, _ = model_digest(tmp)
            expected = resolved.model.root_digest or ""
            if not hmac.compare_digest("sha256:" + root, expected):
                raise ModelMismatchError(f"the copy of {resolved.model.name} at {tmp} changed")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(tmp, target)
        else:
            hasher = hashlib.sha256()
            with open(resolved.path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    hasher.update(chunk)
                    dst.write(chunk)
            if not hmac.compare_digest(hasher.hexdigest(), resolved.model.sha256 or ""):
                raise ModelMismatchError(
                    f"the cached file {resolved.path} changed while it was copied"
                )
            os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, Error):
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    return target


@dataclass(frozen=True)
class LockCheck:
    """The verdict on one entry. `status`: "ok", "missing" (not in the cache), "mismatch" (the
    cached copy differs from the pin), "refused" (nothing to verify against, or the policy
    allows none of its sources). `expected`/`actual` are "sha256:<hex>"."""

    name: str
    status: str
    expected: str | None
    actual: str | None = None
    detail: str = ""
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "expected": self.expected,
            "actual": self.actual,
            "detail": self.detail,
            "path": str(self.path) if self.path is not None else None,
        }


def verify_lock(
    lock: Lock, *, cache: Cache | None = None, policy: Policy | None = None
) -> list[LockCheck]:
    """Check every entry against the cache, changing nothing and downloading nothing: what CI
    runs after `lock sync`. Each cached file (and extracted model) is re-hashed now."""
    cache = cache if cache is not None else Cache()
    return [_verify_one(model, cache, policy) for model in lock.models]


def _verify_one(model: LockedModel, cache: Cache, policy: Policy | None) -> LockCheck:
    if policy is not None and not any(policy.source_allowed(u) for u in model.urls):
        return LockCheck(
            model.name,
            "refused",
            model.digest,
            detail=f"the policy {policy.source} allows none of its sources",
        )
    if model.sha256 is None:
        return LockCheck(
            model.name,
            "refused",
            None,
            detail="trust on first use: no digest recorded yet (run `modelseal lock sync`)",
        )
    if model.root_digest is not None:
        extracted = cache.check_model(model.root_digest, model.files)
        if extracted.status == "ok" and not _bound(cache, model):
            return LockCheck(
                model.name,
                "mismatch",
                model.root_digest,
                extracted.actual,
                "the cached extracted model was not extracted from the archive this entry "
                "pins (its sha256); run `modelseal lock sync`",
                extracted.path,
            )
        if extracted.status != "missing":
            return LockCheck(
                model.name,
                extracted.status,
                model.root_digest,
                extracted.actual,
                extracted.detail,
                extracted.path,
            )
    found = cache.check(model.sha256)
    if found.status == "missing":
        return LockCheck(
            model.name,
            "missing",
            model.digest,
            detail="not in the cache (run `modelseal lock sync`)",
        )
    if found.status == "ok":
        size = found.path.stat().st_size
        if model.size is not None and size != model.size:
            return LockCheck(
                model.name,
                "mismatch",
                model.digest,
                found.actual,
                f"size {size} bytes, the lock records {model.size}",
                found.path,
            )
        if model.root_digest is not None:
            return LockCheck(
                model.name,
                "missing",
                model.root_digest,
                detail="archive cached but not extracted (run `modelseal lock sync`)",
                path=found.path,
            )
    return LockCheck(model.name, found.status, model.digest, found.actual, found.detail, found.path)


__all__ = [
    "DEFAULT_LOCK_FILE",
    "LOCK_VERSION",
    "MAX_LOCK_FILE",
    "TRUST_PINNED",
    "TRUST_TOFU",
    "Lock",
    "LockCheck",
    "LockError",
    "LockedModel",
    "Resolved",
    "SyncResult",
    "check_signer",
    "default_name",
    "ensure",
    "is_archive_url",
    "materialize",
    "normalize_url",
    "resolve",
    "seal_url",
    "sync",
    "updated_lock",
    "url_problem",
    "verify_lock",
]
