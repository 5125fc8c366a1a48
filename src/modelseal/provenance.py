"""Signed training provenance: how a model was made, bound to the exact bytes that were sealed.

`record` wraps a training run (a context manager or a decorator). At entry it captures the
source checkout, the training script, the datasets and configs (digests by the core hashing
engine), the interpreter and the installed packages; at a clean exit it seals the model and
writes, beside the seal, a signed in-toto Statement with the SLSA v1 provenance predicate whose
subject is the model's root digest. Binding to the root digest is what makes a provenance
useless for any other model, and for an older version of the same model (a replay).

`check_provenance` does no I/O, so every refusal can be tested exhaustively; `verify_provenance`
and `check_for_policy` add the reading of files. The file format is described in
docs/provenance.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import getpass
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from modelseal.errors import IntegrityError, SignatureError, UsageError
from modelseal.signing import keys
from modelseal.signing.bundle import Bundle, write_seal
from modelseal.signing.bundle import read_bundle as bundle_file
from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature

if TYPE_CHECKING:
    from modelseal.policy import Policy, ProvenanceClaims
    from modelseal.sealing import SealResult

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://modelseal.dev/buildtypes/training/v1"
DEFAULT_BUILDER_ID = "https://modelseal.dev/builders/local"

FRAMEWORKS = (
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "mxnet",
    "safetensors",
    "numpy",
    "modelseal",
)
"""Distributions whose versions are recorded by name (read from metadata, never imported)."""

MAX_STATEMENT_BYTES = 4 * 1024 * 1024
"""A provenance statement larger than this is refused before it is parsed (and never written):
datasets are recorded as one digest each, so real statements are a few kilobytes."""

MAX_DEPENDENCIES = 10_000
CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a provenance's times may lie (clocks of two hosts disagree)."""

GIT_TIMEOUT = 30.0

_HEX = {"sha256": 64, "sha384": 96, "sha512": 128, "blake3": 64}
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"
)


class ProvenanceError(IntegrityError):
    """The provenance is missing, malformed, not signed by a trusted key, not about this
    model version, or does not satisfy the claims the policy makes."""


# --- the parsed form ----------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    """One `resolvedDependencies` entry: the source, the script, a dataset or a config."""

    name: str | None
    uri: str | None
    digest: Mapping[str, str]
    role: str | None
    annotations: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "digest": dict(self.digest),
            "role": self.role,
            "annotations": dict(self.annotations),
        }


@dataclass(frozen=True)
class Provenance:
    """A parsed provenance statement. `signers` is empty when it was read without checking."""

    model_name: str
    root_digest: str
    builder_id: str
    build_type: str
    source_repo: str | None
    commit: str | None
    dirty: bool | None
    parameters: Mapping[str, Any]
    command: tuple[str, ...]
    started_on: datetime | None
    finished_on: datetime | None
    dependencies: tuple[Dependency, ...]
    signers: tuple[str, ...]
    statement: Mapping[str, Any] = field(repr=False)

    @property
    def datasets(self) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if d.role == "dataset")

    def to_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return _rfc3339(value) if value is not None else None

        return {
            "model_name": self.model_name,
            "root_digest": self.root_digest,
            "builder_id": self.builder_id,
            "build_type": self.build_type,
            "source_repo": self.source_repo,
            "commit": self.commit,
            "dirty": self.dirty,
            "parameters": dict(self.parameters),
            "command": list(self.command),
            "started_on": when(self.started_on),
            "finished_on": when(self.finished_on),
            "dependencies": [d.to_json() for d in self.dependencies],
            "signers": list(self.signers),
            "statement": dict(self.statement),
        }


@dataclass(frozen=True)
class RecordResult:
    """A recorded training run: the seal, and the signed provenance written beside it."""

    seal: SealResult
    provenance_path: Path
    provenance: Provenance


# --- paths --------------------------------------------------------------------------------


def provenance_path_for(seal_path: str | os.PathLike[str]) -> Path:
    """`X.sig` -> `X.provenance.sig` (a seal not ending in `.sig` gets the suffix appended)."""
    path = Path(seal_path)
    base = path.name[: -len(".sig")] if path.name.endswith(".sig") else path.name
    return path.with_name(base + ".provenance.sig")


def default_provenance_path(model: str | os.PathLike[str]) -> Path:
    """`MODEL/model.provenance.sig` for a directory, `MODEL.provenance.sig` beside a file."""
    from modelseal.verification import default_seal_path

    return provenance_path_for(default_seal_path(model))


# --- parsing (no I/O) ---------------------------------------------------------------------


def _rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise ProvenanceError(f"malformed provenance: {what} must be an RFC 3339 time string")
    match = _RFC3339.match(value)
    if match is None:
        raise ProvenanceError(f"malformed provenance: {what} {value[:40]!r} is not RFC 3339")
    day, clock, fraction, offset = match.groups()
    # Python keeps microseconds, and before 3.11 parses exactly 6 fraction digits.
    fraction = "." + (fraction or ".")[1:7].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}{fraction}{offset}")
    except ValueError:
        raise ProvenanceError(
            f"malformed provenance: {what} {value!r} is not a valid time"
        ) from None
    return parsed.astimezone(timezone.utc)


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProvenanceError(f"malformed provenance: {what} must be a JSON object")
    return value


def _opt_obj(parent: Mapping[str, Any], key: str, what: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return {} if value is None else _obj(value, what)


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProvenanceError(f"malformed provenance: {what} must be a non-empty string")
    return value


def _opt_str(parent: Mapping[str, Any], key: str, what: str) -> str | None:
    value = parent.get(key)
    return None if value is None else _str(value, what)


def _digest_map(value: object, what: str) -> dict[str, str]:
    digests = _obj(value, what)
    result: dict[str, str] = {}
    for algorithm, hexdigest in digests.items():
        text = _str(hexdigest, f"{what}.{algorithm}")
        size = _HEX.get(algorithm)
        if size is not None and not re.fullmatch(f"[0-9a-f]{{{size}}}", text):
            raise ProvenanceError(
                f"malformed provenance: {what}.{algorithm} is not {size} lowercase hex digits"
            )
        result[algorithm] = text
    return result


def _dependency(value: object, what: str) -> Dependency:
    item = _obj(value, what)
    name = _opt_str(item, "name", f"{what}.name")
    uri = _opt_str(item, "uri", f"{what}.uri")
    digest = _digest_map(item.get("digest", {}), f"{what}.digest")
    if name is None and uri is None and not digest:
        raise ProvenanceError(f"malformed provenance: {what} has no name, uri or digest")
    annotations = _opt_obj(item, "annotations", f"{what}.annotations")
    role = _opt_str(annotations, "role", f"{what}.annotations.role")
    return Dependency(
        name, uri, MappingProxyType(digest), role, MappingProxyType(dict(annotations))
    )


def parse_statement(statement: object, signers: tuple[str, ...] = ()) -> Provenance:
    """Parse a provenance statement strictly in every field modelseal uses; unknown extra
    fields are ignored, as SLSA requires of consumers. Raises ProvenanceError."""
    top = _obj(statement, "the statement")
    if top.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(
            f"malformed provenance: _type {str(top.get('_type'))[:80]!r} is not {STATEMENT_TYPE}"
        )
    if top.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(
            f"not a provenance: predicateType {str(top.get('predicateType'))[:80]!r} "
            f"is not {PREDICATE_TYPE}"
        )
    subjects = top.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        count = len(subjects) if isinstance(subjects, list) else "no"
        raise ProvenanceError(
            f"malformed provenance: it must have exactly one subject (the model), not {count}"
        )
    subject = _obj(subjects[0], "subject[0]")
    model_name = _str(subject.get("name"), "subject[0].name")
    subject_digest = _digest_map(subject.get("digest"), "subject[0].digest")
    if "sha256" not in subject_digest:
        raise ProvenanceError("malformed provenance: subject[0].digest has no sha256 root digest")

    predicate = _obj(top.get("predicate"), "predicate")
    definition = _obj(predicate.get("buildDefinition"), "predicate.buildDefinition")
    run_details = _obj(predicate.get("runDetails"), "predicate.runDetails")
    build_type = _str(definition.get("buildType"), "buildDefinition.buildType")
    external = _obj(definition.get("externalParameters"), "buildDefinition.externalParameters")
    _opt_obj(definition, "internalParameters", "buildDefinition.internalParameters")

    parameters = _opt_obj(external, "parameters", "externalParameters.parameters")
    raw_command = external.get("command", [])
    if not isinstance(raw_command, list) or not all(isinstance(a, str) for a in raw_command):
        raise ProvenanceError("malformed provenance: externalParameters.command must be strings")
    source_repo = commit = None
    dirty: bool | None = None
    if external.get("source") is not None:
        source = _obj(external["source"], "externalParameters.source")
        source_repo = _opt_str(source, "uri", "externalParameters.source.uri")
        commit = _opt_str(source, "commit", "externalParameters.source.commit")
        if commit is not None and not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
            raise ProvenanceError("malformed provenance: source.commit is not a git commit id")
        raw_dirty = source.get("dirty")
        if raw_dirty is not None and not isinstance(raw_dirty, bool):
            raise ProvenanceError("malformed provenance: source.dirty must be true or false")
        dirty = raw_dirty

    raw_dependencies = definition.get("resolvedDependencies", [])
    if not isinstance(raw_dependencies, list):
        raise ProvenanceError("malformed provenance: resolvedDependencies must be a list")
    if len(raw_dependencies) > MAX_DEPENDENCIES:
        raise ProvenanceError(
            f"malformed provenance: more than {MAX_DEPENDENCIES} resolvedDependencies"
        )
    dependencies = tuple(
        _dependency(item, f"resolvedDependencies[{i}]") for i, item in enumerate(raw_dependencies)
    )

    builder = _obj(run_details.get("builder"), "runDetails.builder")
    builder_id = _str(builder.get("id"), "runDetails.builder.id")
    metadata = _opt_obj(run_details, "metadata", "runDetails.metadata")
    _opt_str(metadata, "invocationId", "runDetails.metadata.invocationId")
    started = metadata.get("startedOn")
    finished = metadata.get("finishedOn")
    return Provenance(
        model_name=model_name,
        root_digest="sha256:" + subject_digest["sha256"],
        builder_id=builder_id,
        build_type=build_type,
        source_repo=source_repo,
        commit=commit,
        dirty=dirty,
        parameters=MappingProxyType(dict(parameters)),
        command=tuple(raw_command),
        started_on=_parse_time(started, "startedOn") if started is not None else None,
        finished_on=_parse_time(finished, "finishedOn") if finished is not None else None,
        dependencies=dependencies,
        signers=signers,
        statement=MappingProxyType(dict(top)),
    )


def _statement_of(bundle: Bundle) -> object:
    envelope = bundle.envelope
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise ProvenanceError(
            f"not a provenance: payloadType {envelope.payload_type!r} is not {IN_TOTO_PAYLOAD_TYPE}"
        )
    if len(envelope.payload) > MAX_STATEMENT_BYTES:
        raise ProvenanceError(
            f"the provenance statement is larger than {MAX_STATEMENT_BYTES} bytes"
        )
    try:
        return json.loads(envelope.payload)
    except RecursionError:
        raise ProvenanceError("malformed provenance: the statement is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProvenanceError("malformed provenance: the statement is not valid JSON") from None


def _normalize_repo(uri: str) -> str:
    """Ignore a trailing `/` and a `.git` suffix of the repository's name, nothing more: a
    path segment that is `.git` itself (`.../fraud/.git`) names another repository."""
    text = uri.strip().rstrip("/")
    if text.endswith(".git") and not text.endswith("/.git"):
        text = text[: -len(".git")]
    return text


def _claim_problem(provenance: Provenance, claims: ProvenanceClaims) -> str | None:
    if claims.builder_id is not None and claims.builder_id != provenance.builder_id:
        return (
            f"provenance claim builder_id differs: expected {claims.builder_id!r}, "
            f"actual {provenance.builder_id!r}"
        )
    if claims.source_repo is not None and (
        provenance.source_repo is None
        or _normalize_repo(claims.source_repo) != _normalize_repo(provenance.source_repo)
    ):
        return (
            f"provenance claim source_repo differs: expected {claims.source_repo!r}, "
            f"actual {provenance.source_repo or '(no source recorded)'!r}"
        )
    have = [
        f"{algorithm}:{hexdigest}"
        for dataset in provenance.datasets
        for algorithm, hexdigest in dataset.digest.items()
    ]
    for wanted in claims.dataset_digests:
        if wanted not in have:
            return (
                f"provenance claim dataset_digests differs: expected a dataset with digest "
                f"{wanted}, actual datasets {', '.join(have) or '(none)'}"
            )
    return None


def check_provenance(
    bundle: Bundle,
    trusted: Sequence[keys.PublicKey],
    *,
    model_name: str,
    root_digest: bytes,
    claims: Sequence[ProvenanceClaims] = (),
    now: datetime,
) -> Provenance:
    """Check a provenance bundle against the sealed model it claims to describe. No I/O.

    A trusted key must have signed it; its single subject must be `model_name` with the
    sealed `root_digest`; its times must be plausible at `now`; every `claims` must hold.
    Returns the parsed provenance with the verifying key ids; raises ProvenanceError.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise UsageError("the time to check provenance at must be timezone-aware")
    envelope = bundle.envelope
    if not envelope.signatures:
        raise ProvenanceError("the provenance carries no signature")
    if not trusted:
        raise ProvenanceError(
            f"no trusted key may vouch for the provenance of model {model_name!r} "
            "(none given, or none listed for it, valid now and not revoked)"
        )
    signers = bundle.verified_by(trusted)
    if not signers:
        raise ProvenanceError(bundle.unverified_reason(trusted, "the provenance"))
    provenance = parse_statement(_statement_of(bundle), signers)
    if provenance.model_name != model_name:
        raise ProvenanceError(
            f"the provenance is for model {provenance.model_name!r}, not {model_name!r}"
        )
    expected = "sha256:" + root_digest.hex()
    if provenance.root_digest != expected:
        raise ProvenanceError(
            "the provenance is for another model or an older version of this model: "
            f"its subject is {provenance.root_digest}, the sealed root digest is {expected}"
        )
    started, finished = provenance.started_on, provenance.finished_on
    if started is not None and finished is not None and finished < started:
        raise ProvenanceError(
            f"the provenance finished ({_rfc3339(finished)}) before it started "
            f"({_rfc3339(started)})"
        )
    for label, when in (("startedOn", started), ("finishedOn", finished)):
        if when is not None and when > now + CLOCK_SKEW:
            raise ProvenanceError(
                f"the provenance {label} {_rfc3339(when)} is in the future (now {_rfc3339(now)})"
            )
    for claim_set in claims:
        problem = _claim_problem(provenance, claim_set)
        if problem is not None:
            raise ProvenanceError(problem)
    return provenance


# --- reading ------------------------------------------------------------------------------


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a provenance bundle file: bounded, regular files only, strictly parsed."""
    return bundle_file(path, "provenance", ProvenanceError)


def read_provenance(path: str | os.PathLike[str]) -> Provenance:
    """Parse a provenance file WITHOUT checking any signature (for display, and for an SBOM
    made without trust): nothing in the result is vouched for. Raises ProvenanceError."""
    target = Path(path)
    bundle = read_bundle(target)
    try:
        return parse_statement(_statement_of(bundle))
    except ProvenanceError as exc:
        raise ProvenanceError(f"{target}: {exc}") from None


def check_for_policy(
    policy: Policy,
    *,
    model_name: str,
    root_digest: bytes,
    provenance_path: str | os.PathLike[str],
    claims: Sequence[ProvenanceClaims] = (),
    now: datetime,
) -> Provenance:
    """Check the provenance file of a sealed model for a policy that requires it: about this
    root digest, with `claims`, and signed, for every rule covering the model that requires
    provenance, by one of that rule's signers that the policy lets vouch for it now.

    A signer allowed for the model by its own `models` but listed in no such rule may not
    vouch: the claims (builder, source, datasets) are only as good as who may sign them."""
    path = Path(provenance_path)
    if not path.exists() and not path.is_symlink():
        raise ProvenanceError(f"the policy requires provenance and none is at {path}")
    bundle = read_bundle(path)
    covering = [(i, rule) for i, rule in enumerate(policy.rules) if rule.covers(model_name)]
    requiring = [(i, rule) for i, rule in covering if rule.require_provenance] or covering
    listed = {name for _, rule in requiring for name in rule.signers}
    valid = [s for s in policy.keys_for(model_name, now) if s.name in listed]
    trusted: dict[str, keys.PublicKey] = {}
    for signer in valid:
        trusted.setdefault(signer.key_id, signer.public_key)
    found = check_provenance(
        bundle,
        list(trusted.values()),
        model_name=model_name,
        root_digest=root_digest,
        claims=claims,
        now=now,
    )
    for index, rule in requiring:
        if not any(s.key_id in found.signers for s in valid if s.name in rule.signers):
            raise ProvenanceError(
                f"the provenance of model {model_name!r} is not signed by a signer of "
                f"rules[{index}] ({', '.join(rule.signers)})"
            )
    return found


def verify_provenance(
    model: str | os.PathLike[str],
    *,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey] = (),
    policy: Policy | None = None,
    signature: str | os.PathLike[str] | None = None,
    provenance: str | os.PathLike[str] | None = None,
) -> Provenance:
    """Verify a sealed model (every file is hashed) and then its provenance.

    With `public_keys`, the same keys must have signed the provenance. With a `policy`, the
    seal must satisfy the policy (minus its provenance requirement, checked here), the
    provenance must be signed by a signer the policy lets vouch for the model now, and the
    claims of every rule covering the model must hold. Raises an IntegrityError.
    """
    from modelseal.verification import default_seal_path, trusted_keys, verify

    key_list = list(public_keys)
    if (policy is None) == (not key_list):
        raise UsageError("give trusted public keys or a policy - exactly one")
    now = datetime.now(timezone.utc)
    seal_path = Path(signature) if signature is not None else default_seal_path(model)
    path = Path(provenance) if provenance is not None else provenance_path_for(seal_path)
    if policy is None:
        trusted = trusted_keys(key_list, allow_unsigned=False)
        verification = verify(model, public_keys=trusted, signature=seal_path)
        return check_provenance(
            read_bundle(path),
            trusted,
            model_name=verification.model_name,
            root_digest=bytes.fromhex(verification.root_digest.removeprefix("sha256:")),
            now=now,
        )
    # The policy's seal rules are applied here rather than by verify(policy=...), so that the
    # provenance requirement is checked once, against the provenance file given here.
    policy_keys = list(policy.trusted_keys())
    if not policy_keys:
        raise SignatureError("no trusted key is left to check the seal with (all revoked?)")
    verification = verify(model, public_keys=policy_keys, signature=seal_path)
    decision = policy.check(
        verification.model_name, verification.signers, verification.hash_type, now
    )
    return check_for_policy(
        policy,
        model_name=verification.model_name,
        root_digest=bytes.fromhex(verification.root_digest.removeprefix("sha256:")),
        provenance_path=path,
        claims=decision.provenance,
        now=now,
    )


# --- capture ------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str | None:
    """Output of `git ARGS` in `cwd`, or None when git is missing or the command fails."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def strip_credentials(url: str) -> str:
    """A remote URL without secrets: no user info at all for http(s), no password otherwise."""
    if "://" not in url:
        return url  # scp-like `git@host:org/repo.git` carries a user name, never a secret
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unparseable remote url)"
    if parts.username is None and parts.password is None:
        return url
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    if parts.scheme.lower() not in ("http", "https") and parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class _Source:
    uri: str
    commit: str
    dirty: bool


def capture_source(directory: Path) -> _Source | None:
    """The git checkout around `directory`: remote, commit, dirty. None outside a checkout."""
    top = _git(directory, "rev-parse", "--show-toplevel")
    commit = _git(directory, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if not top or not commit or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    remote = _git(directory, "remote", "get-url", "origin")
    uri = strip_credentials(remote) if remote else Path(top).as_uri()
    # Untracked files (the model being written, caches) do not make the source dirty;
    # a failing `git status` does: never claim a clean tree that was not checked.
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return _Source(uri, commit, status is None or status != "")


def installed_distributions() -> tuple[dict[str, str], dict[str, Any]]:
    """Versions of the frameworks of interest, and a digest over every installed distribution."""
    everything: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata is not None else None
        if not name:
            continue
        canonical = re.sub(r"[-_.]+", "-", str(name)).lower()
        everything.setdefault(canonical, str(dist.version))
    frameworks = {name: everything[name] for name in FRAMEWORKS if name in everything}
    listing = "".join(f"{name}=={everything[name]}\n" for name in sorted(everything))
    digest = "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
    return frameworks, {"count": len(everything), "digest": digest}


def digest_path(path: Path, algorithm: str = "sha256") -> tuple[dict[str, str], int, int]:
    """A file's plain digest (as sha256sum), or a directory's OMS root digest (as
    `modelseal hash`), with the file count and byte count. Hashed by the core engine."""
    from modelseal.errors import Error
    from modelseal.hashing import hash_entries, list_model
    from modelseal.manifest import Manifest
    from modelseal.sealing import serialization_for

    try:
        serialization = serialization_for(path, algorithm=algorithm)
        entries = list_model(path, serialization)
        if not entries:
            raise UsageError(f"{path} has no files to hash")
        result = hash_entries(entries, serialization)
    except UsageError:
        raise
    except Error as exc:
        raise UsageError(f"cannot hash {path}: {exc}") from None
    if result.unreadable:
        name, reason = next(iter(sorted(result.unreadable.items())))
        raise UsageError(f"cannot read {name} in {path}: {reason}")
    if path.is_dir():
        manifest = Manifest.build(path.name, serialization, result.resources)
        digest = {"sha256": manifest.root_digest.hex()}
    else:
        digest = {algorithm: result.resources[0].hexdigest}
    return digest, len(entries), result.total_bytes


def _json_value(value: object, where: str) -> Any:
    """A JSON-representable copy of a hyperparameter (numpy scalars become Python numbers)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UsageError(f"parameter {where} is {value}, which JSON cannot represent")
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"parameter {where} has a key that is not a string: {key!r}")
            result[key] = _json_value(item, f"{where}.{key}")
        return result
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _json_value(item(), where)
        except (TypeError, ValueError):
            pass
    raise UsageError(f"parameter {where} ({type(value).__name__}) cannot be recorded as JSON")


def _default_script() -> Path | None:
    candidates = [sys.argv[0] if sys.argv else ""]
    main = sys.modules.get("__main__")
    candidates.append(getattr(main, "__file__", None) or "")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


PathLike = str | os.PathLike[str]
Paths = Iterable[PathLike] | Mapping[str, PathLike]


@dataclass
class Run:
    """A training run in progress: set `params` during training; `result` after a clean exit."""

    params: dict[str, Any]
    started_on: datetime
    invocation_id: str
    result: RecordResult | None = None
    _captured: dict[str, Any] = field(default_factory=dict, repr=False)


_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("modelseal_run", default=None)


def current() -> Run:
    """The run being recorded in this context (for code inside a `@record(...)` function)."""
    run = _current.get()
    if run is None:
        raise UsageError("no provenance is being recorded here")
    return run


_F = TypeVar("_F", bound=Callable[..., Any])


class record:
    """Record the provenance of a training run, then seal the model and sign the provenance.

        with record("model/", key="trainer.key", datasets=["data/train.csv"]) as run:
            run.params["lr"] = 0.1
            train_and_save("model/")
        run.result.provenance_path      # model/model.provenance.sig

    As a decorator, each call is one run: `current()` gives it inside the function, and
    `recorder.result` holds the last finished one. Datasets and configs are hashed at entry:
    a change made to them during training is not detected. If the block raises, nothing is
    sealed or written and the exception propagates.
    `script=None` finds the running script (sys.argv[0] or __main__); `script=False` records none.
    """

    def __init__(
        self,
        model: PathLike,
        *,
        key: PathLike | keys.PrivateKey | keys.Signer,
        datasets: Paths = (),
        configs: Paths = (),
        params: Mapping[str, Any] | None = None,
        script: PathLike | bool | None = None,
        builder_id: str | None = None,
        name: str | None = None,
        algorithm: str = "sha256",
        command: Sequence[str] | None = None,
        source_dir: PathLike | None = None,
    ) -> None:
        self._options = dict(
            model=model,
            key=key,
            datasets=datasets,
            configs=configs,
            params=params,
            script=script,
            builder_id=builder_id,
            name=name,
            algorithm=algorithm,
            command=command,
            source_dir=source_dir,
        )
        self.model = Path(model)
        self.key = key
        self.datasets = datasets
        self.configs = configs
        self.params = dict(params or {})
        self.script = script
        self.builder_id = builder_id or DEFAULT_BUILDER_ID
        self.name = name
        self.algorithm = algorithm
        self.command = tuple(command) if command is not None else None
        self.source_dir = Path(source_dir) if source_dir is not None else None
        self.result: RecordResult | None = None
        self._run: Run | None = None
        self._token: contextvars.Token[Run | None] | None = None

    # -- context manager

    def __enter__(self) -> Run:
        if self._run is not None:
            raise UsageError("this recorder is already recording a run")
        run = self.start()
        self._run = run
        self._token = _current.set(run)
        return run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        run, self._run = self._run, None
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if exc_type is not None or run is None:
            return  # nothing is sealed or written; the exception propagates
        self.result = self.finish(run)

    # -- decorator

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            recorder = record(**self._options)  # type: ignore[arg-type]
            with recorder:
                value = func(*args, **kwargs)
            self.result = recorder.result
            return value

        return wrapper  # type: ignore[return-value]

    # -- the two halves

    def start(self) -> Run:
        """Capture everything known before training; fail now rather than after hours."""
        from modelseal.manifest import check_algorithm

        try:
            check_algorithm(self.algorithm)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        signer = keys.as_signer(self.key)
        params = {k: _json_value(v, k) for k, v in self.params.items()}
        started = datetime.now(timezone.utc).replace(microsecond=0)
        dependencies: list[dict[str, Any]] = []

        script = _default_script() if self.script is None else self.script
        script_path = Path(script) if isinstance(script, (str, os.PathLike)) else None
        if script_path is not None and not script_path.is_file():
            raise UsageError(f"training script not found: {script_path}")
        source_dir = self.source_dir or (
            script_path.resolve().parent if script_path is not None else Path.cwd()
        )
        source = capture_source(source_dir)
        if source is not None:
            dependencies.append(
                {
                    "uri": f"git+{source.uri}@{source.commit}",
                    "digest": {"gitCommit": source.commit},
                    "annotations": {"role": "source", "dirty": source.dirty},
                }
            )
        if script_path is not None:
            dependencies.append(self._describe(str(script), script_path, "script"))
        for role, paths in (("dataset", self.datasets), ("config", self.configs)):
            named = paths.items() if isinstance(paths, Mapping) else ((None, p) for p in paths)
            for label, item in named:
                path = Path(item)
                if not path.exists():
                    raise UsageError(f"{role} not found: {path}")
                dependencies.append(self._describe(label or os.fspath(item), path, role))

        frameworks, distributions = installed_distributions()
        internal: dict[str, Any] = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "host": socket.gethostname(),
        }
        # No login name in containers without a passwd entry: then no user is recorded.
        with contextlib.suppress(KeyError, OSError):
            internal["user"] = getpass.getuser()
        internal["packages"] = frameworks
        internal["distributions"] = distributions
        captured = {
            "signer": signer,
            "source": source,
            "dependencies": dependencies,
            "internal": internal,
        }
        return Run(params, started, str(uuid.uuid4()), None, captured)

    def _describe(self, name: str, given: Path, role: str) -> dict[str, Any]:
        # A path given as a symlink (data -> /mnt/data) is hashed where it points; links
        # inside a dataset directory are refused, as in a model.
        path = Path(os.path.realpath(given))
        digest, files, total = digest_path(path, self.algorithm)
        annotations: dict[str, Any] = {"role": role}
        if role != "script":
            annotations.update(files=files, bytes=total)
        if path.is_dir():
            annotations["hash_type"] = self.algorithm
        return {
            "name": name,
            "uri": path.as_uri(),
            "digest": digest,
            "annotations": annotations,
        }

    def finish(self, run: Run) -> RecordResult:
        """Seal the model, then write the signed provenance about the sealed root digest."""
        from modelseal.hashing import model_name_of
        from modelseal.sealing import seal
        from modelseal.verification import default_seal_path

        signer: keys.Signer = run._captured["signer"]
        params = {k: _json_value(v, k) for k, v in run.params.items()}
        if not self.model.exists():
            raise UsageError(f"the model {self.model} was not written: nothing to seal")
        # The size is known before sealing (a digest has a fixed length): never seal a model
        # whose provenance could not be written.
        name = self.name or model_name_of(self.model)
        finished = max(datetime.now(timezone.utc).replace(microsecond=0), run.started_on)
        size = len(self._payload(run, params, name, "0" * 64, finished))
        if size > MAX_STATEMENT_BYTES:
            raise UsageError(
                f"the provenance would be {size} bytes, over {MAX_STATEMENT_BYTES}: "
                "record fewer or smaller parameters"
            )
        path = provenance_path_for(default_seal_path(self.model))
        ignore = [path.name] if self.model.is_dir() else []
        sealed = seal(
            self.model, key=signer, name=self.name, algorithm=self.algorithm, ignore=ignore
        )
        root = sealed.root_digest.removeprefix("sha256:")
        payload = self._payload(run, params, sealed.model_name, root, finished)
        envelope = Envelope(IN_TOTO_PAYLOAD_TYPE, payload, ())
        signature = Signature(signer.sign(envelope.signed_bytes()))
        bundle = Bundle(
            dataclasses.replace(envelope, signatures=(signature,)),
            keys.key_hint(signer.public_key),
        )
        write_seal(path, bundle, "provenance")
        parsed = parse_statement(json.loads(payload), (keys.key_id(signer.public_key),))
        run.result = RecordResult(sealed, path, parsed)
        return run.result

    def _payload(
        self, run: Run, params: dict[str, Any], name: str, root_hex: str, finished: datetime
    ) -> bytes:
        """The statement's exact signed bytes."""
        from modelseal import __version__

        source: _Source | None = run._captured["source"]
        external: dict[str, Any] = {}
        if self.command is not None:
            external["command"] = list(self.command)
        external["parameters"] = params
        if source is not None:
            external["source"] = {"uri": source.uri, "commit": source.commit, "dirty": source.dirty}
        statement = {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": root_hex}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": external,
                    "internalParameters": run._captured["internal"],
                    "resolvedDependencies": run._captured["dependencies"],
                },
                "runDetails": {
                    "builder": {"id": self.builder_id, "version": {"modelseal": __version__}},
                    "metadata": {
                        "invocationId": run.invocation_id,
                        "startedOn": _rfc3339(run.started_on),
                        "finishedOn": _rfc3339(finished),
                    },
                },
            },
        }
        return json.dumps(statement, indent=2, sort_keys=True).encode() + b"\n"


__all__ = [
    "BUILD_TYPE",
    "DEFAULT_BUILDER_ID",
    "PREDICATE_TYPE",
    "Dependency",
    "Provenance",
    "ProvenanceError",
    "RecordResult",
    "Run",
    "check_for_policy",
    "check_provenance",
    "current",
    "default_provenance_path",
    "parse_statement",
    "provenance_path_for",
    "read_bundle",
    "read_provenance",
    "record",
    "verify_provenance",
]
