"""The seal file: a sigstore bundle v0.3 (key mode) around a DSSE envelope.

Reading is bounded (size cap before parsing, nesting depth caught) and strict
in every field that matters for security.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelseal._internal.files import write_atomic
from modelseal.errors import Error, SealError
from modelseal.signing import keys
from modelseal.signing.dsse import Envelope

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_ACCEPTED_MEDIA_TYPES = {
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
}
MAX_SEAL_BYTES = 64 * 1024 * 1024
"""A seal larger than this is refused before it is parsed."""


@dataclass(frozen=True)
class Bundle:
    envelope: Envelope
    key_hint: str | None = None

    def verified_by(self, trusted: Sequence[keys.PublicKey]) -> tuple[str, ...]:
        """Ids of the trusted keys with a signature that verifies over the envelope, each once."""
        signed = self.envelope.signed_bytes()
        return tuple(
            dict.fromkeys(
                keys.key_id(key)
                for signature in self.envelope.signatures
                for key in trusted
                if keys.verify_signature(key, signature.sig, signed)
            )
        )

    def unverified_reason(self, trusted: Sequence[keys.PublicKey], what: str) -> str:
        """Why no trusted key verified `what` (the seal, the provenance): for the one-line error."""
        if self.key_hint is not None and self.key_hint not in {keys.key_hint(k) for k in trusted}:
            return f"{what} was signed by a key that is not trusted (key hint {self.key_hint})"
        return (
            f"no signature on {what} verifies with a trusted key "
            "(changed after signing, or signed by another key)"
        )

    def to_json(self) -> bytes:
        material: dict[str, Any] = {"tlogEntries": []}
        if self.key_hint is not None:
            material["publicKey"] = {"hint": self.key_hint}
        data = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": self.envelope.to_json(),
        }
        return json.dumps(data, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, what: str = "seal") -> Bundle:
        """Parse a bundle (`what`: the seal, the provenance). Raises ValueError, one line."""
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ValueError(f"the {what} is not valid JSON (nested too deeply)") from None
        except UnicodeDecodeError:
            raise ValueError(f"the {what} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the {what} is not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"the {what} is not a JSON object")
        media_type = data.get("mediaType")
        if media_type not in _ACCEPTED_MEDIA_TYPES:
            raise ValueError(f"the {what}'s mediaType {media_type!r} is not a sigstore bundle v0.3")
        material = data.get("verificationMaterial", {})
        if not isinstance(material, dict):
            raise ValueError("verificationMaterial must be a JSON object")
        hint: str | None = None
        public_key = material.get("publicKey")
        if public_key is not None:
            if not isinstance(public_key, dict) or not isinstance(public_key.get("hint", ""), str):
                raise ValueError("verificationMaterial.publicKey.hint must be a string")
            hint = public_key.get("hint") or None
        if "dsseEnvelope" not in data:
            raise ValueError(f"the {what} has no dsseEnvelope (only DSSE bundles are supported)")
        return cls(Envelope.from_json(data["dsseEnvelope"]), hint)


def read_seal(path: str | os.PathLike[str]) -> Bundle:
    """Read and parse a seal file, refusing missing, special, huge or malformed files."""
    return read_bundle(path, "seal", SealError, "the model is not sealed")


def read_bundle(
    path: str | os.PathLike[str],
    what: str,
    error: type[Error],
    missing: str | None = None,
) -> Bundle:
    """Read and parse a bundle file (a seal, a provenance) as `what`, bounded and strict:
    a missing, special, huge, empty or malformed file raises `error` with one line."""
    target = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise error(f"no {what} at {target}" + (f": {missing}" if missing else "")) from None
    except OSError as exc:
        raise error(f"cannot read the {what} {target}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"the {what} {target} is not a regular file")
        if st.st_size > MAX_SEAL_BYTES:
            raise error(f"the {what} {target} is larger than {MAX_SEAL_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(MAX_SEAL_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read the {what} {target}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SEAL_BYTES:
        raise error(f"the {what} {target} is larger than {MAX_SEAL_BYTES} bytes")
    if not raw.strip():
        raise error(f"the {what} {target} is empty")
    try:
        return Bundle.from_json(raw, what)
    except ValueError as exc:
        raise error(f"malformed {what} {target}: {exc}") from None


def write_seal(path: str | os.PathLike[str], bundle: Bundle, what: str = "seal") -> None:
    """Write atomically: a temporary file beside the target, then rename."""
    write_atomic(path, bundle.to_json(), f"the {what}")
