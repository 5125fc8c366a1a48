"""What every command shares: exit codes, output format, messages on stderr, data on stdout."""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class OutputFormat(str, enum.Enum):
    TEXT = "text"
    JSON = "json"

    def __str__(self) -> str:
        return self.value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def progress_bar(args: argparse.Namespace, description: str) -> Any:
    from modelseal._internal.progress import TerminalProgress

    return TerminalProgress(description, enabled=not args.quiet)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", type=OutputFormat, choices=list(OutputFormat), default=OutputFormat.TEXT
    )


def policy_for(args: argparse.Namespace) -> Any:
    """--policy FILE; else, with no keys given, ./modelseal.toml when there is one."""
    from modelseal.errors import UsageError
    from modelseal.policy import DEFAULT_POLICY_FILE, Policy

    if args.policy:
        return Policy.load(args.policy)
    if args.public_key or args.allow_unsigned:
        return None
    if os.path.exists(DEFAULT_POLICY_FILE):
        say(args, f"using the trust policy {DEFAULT_POLICY_FILE}")
        return Policy.load(DEFAULT_POLICY_FILE)
    raise UsageError(
        f"no trust given: pass --public-key, --policy, or --allow-unsigned "
        f"(or put a {DEFAULT_POLICY_FILE} here)"
    )


def add_trust_options(p: argparse.ArgumentParser) -> None:
    """MODEL and how to trust its seal: --public-key, --allow-unsigned or --policy."""
    p.add_argument("model", metavar="MODEL", help="model file or directory")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument(
        "--public-key", action="append", metavar="PUB", help="trusted public key; repeatable"
    )
    trust.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="check digests only, not who sealed the model",
    )
    trust.add_argument(
        "--policy",
        metavar="FILE",
        help="trust policy (TOML); default ./modelseal.toml when no key is given",
    )
    p.add_argument("--signature", metavar="PATH", help="seal path (default as for seal)")
    p.add_argument(
        "--allow-symlinks",
        action="store_true",
        help="accept symlinks inside the model root if the seal allows them",
    )
