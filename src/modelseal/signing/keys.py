"""Signing keys: generate, load, identify, sign and verify.

Supported: ECDSA on P-256/P-384/P-521 (interoperable with upstream
model_signing, DER signatures, hash sized to the curve) and Ed25519.
A key id is `sha256:<hex of the DER SubjectPublicKeyInfo>`; the bundle's
`hint` is upstream's: the SHA-256 hex of the public key PEM.
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from modelseal._internal.files import read_capped
from modelseal.errors import UsageError

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PUBLIC_KEY_TYPES = (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
PRIVATE_KEY_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)

PASSPHRASE_ENV = "MODELSEAL_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
MAX_KEY_FILE = 64 * 1024

_CURVES: dict[str, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm]]] = {
    "secp256r1": (ec.SECP256R1, hashes.SHA256),
    "secp384r1": (ec.SECP384R1, hashes.SHA384),
    "secp521r1": (ec.SECP521R1, hashes.SHA512),
}


class KeyAlgorithm(str, enum.Enum):
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    ECDSA_P521 = "ecdsa-p521"
    ED25519 = "ed25519"


@runtime_checkable
class Signer(Protocol):
    """Anything that can sign: a key in a file today, PKCS#11 or a KMS later."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


def _ecdsa_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    curve = _CURVES.get(key.curve.name)
    if curve is None:
        raise UsageError(f"unsupported elliptic curve {key.curve.name}")
    return curve[1]()


def _check_supported(key: object, source: str) -> None:
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if key.curve.name not in _CURVES:
            raise UsageError(f"{source}: curve {key.curve.name} is not supported (P-256/384/521)")
        return
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return
    raise UsageError(f"{source}: only ECDSA (P-256/384/521) and Ed25519 keys are supported")


@dataclass(frozen=True)
class FileSigner:
    """A signer backed by a private key loaded in memory."""

    private_key: PrivateKey

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(data)
        return self.private_key.sign(data, ec.ECDSA(_ecdsa_hash(self.private_key.public_key())))


def as_signer(key: object) -> Signer:
    """A signer from a private key path, a private key object, or a signer."""
    if isinstance(key, (str, os.PathLike)):
        return FileSigner(load_private_key(key))
    if isinstance(key, PRIVATE_KEY_TYPES):
        return FileSigner(key)
    if isinstance(key, Signer):
        return key
    raise UsageError(f"not a private key, a path to one, or a signer: {key!r}")


def verify_signature(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` over `data` verifies with `key`."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(_ecdsa_hash(key)))
    except (InvalidSignature, ValueError):
        return False
    return True


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: PublicKey) -> str:
    """`sha256:<hex>` of the DER SubjectPublicKeyInfo: how people and policies name a key."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def key_hint(key: PublicKey) -> str:
    """The bundle's `publicKey.hint`: SHA-256 hex of the PEM (upstream's convention)."""
    return hashlib.sha256(public_pem(key)).hexdigest()


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """A PEM public key (SubjectPublicKeyInfo) from a file."""
    data = read_capped(path, MAX_KEY_FILE, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{path} is not a PEM public key") from None
    _check_supported(key, str(path))
    assert isinstance(key, PUBLIC_KEY_TYPES)
    return key


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> PrivateKey:
    """A PEM private key (PKCS#8 or traditional, encrypted or not) from a file.

    The passphrase defaults to $MODELSEAL_KEY_PASSPHRASE.
    """
    data = read_capped(path, MAX_KEY_FILE, "private key")
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise UsageError(f"{path} is encrypted: set {PASSPHRASE_ENV}") from None
        raise UsageError(f"{path} is not encrypted, but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{path} is not a PEM private key, or the passphrase is wrong") from None
    _check_supported(key, str(path))
    assert isinstance(key, PRIVATE_KEY_TYPES)
    return key


def generate(algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256) -> PrivateKey:
    if algorithm is KeyAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    curve: ec.EllipticCurve = {
        KeyAlgorithm.ECDSA_P256: ec.SECP256R1(),
        KeyAlgorithm.ECDSA_P384: ec.SECP384R1(),
        KeyAlgorithm.ECDSA_P521: ec.SECP521R1(),
    }[algorithm]
    return ec.generate_private_key(curve)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting a key") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)


def write_keypair(
    base: str | os.PathLike[str],
    algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
    passphrase: bytes | None = None,
) -> tuple[Path, Path]:
    """Write BASE.key (PKCS#8 PEM, 0600, encrypted when a passphrase is given) and BASE.pub."""
    key = generate(algorithm)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    base_path = Path(base)
    private_path = base_path.with_name(base_path.name + ".key")
    public_path = base_path.with_name(base_path.name + ".pub")
    for existing in (private_path, public_path):
        if existing.exists():
            raise UsageError(f"{existing} already exists; not overwriting a key")
    _write_new(private_path, private_pem, 0o600)
    _write_new(public_path, public_pem(key.public_key()), 0o644)
    return private_path, public_path
