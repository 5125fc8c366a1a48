"""Small files: reading trusted input with a cap checked before parsing, writing atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile

from modelseal.errors import UsageError


def read_capped(
    path: str | os.PathLike[str],
    limit: int,
    what: str,
    error: type[UsageError] = UsageError,
) -> bytes:
    """At most `limit` bytes of `path`; a missing, unreadable or larger file raises `error`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit} bytes")
    return data


def write_atomic(path: str | os.PathLike[str], data: bytes, what: str, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, fsync, then rename over it, so a reader
    never sees half a file and a failure leaves any earlier file intact."""
    target = os.fspath(path)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=".modelseal-", suffix=".tmp", dir=os.path.dirname(target) or "."
        )
    except OSError as exc:
        raise UsageError(f"cannot write {what} {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        remove_quietly(tmp)
        raise UsageError(f"cannot write {what} {target}: {exc.strerror}") from None
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: str) -> None:
    """Remove a temporary file that may already be gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
