"""Trusted downloads: fetch a model from its mirrors, check it against a pinned SHA-256, and
(for archives) extract it safely and seal what was extracted.

    from modelseal.fetch import fetch
    result = fetch(["https://models.example.com/r50.zip", "https://mirror.example.org/r50.zip"],
                   sha256="0ecdba34...", out="models/", policy=Policy.load("modelseal.toml"))

Nothing reaches the destination before it verified: bytes go to a temporary file beside it,
which is renamed into place only when the digest matched. See docs/fetch.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from modelseal._internal import names
from modelseal._internal.archive import (
    DEFAULT_MAX_FILES,
    UnsafeArchiveError,
    archive_suffix,
    extract_archive,
)
from modelseal._internal.download import (
    DEFAULT_MAX_BYTES,
    DigestMismatch,
    DownloadError,
    SourceNotAllowed,
    check_source,
    download_verified,
    normalize_sha256,
)
from modelseal.errors import Error, IntegrityError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from modelseal.hashing import Progress
    from modelseal.policy import Policy
    from modelseal.signing import keys

logger = logging.getLogger("modelseal.fetch")


@dataclass(frozen=True)
class FetchResult:
    """What was fetched, from where, and what it was checked against."""

    url: str  # the mirror that served it, before redirects
    final_url: str  # after redirects
    path: Path  # the verified file, or the extracted (and sealed) directory
    sha256: str  # "sha256:<hex>" of the downloaded bytes
    size: int
    resumed: bool
    extracted: bool
    root_digest: str | None  # "sha256:<hex>" root of the extracted model's seal
    seal: Path | None  # the seal written for the extracted model
    trust: str  # "pinned" | "tofu"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["seal"] = str(self.seal) if self.seal is not None else None
        return data


def _basename(url: str) -> str:
    """The file name a URL suggests, or a UsageError when it suggests none that is safe."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or names.name_problem(name) is not None or name in (".", ".."):
        raise UsageError(f"{url} does not end in a usable file name; give out= (--out)")
    return name


def _stem(filename: str) -> str:
    suffix = archive_suffix(filename)
    return filename[: -len(suffix)] if suffix else filename


def _target(out: str | os.PathLike[str] | None, filename: str, extract: bool) -> Path:
    """Where the result goes: `out` itself, or `out`/name when `out` is a directory."""
    leaf = _stem(filename) if extract else filename
    if out is None:
        return Path.cwd() / leaf
    text = os.fspath(out)
    path = Path(text)
    if path.is_dir() or text.endswith((os.sep, "/")):
        return path / leaf
    return path


def _one_line(text: str) -> str:
    return " ".join(text.split())


def fetch(
    urls: str | Sequence[str],
    *,
    sha256: str | None = None,
    out: str | os.PathLike[str] | None = None,
    name: str | None = None,
    policy: Policy | None = None,
    trust_on_first_use: bool = False,
    extract: bool | None = None,
    key: str | os.PathLike[str] | keys.PrivateKey | keys.Signer | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    retries: int = 3,
    timeout: float = 30.0,
    allow_http_loopback: bool = False,
    progress: Progress | None = None,
    sleep: Callable[[float], None] | None = None,
) -> FetchResult:
    """Download from the first mirror that serves the pinned bytes; extract and seal archives.

    `sha256` (hex or "sha256:<hex>") is required unless `trust_on_first_use=True`, which
    accepts whatever the first mirror serves (result.trust == "tofu"; record the digest).
    Mirrors are tried in order; a mirror that fails (even with a wrong digest) hands over to
    the next, and when all fail every failure is reported. Every URL is checked against the
    policy before any request. `extract=None` extracts .zip/.tar(.gz/.bz2/.xz)/.tgz by name;
    the extracted directory is sealed (signed with `key`, else an unsigned digest seal).
    `sleep` replaces the wait between retries (tests).
    """
    mirrors = [urls] if isinstance(urls, str) else list(urls)
    if not mirrors:
        raise UsageError("no URL to fetch")
    try:
        result = _fetch(
            mirrors,
            sha256=sha256,
            out=out,
            name=name,
            policy=policy,
            trust_on_first_use=trust_on_first_use,
            extract=extract,
            key=key,
            max_bytes=max_bytes,
            max_files=max_files,
            retries=retries,
            timeout=timeout,
            allow_http_loopback=allow_http_loopback,
            progress=progress,
            sleep=sleep,
        )
    except Error as exc:
        verdict = "refused" if isinstance(exc, IntegrityError) else "failed"
        logger.error("fetch %s %s: %s", verdict, mirrors[0], _one_line(str(exc)))
        raise
    logger.info(
        "fetched %s -> %s: %s, %d bytes, trust=%s%s%s",
        result.url,
        result.path,
        result.sha256,
        result.size,
        result.trust,
        f", redirected to {result.final_url}" if result.final_url != result.url else "",
        f", extracted and sealed, root {result.root_digest}" if result.extracted else "",
    )
    return result


def _fetch(
    mirrors: list[str],
    *,
    sha256: str | None,
    out: str | os.PathLike[str] | None,
    name: str | None,
    policy: Policy | None,
    trust_on_first_use: bool,
    extract: bool | None,
    key: Any,
    max_bytes: int,
    max_files: int,
    retries: int,
    timeout: float,
    allow_http_loopback: bool,
    progress: Progress | None,
    sleep: Callable[[float], None] | None,
) -> FetchResult:
    if sha256 is None and not trust_on_first_use:
        raise UsageError(
            "a SHA-256 pin is required (sha256=, --sha256); or explicitly trust on first use"
        )
    expected = normalize_sha256(sha256) if sha256 is not None else None
    for url in mirrors:  # all of them, before the first request
        check_source(url, policy, allow_http_loopback)
    filename = _basename(mirrors[0])
    extracting = archive_suffix(filename) is not None if extract is None else extract
    target = _target(out, filename, extracting)
    if extracting and os.path.lexists(target):
        raise UsageError(f"{target} already exists: remove it, or choose another out=")
    if target.is_dir() and not extracting:
        raise UsageError(f"{target} is a directory")
    # An archive is downloaded beside the target and removed once extracted.
    download_to = (
        target.parent / f".modelseal-{os.urandom(6).hex()}.archive" if extracting else target
    )
    failures: list[tuple[str, Error]] = []
    for url in mirrors:
        try:
            digest, size, final_url, resumed = download_verified(
                url,
                download_to,
                sha256=expected,
                policy=policy,
                max_bytes=max_bytes,
                retries=retries,
                timeout=timeout,
                allow_http_loopback=allow_http_loopback,
                progress=progress,
                sleep=sleep,
            )
        except (DigestMismatch, DownloadError, SourceNotAllowed) as exc:
            failures.append((url, exc))
            if len(mirrors) > 1:
                logger.warning("mirror %s failed: %s", url, _one_line(str(exc)))
            continue
        break
    else:
        raise _all_failed(failures)
    trust = "pinned" if expected is not None else "tofu"
    if trust == "tofu":
        logger.warning(
            "trusting on first use: %s served %s (%d bytes); pin it from now on",
            url,
            digest,
            size,
        )
    if not extracting:
        return FetchResult(url, final_url, target, digest, size, resumed, False, None, None, trust)
    try:
        root_digest, seal_path = _extract_and_seal(
            download_to, target, name=name, key=key, max_files=max_files, max_bytes=max_bytes
        )
    finally:
        download_to.unlink(missing_ok=True)
    return FetchResult(
        url, final_url, target, digest, size, resumed, True, root_digest, seal_path, trust
    )


def _extract_and_seal(
    archive: Path, target: Path, *, name: str | None, key: Any, max_files: int, max_bytes: int
) -> tuple[str, Path]:
    """Extract beside `target`, seal it there, then rename it into place: the directory never
    appears without its seal."""
    from modelseal.sealing import seal

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".modelseal-", dir=target.parent))
    try:
        model = staging / "model"
        extract_archive(archive, model, max_files=max_files, max_bytes=max_bytes)
        sealed = seal(model, key=key, unsigned=key is None, name=name or target.name)
        try:
            os.rename(model, target)
        except OSError as exc:
            raise UsageError(
                f"cannot move the extracted model to {target}: {exc.strerror}"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seal_path = target / Path(sealed.seal).relative_to(model)
    return sealed.root_digest, seal_path


def _all_failed(failures: list[tuple[str, Error]]) -> Error:
    """One error for every mirror failing: the integrity kind if any mirror had one, with all
    the reasons on one line."""
    if len(failures) == 1:
        return failures[0][1]
    summary = "every mirror failed: " + "; ".join(
        f"{url}: {_one_line(str(exc))}" for url, exc in failures
    )
    for _url, exc in failures:
        if isinstance(exc, DigestMismatch):
            return DigestMismatch(summary, expected=exc.expected, actual=exc.actual, url=exc.url)
    for _url, exc in failures:
        if isinstance(exc, SourceNotAllowed):
            return SourceNotAllowed(summary, url=exc.url)
    return DownloadError(summary)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "DigestMismatch",
    "DownloadError",
    "FetchResult",
    "SourceNotAllowed",
    "UnsafeArchiveError",
    "download_verified",
    "extract_archive",
    "fetch",
]
