"""Generate the committed assets of the attack suite (run once, commit the output).

    .venv/bin/python tests/attacks/make_assets.py

Writes, deterministically (a re-run produces identical bytes):

- assets/statements/*.json: OMS v1.0 in-toto statements, each valid-looking (right
  `_type`, `predicateType`, one subject whose root digest matches the listed resources)
  except for one malicious detail named by the file. The tests sign them with a trusted
  key, so the signature passes and only the statement checks stand in the way.
- assets/seals/*.sig: seal files that are not seals at all (garbage bytes, a JSON
  array, JSON nested 200,000 levels deep).

The tests never regenerate these files; they read the committed bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent / "assets"
STATEMENTS = ASSETS / "statements"
SEALS = ASSETS / "seals"

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
GIT_PATHS = [".git", ".gitattributes", ".github", ".gitignore", "model.sig"]

# The honest files every statement starts from (same names as the test fixture model).
FILES = ["config.json", "tokenizer.txt", "weights/layer0.bin", "weights/layer1.bin"]

Entry = tuple[str, str, bytes]  # (name, algorithm label, raw digest)


def content(name: str) -> bytes:
    """Made-up file contents; only their digests appear in the statements."""
    return f"contents of {name}\n".encode()


def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "sha3-999":  # no such algorithm: label 32 bytes as if it existed
        return hashlib.sha256(data).digest()
    return hashlib.new(algorithm, data).digest()


def entries(names: list[str], algorithm: str = "sha256") -> list[Entry]:
    return [(name, algorithm, digest(algorithm, content(name))) for name in names]


def root_of(resources: list[Entry]) -> bytes:
    """OMS v1.0 root: SHA-256 over the concatenated raw digests, in listed order."""
    hasher = hashlib.sha256()
    for _, _, raw in resources:
        hasher.update(raw)
    return hasher.digest()


def statement(
    resources: list[Entry],
    *,
    hash_type: str = "sha256",
    method: str = "files",
    shard_size: int | None = None,
    root: bytes | None = None,
    predicate_type: str = PREDICATE_TYPE,
    subjects: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    serialization: dict[str, Any] = {
        "method": method,
        "hash_type": hash_type,
        "allow_symlinks": False,
        "ignore_paths": GIT_PATHS,
    }
    if shard_size is not None:
        serialization["shard_size"] = shard_size
    root_hex = (root if root is not None else root_of(resources)).hex()
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects or [{"name": "model", "digest": {"sha256": root_hex}}],
        "predicateType": predicate_type,
        "predicate": {
            "serialization": serialization,
            "resources": [
                {"name": name, "algorithm": alg, "digest": raw.hex()}
                for name, alg, raw in resources
            ],
        },
    }


def shards(path: str, ranges: list[tuple[int, int]], shard_size: int) -> list[Entry]:
    label = f"sha256-sharded-{shard_size}"
    return [
        (f"{path}:{start}:{end}", label, digest("sha256", content(f"{path}:{start}:{end}")))
        for start, end in ranges
    ]


def sharded(resources: list[Entry], shard_size: int) -> dict[str, Any]:
    return statement(resources, method="shards", shard_size=shard_size)


def with_extra(name: str) -> dict[str, Any]:
    """The honest files plus one more resource called `name`."""
    return statement(entries([*FILES, name]))


def build() -> dict[str, dict[str, Any]]:
    honest = entries(FILES)
    flipped = bytearray(root_of(honest))
    flipped[-1] ^= 0x01
    md5_under_sha256 = entries(FILES)
    md5_under_sha256[0] = ("config.json", "md5", digest("md5", content("config.json")))
    root_hex = root_of(honest).hex()
    other_root = hashlib.sha256(b"another model").hexdigest()
    return {
        # Names that escape the root, or mean different things on different systems.
        "names_dotdot": with_extra("../../etc/passwd"),
        "names_dotdot_inside": with_extra("weights/../config.json"),
        "names_dot_segment": with_extra("./config.json"),
        "names_absolute": with_extra("/etc/passwd"),
        "names_backslash": with_extra("weights\\..\\..\\secret.bin"),
        "names_drive_letter": with_extra("C:/Windows/system.ini"),
        "names_nul": with_extra("config.json\x00.txt"),
        "names_control_char": with_extra("config\n.json"),
        "names_empty": with_extra(""),
        "names_single_file_and_others": with_extra("."),
        # Names that collide (exactly, after case folding, after Unicode NFC).
        "names_duplicate": statement(
            [*honest[:1], ("config.json", "sha256", digest("sha256", b"evil")), *honest[1:]]
        ),
        "names_casefold_duplicate": statement(entries(["CONFIG.json", *FILES])),
        "names_nfc_nfd_duplicate": statement(entries(["cafe\u0301.txt", "caf\u00e9.txt"])),
        # Weak or unknown digest algorithms.
        "alg_md5": statement(entries(FILES, "md5"), hash_type="md5"),
        "alg_sha1": statement(entries(FILES, "sha1"), hash_type="sha1"),
        "alg_unknown": statement(entries(FILES, "sha3-999"), hash_type="sha3-999"),
        "alg_md5_resource_in_sha256_seal": statement(md5_under_sha256),
        # Statements about nothing, or about something else.
        "empty_resources": statement([]),
        "root_mismatch": statement(honest, root=bytes(flipped)),
        "wrong_predicate_type": statement(honest, predicate_type="https://slsa.dev/provenance/v1"),
        "two_subjects": statement(
            honest,
            subjects=[
                {"name": "model", "digest": {"sha256": root_hex}},
                {"name": "other-model", "digest": {"sha256": other_root}},
            ],
        ),
        # Shards that do not tile their file (shard size 10).
        "shards_gap": sharded(shards("weights/layer0.bin", [(0, 10), (15, 20)], 10), 10),
        "shards_overlap": sharded(shards("weights/layer0.bin", [(0, 10), (5, 15)], 10), 10),
        "shards_not_from_zero": sharded(shards("weights/layer0.bin", [(3, 13)], 10), 10),
        "shards_too_long": sharded(shards("weights/layer0.bin", [(0, 25)], 10), 10),
        "shards_short_middle": sharded(
            shards("weights/layer0.bin", [(0, 10), (10, 15), (15, 25)], 10), 10
        ),
        "shards_empty_range": sharded(shards("weights/layer0.bin", [(0, 10), (10, 10)], 10), 10),
        # A byte range written with non-ASCII digits (ARABIC-INDIC "10"), which int() accepts.
        "shards_non_ascii_offset": sharded(
            [("weights/layer0.bin:0:\u0661\u0660", "sha256-sharded-10", digest("sha256", b""))],
            10,
        ),
    }


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path.relative_to(ASSETS.parent)} ({len(data)} bytes)")


def main() -> None:
    for name, value in build().items():
        write(STATEMENTS / f"{name}.json", json.dumps(value, indent=2, sort_keys=True).encode())
    # Bytes that are neither UTF-8 nor JSON (fixed seed: reproducible).
    write(SEALS / "garbage.sig", b"\x80\xff" + random.Random(20240601).randbytes(4094))
    write(
        SEALS / "array.sig", b'[{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]\n'
    )
    write(SEALS / "nested.sig", b"[" * 200_000)


if __name__ == "__main__":
    main()
