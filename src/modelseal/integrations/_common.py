"""What every integration shares: lazy framework imports, verification options, sealing."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from modelseal.errors import UsageError
from modelseal.sealing import SealResult, seal
from modelseal.signing import keys

if TYPE_CHECKING:
    from modelseal.policy import Policy

PathLike = str | os.PathLike[str]
KeySource = PathLike | keys.PublicKey


def require(module: str, extra: str) -> ModuleType:
    """Import a framework module, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"{module} is not installed: pip install 'modelseal[{extra}]' ({exc})"
        ) from None


@dataclass(frozen=True)
class Trust:
    """The keyword-only verification inputs every loader takes."""

    public_keys: tuple[KeySource, ...] = ()
    allow_unsigned: bool = False
    signature: PathLike | None = None
    policy: Policy | None = None
    model_name: str | None = None
    """The name the seal must carry (a policy decides by it, and the signer chooses it)."""

    @classmethod
    def of(
        cls,
        public_keys: Iterable[KeySource] | KeySource | None,
        allow_unsigned: bool,
        signature: PathLike | None,
        policy: Policy | None = None,
        model_name: str | None = None,
    ) -> Trust:
        if public_keys is None:
            found: tuple[KeySource, ...] = ()
        elif isinstance(public_keys, (str, os.PathLike, *keys.PUBLIC_KEY_TYPES)):
            found = (public_keys,)
        else:
            found = tuple(public_keys)
        return cls(found, allow_unsigned, signature, policy, model_name)

    def kwargs(self) -> dict[str, Any]:
        return {
            "public_keys": self.public_keys,
            "allow_unsigned": self.allow_unsigned,
            "signature": self.signature,
            "policy": self.policy,
            "model_name": self.model_name,
        }


def seal_saved(
    path: PathLike,
    key: PathLike | keys.PrivateKey | keys.Signer | None,
    signature: PathLike | None,
    **options: Any,
) -> SealResult:
    """Seal what a framework just saved (or refuse clearly when no key was given)."""
    if key is None:
        raise UsageError("save needs key= (the private key that seals the model)")
    return seal(path, key=key, signature=signature, **options)
