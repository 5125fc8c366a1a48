"""The `modelseal` command: a thin argparse front end over the library.

Data goes to stdout, messages to stderr. Exit codes: 0 success, 1 verification
failed (or the model is refused), 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from modelseal import __version__
from modelseal._cli._output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OutputFormat,
    Parser,
    add_format,
    add_trust_options,
    policy_for,
    positive_int,
    print_json,
    progress_bar,
    say,
)

# --- commands ---------------------------------------------------------------------------


def _cmd_keygen(args: argparse.Namespace) -> int:
    from modelseal.signing import keys

    passphrase = os.environ.get(keys.PASSPHRASE_ENV)
    private_path, public_path = keys.write_keypair(
        args.out, keys.KeyAlgorithm(args.algorithm), passphrase.encode() if passphrase else None
    )
    key_id = keys.key_id(keys.load_public_key(public_path))
    print(key_id)
    encrypted = " (encrypted)" if passphrase else ""
    say(args, f"wrote {private_path}{encrypted} and {public_path}; key id {key_id}")
    return EXIT_OK


def _serialization(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from modelseal.sealing import serialization_for

    return serialization_for(
        Path(args.model), algorithm=args.algorithm, shard_size=args.shard_size, ignore=args.ignore
    )


def _cmd_hash(args: argparse.Namespace) -> int:
    from modelseal.hashing import hash_model

    with progress_bar(args, "hashing") as progress:
        manifest = hash_model(args.model, _serialization(args), progress=progress)
    if args.format is OutputFormat.JSON:
        print_json(manifest.to_statement())
    else:
        for resource in manifest.resources:
            print(f"{resource.label()}  {resource.name}")
        print(f"sha256:{manifest.root_digest.hex()}  (root)")
    return EXIT_OK


def _cmd_seal(args: argparse.Namespace) -> int:
    from modelseal.sealing import seal

    with progress_bar(args, "sealing") as progress:
        result = seal(
            args.model,
            key=args.key,
            unsigned=args.unsigned,
            signature=args.signature,
            name=args.name,
            algorithm=args.algorithm,
            shard_size=args.shard_size,
            ignore=args.ignore,
            allow_symlinks=args.allow_symlinks,
            progress=progress,
        )
    if args.format is OutputFormat.JSON:
        print_json(vars(result))
    how = f"signed by {result.signer}" if result.signed else "UNSIGNED"
    say(
        args,
        f"sealed {result.model_name}: {result.files} files, root {result.root_digest}, "
        f"{how}; seal written to {result.seal}",
    )
    if not result.signed:
        say(
            args,
            "warning: an unsigned seal detects corruption only; whoever can change the "
            "model can rewrite it. Sign with --key to protect against tampering.",
        )
    return EXIT_OK


def _cmd_sign(args: argparse.Namespace) -> int:
    from modelseal.sealing import sign

    policy = policy_for(args)
    with progress_bar(args, "verifying") as progress:
        result = sign(
            args.model,
            key=args.key,
            public_keys=args.public_key,
            policy=policy,
            allow_unsigned=args.allow_unsigned,
            signature=args.signature,
            allow_symlinks=args.allow_symlinks,
            progress=progress,
            model_name=args.name,
        )
    if args.format is OutputFormat.JSON:
        print_json(vars(result))
    if result.added:
        say(
            args,
            f"signed {result.model_name} (root {result.root_digest}) with {result.signer}; "
            f"the seal {result.seal} now carries {result.signatures} signatures",
        )
    else:
        say(args, f"{result.signer} had already signed {result.seal}; nothing changed")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from modelseal.errors import IntegrityError, ModelMismatchError
    from modelseal.policy import Policy
    from modelseal.verification import unsafe_skip_requested, verify

    # With the escape asked for, a policy is still read when one is named (it may forbid the
    # escape), but trust arguments are otherwise not needed.
    named = Policy.load(args.policy) if args.policy else None
    skip = unsafe_skip_requested(args.unsafe_skip_verification, named)
    policy = (named or policy_for(args)) if skip is None else None
    try:
        with progress_bar(args, "verifying") as progress:
            result = verify(
                args.model,
                public_keys=args.public_key if skip is None else (),
                allow_unsigned=args.allow_unsigned,
                signature=args.signature,
                allow_symlinks=args.allow_symlinks,
                progress=progress,
                policy=policy,
                unsafe_skip_verification=skip is not None,
                model_name=args.name,
            )
    except IntegrityError as exc:
        if args.format is OutputFormat.JSON and exc.failure is not None:
            print_json(exc.failure.to_json())
        # A file-by-file report when files differ; otherwise the one reason, on one line.
        if isinstance(exc, ModelMismatchError):
            text = exc.diagnostics()
        else:
            text = f"verification of {args.model} failed: {exc}"
        print(f"modelseal: FAILED: {text}", file=sys.stderr)
        return EXIT_FAILED
    if args.format is OutputFormat.JSON:
        print_json(result.to_json())
    if result.skipped:
        say(args, f"NOT verified {args.model}: verification was skipped ({skip}); nothing checked")
        return EXIT_OK
    who = (
        "signed by " + ", ".join(result.signers)
        if result.signed
        else "signature NOT checked (--allow-unsigned)"
    )
    say(
        args,
        f"verified {result.model_name}: {result.files} files, {result.total_bytes} bytes, "
        f"root {result.root_digest}, {who}",
    )
    return EXIT_OK


def _cmd_policy_check(args: argparse.Namespace) -> int:
    from modelseal.policy import Policy

    policy = Policy.load(args.file)
    description = policy.describe()
    if args.format is OutputFormat.JSON:
        print_json(description)
    else:
        print(json.dumps(description, indent=2))
    say(args, f"{args.file}: a valid policy")
    return EXIT_OK


def _cmd_key_id(args: argparse.Namespace) -> int:
    from modelseal.signing import keys

    print(keys.key_id(keys.load_public_key(args.public_key_file)))
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but data and errors"
    )

    parser = Parser(
        prog="modelseal",
        description="Seal ML models when they are saved; verify them before they are loaded.",
        epilog="Exit codes: 0 ok, 1 verification failed or model refused, 2 usage or I/O error.",
    )
    parser.add_argument("--version", action="version", version=f"modelseal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    keygen = sub.add_parser("keygen", parents=[common], help="create a signing key pair")
    keygen.add_argument("--out", required=True, metavar="BASE", help="writes BASE.key, BASE.pub")
    keygen.add_argument(
        "--algorithm",
        default="ecdsa-p256",
        choices=["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519"],
        help="key type (ECDSA keys interoperate with upstream model_signing)",
    )
    keygen.set_defaults(func=_cmd_keygen)

    def add_hashing_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL", help="model file or directory")
        p.add_argument(
            "--algorithm", default="sha256", choices=["sha256", "sha384", "sha512", "blake3"]
        )
        p.add_argument(
            "--shard-size",
            type=positive_int,
            metavar="N",
            help="hash files in shards of N bytes (all cores on one big file)",
        )
        p.add_argument(
            "--ignore",
            action="append",
            default=[],
            metavar="PATH",
            help="leave this path (relative to the model root) out; repeatable",
        )

    hash_ = sub.add_parser("hash", parents=[common], help="print the digests of a model")
    add_hashing_options(hash_)
    add_format(hash_)
    hash_.set_defaults(func=_cmd_hash)

    seal = sub.add_parser("seal", parents=[common], help="hash and sign a model, write its seal")
    add_hashing_options(seal)
    who = seal.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--key", metavar="KEY", help="private key (PEM); passphrase from $MODELSEAL_KEY_PASSPHRASE"
    )
    who.add_argument(
        "--unsigned", action="store_true", help="digest-only seal: detects corruption, not attacks"
    )
    seal.add_argument(
        "--signature",
        metavar="PATH",
        help="seal path (default MODEL/model.sig for a directory, MODEL.sig for a file)",
    )
    seal.add_argument("--name", help="model name recorded in the seal (default: the path's name)")
    seal.add_argument(
        "--allow-symlinks",
        action="store_true",
        help="hash symlinks that stay inside the model root",
    )
    add_format(seal)
    seal.set_defaults(func=_cmd_seal)

    sign = sub.add_parser(
        "sign",
        parents=[common],
        help="co-sign a sealed model (verified first; the seal is not rebuilt)",
    )
    sign.add_argument(
        "--key", required=True, metavar="KEY", help="private key of the co-signer (PEM)"
    )
    add_trust_options(sign)
    sign.add_argument("--name", metavar="NAME", help="the model name the seal must carry")
    add_format(sign)
    sign.set_defaults(func=_cmd_sign, public_key=None)

    verify = sub.add_parser("verify", parents=[common], help="verify a sealed model")
    add_trust_options(verify)
    verify.add_argument(
        "--name",
        metavar="NAME",
        help="the model name the seal must carry (a policy's rules are chosen by this name, "
        "which the signer picked)",
    )
    verify.add_argument(
        "--unsafe-skip-verification",
        action="store_true",
        help="EMERGENCY ONLY: check nothing, exit 0, log a CRITICAL audit event "
        "(also MODELSEAL_UNSAFE_SKIP=1)",
    )
    verify.add_argument("--log-json", metavar="FILE", help="append audit events as JSON lines")
    add_format(verify)
    verify.set_defaults(func=_cmd_verify, public_key=None)

    policy = sub.add_parser("policy", help="trust policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, parser_class=Parser)
    check = policy_sub.add_parser(
        "check", parents=[common], help="validate a policy and print what it allows"
    )
    check.add_argument("file", metavar="FILE")
    add_format(check)
    check.set_defaults(func=_cmd_policy_check)

    key = sub.add_parser("key", help="keys")
    key_sub = key.add_subparsers(dest="key_command", required=True, parser_class=Parser)
    key_id = key_sub.add_parser("id", parents=[common], help="print the key id of a public key")
    key_id.add_argument("public_key_file", metavar="PUB")
    key_id.set_defaults(func=_cmd_key_id)
    from modelseal._cli import fetch, lock, provenance, sbom

    provenance.register(sub, common)
    sbom.register(sub, common)
    lock.register(sub, common)
    fetch.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "public_key", None) is None and hasattr(args, "allow_unsigned"):
        args.public_key = []
    handler: logging.Handler | None = None
    try:
        if getattr(args, "log_json", None):
            from modelseal.audit import JsonLinesHandler, logger

            handler = JsonLinesHandler(args.log_json)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("modelseal: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one boundary where errors become exit codes
        return _report(exc)
    finally:
        if handler is not None:
            from modelseal.audit import logger

            logger.removeHandler(handler)
            handler.close()


def _report(exc: Exception) -> int:
    from modelseal.errors import Error, IntegrityError

    if isinstance(exc, IntegrityError):
        print(f"modelseal: refused: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(exc, Error):
        print(f"modelseal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        print(f"modelseal: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"modelseal: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()
