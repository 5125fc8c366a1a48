"""Keys: generation, loading (ours and openssl's), ids, signatures."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelseal.errors import UsageError
from modelseal.signing import keys


@pytest.mark.parametrize("algorithm", list(keys.KeyAlgorithm))
def test_generated_keys_sign_and_verify(tmp_path: Path, algorithm: keys.KeyAlgorithm) -> None:
    private_path, public_path = keys.write_keypair(tmp_path / "k", algorithm)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    signer = keys.FileSigner(keys.load_private_key(private_path))
    public = keys.load_public_key(public_path)
    signature = signer.sign(b"data")
    assert keys.verify_signature(public, signature, b"data")
    assert not keys.verify_signature(public, signature, b"datA")
    assert not keys.verify_signature(public, b"garbage", b"data")


def test_key_id_and_hint() -> None:
    key = keys.generate().public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keys.key_id(key) == "sha256:" + hashlib.sha256(der).hexdigest()
    assert keys.key_hint(key) == hashlib.sha256(keys.public_pem(key)).hexdigest()


def test_existing_keys_are_not_overwritten(tmp_path: Path) -> None:
    keys.write_keypair(tmp_path / "k")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        keys.write_keypair(tmp_path / "k")
    assert (tmp_path / "k.key").read_bytes() == before


def test_encrypted_key_needs_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    private_path, _ = keys.write_keypair(tmp_path / "k", passphrase=b"s3cret")
    assert b"ENCRYPTED" in private_path.read_bytes()
    with pytest.raises(UsageError, match=keys.PASSPHRASE_ENV):
        keys.load_private_key(private_path)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "wrong")
    with pytest.raises(UsageError, match="passphrase is wrong"):
        keys.load_private_key(private_path)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "s3cret")
    assert keys.load_private_key(private_path) is not None


@pytest.mark.parametrize(
    ("genkey", "to_pkcs8"),
    [
        (["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"], False),
        (["openssl", "ecparam", "-name", "secp384r1", "-genkey", "-noout"], True),
        (["openssl", "genpkey", "-algorithm", "ed25519"], False),
    ],
)
def test_openssl_made_keys_load(tmp_path: Path, genkey: list[str], to_pkcs8: bool) -> None:
    key_path = tmp_path / "k.pem"
    subprocess.run([*genkey, "-out", str(key_path)], check=True, capture_output=True)
    if to_pkcs8:
        subprocess.run(
            [
                "openssl",
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                str(key_path),
                "-out",
                str(tmp_path / "p8.pem"),
            ],
            check=True,
            capture_output=True,
        )
        key_path = tmp_path / "p8.pem"
    pub_path = tmp_path / "k.pub"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key_path), "-pubout", "-out", str(pub_path)],
        check=True,
        capture_output=True,
    )
    signer = keys.FileSigner(keys.load_private_key(key_path))
    assert keys.verify_signature(keys.load_public_key(pub_path), signer.sign(b"m"), b"m")


def test_unsupported_and_malformed_keys_are_refused(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.key").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "rsa.pub").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "junk").write_bytes(b"not a key")
    (tmp_path / "big").write_bytes(b"x" * (keys.MAX_KEY_FILE + 1))
    with pytest.raises(UsageError, match="only ECDSA"):
        keys.load_private_key(tmp_path / "rsa.key")
    with pytest.raises(UsageError, match="only ECDSA"):
        keys.load_public_key(tmp_path / "rsa.pub")
    with pytest.raises(UsageError, match="not a PEM public key"):
        keys.load_public_key(tmp_path / "junk")
    with pytest.raises(UsageError, match="not a PEM private key"):
        keys.load_private_key(tmp_path / "junk")
    with pytest.raises(UsageError, match="larger than"):
        keys.load_public_key(tmp_path / "big")
    with pytest.raises(UsageError, match="not found"):
        keys.load_public_key(tmp_path / "absent.pub")
