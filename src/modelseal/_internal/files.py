"""Reading small trusted-input files (keys, policies) with a size cap checked before parsing."""

from __future__ import annotations

import os

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
