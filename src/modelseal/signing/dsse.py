"""DSSE (Dead Simple Signing Envelope): the pre-authentication encoding and the envelope.

The signature covers PAE(type, body), never the JSON around it, so nothing
outside the signed bytes can change their meaning.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def b64decode(value: object, what: str) -> bytes:
    """Strict standard base64 (upstream and protobuf JSON both write it padded)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Signature:
    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [
                {"sig": base64.b64encode(s.sig).decode(), "keyid": s.keyid} for s in self.signatures
            ],
        }

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        if not isinstance(data, dict):
            raise ValueError("dsseEnvelope must be a JSON object")
        payload_type = data.get("payloadType")
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise ValueError(f"payloadType {payload_type!r} is not {IN_TOTO_PAYLOAD_TYPE}")
        payload = b64decode(data.get("payload"), "dsseEnvelope.payload")
        raw = data.get("signatures", [])
        if not isinstance(raw, list):
            raise ValueError("dsseEnvelope.signatures must be a list")
        signatures = []
        for item in raw:
            if not isinstance(item, dict):
                raise ValueError("each DSSE signature must be a JSON object")
            keyid = item.get("keyid", "")
            if not isinstance(keyid, str):
                raise ValueError("DSSE signature keyid must be a string")
            signatures.append(Signature(b64decode(item.get("sig"), "signature"), keyid))
        return cls(payload_type, payload, tuple(signatures))
