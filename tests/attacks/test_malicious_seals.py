"""Malicious or broken seals: lying statements signed by a trusted key, and broken seal files.

The statements under assets/statements/ (made by make_assets.py) are each signed here
with the trusted key, so the signature verifies and only the statement checks stand
between the seal and the model. Seal files under assets/seals/ are not seals at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import modelseal
from _helpers import assert_cli_refused, refused, verify_in_subprocess
from conftest import Cli, KeyPair, write_model
from modelseal import IntegrityError, ModelMismatchError, SealError, SignatureError
from modelseal.hashing import hash_model
from modelseal.manifest import GIT_PATHS, Serialization
from modelseal.signing.bundle import MAX_SEAL_BYTES, Bundle, write_seal
from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature
from modelseal.signing.keys import FileSigner, key_hint, key_id, load_private_key, load_public_key

ASSETS = Path(__file__).parent / "assets"


def sign_statement(
    seal: Path,
    payload: bytes,
    private_key: Path,
    *,
    payload_type: str = IN_TOTO_PAYLOAD_TYPE,
) -> None:
    """Write a seal whose DSSE envelope carries `payload`, validly signed by `private_key`."""
    signer = FileSigner(load_private_key(private_key))
    signature = Signature(signer.sign(Envelope(payload_type, payload, ()).signed_bytes()))
    envelope = Envelope(payload_type, payload, (signature,))
    write_seal(seal, Bundle(envelope, key_hint(signer.public_key)))


def label(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_finding(exc: IntegrityError, kind: str, reason: str) -> None:
    assert exc.failure is not None
    assert [f.kind for f in exc.failure.findings] == [kind]
    assert reason in exc.failure.findings[0].detail


def seal_json(model: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model / "model.sig").read_bytes())
    return data


def write_json(model: Path, data: dict[str, Any]) -> None:
    (model / "model.sig").write_text(json.dumps(data, indent=2))


# --- signed statements that lie ----------------------------------------------------------

STATEMENTS: dict[str, str] = {
    "names_dotdot": "path component '..' is not allowed: '../../etc/passwd'",
    "names_dotdot_inside": "path component '..' is not allowed: 'weights/../config.json'",
    "names_dot_segment": "path component '.' is not allowed: './config.json'",
    "names_absolute": "absolute path: '/etc/passwd'",
    "names_backslash": "backslash in name",
    "names_drive_letter": "drive-letter path: 'C:/Windows/system.ini'",
    "names_nul": "NUL byte in name",
    "names_control_char": "control character in name",
    "names_empty": "empty name: ''",
    "names_single_file_and_others": "a single-file model ('.') cannot list other files",
    "names_duplicate": "duplicate resource names",
    "names_casefold_duplicate": "duplicate resource names (after case folding / NFC)",
    "names_nfc_nfd_duplicate": "duplicate resource names (after case folding / NFC)",
    "alg_md5": "algorithm md5 is too weak to be trusted",
    "alg_sha1": "algorithm sha1 is too weak to be trusted",
    "alg_unknown": "unknown digest algorithm 'sha3-999'",
    "alg_md5_resource_in_sha256_seal": "algorithm md5 is too weak to be trusted",
    "empty_resources": "the manifest lists no files",
    "root_mismatch": "root digest in the subject does not match the resources",
    "wrong_predicate_type": "predicateType 'https://slsa.dev/provenance/v1' is not",
    "two_subjects": "statement must have exactly one subject",
    "shards_gap": "shards of 'weights/layer0.bin' do not tile the file at byte 15",
    "shards_overlap": "shards of 'weights/layer0.bin' do not tile the file at byte 5",
    "shards_not_from_zero": "shards of 'weights/layer0.bin' do not tile the file at byte 3",
    "shards_too_long": "shards of 'weights/layer0.bin' do not tile the file at byte 0",
    "shards_short_middle": "shard 'weights/layer0.bin:10:15' is not 10 bytes long",
    "shards_empty_range": "shards of 'weights/layer0.bin' do not tile the file at byte 10",
    "shards_non_ascii_offset": "has a malformed byte range",
}


def test_every_statement_asset_is_covered() -> None:
    assets = {p.stem for p in (ASSETS / "statements").glob("*.json")}
    assert assets == set(STATEMENTS)


@pytest.mark.parametrize(("asset", "reason"), STATEMENTS.items(), ids=list(STATEMENTS))
def test_signed_malicious_statement_is_refused(
    model: Path, keypair: KeyPair, cli: Cli, asset: str, reason: str
) -> None:
    payload = (ASSETS / "statements" / f"{asset}.json").read_bytes()
    sign_statement(model / "model.sig", payload, keypair.private)

    exc = refused(model, keypair, SealError)
    assert_one_finding(exc, "seal", "the sealed statement is not a valid OMS v1.0 manifest")
    assert_one_finding(exc, "seal", reason)

    assert_cli_refused(cli("verify", model, "--public-key", keypair.public), reason)


def test_signed_deeply_nested_statement_is_refused(model: Path, keypair: KeyPair) -> None:
    payload = b"[" * 100_000 + b"]" * 100_000
    sign_statement(model / "model.sig", payload, keypair.private)

    exc = refused(model, keypair, SealError)
    assert_one_finding(exc, "seal", "the sealed statement is nested too deeply")


def test_honest_statement_signed_the_same_way_verifies(model: Path, keypair: KeyPair) -> None:
    """The control: the signing helper itself produces seals that verify."""
    serialization = Serialization(ignore_paths=(*GIT_PATHS, "model.sig"))
    manifest = hash_model(model, serialization)
    sign_statement(model / "model.sig", manifest.to_payload(), keypair.private)

    result = modelseal.verify(model, public_keys=[keypair.public])
    assert result.root_digest == "sha256:" + manifest.root_digest.hex()
    assert result.signers == (key_id(load_public_key(keypair.public)),)


# --- seal files that are not seals ---------------------------------------------------------


def test_missing_seal_is_refused(model: Path, keypair: KeyPair, cli: Cli) -> None:
    exc = refused(model, keypair, SealError)
    assert_one_finding(exc, "seal", "the model is not sealed")
    assert_cli_refused(
        cli("verify", model, "--public-key", keypair.public), "the model is not sealed"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (lambda seal: b"", "is empty"),
        (lambda seal: b"  \n\t\n", "is empty"),
        (lambda seal: seal[: len(seal) // 2], "the seal is not valid JSON"),
        (lambda seal: (ASSETS / "seals" / "garbage.sig").read_bytes(), "not UTF-8 text"),
        (lambda seal: (ASSETS / "seals" / "array.sig").read_bytes(), "not a JSON object"),
        (
            lambda seal: (ASSETS / "seals" / "nested.sig").read_bytes(),
            "the seal is not valid JSON (nested too deeply)",
        ),
    ],
    ids=["empty", "whitespace", "truncated", "garbage", "json-array", "nested"],
)
def test_malformed_seal_file_is_refused(
    model: Path, keypair: KeyPair, cli: Cli, content: Callable[[bytes], bytes], reason: str
) -> None:
    modelseal.seal(model, key=keypair.private)
    seal = model / "model.sig"
    seal.write_bytes(content(seal.read_bytes()))

    exc = refused(model, keypair, SealError)
    assert_one_finding(exc, "seal", reason)
    assert_cli_refused(cli("verify", model, "--public-key", keypair.public), reason)


def test_huge_seal_is_refused_before_it_is_read(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    seal = model / "model.sig"
    os.truncate(seal, MAX_SEAL_BYTES + 1)  # sparse: costs no disk, would cost 64 MiB to read

    tracemalloc.start()
    try:
        exc = refused(model, keypair, SealError)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_one_finding(exc, "seal", f"is larger than {MAX_SEAL_BYTES} bytes")
    # Refused from its size alone: its bytes were never read into memory.
    assert peak < MAX_SEAL_BYTES // 8


def test_seal_replaced_by_directory_is_refused(model: Path, keypair: KeyPair, cli: Cli) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "model.sig").unlink()
    (model / "model.sig").mkdir()

    exc = refused(model, keypair, SealError)
    assert_one_finding(exc, "seal", "is not a regular file")
    assert_cli_refused(
        cli("verify", model, "--public-key", keypair.public), "is not a regular file"
    )


def test_seal_replaced_by_fifo_is_refused_without_hanging(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "model.sig").unlink()
    os.mkfifo(model / "model.sig")

    assert_cli_refused(verify_in_subprocess(model, keypair), "is not a regular file")


# --- signatures ----------------------------------------------------------------------------


def test_payload_edited_after_signing_is_refused(model: Path, keypair: KeyPair, cli: Cli) -> None:
    modelseal.seal(model, key=keypair.private)
    data = seal_json(model)
    payload = base64.b64decode(data["dsseEnvelope"]["payload"])
    statement = json.loads(payload)
    resource = next(r for r in statement["predicate"]["resources"] if r["name"] == "config.json")
    old = resource["digest"]
    new = ("0" if old[0] != "0" else "1") + old[1:]
    edited = payload.replace(old.encode(), new.encode())
    assert edited != payload
    data["dsseEnvelope"]["payload"] = base64.b64encode(edited).decode()
    write_json(model, data)

    exc = refused(model, keypair, SignatureError)
    assert_one_finding(exc, "signature", "no signature on the seal verifies with a trusted key")
    assert_cli_refused(
        cli("verify", model, "--public-key", keypair.public),
        "no signature on the seal verifies with a trusted key",
    )


def test_seal_signed_by_another_key_is_refused(
    model: Path, keypair: KeyPair, other_keypair: KeyPair, cli: Cli
) -> None:
    modelseal.seal(model, key=other_keypair.private)
    other_hint = key_hint(load_public_key(other_keypair.public))

    exc = refused(model, keypair, SignatureError)
    assert_one_finding(
        exc, "signature", f"signed by a key that is not trusted (key hint {other_hint})"
    )
    assert other_hint in str(exc)
    assert_cli_refused(cli("verify", model, "--public-key", keypair.public), other_hint)


def test_seal_with_trusted_hint_but_signed_by_another_key_is_refused(
    model: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    modelseal.seal(model, key=other_keypair.private)
    data = seal_json(model)
    data["verificationMaterial"]["publicKey"]["hint"] = key_hint(load_public_key(keypair.public))
    write_json(model, data)

    exc = refused(model, keypair, SignatureError)
    assert_one_finding(exc, "signature", "no signature on the seal verifies with a trusted key")


def test_seal_with_signatures_removed_is_refused(model: Path, keypair: KeyPair, cli: Cli) -> None:
    modelseal.seal(model, key=keypair.private)
    data = seal_json(model)
    data["dsseEnvelope"]["signatures"] = []
    write_json(model, data)

    exc = refused(model, keypair, SignatureError)
    assert_one_finding(exc, "signature", "the seal carries no signature")
    assert_cli_refused(
        cli("verify", model, "--public-key", keypair.public), "the seal carries no signature"
    )


def test_seal_with_a_corrupted_signature_is_refused(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    data = seal_json(model)
    signature = bytearray(base64.b64decode(data["dsseEnvelope"]["signatures"][0]["sig"]))
    signature[-1] ^= 0x01
    data["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(signature).decode()
    write_json(model, data)

    exc = refused(model, keypair, SignatureError)
    assert_one_finding(exc, "signature", "no signature on the seal verifies with a trusted key")


def test_seal_with_another_payload_type_is_refused(model: Path, keypair: KeyPair, cli: Cli) -> None:
    serialization = Serialization(ignore_paths=(*GIT_PATHS, "model.sig"))
    payload = hash_model(model, serialization).to_payload()
    # Validly signed over the other type: only the type check can refuse it.
    sign_statement(model / "model.sig", payload, keypair.private, payload_type="application/json")

    exc = refused(model, keypair, SealError)
    assert_one_finding(exc, "seal", "payloadType 'application/json' is not")
    assert_cli_refused(
        cli("verify", model, "--public-key", keypair.public),
        "payloadType 'application/json' is not",
    )


def test_another_models_seal_is_refused(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    # Same file names; the weights differ, config.json and tokenizer.txt are the same text.
    other = write_model(tmp_path / "other", seed=2)
    other_seal = modelseal.seal(other, key=keypair.private)
    shutil.copy(other / "model.sig", model / "model.sig")

    exc = refused(model, keypair, ModelMismatchError)
    assert exc.failure is not None
    assert [(f.kind, f.name, f.expected, f.actual) for f in exc.failure.findings] == [
        ("changed", name, label(other / name), label(model / name))
        for name in ("weights/layer0.bin", "weights/layer1.bin")
    ]
    assert exc.failure.expected_root == other_seal.root_digest
    assert exc.failure.signers == (key_id(load_public_key(keypair.public)),)


def test_fresh_seal_verifies(model: Path, keypair: KeyPair, cli: Cli) -> None:
    modelseal.seal(model, key=keypair.private)
    result = cli("verify", model, "--public-key", keypair.public)
    assert result.code == 0, result.err
    assert result.err.startswith("verified model: 4 files")
