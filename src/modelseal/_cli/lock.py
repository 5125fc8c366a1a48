"""`modelseal lock add|sync|verify`: the models lockfile, for developers and for CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._cli._output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    positive_int,
    print_json,
    progress_bar,
    say,
)

if TYPE_CHECKING:
    from modelseal.cache import Cache
    from modelseal.lock import Lock, LockCheck, SyncResult
    from modelseal.policy import Policy
    from modelseal.signing.keys import PublicKey


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _policy(args: argparse.Namespace) -> Policy | None:
    """--policy FILE (its [sources] allowlist), as `modelseal fetch` takes it; without one,
    any https source the lock lists may be used (the pins still apply)."""
    from modelseal.policy import Policy

    return Policy.load(args.policy) if args.policy else None


def _cache(args: argparse.Namespace) -> Cache:
    from modelseal.cache import Cache

    return Cache(args.cache)


def _load_lock(args: argparse.Namespace, *, missing_ok: bool = False) -> Lock:
    from modelseal.lock import DEFAULT_LOCK_FILE, Lock

    if args.lock is None:
        args.lock = DEFAULT_LOCK_FILE  # resolved here: building the parser must stay light
    path = Path(args.lock)
    if missing_ok and not path.exists():
        return Lock(path=path)
    return Lock.load(path)


def _fetch_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "allow_http_loopback": args.allow_http_loopback,
        "retries": args.retries,
        "timeout": args.timeout,
    }
    if args.max_size is not None:
        options["max_bytes"] = args.max_size
    return options


def _signer_keys(args: argparse.Namespace) -> list[PublicKey]:
    """The --public-key files, loaded before any download so a bad path fails fast (exit 2)."""
    from modelseal.signing.keys import load_public_key

    return [load_public_key(path) for path in args.public_keys or ()]


def _cmd_add(args: argparse.Namespace) -> int:
    import dataclasses

    from modelseal.errors import UsageError
    from modelseal.lock import (
        TRUST_PINNED,
        TRUST_TOFU,
        LockedModel,
        check_signer,
        default_name,
        is_archive_url,
        resolve,
        save_entries,
    )

    tofu = args.trust_on_first_use
    public_keys = _signer_keys(args)
    lock = _load_lock(args, missing_ok=True)
    name = args.name or default_name(args.urls[0])
    if any(m.name == name for m in lock.models) and not args.replace:
        raise UsageError(
            f"{args.lock} already pins a model named {name!r}: pass --replace to re-pin it"
        )
    entry = LockedModel(
        name=name,
        urls=tuple(args.urls),
        sha256=None if tofu else args.sha256,
        trust=TRUST_TOFU if tofu else TRUST_PINNED,
    )
    others = dataclasses.replace(lock, models=tuple(m for m in lock.models if m.name != name))
    others.add(entry)  # refuses a URL another entry already lists, before any download
    extract = not args.no_extract and is_archive_url(args.urls[0])
    if public_keys and extract:
        raise UsageError(
            "--public-key checks the seal published beside a single file (URL.sig); archives "
            "are not supported: pin the archive by --sha256 alone, or keep it as one file "
            "with --no-extract"
        )
    cache, policy = _cache(args), _policy(args)
    with progress_bar(args, f"fetching {name}") as progress:
        got = resolve(
            entry,
            cache=cache,
            policy=policy,
            extract=extract,
            refresh=True,
            progress=progress,
            **_fetch_options(args),
        )
    recorded = got.model
    if public_keys:
        signer = check_signer(
            got,
            public_keys,
            cache=cache,
            policy=policy,
            allow_http_loopback=args.allow_http_loopback,
            retries=args.retries,
            timeout=args.timeout,
        )
        recorded = dataclasses.replace(recorded, signer=signer)
    save_entries(args.lock, [recorded])
    if args.format == "json":
        print_json({"lock": str(args.lock), "model": recorded.to_json(), "path": str(got.path)})
    if tofu and recorded.signer is not None:
        # Still loud: the key vouched for these bytes, but no digest from another channel did.
        print(
            f"modelseal: WARNING: trust on first use: {name} was NOT checked against any pin; "
            f"recorded sha256:{recorded.sha256} as served by {got.source}, sealed by the "
            f"trusted key {recorded.signer}.",
            file=sys.stderr,
        )
    elif tofu:
        # Loud on purpose (even with --quiet): nothing vouched for these bytes.
        print(
            f"modelseal: WARNING: trust on first use: {name} was NOT checked against any pin; "
            f"recorded sha256:{recorded.sha256} as served by {got.source}. Compare it with the "
            "publisher's digest before you commit the lock.",
            file=sys.stderr,
        )
    extracted = f", extracted root {recorded.root_digest}" if recorded.root_digest else ""
    signed = f", signed by {recorded.signer}" if recorded.signer else ""
    say(
        args,
        f"pinned {name} in {args.lock}: sha256:{recorded.sha256}, {recorded.size} bytes"
        f"{extracted}{signed} (trust = {recorded.trust!r}); cached at {got.path}",
    )
    return EXIT_OK


def _cmd_sync(args: argparse.Namespace) -> int:
    from modelseal.errors import IntegrityError
    from modelseal.lock import save_entries, sync

    lock = _load_lock(args)
    with progress_bar(args, "syncing") as progress:
        results = sync(
            lock,
            cache=_cache(args),
            policy=_policy(args),
            out=args.out,
            names=args.names or None,
            refresh=args.refresh,
            progress=progress,
            **_fetch_options(args),
        )
    if any(r.status == "recorded" for r in results):
        save_entries(args.lock, [r.model for r in results if r.status == "recorded"])
        for r in results:
            if r.status == "recorded":
                print(
                    f"modelseal: WARNING: trust on first use: recorded {r.model.digest} for "
                    f"{r.name} as served by {r.source}; review the change to {args.lock}",
                    file=sys.stderr,
                )
    _print_sync(args, results)
    failed = [r for r in results if r.failed]
    if any(isinstance(r.error, IntegrityError) for r in failed):
        return EXIT_FAILED
    return EXIT_USAGE if failed else EXIT_OK


def _print_sync(args: argparse.Namespace, results: list[SyncResult]) -> None:
    if args.format == "json":
        print_json(
            {
                "lock": str(args.lock),
                "ok": not any(r.failed for r in results),
                "models": [r.to_json() for r in results],
            }
        )
    else:
        for r in results:
            where = r.path if r.path is not None else "-"
            print(f"{r.status:<8}  {r.name}  {r.model.digest or '-'}  {where}")
    for r in results:
        if r.failed:
            print(f"modelseal: {r.name}: {r.detail}", file=sys.stderr)
        elif r.status == "fallback":
            print(
                f"modelseal: WARNING: {r.name}: every source failed, using the verified "
                f"cached copy ({r.detail})",
                file=sys.stderr,
            )
    done = sum(not r.failed for r in results)
    say(args, f"{done} of {len(results)} models verified and cached")


def _cmd_verify(args: argparse.Namespace) -> int:
    from modelseal.lock import verify_lock

    lock = _load_lock(args)
    checks = verify_lock(lock, cache=_cache(args), policy=_policy(args))
    bad = [c for c in checks if not c.ok]
    if args.format == "json":
        print_json({"lock": str(args.lock), "ok": not bad, "models": [c.to_json() for c in checks]})
    elif args.format == "junit":
        sys.stdout.write(junit_xml(checks, str(args.lock)))
    else:
        for c in checks:
            print(f"{c.status:<8}  {c.name}  {c.expected or '-'}")
        for c in bad:
            got = f", got {c.actual}" if c.actual else ""
            print(
                f"modelseal: FAILED: {c.name}: {c.status}: expected {c.expected or '-'}{got}"
                f"{': ' + c.detail if c.detail else ''}",
                file=sys.stderr,
            )
    say(args, f"{len(checks) - len(bad)} of {len(checks)} models verified in {args.lock}")
    return EXIT_FAILED if bad else EXIT_OK


def junit_xml(checks: list[LockCheck], lock_name: str) -> str:
    """A JUnit XML report: one testcase per model, a failure (with both digests) for each
    model that is missing, differs, or is refused."""
    import xml.etree.ElementTree as ET

    failures = sum(not c.ok for c in checks)
    suites = ET.Element("testsuites", tests=str(len(checks)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="modelseal lock verify",
        tests=str(len(checks)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="lock", value=lock_name)
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="models.lock", name=check.name)
        if check.ok:
            continue
        message = f"{check.status}: expected {check.expected or '-'}, actual {check.actual or '-'}"
        failure = ET.SubElement(case, "failure", message=message, type=check.status)
        failure.text = "\n".join(
            (
                f"model: {check.name}",
                f"status: {check.status}",
                f"expected: {check.expected or '-'}",
                f"actual: {check.actual or '-'}",
                f"detail: {check.detail or '-'}",
            )
        )
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `lock` command group (add, sync, verify) to the main parser."""
    group = sub.add_parser("lock", help="models.lock: pinned downloads and the verified cache")
    group_sub = group.add_subparsers(dest="lock_command", required=True, parser_class=Parser)

    def lock_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lock", metavar="FILE", help="default: ./models.lock")
        p.add_argument(
            "--cache",
            metavar="DIR",
            help="cache directory (default: $MODELSEAL_CACHE, else the user cache directory)",
        )
        p.add_argument(
            "--policy",
            metavar="FILE",
            help="trust policy whose [sources] allow list the lock's URLs must match",
        )

    def fetch_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-size", type=positive_int, metavar="N", help="byte cap per download")
        p.add_argument(
            "--retries", type=_non_negative_int, default=3, metavar="N", help="per mirror"
        )
        p.add_argument(
            "--timeout", type=float, default=30.0, metavar="SECONDS", help="per connection"
        )
        p.add_argument(
            "--allow-http-loopback",
            action="store_true",
            help="allow plain http to 127.0.0.1/localhost (tests only)",
        )

    def output_format(p: argparse.ArgumentParser, *choices: str) -> None:
        p.add_argument("--format", choices=["text", "json", *choices], default="text")

    add = group_sub.add_parser(
        "add", parents=[common], help="download a model now and pin it in the lock"
    )
    add.add_argument("urls", nargs="+", metavar="URL", help="the source, then mirrors in order")
    trust = add.add_mutually_exclusive_group(required=True)
    trust.add_argument("--sha256", metavar="HEX", help="the publisher's SHA-256 of the file")
    trust.add_argument(
        "--trust-on-first-use",
        action="store_true",
        help='no digest known: record what is served now (trust = "tofu" in the lock)',
    )
    add.add_argument("--name", help="model name (default: the URL's file name)")
    add.add_argument("--replace", action="store_true", help="re-pin an existing name")
    add.add_argument("--no-extract", action="store_true", help="keep an archive as one file")
    add.add_argument(
        "--public-key",
        dest="public_keys",
        action="append",
        metavar="PUB",
        help="also require the publisher's seal at URL.sig to verify with this key (repeatable; "
        "single files only); records signer = its key id",
    )
    lock_options(add)
    fetch_options(add)
    output_format(add)
    add.set_defaults(func=_cmd_add)

    sync_ = group_sub.add_parser(
        "sync", parents=[common], help="fetch what is missing, verify what is cached"
    )
    sync_.add_argument("names", nargs="*", metavar="NAME", help="only these models")
    sync_.add_argument("--out", metavar="DIR", help="also copy each verified model to DIR/<name>")
    sync_.add_argument(
        "--refresh",
        action="store_true",
        help="download again even when cached (the cached copy is the fallback)",
    )
    lock_options(sync_)
    fetch_options(sync_)
    output_format(sync_)
    sync_.set_defaults(func=_cmd_sync)

    verify = group_sub.add_parser(
        "verify",
        parents=[common],
        help="check the cache against the lock, offline (for CI; exit 1 on any difference)",
    )
    lock_options(verify)
    output_format(verify, "junit")
    verify.set_defaults(func=_cmd_verify)
