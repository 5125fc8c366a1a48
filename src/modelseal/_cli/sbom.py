"""`modelseal sbom MODEL`: a CycloneDX 1.6 SBOM of a sealed model, on stdout or in a file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from modelseal._cli._output import EXIT_FAILED, EXIT_OK, add_trust_options, print_json, say


def _cmd_sbom(args: argparse.Namespace) -> int:
    from modelseal.errors import IntegrityError, ModelMismatchError
    from modelseal.policy import DEFAULT_POLICY_FILE, Policy
    from modelseal.sbom import build_sbom, write_sbom

    policy = None
    if args.policy:
        policy = Policy.load(args.policy)
    elif not args.public_key and not args.allow_unsigned and os.path.exists(DEFAULT_POLICY_FILE):
        # As `verify` does: a policy in the working directory is the trust the user set up.
        say(args, f"using the trust policy {DEFAULT_POLICY_FILE}")
        policy = Policy.load(DEFAULT_POLICY_FILE)
    if policy is None and not args.public_key and not args.allow_unsigned:
        say(
            args,
            "warning: no --public-key or --policy given: signatures are not checked "
            "(the SBOM says modelseal:verified false); the files are still compared with the seal",
        )
    try:
        document = build_sbom(
            args.model,
            public_keys=args.public_key or (),
            policy=policy,
            allow_unsigned=args.allow_unsigned,
            signature=args.signature,
            provenance=args.provenance,
            allow_symlinks=args.allow_symlinks,
        )
    except IntegrityError as exc:
        # A file-by-file report when files differ; otherwise the one reason, on one line.
        if isinstance(exc, ModelMismatchError):
            text = exc.diagnostics()
        else:
            text = f"no SBOM for {args.model}: {exc}"
        print(f"modelseal: FAILED: {text}", file=sys.stderr)
        return EXIT_FAILED
    if args.output:
        write_sbom(args.output, document)
        say(args, f"wrote the SBOM of {args.model} to {args.output}")
    else:
        print_json(document)
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `sbom` command to the `modelseal` parser."""
    sbom = sub.add_parser(
        "sbom",
        parents=[common],
        help="write a CycloneDX 1.6 SBOM of a sealed model (files, datasets, provenance)",
    )
    add_trust_options(sbom)
    sbom.add_argument(
        "--provenance",
        metavar="PATH",
        help="provenance file (default: the seal path with .sig replaced by .provenance.sig)",
    )
    sbom.add_argument(
        "--output", "-o", metavar="FILE", help="write the SBOM here (atomically), not to stdout"
    )
    sbom.set_defaults(func=_cmd_sbom, public_key=None)
