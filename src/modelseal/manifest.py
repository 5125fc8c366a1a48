"""What a seal says about a model: its resources, their digests, and how they were made.

A `Manifest` is the list of (name, algorithm, digest) of every file (or file
shard) of a model, plus the `Serialization` parameters needed to recompute it.
It converts to and from the OpenSSF Model Signing v1.0 in-toto Statement.
Parsing is strict: a statement that is not exactly understood is refused.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelseal._internal import names

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"

ALGORITHMS: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64, "blake3": 32}
"""Trusted digest algorithms and their digest sizes in bytes."""

WEAK_ALGORITHMS = frozenset({"md5", "sha1", "sha-1", "sha224", "md4", "crc32"})

DEFAULT_SHARD_SIZE = 1_000_000_000
"""Upstream's default shard size, in bytes."""

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
"""Paths at the model root that are never hashed by default (as upstream)."""


class Method(str, enum.Enum):
    """How a model is cut into resources."""

    FILES = "files"
    SHARDS = "shards"


def check_algorithm(algorithm: str) -> None:
    """Raise ValueError unless `algorithm` is one modelseal trusts."""
    if algorithm in ALGORITHMS:
        return
    if algorithm.lower() in WEAK_ALGORITHMS:
        raise ValueError(f"algorithm {algorithm} is too weak to be trusted")
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


@dataclass(frozen=True)
class Serialization:
    """Parameters that decide the resources and digests of a model."""

    method: Method = Method.FILES
    hash_type: str = "sha256"
    shard_size: int | None = None
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = GIT_PATHS

    def __post_init__(self) -> None:
        check_algorithm(self.hash_type)
        if self.method is Method.SHARDS:
            if self.shard_size is None or self.shard_size <= 0:
                raise ValueError("shards serialization needs a positive shard_size")
            if self.hash_type == "blake3":
                raise ValueError("blake3 is not sharded: it already hashes one file on all cores")
        elif self.shard_size is not None:
            raise ValueError("shard_size only applies to the shards serialization")
        for path in self.ignore_paths:
            problem = names.name_problem(path)
            if problem is not None or path == names.SINGLE_FILE_NAME:
                raise ValueError(f"ignore path {path!r} is not allowed: {problem or 'the root'}")

    @property
    def resource_algorithm(self) -> str:
        """The algorithm label of each resource (`sha256-sharded-N` for shards)."""
        if self.method is Method.SHARDS:
            return f"{self.hash_type}-sharded-{self.shard_size}"
        return self.hash_type

    def ignores(self, name: str) -> bool:
        """True when the file `name` (relative to the model root) is left out of the seal."""
        return any(names.is_under(name, path) for path in self.ignore_paths)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "method": self.method.value,
            "hash_type": self.hash_type,
            "allow_symlinks": self.allow_symlinks,
            "ignore_paths": list(self.ignore_paths),
        }
        if self.shard_size is not None:
            data["shard_size"] = self.shard_size
        return data

    @classmethod
    def from_json(cls, data: object) -> Serialization:
        obj = _object(data, "predicate.serialization")
        method_name = _string(obj.get("method"), "serialization.method")
        try:
            method = Method(method_name)
        except ValueError:
            raise ValueError(f"unknown serialization method {method_name!r}") from None
        allow = obj.get("allow_symlinks", False)
        if not isinstance(allow, bool):
            raise ValueError("serialization.allow_symlinks must be true or false")
        ignore = obj.get("ignore_paths", [])
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise ValueError("serialization.ignore_paths must be a list of strings")
        shard_size: int | None = None
        if method is Method.SHARDS:
            shard_size = _positive_int(obj.get("shard_size"), "serialization.shard_size")
        return cls(
            method=method,
            hash_type=_string(obj.get("hash_type"), "serialization.hash_type"),
            shard_size=shard_size,
            allow_symlinks=allow,
            ignore_paths=tuple(sorted(set(ignore))),
        )


@dataclass(frozen=True, order=True)
class Resource:
    """One hashed piece of a model: a whole file, or the byte range [start, end) of one."""

    name: str
    algorithm: str
    digest: bytes
    start: int | None = field(default=None, compare=False)
    end: int | None = field(default=None, compare=False)

    @property
    def path(self) -> str:
        """The file this resource belongs to."""
        if self.start is None:
            return self.name
        return self.name.rsplit(":", 2)[0]

    @property
    def hexdigest(self) -> str:
        return self.digest.hex()

    def label(self) -> str:
        """`alg:hex`, the way digests are written for people."""
        algorithm = self.algorithm.split("-sharded-")[0]
        return f"{algorithm}:{self.hexdigest}"


def shard_name(path: str, start: int, end: int) -> str:
    return f"{path}:{start}:{end}"


def _resource_sort_key(resource: Resource) -> tuple[tuple[str, ...], int]:
    return names.sort_key(resource.path), resource.start or 0


@dataclass(frozen=True)
class Manifest:
    """A model's resources in canonical order, with the parameters that produced them."""

    model_name: str
    serialization: Serialization
    resources: tuple[Resource, ...]

    @classmethod
    def build(
        cls, model_name: str, serialization: Serialization, resources: Iterable[Resource]
    ) -> Manifest:
        """A manifest with resources sorted the canonical way."""
        return cls(model_name, serialization, tuple(sorted(resources, key=_resource_sort_key)))

    @property
    def root_digest(self) -> bytes:
        """SHA-256 over the concatenated raw digests, in manifest order (OMS v1.0)."""
        hasher = hashlib.sha256()
        for resource in self.resources:
            hasher.update(resource.digest)
        return hasher.digest()

    @property
    def files(self) -> tuple[str, ...]:
        """The distinct file paths covered, in order."""
        return tuple(dict.fromkeys(r.path for r in self.resources))

    def by_name(self) -> dict[str, Resource]:
        return {r.name: r for r in self.resources}

    def to_statement(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.model_name, "digest": {"sha256": self.root_digest.hex()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": self.serialization.to_json(),
                "resources": [
                    {"name": r.name, "algorithm": r.algorithm, "digest": r.hexdigest}
                    for r in self.resources
                ],
            },
        }

    def to_payload(self) -> bytes:
        """The statement as the exact bytes that get signed."""
        return json.dumps(self.to_statement(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_statement(cls, statement: object) -> Manifest:
        """Parse and check an OMS v1.0 statement. Raises ValueError on anything off."""
        top = _object(statement, "statement")
        if top.get("_type") != STATEMENT_TYPE:
            raise ValueError(f"statement _type is not {STATEMENT_TYPE}")
        if top.get("predicateType") != PREDICATE_TYPE:
            raise ValueError(f"predicateType {top.get('predicateType')!r} is not {PREDICATE_TYPE}")
        subjects = top.get("subject")
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise ValueError("statement must have exactly one subject")
        subject = _object(subjects[0], "subject")
        model_name = _string(subject.get("name"), "subject.name")
        subject_digest = _object(subject.get("digest"), "subject.digest")
        root_hex = _string(subject_digest.get("sha256"), "subject.digest.sha256")
        root = _hex(root_hex, 32, "subject.digest.sha256")

        predicate = _object(top.get("predicate"), "predicate")
        serialization = Serialization.from_json(predicate.get("serialization"))
        raw_resources = predicate.get("resources")
        if not isinstance(raw_resources, list):
            raise ValueError("predicate.resources must be a list")
        resources = tuple(_parse_resource(item, serialization) for item in raw_resources)
        manifest = cls(model_name, serialization, resources)
        manifest.check()
        if manifest.root_digest != root:
            raise ValueError(
                "root digest in the subject does not match the resources (subject "
                f"sha256:{root_hex}, resources hash to sha256:{manifest.root_digest.hex()})"
            )
        return manifest

    def check(self) -> None:
        """Raise ValueError unless names are safe, unique (also folded) and cover something."""
        if not self.resources:
            raise ValueError("the manifest lists no files: an empty model is not sealed")
        collision = names.first_collision(r.name for r in self.resources)
        if collision is not None:
            a, b = collision
            raise ValueError(f"duplicate resource names (after case folding / NFC): {a!r}, {b!r}")
        paths = {r.path for r in self.resources}
        if names.SINGLE_FILE_NAME in paths and len(paths) > 1:
            raise ValueError("a single-file model ('.') cannot list other files")
        path_collision = names.first_collision(paths)
        if path_collision is not None:
            raise ValueError(f"file names collide after case folding / NFC: {path_collision!r}")
        if self.serialization.method is Method.SHARDS:
            _check_shards_cover(self.resources, self.serialization.shard_size or 0)


def _parse_resource(item: object, serialization: Serialization) -> Resource:
    obj = _object(item, "resource")
    name = _string(obj.get("name"), "resource.name")
    algorithm = _string(obj.get("algorithm"), "resource.algorithm")
    base = algorithm.split("-sharded-")[0]
    check_algorithm(base)
    if algorithm != serialization.resource_algorithm:
        raise ValueError(
            f"resource {name!r} uses {algorithm}, but the seal declares "
            f"{serialization.resource_algorithm}"
        )
    digest = _hex(_string(obj.get("digest"), "resource.digest"), ALGORITHMS[base], name)
    if serialization.method is Method.SHARDS:
        parts = name.rsplit(":", 2)
        if len(parts) != 3:
            raise ValueError(f"shard name {name!r} is not path:start:end")
        path, start_s, end_s = parts
        if not all(part.isascii() and part.isdigit() for part in (start_s, end_s)):
            raise ValueError(f"shard name {name!r} has a malformed byte range")
        start, end = int(start_s), int(end_s)
        names.check_name(path)
        return Resource(name, algorithm, digest, start, end)
    names.check_name(name)
    return Resource(name, algorithm, digest)


def _check_shards_cover(resources: Sequence[Resource], shard_size: int) -> None:
    """Shards of each file must tile it from 0 with the declared size and no gaps."""
    by_path: dict[str, list[Resource]] = {}
    for resource in resources:
        by_path.setdefault(resource.path, []).append(resource)
    for path, shards in by_path.items():
        shards.sort(key=lambda r: r.start or 0)
        if len(shards) == 1 and shards[0].start == shards[0].end == 0:
            continue  # an empty file is one empty shard
        expected_start = 0
        for index, shard in enumerate(shards):
            start, end = shard.start or 0, shard.end or 0
            size = end - start
            last = index == len(shards) - 1
            if start != expected_start or size <= 0 or size > shard_size:
                raise ValueError(f"shards of {path!r} do not tile the file at byte {start}")
            if not last and size != shard_size:
                raise ValueError(f"shard {shard.name!r} is not {shard_size} bytes long")
            expected_start = end


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value


def _positive_int(value: object, what: str) -> int:
    # Upstream writes shard_size through protobuf Struct, which turns it into a float.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer")
    return value


def _hex(value: str, size: int, what: str) -> bytes:
    if len(value) != 2 * size or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"digest of {what} is not {2 * size} lowercase hex digits")
    return bytes.fromhex(value)
