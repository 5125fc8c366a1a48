"""seal() and verify() through the library: results, reports, audit events."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import modelseal
from conftest import KeyPair, make_keypair
from modelseal.audit import JsonLinesHandler, logger
from modelseal.errors import ModelMismatchError, SignatureError, UsageError
from modelseal.signing.bundle import read_seal


def test_directory_round_trip(model: Path, keypair: KeyPair) -> None:
    sealed = modelseal.seal(model, key=keypair.private)
    assert sealed.seal == str(model / "model.sig")
    assert sealed.files == 4
    result = modelseal.verify(model, public_keys=[keypair.public])
    assert result.root_digest == sealed.root_digest
    assert result.signers == (sealed.signer,)
    assert result.signed
    assert result.files == 4
    assert result.to_json()["verified"] is True


def test_single_file_round_trip(single_file: Path, keypair: KeyPair) -> None:
    sealed = modelseal.seal(single_file, key=keypair.private)
    assert sealed.seal == str(single_file) + ".sig"
    assert modelseal.verify(single_file, public_keys=[keypair.public]).files == 1


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "ecdsa-p521", "ed25519"])
def test_every_key_type(model: Path, key_dir: Path, algorithm: str) -> None:
    pair = make_keypair(key_dir, algorithm, algorithm)
    modelseal.seal(model, key=pair.private)
    assert modelseal.verify(model, public_keys=[pair.public]).signed


@pytest.mark.parametrize(
    ("algorithm", "shard_size"), [("blake3", None), ("sha512", None), ("sha256", 4096)]
)
def test_algorithms_and_shards(
    model: Path, keypair: KeyPair, algorithm: str, shard_size: int | None
) -> None:
    modelseal.seal(model, key=keypair.private, algorithm=algorithm, shard_size=shard_size)
    result = modelseal.verify(model, public_keys=[keypair.public])
    assert result.hash_type == algorithm
    assert result.method == ("shards" if shard_size else "files")


def test_shard_report_names_the_first_differing_byte_range(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private, shard_size=4096)
    with (model / "weights" / "layer0.bin").open("r+b") as handle:
        handle.seek(9000)
        handle.write(b"\xff")
    with pytest.raises(ModelMismatchError) as caught:
        modelseal.verify(model, public_keys=[keypair.public])
    (finding,) = caught.value.failure.findings  # type: ignore[union-attr]
    assert finding.kind == "changed"
    assert finding.name == "weights/layer0.bin"
    assert "from byte 8192" in finding.detail
    assert finding.expected is not None
    assert finding.expected.startswith("weights/layer0.bin:8192:12288 sha256:")


def test_seal_elsewhere_and_custom_name(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    seal_path = tmp_path / "seals" / "model.bundle"
    seal_path.parent.mkdir()
    sealed = modelseal.seal(model, key=keypair.private, signature=seal_path, name="fraud-v3")
    assert sealed.model_name == "fraud-v3"
    assert not (model / "model.sig").exists()
    result = modelseal.verify(model, public_keys=[keypair.public], signature=seal_path)
    assert result.model_name == "fraud-v3"


def test_seal_in_a_subdirectory_of_the_model_is_left_out(model: Path, keypair: KeyPair) -> None:
    seal_path = model / "meta" / "seal.json"
    seal_path.parent.mkdir()
    modelseal.seal(model, key=keypair.private, signature=seal_path)
    assert modelseal.verify(model, public_keys=[keypair.public], signature=seal_path).files == 4


def test_ignored_paths_are_recorded_and_honoured(model: Path, keypair: KeyPair) -> None:
    (model / "README.md").write_text("v1")
    modelseal.seal(model, key=keypair.private, ignore=["README.md"])
    (model / "README.md").write_text("v2, edited after sealing")
    assert modelseal.verify(model, public_keys=[keypair.public]).files == 4


def test_unsigned_seal_detects_corruption_only(model: Path, keypair: KeyPair) -> None:
    sealed = modelseal.seal(model, unsigned=True)
    assert not sealed.signed
    assert read_seal(model / "model.sig").envelope.signatures == ()
    result = modelseal.verify(model, allow_unsigned=True)
    assert not result.signed
    assert result.signers == ()
    with pytest.raises(SignatureError, match="no signature"):
        modelseal.verify(model, public_keys=[keypair.public])
    (model / "config.json").write_text("{}")
    with pytest.raises(ModelMismatchError):
        modelseal.verify(model, allow_unsigned=True)


def test_several_trusted_keys_any_one_may_have_signed(
    model: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    modelseal.seal(model, key=other_keypair.private)
    result = modelseal.verify(model, public_keys=[keypair.public, other_keypair.public])
    assert len(result.signers) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"unsigned": True, "key": "x"}, "exactly one"),
        ({"unsigned": True, "algorithm": "md5"}, "too weak"),
        ({"unsigned": True, "shard_size": 0}, "positive"),
        ({"unsigned": True, "ignore": ["../x"]}, "not allowed"),
        ({"unsigned": True, "ignore": ["/elsewhere"]}, "outside the model"),
    ],
)
def test_seal_usage_errors(model: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        modelseal.seal(model, **kwargs)  # type: ignore[arg-type]
    assert not (model / "model.sig").exists()


def test_verify_usage_errors(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    modelseal.seal(model, key=keypair.private)
    with pytest.raises(UsageError, match="no trusted public key"):
        modelseal.verify(model)
    with pytest.raises(UsageError, match="not both"):
        modelseal.verify(model, public_keys=[keypair.public], allow_unsigned=True)
    with pytest.raises(UsageError, match="not found"):
        modelseal.verify(tmp_path / "absent", public_keys=[keypair.public])
    with pytest.raises(UsageError, match="not found"):
        modelseal.verify(model, public_keys=[tmp_path / "absent.pub"])


def test_copy_elsewhere_still_verifies(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    modelseal.seal(model, key=keypair.private)
    copy = shutil.copytree(model, tmp_path / "deployed" / "renamed-model")
    assert modelseal.verify(copy, public_keys=[keypair.public]).model_name == "model"


def test_audit_events(
    model: Path, keypair: KeyPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_file = tmp_path / "audit.jsonl"
    handler = JsonLinesHandler(str(log_file))
    logger.addHandler(handler)
    try:
        modelseal.seal(model, key=keypair.private)
        with caplog.at_level(logging.INFO, logger="modelseal.audit"):
            modelseal.verify(model, public_keys=[keypair.public])
            (model / "tokenizer.txt").unlink()
            with pytest.raises(ModelMismatchError):
                modelseal.verify(model, public_keys=[keypair.public])
    finally:
        logger.removeHandler(handler)
        handler.close()
    ok, bad = (r for r in caplog.records if r.name == "modelseal.audit")
    assert ok.levelno == logging.INFO
    assert bad.levelno == logging.ERROR
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["outcome"] for e in events] == ["verified", "failed"]
    assert events[0]["signer_key_ids"] == events[1]["signer_key_ids"] != []
    assert events[1]["reasons"] == ["missing tokenizer.txt: sealed file is not on disk"]
    assert events[1]["expected_root"] == events[0]["expected_root"]
    assert events[1]["actual_root"] != events[1]["expected_root"]
    for event in events:
        assert event["model_name"] == "model"
        assert event["model_path"] == str(model)
        assert event["time"].endswith("Z")


def test_unsafe_findings_name_the_path(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "config.json").unlink()
    (model / "config.json").symlink_to("tokenizer.txt")
    with pytest.raises(modelseal.UnsafeModelError) as caught:
        modelseal.verify(model, public_keys=[keypair.public])
    (finding,) = caught.value.failure.findings  # type: ignore[union-attr]
    assert (finding.kind, finding.name) == ("unsafe", "config.json")
    assert "symlink" in finding.detail
