"""A CycloneDX 1.6 SBOM for a sealed model: what it is made of, and what it was made from.

The SBOM states facts taken from the seal and the training provenance, never from the
files alone: the model is first checked against its seal (the digests of the files on
disk must equal the sealed ones), so an SBOM is never emitted for a model that differs
from its seal. With trusted keys or a policy the signatures of the seal and of the
provenance are checked too, and the SBOM says `modelseal:verified` true; without them
it says false, and only describes what the (unauthenticated) seal claims.

cyclonedx-python-lib has no model card support, so the JSON is built here by hand
(the tests validate it against the CycloneDX 1.6 schema).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal import __version__
from modelseal._internal import names
from modelseal._internal.files import write_atomic
from modelseal.errors import IntegrityError, UsageError
from modelseal.hashing import HashResult, hash_entries
from modelseal.manifest import Method, Resource, Serialization
from modelseal.signing import keys
from modelseal.verification import Verification, run_verification, trusted_keys

if TYPE_CHECKING:
    from modelseal._internal.tree import FileEntry
    from modelseal.policy import Policy
    from modelseal.provenance import Dependency, Provenance

SPEC_VERSION = "1.6"

HASH_ALGORITHMS: dict[str, str] = {
    "sha256": "SHA-256",
    "sha384": "SHA-384",
    "sha512": "SHA-512",
    "blake3": "BLAKE3",
}
"""modelseal digest algorithm -> CycloneDX `hash-alg` name."""

_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128, "blake3": 64}

_DATA_TYPES = {"dataset": "dataset", "config": "configuration", "script": "source-code"}
"""Provenance dependency role -> CycloneDX componentData type (others: "other")."""

_IRI_UNSAFE = re.compile(r"[\x00-\x20\x7f<>\"{}|\\^`]")
"""Characters an IRI may not hold: such a URI is kept as a property, not as `contents.url`."""


@dataclass(frozen=True)
class SealedModel:
    """A model whose files on disk matched its seal, with the digests that matched."""

    verification: Verification
    serialization: Serialization
    resources: tuple[Resource, ...]
    verified: bool
    """True when a trusted key (or policy) vouched for the seal, not only its digests."""


@dataclass(frozen=True)
class ProvenanceFacts:
    """The provenance that goes into the SBOM, and whether its signature was checked."""

    provenance: Provenance
    path: str
    verified: bool


def check_model(
    model: str | os.PathLike[str],
    *,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey] = (),
    policy: Policy | None = None,
    signature: str | os.PathLike[str] | None = None,
    allow_symlinks: bool = False,
) -> SealedModel:
    """Compare the files on disk with the seal (and check its signature when trust is given).

    The digests come from this very read, after the comparison found no difference, so
    the SBOM describes the bytes that were checked. Raises an `IntegrityError` otherwise.
    """
    trusted = list(public_keys)
    signed = policy is not None or bool(trusted)
    captured: list[tuple[Serialization, tuple[Resource, ...]]] = []

    def read_and_keep(
        entries: list[FileEntry], serialization: Serialization, sealed: frozenset[str]
    ) -> HashResult:
        result = hash_entries(entries, serialization)
        captured.append((serialization, result.resources))
        return result

    verification = run_verification(
        model,
        public_keys=trusted,
        allow_unsigned=not signed,
        signature=signature,
        allow_symlinks=allow_symlinks,
        reader=read_and_keep,
        policy=policy,
    )
    if verification.skipped or len(captured) != 1:
        # The emergency escape checks nothing: an SBOM must never vouch for unchecked files.
        raise IntegrityError(
            f"{model} was not checked against its seal (MODELSEAL_UNSAFE_SKIP is set): "
            "no SBOM is built for an unverified model"
        )
    serialization, resources = captured[0]
    return SealedModel(verification, serialization, resources, verified=signed)


def load_provenance(
    sealed: SealedModel,
    *,
    path: str | os.PathLike[str] | None = None,
    public_keys: Sequence[keys.PublicKey] = (),
    policy: Policy | None = None,
) -> ProvenanceFacts | None:
    """The model's provenance: verified when trust is given, else read and matched only.

    `path` None means the default place beside the seal, where its absence is a fact the
    SBOM reports; a `path` given explicitly must exist. In every case the statement must
    be about this model (its subject is the sealed name and root digest), else the
    provenance of another model, or of an older version, would be attributed to this one.
    The checks are those of `verify_provenance`, made against the verification already
    done, so the model's files are read once.
    """
    from modelseal import provenance as prov

    verification = sealed.verification
    where = Path(path) if path is not None else prov.provenance_path_for(verification.seal)
    if path is None and not where.exists() and not where.is_symlink():
        return None
    root = bytes.fromhex(verification.root_digest.removeprefix("sha256:"))
    now = datetime.now(timezone.utc)
    if policy is not None:
        decision = policy.check(
            verification.model_name, verification.signers, verification.hash_type, now
        )
        record = prov.check_for_policy(
            policy,
            model_name=verification.model_name,
            root_digest=root,
            provenance_path=where,
            claims=decision.provenance,
            now=now,
        )
    elif public_keys:
        record = prov.check_provenance(
            prov.read_bundle(where),
            public_keys,
            model_name=verification.model_name,
            root_digest=root,
            now=now,
        )
    else:
        record = prov.read_provenance(where)
        if (record.model_name, record.root_digest) != (
            verification.model_name,
            verification.root_digest,
        ):
            raise prov.ProvenanceError(
                f"the provenance {where} is about another model or version "
                f"({record.model_name!r}, {record.root_digest}), not the sealed "
                f"{verification.model_name!r} with root digest {verification.root_digest}"
            )
    return ProvenanceFacts(record, str(where), verified=policy is not None or bool(public_keys))


def build_sbom(
    model: str | os.PathLike[str],
    *,
    public_keys: Iterable[str | os.PathLike[str] | keys.PublicKey] = (),
    policy: Policy | None = None,
    allow_unsigned: bool = False,
    signature: str | os.PathLike[str] | None = None,
    provenance: str | os.PathLike[str] | None = None,
    allow_symlinks: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A CycloneDX 1.6 SBOM (as JSON data) for a sealed model, its files and its datasets.

    Trust: with `public_keys` or a `policy`, the seal and the provenance must verify
    (`modelseal:verified` true). Without them (or with `allow_unsigned=True`) signatures
    are not checked and the SBOM says `modelseal:verified` false; the files on disk are
    still compared with the seal in every case, and any difference raises an
    `IntegrityError`, so no SBOM describes files other than the sealed ones.
    """
    given = list(public_keys)
    if policy is not None and (given or allow_unsigned):
        raise UsageError("give a policy, or public keys / allow_unsigned, not both")
    if given and allow_unsigned:
        raise UsageError("give trusted public keys or allow_unsigned, not both")
    trusted = trusted_keys(given, allow_unsigned=False) if given else []
    sealed = check_model(
        model,
        public_keys=trusted,
        policy=policy,
        signature=signature,
        allow_symlinks=allow_symlinks,
    )
    facts = load_provenance(sealed, path=provenance, public_keys=trusted, policy=policy)
    return render(sealed, facts, now=now)


# --- rendering: pure functions from verified facts to CycloneDX JSON ----------------------


def render(
    sealed: SealedModel, facts: ProvenanceFacts | None, *, now: datetime | None = None
) -> dict[str, Any]:
    """The CycloneDX document for checked facts. No I/O."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    model_ref = "model"
    components: list[dict[str, Any]] = []
    dataset_refs: list[str] = []
    if facts is not None:
        for index, dependency in enumerate(facts.provenance.dependencies, start=1):
            if dependency.role == "source":
                continue  # the repository and commit are model card properties
            role = dependency.role if re.fullmatch(r"[a-z]+", dependency.role or "") else "input"
            component = _dependency_component(dependency, f"{role}-{index}")
            components.append(component)
            if dependency.role == "dataset":
                dataset_refs.append(component["bom-ref"])
    model_component = _model_component(sealed, facts, model_ref, dataset_refs)
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": uuid.uuid4().urn,
        "version": 1,
        "metadata": {
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "bom-ref": "tool-modelseal",
                        "name": "modelseal",
                        "version": __version__,
                    }
                ]
            },
            "component": model_component,
        },
        "components": components,
        "dependencies": [
            {"ref": model_ref, "dependsOn": [c["bom-ref"] for c in components]},
            *({"ref": c["bom-ref"]} for c in components),
        ],
    }
    return document


def _model_component(
    sealed: SealedModel,
    facts: ProvenanceFacts | None,
    ref: str,
    dataset_refs: Sequence[str],
) -> dict[str, Any]:
    verification = sealed.verification
    serialization = sealed.serialization
    by_file = _by_file(sealed.resources)
    properties = [
        _prop("modelseal:root-digest", verification.root_digest),
        _prop("modelseal:seal-path", verification.seal),
        _prop("modelseal:hash-type", serialization.hash_type),
        _prop("modelseal:serialization", serialization.method.value),
        _prop("modelseal:files", str(verification.files)),
        _prop("modelseal:verified", "true" if sealed.verified else "false"),
    ]
    if serialization.shard_size is not None:
        properties.append(_prop("modelseal:shard-size", str(serialization.shard_size)))
    if verification.signers:
        properties.append(_prop("modelseal:signers", ",".join(verification.signers)))
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": ref,
        "name": verification.model_name,
    }
    single = list(by_file) == [names.SINGLE_FILE_NAME]
    if single:
        hashes, extra = _file_hashes(by_file[names.SINGLE_FILE_NAME], serialization)
        if hashes:
            component["hashes"] = hashes
        properties.extend(extra)
    component["properties"] = properties
    if not single:
        component["components"] = [
            _file_component(path, resources, serialization, f"file:{path}")
            for path, resources in by_file.items()
        ]
    component["modelCard"] = _model_card(facts, dataset_refs)
    return component


def _by_file(resources: Iterable[Resource]) -> dict[str, list[Resource]]:
    grouped: dict[str, list[Resource]] = {}
    for resource in sorted(resources, key=lambda r: (names.sort_key(r.path), r.start or 0)):
        grouped.setdefault(resource.path, []).append(resource)
    return grouped


def _file_hashes(
    resources: Sequence[Resource], serialization: Serialization
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A whole-file digest as a CycloneDX hash. Shard digests are not the digest of the
    file's bytes, so they are listed as properties instead of being passed off as one."""
    if serialization.method is Method.FILES:
        (resource,) = resources
        return [_hash(serialization.hash_type, resource.hexdigest)], []
    return [], [
        _prop("modelseal:shard", f"{r.start}-{r.end} {serialization.hash_type}:{r.hexdigest}")
        for r in resources
    ]


def _file_component(
    path: str, resources: Sequence[Resource], serialization: Serialization, ref: str
) -> dict[str, Any]:
    hashes, properties = _file_hashes(resources, serialization)
    component: dict[str, Any] = {"type": "file", "bom-ref": ref, "name": path}
    if hashes:
        component["hashes"] = hashes
    if properties:
        component["properties"] = properties
    return component


def _model_card(facts: ProvenanceFacts | None, dataset_refs: Sequence[str]) -> dict[str, Any]:
    if facts is None:
        return {"properties": [_prop("modelseal:provenance", "absent")]}
    record = facts.provenance
    properties = [
        _prop("modelseal:provenance", "verified" if facts.verified else "unverified"),
        _prop("modelseal:provenance-path", facts.path),
        _prop("modelseal:builder-id", record.builder_id),
        _prop("modelseal:build-type", record.build_type),
    ]
    if record.signers:
        properties.append(_prop("modelseal:provenance-signers", ",".join(record.signers)))
    if record.source_repo is not None:
        properties.append(_prop("modelseal:source-repo", record.source_repo))
    if record.commit is not None:
        properties.append(_prop("modelseal:source-commit", record.commit))
    if record.dirty is not None:
        properties.append(_prop("modelseal:source-dirty", "true" if record.dirty else "false"))
    if record.command:
        properties.append(_prop("modelseal:command", shlex.join(record.command)))
    for label, moment in (("started-on", record.started_on), ("finished-on", record.finished_on)):
        if moment is not None:
            properties.append(_prop(f"modelseal:training-{label}", _rfc3339(moment)))
    for name, value in sorted(record.parameters.items()):
        properties.append(_prop(f"modelseal:hyperparameter:{name}", _text(value)))
    internal = _mapping(_mapping(record.statement.get("predicate")).get("buildDefinition"))
    internal = _mapping(internal.get("internalParameters"))
    if isinstance(internal.get("python"), str):
        properties.append(_prop("modelseal:python", internal["python"]))
    for package, version in sorted(_mapping(internal.get("packages")).items()):
        properties.append(_prop(f"modelseal:package:{package}", _text(version)))
    card: dict[str, Any] = {}
    if dataset_refs:
        card["modelParameters"] = {"datasets": [{"ref": ref} for ref in dataset_refs]}
    card["properties"] = properties
    return card


def _dependency_component(dependency: Dependency, ref: str) -> dict[str, Any]:
    """A `data` component for a dataset, config or script the training run read.

    A file's digest is the digest of its bytes, so it is a CycloneDX hash (what sha256sum
    prints). A directory's digest (marked by a `hash_type` annotation) is the OMS root digest
    of its files, which no tool would recompute as a plain hash: it is a property instead.
    """
    name = dependency.name or dependency.uri or ref
    directory = "hash_type" in dependency.annotations
    hashes = [
        _hash(alg, digest)
        for alg, digest in sorted(dependency.digest.items())
        if not directory and alg in HASH_ALGORITHMS and _is_hex(digest, _HEX_LENGTHS[alg])
    ]
    data: dict[str, Any] = {"type": _DATA_TYPES.get(dependency.role or "", "other"), "name": name}
    if dependency.uri is not None and not _IRI_UNSAFE.search(dependency.uri):
        data["contents"] = {"url": dependency.uri}
    properties = [_prop("modelseal:role", dependency.role or "unknown")]
    if dependency.uri is not None:
        properties.append(_prop("modelseal:uri", dependency.uri))
    label = "modelseal:root-digest" if directory else "modelseal:digest"
    for alg, digest in sorted(dependency.digest.items()):
        properties.append(_prop(label, f"{alg}:{digest}"))
    for key in ("files", "bytes", "hash_type"):
        if key in dependency.annotations:
            tag = "modelseal:" + key.replace("_", "-")
            properties.append(_prop(tag, _text(dependency.annotations[key])))
    component: dict[str, Any] = {"type": "data", "bom-ref": ref, "name": name}
    if hashes:
        component["hashes"] = hashes
    component["data"] = [data]
    component["properties"] = properties
    return component


def _hash(algorithm: str, hexdigest: str) -> dict[str, str]:
    return {"alg": HASH_ALGORITHMS[algorithm], "content": hexdigest}


def _is_hex(value: object, length: int) -> bool:
    return (
        isinstance(value, str) and len(value) == length and bool(re.fullmatch(r"[0-9a-f]+", value))
    )


def _prop(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def _text(value: object) -> str:
    """A property value: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_sbom(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write the SBOM atomically, so a reader never sees half a document."""
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), "the SBOM")
