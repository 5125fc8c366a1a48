"""modelseal: seal ML models when they are saved, verify them before they are loaded.

    import modelseal
    modelseal.seal("model/", key="trainer.key")
    modelseal.verify("model/", public_keys=["trainer.pub"])   # raises IntegrityError
    with modelseal.open_verified("model.pt", public_keys=["trainer.pub"]) as m:
        torch.load(m.open())                                   # the bytes that were verified

The public names below are imported on first use, so `import modelseal`
stays cheap for applications and for `modelseal --version`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "seal": "modelseal.sealing",
    "SealResult": "modelseal.sealing",
    "sign": "modelseal.sealing",
    "SignResult": "modelseal.sealing",
    "verify": "modelseal.verification",
    "open_verified": "modelseal.loading",
    "Policy": "modelseal.policy",
    "PolicyError": "modelseal.policy",
    "PolicyViolation": "modelseal.policy",
    "VerifiedModel": "modelseal.loading",
    "Verification": "modelseal.verification",
    "Failure": "modelseal.verification",
    "Finding": "modelseal.verification",
    "hash_model": "modelseal.hashing",
    "Manifest": "modelseal.manifest",
    "Resource": "modelseal.manifest",
    "Serialization": "modelseal.manifest",
    "fetch": "modelseal.fetch",
    "FetchResult": "modelseal.fetch",
    "DigestMismatch": "modelseal.fetch",
    "DownloadError": "modelseal.fetch",
    "SourceNotAllowed": "modelseal.fetch",
    "UnsafeArchiveError": "modelseal.fetch",
    "Lock": "modelseal.lock",
    "LockedModel": "modelseal.lock",
    "LockError": "modelseal.lock",
    "Cache": "modelseal.cache",
    "Provenance": "modelseal.provenance",
    "ProvenanceError": "modelseal.provenance",
    "Error": "modelseal.errors",
    "UsageError": "modelseal.errors",
    "IntegrityError": "modelseal.errors",
    "SealError": "modelseal.errors",
    "SignatureError": "modelseal.errors",
    "ModelMismatchError": "modelseal.errors",
    "UnsafeModelError": "modelseal.errors",
}

__all__ = [
    "Cache",
    "DigestMismatch",
    "DownloadError",
    "Error",
    "Failure",
    "FetchResult",
    "Finding",
    "IntegrityError",
    "Lock",
    "LockError",
    "LockedModel",
    "Manifest",
    "ModelMismatchError",
    "Policy",
    "PolicyError",
    "PolicyViolation",
    "Provenance",
    "ProvenanceError",
    "Resource",
    "SealError",
    "SealResult",
    "Serialization",
    "SignResult",
    "SignatureError",
    "SourceNotAllowed",
    "UnsafeArchiveError",
    "UnsafeModelError",
    "UsageError",
    "Verification",
    "VerifiedModel",
    "__version__",
    "fetch",
    "hash_model",
    "open_verified",
    "seal",
    "sign",
    "verify",
]

if TYPE_CHECKING:
    from modelseal.cache import Cache
    from modelseal.errors import (
        Error,
        IntegrityError,
        ModelMismatchError,
        SealError,
        SignatureError,
        UnsafeModelError,
        UsageError,
    )
    from modelseal.fetch import (
        DigestMismatch,
        DownloadError,
        FetchResult,
        SourceNotAllowed,
        UnsafeArchiveError,
        fetch,
    )
    from modelseal.hashing import hash_model
    from modelseal.loading import VerifiedModel, open_verified
    from modelseal.lock import Lock, LockedModel, LockError
    from modelseal.manifest import Manifest, Resource, Serialization
    from modelseal.policy import Policy, PolicyError, PolicyViolation
    from modelseal.provenance import Provenance, ProvenanceError
    from modelseal.sealing import SealResult, SignResult, seal, sign
    from modelseal.verification import Failure, Finding, Verification, verify


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelseal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
