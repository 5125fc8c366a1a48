"""The download engine: one URL into one file, verified before it takes the destination's place.

Bytes are streamed (1 MiB at a time) into a temporary file in the destination's directory and
hashed as they are written; the destination is replaced (fsync + rename) only after the digest
matched. An interrupted transfer resumes with a Range request validated by If-Range, so the
final digest always covers one version of the file; failing that, it restarts from zero.
urllib3 is imported lazily: `import modelseal` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import queue
import random
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urljoin, urlsplit

from modelseal._internal.files import remove_quietly
from modelseal.errors import IntegrityError, UsageError

if TYPE_CHECKING:
    from modelseal.hashing import Progress
    from modelseal.policy import Policy

DEFAULT_MAX_BYTES = 64 * 2**30
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0

logger = logging.getLogger("modelseal.fetch")

_sleep: Callable[[float], None] = time.sleep
"""How the engine waits between retries; tests replace it (or pass `sleep=`) and never wait."""


class SourceNotAllowed(IntegrityError):
    """A URL, or a redirect target, that the policy's `[sources] allow` list does not admit;
    also plain http (outside explicit loopback tests) and an https -> http redirect."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class DigestMismatch(IntegrityError):
    """The downloaded bytes are not the pinned ones. `expected`/`actual` are "sha256:<hex>"."""

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        actual: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        self.url = url


class DownloadError(UsageError):
    """The bytes could not be fetched: network, TLS, HTTP status, size cap, retries exhausted."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class _Retry(Exception):
    """A failure worth another attempt (connection trouble, 5xx, a truncated body)."""


def normalize_sha256(value: str) -> str:
    """Lowercase hex of a SHA-256 given as hex or "sha256:<hex>"; UsageError otherwise."""
    text = value.strip()
    algorithm, sep, rest = text.partition(":")
    if sep:
        if algorithm.lower() != "sha256":
            raise UsageError(f"only sha256 pins are accepted, not {algorithm!r}")
        text = rest
    text = text.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise UsageError(f"not a SHA-256 digest (64 hex digits): {value!r}")
    return text


def check_source(url: str, policy: Policy | None, allow_http_loopback: bool) -> None:
    """Refuse `url` before any request: not https (plain http only to loopback, only when
    allowed), credentials in it, or outside the policy's allowlist (when a policy is given)."""
    if not url or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UsageError(f"not a URL: {url!r}")
    if "\\" in url:  # urllib3 ends the host at a backslash, urlsplit does not: ambiguous
        raise SourceNotAllowed(f"{url}: a URL with a backslash is ambiguous; refused", url=url)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise UsageError(f"not a URL: {url!r}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise SourceNotAllowed(f"{url}: only https:// URLs can be downloaded", url=url)
    if parts.username is not None or parts.password is not None:
        raise SourceNotAllowed(f"{url}: URLs with credentials are refused", url=url)
    if parts.scheme == "http":
        if host not in LOOPBACK_HOSTS:
            raise SourceNotAllowed(
                f"{url}: plain http is refused (https only; http only to loopback, for tests)",
                url=url,
            )
        if not allow_http_loopback:
            raise SourceNotAllowed(
                f"{url}: plain http is refused unless allow_http_loopback is set (tests only)",
                url=url,
            )
    if policy is not None and policy.source_allowed(url) is None:
        raise SourceNotAllowed(
            f"{url} is not an allowed source of the policy {policy.source} ([sources] allow)",
            url=url,
        )


def _check_redirect(
    origin: str, current: str, target: str, policy: Policy | None, allow_http: bool
) -> None:
    if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
        raise SourceNotAllowed(
            f"{origin}: refused a redirect from https to {target} (a downgrade)", url=target
        )
    try:
        check_source(target, policy, allow_http)
    except SourceNotAllowed as exc:
        raise SourceNotAllowed(f"{origin}: refused a redirect: {exc}", url=target) from None
    except UsageError as exc:
        raise DownloadError(f"{origin}: bad redirect: {exc}", url=origin) from None


@dataclass
class _State:
    """What survives between attempts of one download: the bytes so far and their hash."""

    out: BinaryIO
    hasher: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    total: int | None = None
    validator: str | None = None  # strong ETag or Last-Modified, for If-Range
    final_url: str = ""
    resumed: bool = False
    progress_started: bool = False

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.hasher = hashlib.sha256()
        self.received = 0
        self.total = None
        self.validator = None
        self.resumed = False


class _Sink:
    """Writes and hashes received chunks on a second thread, so that receiving (TLS decryption)
    and hashing run on two cores; both release the GIL. Leaving the block waits until every
    chunk fed is written and hashed, so `state` is consistent for a resume or a restart."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelseal-download", daemon=True)

    def __enter__(self) -> _Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._state.out.write(chunk)
                    self._state.hasher.update(chunk)
                except BaseException as exc:  # handed to the receiving thread
                    self._error = exc


def _pool(timeout: float) -> Any:
    import urllib3

    # create_default_context: verification and hostname checks on, CA from the system or from
    # SSL_CERT_FILE / SSL_CERT_DIR (how a private CA is trusted). Made per call, so a changed
    # environment is honoured.
    context = ssl.create_default_context()
    return urllib3.PoolManager(
        ssl_context=context,
        retries=False,
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        maxsize=1,
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reason(exc: BaseException) -> str:
    """A short, one-line description of a urllib3/ssl/socket failure."""
    inner: BaseException = exc
    seen = 0
    while seen < 5:
        nxt = getattr(inner, "reason", None) or inner.__cause__ or inner.__context__
        if not isinstance(nxt, BaseException):
            break
        inner, seen = nxt, seen + 1
        if isinstance(inner, ssl.SSLError):
            break
    if isinstance(inner, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed ({_one_line(inner.verify_message or str(inner))}"
            "); trust a private CA with SSL_CERT_FILE"
        )
    if isinstance(inner, ssl.SSLError):
        return f"TLS error: {_one_line(inner.reason or str(inner))}"
    text = _one_line(str(inner)) or type(inner).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _is_tls_verify_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        for nxt in (getattr(item, "reason", None), item.__cause__, item.__context__):
            if isinstance(nxt, BaseException):
                stack.append(nxt)
    return False


def _validator(headers: Any) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return str(etag)
    modified = headers.get("Last-Modified")
    return str(modified) if modified else None


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    """(start, total) of "bytes START-END/TOTAL" (TOTAL may be "*")."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _attempt(
    pool: Any,
    url: str,
    state: _State,
    *,
    policy: Policy | None,
    max_bytes: int,
    allow_http: bool,
    progress: Progress | None,
) -> None:
    """One GET (following redirects) that appends to `state`; raises _Retry when worth it."""
    import urllib3

    headers = {"Accept-Encoding": "identity", "User-Agent": "modelseal"}
    if state.received and state.validator is not None:
        headers["Range"] = f"bytes={state.received}-"
        headers["If-Range"] = state.validator
    elif state.received:
        state.restart()  # nothing to tie the pieces to one version of the file: start over
    current = url
    response: Any = None
    done = False
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            response = pool.request(
                "GET", current, headers=headers, redirect=False, preload_content=False
            )
            if response.status not in _REDIRECTS:
                break
            location = response.headers.get("Location")
            response.drain_conn()
            response.release_conn()
            if not location:
                raise DownloadError(f"{url}: a redirect without a Location", url=url)
            target = urljoin(current, location)
            _check_redirect(url, current, target, policy, allow_http)
            logger.debug("%s: redirected to %s", url, target)
            current = target
        else:
            raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url)
        state.final_url = current
        _receive(response, url, state, max_bytes=max_bytes, progress=progress)
        done = True
    except urllib3.exceptions.HTTPError as exc:
        if _is_tls_verify_failure(exc):
            raise DownloadError(f"cannot download {url}: {_reason(exc)}", url=url) from None
        if isinstance(exc, urllib3.exceptions.ProtocolError) and state.total is not None:
            raise _Retry(
                f"the connection broke at byte {state.received} of {state.total}"
            ) from None
        raise _Retry(_reason(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        if _is_tls_verify_failure(exc):
            raise DownloadError(f"cannot download {url}: {_reason(exc)}", url=url) from None
        raise _Retry(_reason(exc)) from None
    finally:
        if response is not None:
            if done:
                response.release_conn()
            else:  # unread bytes may be left on the connection: never reuse it
                response.close()


def _receive(
    response: Any, url: str, state: _State, *, max_bytes: int, progress: Progress | None
) -> None:
    status = response.status
    if status >= 500 or status in (408, 429):
        raise _Retry(f"HTTP {status}")
    if status == 206 and state.received:
        found = _content_range_start(response.headers.get("Content-Range"))
        if (
            found is None
            or found[0] != state.received
            or (state.total is not None and found[1] is not None and found[1] != state.total)
        ):
            state.restart()  # a range we did not ask for: start over, cleanly
            raise _Retry(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        state.resumed = True
        logger.info("%s: resuming at byte %d", url, state.received)
    elif status == 200:
        if state.received:
            logger.info("%s: the server ignored the Range request; starting over", url)
            state.restart()
        state.validator = _validator(response.headers)
    else:
        raise DownloadError(f"cannot download {url}: HTTP {status} {response.reason}", url=url)
    length_text = response.headers.get("Content-Length")
    expected_end: int | None = None
    if length_text is not None:
        if not length_text.strip().isdigit():
            raise DownloadError(f"{url}: invalid Content-Length {length_text!r}", url=url)
        expected_end = state.received + int(length_text)
        if expected_end > max_bytes:
            raise DownloadError(
                f"{url} is {expected_end} bytes, over the size cap of {max_bytes} bytes", url=url
            )
        if state.total is None:
            state.total = expected_end
    if progress is not None and not state.progress_started and state.total is not None:
        progress.start(state.total)
        state.progress_started = True
    with _Sink(state) as sink:
        for chunk in response.stream(CHUNK, decode_content=False):
            if state.received + len(chunk) > max_bytes:
                raise DownloadError(
                    f"{url} sent more than the size cap of {max_bytes} bytes", url=url
                )
            sink.feed(chunk)
            state.received += len(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    if expected_end is not None and state.received < expected_end:
        raise _Retry(f"the body ended at byte {state.received} of {expected_end}")


def _backoff(attempt: int) -> float:
    """Exponential backoff, jittered between half and all of the step (no thundering herd)."""
    step: float = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** (attempt - 1))
    return step * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


def download_verified(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None,
    policy: Policy | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 3,
    timeout: float = 30.0,
    allow_http_loopback: bool = False,
    progress: Progress | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[str, int, str, bool]:
    """Download `url` into the file `dest`, verified; returns ("sha256:<hex>", size, final URL,
    resumed). `sha256=None` pins nothing (the caller trusts on first use and records it).

    Raises SourceNotAllowed (before any request, or on a redirect), DigestMismatch (the
    temporary file is removed; `dest` is untouched), DownloadError (anything else).
    """
    expected = normalize_sha256(sha256) if sha256 is not None else None
    if max_bytes <= 0 or retries < 0 or timeout <= 0:
        raise UsageError("max_bytes and timeout must be positive, retries not negative")
    check_source(url, policy, allow_http_loopback)
    target = Path(dest)
    if target.is_dir():
        raise UsageError(f"destination {target} is a directory")
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".modelseal-", suffix=".part", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write into {directory}: {exc.strerror or exc}") from None
    wait = sleep if sleep is not None else _sleep
    pool = _pool(timeout)
    try:
        with os.fdopen(fd, "w+b") as out:
            state = _State(out=out, final_url=url)
            attempt = 0
            while True:
                try:
                    _attempt(
                        pool,
                        url,
                        state,
                        policy=policy,
                        max_bytes=max_bytes,
                        allow_http=allow_http_loopback,
                        progress=progress,
                    )
                    break
                except _Retry as exc:
                    attempt += 1
                    if attempt > retries:
                        raise DownloadError(
                            f"cannot download {url}: {exc} (gave up after {attempt} attempts)",
                            url=url,
                        ) from None
                    delay = _backoff(attempt)
                    logger.info(
                        "%s: attempt %d failed (%s); retrying in %.1fs", url, attempt, exc, delay
                    )
                    wait(delay)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # by descriptor: the name could be swapped meanwhile
        actual = state.hasher.hexdigest()
        if expected is not None and not hmac.compare_digest(actual, expected):
            raise DigestMismatch(
                f"{url}: SHA-256 mismatch: expected sha256:{expected}, got sha256:{actual} "
                f"({state.received} bytes); the download was discarded",
                expected="sha256:" + expected,
                actual="sha256:" + actual,
                url=url,
            )
        os.replace(tmp, target)
        _fsync_dir(directory)
    except OSError as exc:
        remove_quietly(tmp)
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        remove_quietly(tmp)
        raise
    finally:
        pool.clear()
    return "sha256:" + actual, state.received, state.final_url, state.resumed


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DigestMismatch",
    "DownloadError",
    "SourceNotAllowed",
    "check_source",
    "download_verified",
    "normalize_sha256",
]
