"""Sealing: hash a model, sign its manifest, write the seal beside it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelseal._internal import names
from modelseal.errors import UsageError
from modelseal.hashing import Progress, hash_model
from modelseal.manifest import GIT_PATHS, Manifest, Method, Serialization
from modelseal.signing import keys
from modelseal.signing.bundle import Bundle, read_seal, write_seal
from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature
from modelseal.verification import (
    default_seal_path,
    in_place_reader,
    run_verification,
    seal_name_inside,
)

if TYPE_CHECKING:
    from modelseal.policy import Policy


@dataclass(frozen=True)
class SealResult:
    """What was sealed, and where the seal is."""

    model: str
    seal: str
    model_name: str
    root_digest: str
    files: int
    resources: int
    signed: bool
    signer: str | None


def _relative_ignores(model: Path, ignore: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Ignore paths as names relative to the model root (absolute ones must lie inside it)."""
    result = []
    for item in ignore:
        path = Path(item)
        if path.is_absolute():
            try:
                path = path.relative_to(os.path.abspath(model))
            except ValueError:
                raise UsageError(f"ignore path {item} is outside the model {model}") from None
        name = path.as_posix().rstrip("/")
        problem = names.name_problem(name)
        if problem is not None or name == names.SINGLE_FILE_NAME:
            raise UsageError(f"ignore path {item!s} is not allowed: {problem or 'the root'}")
        result.append(name)
    return result


def serialization_for(
    model: Path,
    *,
    algorithm: str = "sha256",
    shard_size: int | None = None,
    ignore: Iterable[str | os.PathLike[str]] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    seal_path: Path | None = None,
) -> Serialization:
    """How to hash `model` when sealing it: the seal file itself and `.git*` are left out."""
    ignored = set(_relative_ignores(model, ignore))
    if ignore_git_paths:
        ignored.update(GIT_PATHS)
    inside = seal_name_inside(model, seal_path) if seal_path is not None else None
    if inside is not None:
        ignored.add(inside)
    try:
        return Serialization(
            method=Method.FILES if shard_size is None else Method.SHARDS,
            hash_type=algorithm,
            shard_size=shard_size,
            allow_symlinks=allow_symlinks,
            ignore_paths=tuple(sorted(ignored)),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def sign_manifest(manifest: Manifest, signer: keys.Signer | None) -> Bundle:
    """Wrap the manifest's statement in a DSSE envelope, signed when a signer is given."""
    payload = manifest.to_payload()
    if signer is None:
        return Bundle(Envelope(IN_TOTO_PAYLOAD_TYPE, payload, ()))
    envelope = Envelope(IN_TOTO_PAYLOAD_TYPE, payload, ())
    signature = Signature(signer.sign(envelope.signed_bytes()))
    return Bundle(
        Envelope(IN_TOTO_PAYLOAD_TYPE, payload, (signature,)),
        keys.key_hint(signer.public_key),
    )


def seal(
    model: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | keys.PrivateKey | keys.Signer | None = None,
    unsigned: bool = False,
    signature: str | os.PathLike[str] | None = None,
    name: str | None = None,
    algorithm: str = "sha256",
    shard_size: int | None = None,
    ignore: Iterable[str | os.PathLike[str]] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> SealResult:
    """Hash `model`, sign the manifest with `key`, and write the seal.

    `unsigned=True` writes a digest-only seal: it detects corruption, but
    anyone who can change the model can rewrite it, so it is no defence
    against an attacker.
    """
    if (key is None) == (not unsigned):
        raise UsageError("give a signing key, or ask for an unsigned seal - exactly one")
    model_path = Path(model)
    if not model_path.exists():
        raise UsageError(f"model not found: {model_path}")
    signer = keys.as_signer(key) if key is not None else None
    seal_path = Path(signature) if signature is not None else default_seal_path(model_path)
    serialization = serialization_for(
        model_path,
        algorithm=algorithm,
        shard_size=shard_size,
        ignore=ignore,
        ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks,
        seal_path=seal_path,
    )
    manifest = hash_model(
        model_path, serialization, model_name=name, workers=workers, progress=progress
    )
    write_seal(seal_path, sign_manifest(manifest, signer))
    return SealResult(
        model=str(model_path),
        seal=str(seal_path),
        model_name=manifest.model_name,
        root_digest="sha256:" + manifest.root_digest.hex(),
        files=len(manifest.files),
        resources=len(manifest.resources),
        signed=signer is not None,
        signer=keys.key_id(signer.public_key) if signer is not None else None,
    )


@dataclass(frozen=True)
class SignResult:
    """A signature added to (or already on) an existing seal."""

    model: str
    seal: str
    model_name: str
    root_digest: str
    signer: str
    added: bool
    """False when this key had already signed the seal: nothing was written."""
    signatures: int


def sign(
    model: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | keys.PrivateKey | keys.Signer,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey] = (),
    policy: Policy | None = None,
    allow_unsigned: bool = False,
    signature: str | os.PathLike[str] | None = None,
    allow_symlinks: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    model_name: str | None = None,
) -> SignResult:
    """Co-sign a sealed model: verify it first, then add `key`'s signature to its seal.

    The seal's statement is not rebuilt, so the new signature covers exactly the manifest
    that was just verified against the files on disk. Existing signatures must verify with
    `public_keys` (or with the keys of `policy`; its rules are not applied, since a
    threshold is what co-signing is building up), or pass `allow_unsigned=True` to check
    the digests only. Signatures are kept in order: the first one (and the bundle's key
    hint) stays the original sealer's, which is the one upstream `model_signing` checks.
    `model_name`: refuse to co-sign a seal made for any other model name.
    """
    signer = keys.as_signer(key)
    model_path = Path(model)
    seal_path = Path(signature) if signature is not None else default_seal_path(model_path)
    if policy is not None:
        if allow_unsigned or tuple(public_keys):
            raise UsageError("give a policy, or public keys / allow_unsigned, not both")
        public_keys = policy.trusted_keys()
        if not public_keys:
            raise UsageError(f"the policy {policy.source} trusts no key that is not revoked")
    # The seal is read once, and that very bundle is verified and then signed: reading it
    # again for the verification would let a seal swapped in and back (A, B, A) get a
    # signature over a statement nobody checked.
    bundle = read_seal(seal_path) if model_path.exists() else None

    result = run_verification(
        model_path,
        public_keys=public_keys,
        allow_unsigned=allow_unsigned,
        signature=seal_path,
        allow_symlinks=allow_symlinks,
        reader=in_place_reader(workers, progress),
        seal_bundle=bundle,
        model_name=model_name,
    )
    assert bundle is not None  # run_verification refuses a missing model
    if read_seal(seal_path) != bundle:
        raise UsageError(f"the seal {seal_path} changed while it was being verified; try again")
    envelope = bundle.envelope
    signed_bytes = envelope.signed_bytes()
    signer_id = keys.key_id(signer.public_key)
    already = any(
        keys.verify_signature(signer.public_key, s.sig, signed_bytes) for s in envelope.signatures
    )
    if not already:
        added = Signature(signer.sign(signed_bytes), signer_id)
        envelope = Envelope(envelope.payload_type, envelope.payload, (*envelope.signatures, added))
        hint = bundle.key_hint or keys.key_hint(signer.public_key)
        write_seal(seal_path, Bundle(envelope, hint))
    return SignResult(
        model=str(model_path),
        seal=str(seal_path),
        model_name=result.model_name,
        root_digest=result.root_digest,
        signer=signer_id,
        added=not already,
        signatures=len(envelope.signatures),
    )
