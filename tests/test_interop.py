"""Both directions with the upstream OpenSSF `model_signing` tool (real CLI, real library)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import modelseal
from conftest import KeyPair, make_keypair
from modelseal.errors import ModelMismatchError
from modelseal.signing.bundle import read_seal

pytestmark = pytest.mark.interop

UPSTREAM = Path(sys.executable).with_name("model_signing")


def upstream(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not UPSTREAM.exists():  # pragma: no cover - the test extras install it
        pytest.fail("model_signing is not installed: run `make test`")
    return subprocess.run(
        [str(UPSTREAM), *map(str, args)], capture_output=True, text=True, check=False
    )


def upstream_verify(model: Path, seal: Path, public: Path) -> subprocess.CompletedProcess[str]:
    return upstream("verify", "key", model, "--signature", seal, "--public_key", public)


_UPSTREAM_LIBRARY_VERIFY = (
    "import sys, model_signing\n"
    "model_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[1])"
    ".verify(sys.argv[2], sys.argv[3])\n"
    "print('Verification succeeded')\n"
)


def upstream_library_verify(
    model: Path, seal: Path, public: Path
) -> subprocess.CompletedProcess[str]:
    """Upstream's library guesses the serialization from the seal; its CLI always assumes
    sha256 `files`, so shards and blake3 seals (its own too) verify only through the library."""
    return subprocess.run(
        [sys.executable, "-c", _UPSTREAM_LIBRARY_VERIFY, str(public), str(model), str(seal)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("algorithm", "shard_size", "hash_type"),
    [
        ("ecdsa-p256", None, "sha256"),
        ("ecdsa-p384", 4096, "sha256"),
        ("ecdsa-p521", None, "blake3"),
    ],
)
def test_our_seals_verify_with_upstream(
    model: Path, key_dir: Path, algorithm: str, shard_size: int | None, hash_type: str
) -> None:
    pair = make_keypair(key_dir, algorithm, algorithm)
    modelseal.seal(model, key=pair.private, shard_size=shard_size, algorithm=hash_type)
    check = (
        upstream_verify
        if shard_size is None and hash_type == "sha256"
        else (upstream_library_verify)
    )
    result = check(model, model / "model.sig", pair.public)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification succeeded" in result.stdout
    # ...and upstream refuses it too once the model is tampered with.
    (model / "weights" / "layer1.bin").write_bytes(b"tampered")
    refused = check(model, model / "model.sig", pair.public)
    assert refused.returncode != 0


def test_our_single_file_seal_verifies_with_upstream(single_file: Path, keypair: KeyPair) -> None:
    modelseal.seal(single_file, key=keypair.private)
    result = upstream_verify(single_file, Path(f"{single_file}.sig"), keypair.public)
    assert result.returncode == 0, result.stdout + result.stderr


def test_upstream_bundles_verify_with_us(
    model: Path, single_file: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    for target, seal in ((model, model / "model.sig"), (single_file, tmp_path / "file.sig")):
        signed = upstream(
            "sign", "key", target, "--private_key", keypair.private, "--signature", seal
        )
        assert signed.returncode == 0, signed.stdout + signed.stderr
        result = modelseal.verify(target, public_keys=[keypair.public], signature=seal)
        assert result.signed
    # Tampering with an upstream-sealed model is refused by us, with the file named.
    (model / "config.json").write_text("{}")
    with pytest.raises(ModelMismatchError) as caught:
        modelseal.verify(model, public_keys=[keypair.public])
    assert [f.name for f in caught.value.failure.findings] == ["config.json"]  # type: ignore[union-attr]


def test_upstream_shard_bundles_verify_with_us(
    model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    code = (
        "import sys, model_signing\n"
        "hashing = model_signing.hashing.Config().use_shard_serialization(shard_size=5000)\n"
        "model_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1])"
        ".set_hashing_config(hashing).sign(sys.argv[2], sys.argv[3])\n"
    )
    seal = tmp_path / "shards.sig"
    subprocess.run(
        [sys.executable, "-c", code, str(keypair.private), str(model), str(seal)], check=True
    )
    statement = json.loads(read_seal(seal).envelope.payload)
    assert statement["predicate"]["serialization"]["method"] == "shards"
    assert modelseal.verify(model, public_keys=[keypair.public], signature=seal).method == "shards"


def test_same_model_same_root_digest_whichever_tool_sealed_it(
    model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    (model / "a-b").write_text("dash sorts after the a/ directory by components")
    (model / "a").mkdir()
    (model / "a" / "b").write_text("x")
    seal = tmp_path / "upstream.sig"
    signed = upstream("sign", "key", model, "--private_key", keypair.private, "--signature", seal)
    assert signed.returncode == 0, signed.stderr
    theirs = json.loads(read_seal(seal).envelope.payload)["subject"][0]["digest"]["sha256"]
    ours = modelseal.seal(model, key=keypair.private).root_digest
    assert ours == f"sha256:{theirs}"


def test_a_copy_verifies_with_both_tools(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    modelseal.seal(model, key=keypair.private)
    copy = Path(shutil.copytree(model, tmp_path / "copy"))
    assert upstream_verify(copy, copy / "model.sig", keypair.public).returncode == 0
    assert modelseal.verify(copy, public_keys=[keypair.public]).signed
