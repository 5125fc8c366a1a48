"""`modelseal fetch URL [URL ...]`: download from mirrors, verify a pinned SHA-256, extract and
seal archives. Data (the digest and path, or JSON) on stdout; messages on stderr."""

from __future__ import annotations

import argparse
import re
from typing import Any

from modelseal._cli._output import (
    EXIT_OK,
    OutputFormat,
    add_format,
    print_json,
    progress_bar,
    say,
)

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def byte_size(text: str) -> int:
    """A positive size in bytes, optionally with a binary unit: 500M, 2G, 1T (KiB/MiB/...)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive size such as 500M or 2G: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _retries(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")
    return int(text)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from modelseal.fetch import DEFAULT_MAX_BYTES, fetch
    from modelseal.policy import Policy

    policy = Policy.load(args.policy) if args.policy else None
    with progress_bar(args, "downloading") as progress:
        result = fetch(
            args.urls,
            sha256=args.sha256,
            out=args.out,
            name=args.name,
            policy=policy,
            trust_on_first_use=args.trust_on_first_use,
            extract=False if args.no_extract else None,
            key=args.key,
            max_bytes=args.max_size if args.max_size is not None else DEFAULT_MAX_BYTES,
            retries=args.retries,
            timeout=args.timeout,
            allow_http_loopback=args.allow_http_loopback,
            progress=progress,
        )
    if args.format is OutputFormat.JSON:
        print_json(result.to_json())
    else:
        print(f"{result.sha256}  {result.path}")
    via = f" (redirected to {result.final_url})" if result.final_url != result.url else ""
    resumed = ", resumed" if result.resumed else ""
    say(
        args,
        f"fetched {result.url}{via}: {result.size} bytes{resumed}, {result.sha256} "
        f"({'matches the pin' if result.trust == 'pinned' else 'NOT pinned'}) -> {result.path}",
    )
    if result.trust == "tofu":
        say(
            args,
            f"warning: trusted on first use: nothing was checked; pin it with "
            f"--sha256 {result.sha256.removeprefix('sha256:')} from now on",
        )
    if result.extracted:
        how = "signed" if args.key else "UNSIGNED (digests only; sign with --key)"
        say(args, f"extracted and sealed: root {result.root_digest}, {how}; seal {result.seal}")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `fetch` command to the `modelseal` parser."""
    fetch = sub.add_parser(
        "fetch",
        parents=[common],
        help="download a model from its mirrors and check it against a pinned SHA-256",
        description="Download from the first mirror that serves the pinned bytes (https only). "
        "Nothing lands at --out before it verified. Archives (.zip, .tar.gz, .tgz, .tar) are "
        "extracted safely and the extracted model is sealed. A private CA is trusted through "
        "SSL_CERT_FILE.",
    )
    fetch.add_argument(
        "urls", nargs="+", metavar="URL", help="the source and its mirrors, in order"
    )
    pin = fetch.add_mutually_exclusive_group(required=True)
    pin.add_argument("--sha256", metavar="HEX", help="the expected SHA-256 of the download")
    pin.add_argument(
        "--trust-on-first-use",
        action="store_true",
        help="accept whatever is served now (prints the digest to pin)",
    )
    fetch.add_argument(
        "--out", metavar="PATH", help="file (or directory to put it in); default ./<name>"
    )
    fetch.add_argument("--name", help="model name recorded in the seal of an extracted archive")
    fetch.add_argument(
        "--policy", metavar="FILE", help="trust policy whose [sources] allow list URLs must match"
    )
    fetch.add_argument(
        "--key", metavar="KEY", help="sign the extracted model's seal with this private key"
    )
    fetch.add_argument(
        "--no-extract", action="store_true", help="keep an archive as the downloaded file"
    )
    fetch.add_argument(
        "--max-size",
        type=byte_size,
        metavar="N",
        help="refuse downloads (and extracted archives) larger than N bytes (500M, 2G; "
        "default 64G)",
    )
    fetch.add_argument(
        "--retries", type=_retries, default=3, metavar="N", help="retries per mirror (default 3)"
    )
    fetch.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="connect and read timeout (default 30)",
    )
    fetch.add_argument(
        "--allow-http-loopback",
        action="store_true",
        help="TESTS ONLY: allow plain http to 127.0.0.1 / ::1 / localhost",
    )
    add_format(fetch)
    fetch.set_defaults(func=_cmd_fetch)
