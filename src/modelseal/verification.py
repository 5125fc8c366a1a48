"""The verification engine: is what is on disk exactly what a trusted key sealed?

The checks on the seal itself (`check_bundle`) and the comparison of two
manifests (`compare`) do no I/O, so they can be tested exhaustively;
`verify` adds the reading of files and the audit event. Every error on the
way is a failed verification, never a pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal import audit
from modelseal._internal import names
from modelseal._internal.tree import FileEntry
from modelseal.errors import (
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UnsafeModelError,
    UsageError,
)
from modelseal.hashing import HashResult, Progress, hash_entries, list_model
from modelseal.manifest import GIT_PATHS, Manifest, Resource, Serialization
from modelseal.signing import keys
from modelseal.signing.bundle import Bundle, read_seal
from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE

if TYPE_CHECKING:
    from modelseal.policy import Policy


@dataclass(frozen=True)
class Finding:
    """One reason a verification failed."""

    kind: str
    """changed | missing | extra | unreadable | unsafe | seal | signature | policy | provenance"""
    detail: str
    name: str | None = None
    expected: str | None = None
    actual: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def describe(self) -> str:
        text = f"{self.kind:<10} {self.name}" if self.name is not None else f"{self.kind:<10}"
        text += f"  {self.detail}" if self.detail else ""
        if self.expected:
            text += f"\n{'':<13}expected {self.expected}"
        if self.actual:
            text += f"\n{'':<13}actual   {self.actual}"
        return text


@dataclass(frozen=True)
class Verification:
    """A successful verification: what was checked, and who vouched for it."""

    model: str
    seal: str
    model_name: str
    root_digest: str
    method: str
    hash_type: str
    files: int
    resources: int
    total_bytes: int
    signed: bool
    signers: tuple[str, ...]
    skipped: bool = False
    """True when verification was skipped by the emergency escape: nothing was checked."""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["signers"] = list(self.signers)
        return {"verified": not self.skipped, **data}


@dataclass(frozen=True)
class Failure:
    """A failed verification, with every finding that explains it."""

    model: str
    seal: str
    findings: tuple[Finding, ...]
    model_name: str | None = None
    expected_root: str | None = None
    actual_root: str | None = None
    signers: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        return f"verification of {self.model} failed: {parts}"

    def describe(self) -> str:
        lines = [self.summary(), f"  seal: {self.seal}"]
        if self.expected_root:
            lines.append(f"  sealed root: {self.expected_root}")
        if self.actual_root:
            lines.append(f"  actual root: {self.actual_root}")
        lines.extend("  " + f.describe() for f in self.findings)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": False,
            "model": self.model,
            "seal": self.seal,
            "model_name": self.model_name,
            "expected_root": self.expected_root,
            "actual_root": self.actual_root,
            "signers": list(self.signers),
            "findings": [f.to_json() for f in self.findings],
        }


def default_seal_path(model: str | os.PathLike[str]) -> Path:
    """`MODEL/model.sig` for a directory, `MODEL.sig` beside a single file."""
    path = Path(model)
    if path.is_dir():
        return path / "model.sig"
    return path.with_name(path.name + ".sig")


def seal_name_inside(model: Path, seal: Path) -> str | None:
    """The seal's name relative to the model root when it sits inside the model."""
    if not model.is_dir():
        return None
    try:
        relative = Path(os.path.abspath(seal)).relative_to(os.path.abspath(model))
    except ValueError:
        return None
    return relative.as_posix()


UNSAFE_SKIP_ENV = "MODELSEAL_UNSAFE_SKIP"
"""Set to 1 to load without verification in an emergency (each use is a CRITICAL audit event)."""


def unsafe_skip_requested(explicit: bool = False, policy: Policy | None = None) -> str | None:
    """How the emergency skip was asked for (None when it was not). Anything but 0/1 in the
    environment is an error rather than a guess, so a typo never silently skips; a `policy`
    with `allow_unsafe_skip = false` refuses the skip where it is used."""
    value = os.environ.get(UNSAFE_SKIP_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise UsageError(f"{UNSAFE_SKIP_ENV} must be 1 (skip verification) or 0, not {value!r}")
    how = "unsafe_skip_verification" if explicit else None
    if how is None and value == "1":
        how = f"{UNSAFE_SKIP_ENV}=1"
    if how is not None and policy is not None and not policy.allow_unsafe_skip:
        raise UsageError(
            f"{how} refused: the policy {policy.source} sets allow_unsafe_skip = false"
        )
    return how


def skip_verification(
    model_path: Path, seal_path: Path, allow_symlinks: bool, reader: Reader, how: str
) -> Verification:
    """Read the model through `reader` without checking anything, loudly: a CRITICAL audit
    event and a line on stderr every time, so the escape is never silent."""
    audit.emit_skipped(str(model_path), str(seal_path), how)
    inside = seal_name_inside(model_path, seal_path)
    serialization = Serialization(
        allow_symlinks=allow_symlinks,
        ignore_paths=tuple(sorted({*GIT_PATHS, *([inside] if inside else [])})),
    )
    entries = list_model(model_path, serialization)
    result = reader(entries, serialization, frozenset(entry.name for entry in entries))
    if result.unreadable:
        name, reason = next(iter(result.unreadable.items()))
        raise UsageError(f"cannot read {name} of {model_path}: {reason}")
    actual = Manifest.build(model_path.name or "model", serialization, result.resources)
    return Verification(
        model=str(model_path),
        seal=str(seal_path),
        model_name=actual.model_name,
        root_digest="sha256:" + actual.root_digest.hex(),
        method=serialization.method.value,
        hash_type=serialization.hash_type,
        files=len(actual.files),
        resources=len(actual.resources),
        total_bytes=result.total_bytes,
        signed=False,
        signers=(),
        skipped=True,
    )


def trusted_keys(public_keys: Iterable[object], allow_unsigned: bool) -> list[keys.PublicKey]:
    """Load the trusted keys (paths or key objects), and require exactly one way to trust."""
    loaded: list[keys.PublicKey] = []
    for item in public_keys:
        if isinstance(item, (str, os.PathLike)):
            loaded.append(keys.load_public_key(item))
        elif isinstance(item, keys.PUBLIC_KEY_TYPES):
            loaded.append(item)
        else:
            raise UsageError(f"not a public key or a path to one: {item!r}")
    if loaded and allow_unsigned:
        raise UsageError("give trusted public keys or allow_unsigned, not both")
    if not loaded and not allow_unsigned:
        raise UsageError("no trusted public key given (or pass allow_unsigned)")
    return loaded


def check_bundle(
    bundle: Bundle, trusted: Sequence[keys.PublicKey], *, allow_unsigned: bool
) -> tuple[Manifest, tuple[str, ...]]:
    """Check the signature(s) of a seal, then parse its statement. No I/O.

    Returns the sealed manifest and the ids of the trusted keys whose
    signature verified. Raises SignatureError or SealError.
    """
    envelope = bundle.envelope
    signers: tuple[str, ...] = ()
    if not allow_unsigned:
        if not trusted:
            raise SignatureError("no trusted key is left to check the seal with (all revoked?)")
        if not envelope.signatures:
            raise SignatureError("the seal carries no signature")
        signers = bundle.verified_by(trusted)
        if not signers:
            raise SignatureError(bundle.unverified_reason(trusted, "the seal"))
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:  # pragma: no cover - parser refuses it
        raise SealError(f"unexpected payload type {envelope.payload_type}")
    try:
        statement = json.loads(envelope.payload)
    except RecursionError:
        raise SealError("the sealed statement is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SealError("the sealed statement is not valid JSON") from None
    try:
        manifest = Manifest.from_statement(statement)
    except ValueError as exc:
        raise SealError(f"the sealed statement is not a valid OMS v1.0 manifest: {exc}") from None
    return manifest, signers


def _label(resources: Sequence[Resource]) -> str:
    if len(resources) == 1:
        return resources[0].label()
    return f"{len(resources)} shards, first {resources[0].label()}"


def compare(
    expected: Manifest, actual: Iterable[Resource], unreadable: dict[str, str]
) -> tuple[Finding, ...]:
    """Every difference between the sealed manifest and the files on disk, by file. No I/O."""
    want: dict[str, list[Resource]] = {}
    for resource in expected.resources:
        want.setdefault(resource.path, []).append(resource)
    have: dict[str, list[Resource]] = {}
    for resource in actual:
        have.setdefault(resource.path, []).append(resource)
    findings: list[Finding] = []
    for path in sorted(set(want) | set(have) | set(unreadable), key=names.sort_key):
        expected_shards = sorted(want.get(path, []), key=lambda r: r.start or 0)
        if path in unreadable:
            findings.append(
                Finding(
                    "unreadable",
                    unreadable[path],
                    path,
                    _label(expected_shards) if expected_shards else None,
                )
            )
            continue
        actual_shards = sorted(have.get(path, []), key=lambda r: r.start or 0)
        if not actual_shards:
            findings.append(
                Finding("missing", "sealed file is not on disk", path, _label(expected_shards))
            )
        elif not expected_shards:
            findings.append(
                Finding("extra", "file is not in the seal", path, None, _label(actual_shards))
            )
        elif [(r.name, r.digest) for r in expected_shards] != [
            (r.name, r.digest) for r in actual_shards
        ]:
            findings.append(_changed(path, expected_shards, actual_shards))
    return tuple(findings)


def _changed(path: str, expected: list[Resource], actual: list[Resource]) -> Finding:
    if len(expected) == 1 and len(actual) == 1 and expected[0].name == actual[0].name:
        return Finding("changed", "content differs", path, expected[0].label(), actual[0].label())
    by_name = {r.name: r for r in actual}
    for shard in expected:
        other = by_name.get(shard.name)
        if other is None or other.digest != shard.digest:
            actual_label = other.label() if other else "(size differs, shard absent)"
            return Finding(
                "changed",
                f"content differs from byte {shard.start}",
                path,
                f"{shard.name} {shard.label()}",
                f"{shard.name} {actual_label}" if other else actual_label,
            )
    return Finding("changed", "file is longer than sealed", path, _label(expected), _label(actual))


Reader = Callable[[list[FileEntry], Serialization, frozenset[str]], HashResult]
"""Reads and hashes the listed files: in place (`verify`) or into memory (`open_verified`).
The third argument is the set of sealed file paths, so a reader can avoid keeping extras."""


def in_place_reader(workers: int | None, progress: Progress | None) -> Reader:
    """The reader of `verify`: hash the files where they are, keep nothing."""

    def read_in_place(
        entries: list[FileEntry], serialization: Serialization, sealed: frozenset[str]
    ) -> HashResult:
        return hash_entries(entries, serialization, workers=workers, progress=progress)

    return read_in_place


def verify(
    model: str | os.PathLike[str],
    *,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey] = (),
    allow_unsigned: bool = False,
    signature: str | os.PathLike[str] | None = None,
    allow_symlinks: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    policy: Policy | None = None,
    unsafe_skip_verification: bool = False,
    model_name: str | None = None,
) -> Verification:
    """Verify a sealed model. Returns a `Verification` or raises an `IntegrityError`.

    Pass the trusted `public_keys`, or a trust `policy` (its signers' keys, validity
    windows, revocations and rules), or `allow_unsigned=True` to check digests only
    (protection against corruption, not against an attacker).
    Every call emits one audit event on the `modelseal.audit` logger.
    `unsafe_skip_verification=True` (or MODELSEAL_UNSAFE_SKIP=1) checks nothing: an
    emergency escape, logged as a CRITICAL audit event each time.
    `model_name` is the name the seal must carry: a policy decides by the name inside the
    seal, which whoever signed chose, so a key trusted for another model could otherwise
    put its own model (under its own name) in this one's place.
    """

    return run_verification(
        model,
        public_keys=public_keys,
        allow_unsigned=allow_unsigned,
        signature=signature,
        allow_symlinks=allow_symlinks,
        reader=in_place_reader(workers, progress),
        policy=policy,
        unsafe_skip_verification=unsafe_skip_verification,
        model_name=model_name,
    )


def run_verification(
    model: str | os.PathLike[str],
    *,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey],
    allow_unsigned: bool,
    signature: str | os.PathLike[str] | None,
    allow_symlinks: bool,
    reader: Reader,
    policy: Policy | None = None,
    unsafe_skip_verification: bool = False,
    model_name: str | None = None,
    seal_bundle: Bundle | None = None,
) -> Verification:
    """The whole verification around a `reader`: arguments, seal, signature, files, audit.

    `model_name`: refuse a seal for any other model name. `seal_bundle`: check this seal,
    already read from `signature`, instead of reading the file again (so a caller that acts
    on the seal afterwards acts on exactly what was verified).
    """
    model_path = Path(model)
    skip = unsafe_skip_requested(unsafe_skip_verification, policy)
    if skip is not None:
        # Trust arguments are not even validated: the escape must work when they cannot.
        if not model_path.exists() and not model_path.is_symlink():
            raise UsageError(f"model not found: {model_path}")
        seal_path = Path(signature) if signature is not None else default_seal_path(model_path)
        return skip_verification(model_path, seal_path, allow_symlinks, reader, skip)
    if policy is not None:
        if allow_unsigned or tuple(public_keys):
            raise UsageError("give a policy, or public keys / allow_unsigned, not both")
        # Every key may be revoked: then the seal is refused below, with an audit event.
        trusted = list(policy.trusted_keys())
    else:
        trusted = trusted_keys(public_keys, allow_unsigned)
    if not model_path.exists() and not model_path.is_symlink():
        raise UsageError(f"model not found: {model_path}")
    seal_path = Path(signature) if signature is not None else default_seal_path(model_path)
    context = _Context(str(model_path), str(seal_path))
    try:
        result = _verify(
            model_path,
            seal_path,
            trusted,
            allow_unsigned,
            allow_symlinks,
            reader,
            context,
            policy,
            model_name,
            seal_bundle,
        )
    except IntegrityError as exc:
        if exc.failure is None:
            name = exc.name if isinstance(exc, UnsafeModelError) else None
            exc.failure = context.failure((Finding(finding_kind(exc), str(exc), name),))
        audit.emit_failure(exc.failure)
        raise
    audit.emit_success(result)
    return result


@dataclass
class _Context:
    """What is known so far, so a failure at any step can still say it."""

    model: str
    seal: str
    model_name: str | None = None
    expected_root: str | None = None
    actual_root: str | None = None
    signers: tuple[str, ...] = ()

    def failure(self, findings: tuple[Finding, ...]) -> Failure:
        return Failure(
            self.model,
            self.seal,
            findings,
            self.model_name,
            self.expected_root,
            self.actual_root,
            self.signers,
        )


def check_model_name(manifest: Manifest, expected: str | None) -> None:
    """Refuse a seal for another model than the `expected` name. Done before the policy,
    whose rules are chosen by this name, which the signer picked."""
    if expected is not None and manifest.model_name != expected:
        raise SealError(
            f"the seal is for model {manifest.model_name!r}, not the expected {expected!r}"
        )


def apply_policy(
    policy: Policy, manifest: Manifest, signers: tuple[str, ...], seal_path: Path
) -> None:
    """Refuse (PolicyViolation) unless the policy allows these signers for this model now,
    and, when a covering rule requires it, the provenance beside the seal holds its claims."""
    from modelseal import provenance

    now = datetime.now(timezone.utc)
    decision = policy.check(manifest.model_name, signers, manifest.serialization.hash_type, now)
    if decision.require_provenance:
        provenance.check_for_policy(
            policy,
            model_name=manifest.model_name,
            root_digest=manifest.root_digest,
            provenance_path=provenance.provenance_path_for(seal_path),
            claims=decision.provenance,
            now=now,
        )


def finding_kind(exc: IntegrityError) -> str:
    """The finding kind that names an error raised before any file was compared."""
    from modelseal.policy import PolicyViolation
    from modelseal.provenance import ProvenanceError

    if isinstance(exc, PolicyViolation):
        return "policy"
    if isinstance(exc, ProvenanceError):
        return "provenance"
    if isinstance(exc, SignatureError):
        return "signature"
    if isinstance(exc, UnsafeModelError):
        return "unsafe"
    if isinstance(exc, SealError):
        return "seal"
    return "integrity"


def _verify(
    model_path: Path,
    seal_path: Path,
    trusted: Sequence[keys.PublicKey],
    allow_unsigned: bool,
    allow_symlinks: bool,
    reader: Reader,
    context: _Context,
    policy: Policy | None = None,
    model_name: str | None = None,
    seal_bundle: Bundle | None = None,
) -> Verification:
    bundle = seal_bundle if seal_bundle is not None else read_seal(seal_path)
    manifest, signers = check_bundle(bundle, trusted, allow_unsigned=allow_unsigned)
    context.model_name = manifest.model_name
    context.expected_root = "sha256:" + manifest.root_digest.hex()
    context.signers = signers
    check_model_name(manifest, model_name)
    if policy is not None:
        apply_policy(policy, manifest, signers, seal_path)

    sealed = manifest.serialization
    ignored = set(sealed.ignore_paths)
    inside = seal_name_inside(model_path, seal_path)
    if inside is not None:
        ignored.add(inside)
    effective = dataclasses.replace(
        sealed,
        allow_symlinks=sealed.allow_symlinks and allow_symlinks,
        ignore_paths=tuple(sorted(ignored)),
    )
    entries = list_model(model_path, effective)
    result = reader(entries, effective, frozenset(manifest.files))
    if not result.unreadable:
        actual = Manifest.build(manifest.model_name, effective, result.resources)
        context.actual_root = "sha256:" + actual.root_digest.hex()
    findings = compare(manifest, result.resources, result.unreadable)
    if findings:
        failure = context.failure(findings)
        raise ModelMismatchError(failure.summary(), failure)
    return Verification(
        model=str(model_path),
        seal=str(seal_path),
        model_name=manifest.model_name,
        root_digest="sha256:" + manifest.root_digest.hex(),
        method=sealed.method.value,
        hash_type=sealed.hash_type,
        files=len(manifest.files),
        resources=len(manifest.resources),
        total_bytes=result.total_bytes,
        signed=bool(signers),
        signers=signers,
    )
