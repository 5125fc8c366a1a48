"""The OMS v1.0 statement: building, serializing, and strict parsing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from modelseal.manifest import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Manifest,
    Method,
    Resource,
    Serialization,
)


def _resource(name: str, data: bytes) -> Resource:
    return Resource(name, "sha256", hashlib.sha256(data).digest())


def _manifest() -> Manifest:
    return Manifest.build(
        "m",
        Serialization(),
        [_resource("b.bin", b"b"), _resource("a/x.bin", b"x"), _resource("a-b", b"ab")],
    )


def test_resources_sorted_by_path_components_and_root_over_raw_digests() -> None:
    manifest = _manifest()
    assert [r.name for r in manifest.resources] == ["a/x.bin", "a-b", "b.bin"]
    expected = hashlib.sha256(b"".join(r.digest for r in manifest.resources)).digest()
    assert manifest.root_digest == expected


def test_statement_has_the_oms_shape() -> None:
    statement = _manifest().to_statement()
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [
        {"name": "m", "digest": {"sha256": _manifest().root_digest.hex()}}
    ]
    assert statement["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore"],
    }
    assert statement["predicate"]["resources"][0] == {
        "name": "a/x.bin",
        "algorithm": "sha256",
        "digest": hashlib.sha256(b"x").hexdigest(),
    }


def test_round_trip_through_payload_bytes() -> None:
    manifest = _manifest()
    assert Manifest.from_statement(json.loads(manifest.to_payload())) == manifest


def test_shards_round_trip_and_labels() -> None:
    serialization = Serialization(method=Method.SHARDS, shard_size=4)
    resources = [
        Resource("w:0:4", "sha256-sharded-4", hashlib.sha256(b"abcd").digest(), 0, 4),
        Resource("w:4:6", "sha256-sharded-4", hashlib.sha256(b"ef").digest(), 4, 6),
    ]
    manifest = Manifest.build("w", serialization, resources)
    parsed = Manifest.from_statement(manifest.to_statement())
    assert parsed.resources == manifest.resources
    assert parsed.files == ("w",)
    assert parsed.resources[0].label().startswith("sha256:")


def test_upstream_float_shard_size_is_accepted() -> None:
    statement = Manifest.build(
        "w",
        Serialization(method=Method.SHARDS, shard_size=3),
        [Resource("w:0:2", "sha256-sharded-3", hashlib.sha256(b"ab").digest(), 0, 2)],
    ).to_statement()
    statement["predicate"]["serialization"]["shard_size"] = 3.0
    assert Manifest.from_statement(statement).serialization.shard_size == 3


def _mutated(change: Any) -> dict[str, Any]:
    statement = _manifest().to_statement()
    change(statement)
    return statement


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(_type="x"), "_type"),
        (lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"), "predicateType"),
        (lambda s: s["subject"].append(s["subject"][0]), "exactly one subject"),
        (lambda s: s["subject"][0]["digest"].update(sha256="00" * 32), "root digest"),
        (lambda s: s["subject"][0]["digest"].update(sha256="zz"), "hex"),
        (lambda s: s["predicate"]["serialization"].update(method="tensors"), "method"),
        (lambda s: s["predicate"]["serialization"].update(hash_type="md5"), "too weak"),
        (lambda s: s["predicate"]["serialization"].update(allow_symlinks="no"), "true or false"),
        (lambda s: s["predicate"]["serialization"].update(ignore_paths=["../x"]), "ignore path"),
        (lambda s: s["predicate"]["serialization"].update(ignore_paths=[1]), "list of strings"),
        (lambda s: s["predicate"].update(resources={}), "must be a list"),
        (lambda s: s["predicate"]["resources"][0].update(algorithm="blake3"), "declares"),
        (lambda s: s["predicate"]["resources"][0].update(digest="AB" * 32), "lowercase hex"),
        (lambda s: s["predicate"]["resources"][0].update(digest="ab" * 31), "64"),
        (lambda s: s["predicate"]["resources"][0].update(name="../evil"), "not allowed"),
        (lambda s: s.update(predicate=[]), "JSON object"),
    ],
)
def test_statements_that_are_not_exactly_right_are_refused(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Manifest.from_statement(_mutated(change))


def test_empty_and_single_file_mixups_are_refused() -> None:
    with pytest.raises(ValueError, match="empty model"):
        Manifest("m", Serialization(), ()).check()
    mixed = Manifest("m", Serialization(), (_resource(".", b"a"), _resource("b", b"b")))
    with pytest.raises(ValueError, match="single-file"):
        mixed.check()


@pytest.mark.parametrize(
    ("serialization_args", "message"),
    [
        ({"method": Method.SHARDS}, "positive shard_size"),
        ({"method": Method.SHARDS, "shard_size": 0}, "positive shard_size"),
        ({"shard_size": 5}, "only applies"),
        ({"hash_type": "sha1"}, "too weak"),
        ({"hash_type": "whirlpool"}, "unknown"),
        ({"method": Method.SHARDS, "shard_size": 4, "hash_type": "blake3"}, "blake3"),
        ({"ignore_paths": (".",)}, "root"),
    ],
)
def test_bad_serializations_are_refused(serialization_args: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Serialization(**serialization_args)
