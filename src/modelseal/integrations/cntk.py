"""Verified CNTK: `load_model` and `seal_model`.

    from modelseal.integrations import cntk as mcntk
    mcntk.seal_model("net.model", key="trainer.key")
    net = mcntk.load_model("net.model", public_keys=["trainer.pub"])

CNTK 2.7, its last release, has no build for any Python this project supports, so
`load_model` verifies the file first and only then looks for `cntk`: a tampered file
raises IntegrityError whether or not CNTK is installed, and a verified one without CNTK
raises `CntkUnavailableError` (a UsageError) that says the file is intact. To keep a
CNTK model usable and verified, export it to ONNX where CNTK runs, seal the .onnx and
load it with `modelseal.integrations.onnx` (docs/cntk.md).

A CNTK model is one file (`.model`, or a legacy v1 `.dnn`), sealed as `FILE.sig`.
CNTK v2 models are handed to `cntk.load_model` as the verified bytes in memory. CNTK
takes a path only for legacy v1 models and for `format=ModelFormat.ONNX`: those are
loaded from a private snapshot of what was verified.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._internal import names
from modelseal.errors import UsageError
from modelseal.integrations._common import KeySource, PathLike, Trust, seal_saved
from modelseal.loading import VerifiedModel, open_verified
from modelseal.sealing import SealResult
from modelseal.signing import keys

if TYPE_CHECKING:
    from modelseal.policy import Policy

LEGACY_MARKER = b"B\x00"
"""How CNTK tells a legacy v1 model (it compares L"BCN" with strncmp, which stops at the
first NUL byte), which it refuses to load from a buffer."""


class CntkUnavailableError(UsageError):
    """The model verified, but CNTK is not installed to load it."""


def load_model(
    model: PathLike,
    device: Any = None,
    format: Any = None,
    *,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
) -> Any:
    """`cntk.load_model` over a sealed model file (a path, not a byte buffer).

    `format` defaults to CNTK's own default (ModelFormat.CNTKv2). Verification comes
    first; `CntkUnavailableError` comes only after it succeeded.
    """
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    path = _model_path(model)
    by_path = _needs_path(format) or _looks_legacy(path)
    for snapshot in (by_path, True):
        with open_verified(path, snapshot=snapshot, **trust.kwargs()) as verified:
            if verified.names != (names.SINGLE_FILE_NAME,):
                raise UsageError(f"{path}: a CNTK model is one file, sealed as {path}.sig")
            if not snapshot and verified.buffer()[: len(LEGACY_MARKER)] == LEGACY_MARKER:
                # Changed into a legacy model since it was looked at: CNTK needs a path.
                continue
            cntk = _cntk(verified)
            options = {} if format is None else {"format": format}
            source = str(verified.path) if snapshot else verified.read()
            return cntk.load_model(source, device, **options)
    raise AssertionError("unreachable: the second pass uses a snapshot")  # pragma: no cover


def seal_model(
    path: PathLike,
    *,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
) -> SealResult:
    """Seal a CNTK model file (`FILE.sig` unless `signature`), e.g. after `Function.save`."""
    model = _model_path(path)
    return seal_saved(model, key, signature, name=name)


def _model_path(model: object) -> Path:
    if not isinstance(model, (str, os.PathLike)):
        raise UsageError(
            "a CNTK model is verified on disk: pass the path of its file, "
            f"not a {type(model).__name__}"
        )
    path = Path(os.fspath(model))
    if path.is_dir():
        raise UsageError(f"{path} is a directory: a CNTK model is one file")
    return path


def _needs_path(format: Any) -> bool:
    """CNTK loads only ModelFormat.CNTKv2 from a buffer."""
    return format is not None and getattr(format, "name", format) != "CNTKv2"


def _looks_legacy(path: Path) -> bool:
    """A first look, only to choose memory or snapshot (the verified bytes decide)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(LEGACY_MARKER)) == LEGACY_MARKER
    except OSError:
        return False  # the verification reports it


def _cntk(verified: VerifiedModel) -> Any:
    try:
        return importlib.import_module("cntk")
    except ImportError as exc:
        report = verified.verification
        raise CntkUnavailableError(
            f"{report.model} verified ({report.root_digest}), but cntk is not installed "
            f"({exc}): CNTK 2.7 has no build for this Python. Export the model to ONNX where "
            "CNTK runs, seal the .onnx, and load it with modelseal.integrations.onnx "
            "(see docs/cntk.md)"
        ) from None
