"""`modelseal provenance record|show|verify`: signed training provenance from the command line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelseal._cli._output import (
    EXIT_FAILED,
    EXIT_OK,
    OutputFormat,
    Parser,
    add_format,
    policy_for,
    print_json,
    say,
)


class _CommandFailed(Exception):
    """The training command exited non-zero: nothing may be sealed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _param(text: str) -> tuple[str, Any]:
    """`k=v`; v is JSON when it parses as JSON (numbers, booleans, null), else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    try:
        return key, json.loads(value)
    except (ValueError, RecursionError):
        return key, value


def _script_of(command: list[str]) -> str | None:
    """The training script: the first argument that is a file (`python train.py` -> train.py),
    else the program itself when it is a script given by path (`./train.sh`, with a `#!`)."""
    for argument in command[1:]:
        if not argument.startswith("-") and os.path.isfile(argument):
            return argument
    program = command[0]
    if os.sep in program and os.path.isfile(program) and not os.path.islink(program):
        try:
            with open(program, "rb") as handle:
                if handle.read(2) == b"#!":
                    return program
        except OSError:
            return None
    return None


def _cmd_record(args: argparse.Namespace) -> int:
    from modelseal.errors import UsageError
    from modelseal.provenance import record

    command = list(args.cmd)
    if not command or command[0] != "--":
        args.parser.error("give the training command after --, e.g. -- python train.py")
    command = command[1:]
    if not command:
        args.parser.error("the training command after -- is empty")
    script = _script_of(command)
    recorder = record(
        args.model,
        key=args.key,
        datasets=args.dataset,
        configs=args.config,
        params=dict(args.param),
        script=script if script is not None else False,
        builder_id=args.builder_id,
        name=args.name,
        algorithm=args.algorithm,
        command=command,
    )
    try:
        with recorder:
            try:
                code = subprocess.run(command, check=False).returncode
            except OSError as exc:
                raise UsageError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
            if code != 0:
                raise _CommandFailed(code)
            if not os.path.exists(args.model):
                raise UsageError(
                    f"the command succeeded but wrote no model at {args.model}: nothing sealed"
                )
    except _CommandFailed as exc:
        print(
            f"modelseal: the training command exited with {exc.code}: nothing was sealed",
            file=sys.stderr,
        )
        return exc.code if exc.code > 0 else 128 - exc.code
    result = recorder.result
    assert result is not None
    if args.format is OutputFormat.JSON:
        print_json(
            {
                "seal": vars(result.seal),
                "provenance_path": str(result.provenance_path),
                "provenance": result.provenance.to_json(),
            }
        )
    say(
        args,
        f"sealed {result.seal.model_name} (root {result.seal.root_digest}) and wrote its "
        f"signed provenance to {result.provenance_path}",
    )
    return EXIT_OK


def _provenance_file(args: argparse.Namespace) -> Path:
    from modelseal.provenance import provenance_path_for
    from modelseal.verification import default_seal_path

    if args.provenance:
        return Path(args.provenance)
    seal = Path(args.signature) if getattr(args, "signature", None) else None
    return provenance_path_for(seal or default_seal_path(args.model))


def _summary(provenance: Any) -> list[str]:
    lines = [
        f"model:        {provenance.model_name}",
        f"root digest:  {provenance.root_digest}",
        f"builder:      {provenance.builder_id}",
        f"build type:   {provenance.build_type}",
    ]
    if provenance.source_repo or provenance.commit:
        dirty = " (dirty)" if provenance.dirty else ""
        lines.append(f"source:       {provenance.source_repo} @ {provenance.commit}{dirty}")
    if provenance.command:
        lines.append(f"command:      {' '.join(provenance.command)}")
    if provenance.started_on:
        lines.append(f"started:      {provenance.started_on.isoformat()}")
    if provenance.finished_on:
        lines.append(f"finished:     {provenance.finished_on.isoformat()}")
    for key, value in provenance.parameters.items():
        lines.append(f"parameter:    {key} = {json.dumps(value)}")
    for dependency in provenance.dependencies:
        if dependency.role == "source":
            continue
        digests = ", ".join(f"{a}:{h}" for a, h in dependency.digest.items())
        lines.append(
            f"{(dependency.role or 'dependency') + ':':<13} "
            f"{dependency.name or dependency.uri}  {digests}"
        )
    return lines


def _cmd_show(args: argparse.Namespace) -> int:
    from modelseal.provenance import read_provenance

    path = _provenance_file(args)
    provenance = read_provenance(path)
    print(
        f"modelseal: warning: {path} is shown WITHOUT verification; "
        "use `modelseal provenance verify` before trusting it",
        file=sys.stderr,
    )
    if args.format is OutputFormat.JSON:
        print_json({"verified": False, "path": str(path), **provenance.to_json()})
    else:
        print("\n".join(_summary(provenance)))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from modelseal.errors import IntegrityError
    from modelseal.provenance import verify_provenance

    policy = policy_for(args)
    path = _provenance_file(args)
    try:
        provenance = verify_provenance(
            args.model,
            public_keys=args.public_key if policy is None else (),
            policy=policy,
            signature=args.signature,
            provenance=path,
        )
    except IntegrityError as exc:
        reason = " ".join(str(exc).split())
        if args.format is OutputFormat.JSON:
            failure: dict[str, Any] = {
                "verified": False,
                "model": str(args.model),
                "provenance": str(path),
                "reason": reason,
            }
            if exc.failure is not None:
                failure["failure"] = exc.failure.to_json()
            print_json(failure)
        print(
            f"modelseal: FAILED: provenance verification of {args.model} failed: {reason}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.format is OutputFormat.JSON:
        print_json({"verified": True, "path": str(path), **provenance.to_json()})
    say(
        args,
        f"verified the provenance of {provenance.model_name} (root {provenance.root_digest}), "
        f"signed by {', '.join(provenance.signers)}, built by {provenance.builder_id}",
    )
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `provenance` command group to the main parser's subcommands."""
    group = sub.add_parser("provenance", help="signed training provenance (SLSA v1)")
    group_sub = group.add_subparsers(dest="provenance_command", required=True, parser_class=Parser)

    rec = group_sub.add_parser(
        "record",
        parents=[common],
        help="run a training command, then seal its model and sign its provenance",
        usage="%(prog)s --model OUT --key KEY [options] -- CMD ...",
    )
    rec.add_argument("--model", required=True, metavar="OUT", help="the model CMD writes")
    rec.add_argument("--key", required=True, metavar="KEY", help="private key (PEM)")
    rec.add_argument("--dataset", action="append", default=[], metavar="PATH", help="repeatable")
    rec.add_argument("--config", action="append", default=[], metavar="PATH", help="repeatable")
    rec.add_argument(
        "--param",
        action="append",
        default=[],
        type=_param,
        metavar="NAME=VALUE",
        help="hyperparameter (VALUE read as JSON when it parses); repeatable",
    )
    rec.add_argument("--builder-id", metavar="ID", help="who ran the training (a URI)")
    rec.add_argument("--name", help="model name recorded in the seal (default: the path's name)")
    rec.add_argument(
        "--algorithm", default="sha256", choices=["sha256", "sha384", "sha512", "blake3"]
    )
    rec.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the training command"
    )
    add_format(rec)
    rec.set_defaults(func=_cmd_record, parser=rec)

    show = group_sub.add_parser(
        "show", parents=[common], help="print a model's provenance (NOT verified)"
    )
    show.add_argument("model", metavar="MODEL")
    show.add_argument("--provenance", metavar="PATH", help="default: beside the seal")
    show.add_argument("--signature", metavar="PATH", help="seal path (locates the provenance)")
    add_format(show)
    show.set_defaults(func=_cmd_show)

    verify = group_sub.add_parser(
        "verify", parents=[common], help="verify a model, then its signed provenance"
    )
    verify.add_argument("model", metavar="MODEL")
    trust = verify.add_mutually_exclusive_group()
    trust.add_argument(
        "--public-key", action="append", metavar="PUB", help="trusted public key; repeatable"
    )
    trust.add_argument(
        "--policy", metavar="FILE", help="trust policy; default ./modelseal.toml if no key"
    )
    verify.add_argument("--signature", metavar="PATH", help="seal path")
    verify.add_argument("--provenance", metavar="PATH", help="default: beside the seal")
    add_format(verify)
    verify.set_defaults(func=_cmd_verify, public_key=None, allow_unsigned=False)


__all__ = ["register"]
