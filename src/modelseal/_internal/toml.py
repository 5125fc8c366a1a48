"""Reading the TOML files people write (policies, locks): one parser, one-line errors."""

from __future__ import annotations

import sys
from typing import Any

from modelseal.errors import UsageError


def one_line(text: str) -> str:
    return " ".join(text.split())


def parse_toml(text: str, what: str, source: str, error: type[UsageError]) -> dict[str, Any]:
    """Parse `text` (the `what` at `source`: "policy", "lock"); invalid TOML raises `error`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise error(f"reading a {what} on Python 3.10 needs the tomli package") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {source} is not valid TOML: {one_line(str(exc))}") from None
    return data
