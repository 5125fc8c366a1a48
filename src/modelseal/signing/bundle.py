"""The seal file: a sigstore bundle v0.3 (key mode) around a DSSE envelope.

Reading is bounded (size cap before parsing, nesting depth caught) and strict
in every field that matters for security.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelseal.errors import SealError, UsageError
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
    def from_json(cls, raw: bytes) -> Bundle:
        """Parse a bundle. Raises ValueError with a one-line reason."""
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ValueError("the seal is not valid JSON (nested too deeply)") from None
        except UnicodeDecodeError:
            raise ValueError("the seal is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the seal is not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        if not isinstance(data, dict):
            raise ValueError("the seal is not a JSON object")
        media_type = data.get("mediaType")
        if media_type not in _ACCEPTED_MEDIA_TYPES:
            raise ValueError(f"the seal's mediaType {media_type!r} is not a sigstore bundle v0.3")
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
            raise ValueError("the seal has no dsseEnvelope (only DSSE seals are supported)")
        return cls(Envelope.from_json(data["dsseEnvelope"]), hint)


def read_seal(path: str | os.PathLike[str]) -> Bundle:
    """Read and parse a seal file, refusing missing, special, huge or malformed files."""
    seal = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(seal, flags)
    except FileNotFoundError:
        raise SealError(f"no seal at {seal}: the model is not sealed") from None
    except OSError as exc:
        raise SealError(f"cannot read the seal {seal}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SealError(f"the seal {seal} is not a regular file")
        if st.st_size > MAX_SEAL_BYTES:
            raise SealError(f"the seal {seal} is larger than {MAX_SEAL_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(MAX_SEAL_BYTES + 1)
    except OSError as exc:
        raise SealError(f"cannot read the seal {seal}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SEAL_BYTES:
        raise SealError(f"the seal {seal} is larger than {MAX_SEAL_BYTES} bytes")
    if not raw.strip():
        raise SealError(f"the seal {seal} is empty")
    try:
        return Bundle.from_json(raw)
    except ValueError as exc:
        raise SealError(f"malformed seal {seal}: {exc}") from None


def write_seal(path: str | os.PathLike[str], bundle: Bundle) -> None:
    """Write atomically: a temporary file beside the target, then rename."""
    target = Path(path)
    data = bundle.to_json()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".modelseal-", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write the seal {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
