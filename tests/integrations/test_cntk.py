"""modelseal.integrations.cntk: integrity first, then a clear answer when CNTK is missing.

CNTK 2.7 cannot be installed on any supported Python, so the "CNTK present" paths run
against a stand-in `cntk` module that records what it was given.
"""

from __future__ import annotations

import enum
import os
import random
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import modelseal
from conftest import KeyPair
from modelseal.errors import IntegrityError, ModelMismatchError, SignatureError, UsageError
from modelseal.integrations import cntk as mcntk

LEGACY = b"B\x00C\x00N\x00\x00\x00"


@pytest.fixture
def no_cntk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cntk", None)  # import cntk -> ImportError


class ModelFormat(enum.Enum):
    CNTKv2 = 0
    ONNX = 1


@pytest.fixture
def fake_cntk(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in cntk whose load_model records its arguments (and what a path held)."""
    calls: list[dict[str, Any]] = []

    def load_model(model: Any, device: Any = None, format: Any = ModelFormat.CNTKv2) -> str:
        call: dict[str, Any] = {"model": model, "device": device, "format": format}
        if isinstance(model, str):
            call["content"] = Path(model).read_bytes()
            call["mode"] = stat.S_IMODE(os.stat(Path(model).parent).st_mode)
        calls.append(call)
        return "function"

    module = types.ModuleType("cntk")
    module.load_model = load_model  # type: ignore[attr-defined]
    module.ModelFormat = ModelFormat  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cntk", module)
    return calls


def sealed(path: Path, keypair: KeyPair, data: bytes | None = None) -> Path:
    path.write_bytes(data if data is not None else random.Random(3).randbytes(5000))
    mcntk.seal_model(path, key=keypair.private)
    return path


def test_verified_then_cntk_missing(tmp_path: Path, keypair: KeyPair, no_cntk: None) -> None:
    path = sealed(tmp_path / "net.model", keypair)
    assert (tmp_path / "net.model.sig").is_file()
    with pytest.raises(mcntk.CntkUnavailableError, match=r"verified \(sha256:.*docs/cntk\.md"):
        mcntk.load_model(path, public_keys=[keypair.public])


def test_tampered_is_an_integrity_error_even_without_cntk(
    tmp_path: Path, keypair: KeyPair, no_cntk: None
) -> None:
    path = sealed(tmp_path / "net.model", keypair)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError):
        mcntk.load_model(path, public_keys=[keypair.public])


@pytest.mark.usefixtures("no_cntk")
def test_other_key_and_unsealed_are_refused(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    path = sealed(tmp_path / "net.model", keypair)
    with pytest.raises(SignatureError):
        mcntk.load_model(path, public_keys=[other_keypair.public])
    (tmp_path / "net.model.sig").unlink()
    with pytest.raises(IntegrityError):
        mcntk.load_model(path, public_keys=[keypair.public])


def test_v2_model_goes_to_cntk_as_verified_bytes(
    tmp_path: Path, keypair: KeyPair, fake_cntk: list[dict[str, Any]]
) -> None:
    path = sealed(tmp_path / "net.model", keypair)
    assert mcntk.load_model(path, "cpu", public_keys=[keypair.public]) == "function"
    (call,) = fake_cntk
    assert call["model"] == path.read_bytes()
    assert isinstance(call["model"], bytes)
    assert call["device"] == "cpu"
    assert call["format"] is ModelFormat.CNTKv2  # cntk's own default, untouched
    mcntk.load_model(path, format=ModelFormat.CNTKv2, public_keys=[keypair.public])
    assert isinstance(fake_cntk[1]["model"], bytes)


@pytest.mark.parametrize("case", ["legacy", "onnx-format"])
def test_path_only_models_load_from_a_private_snapshot(
    tmp_path: Path, keypair: KeyPair, fake_cntk: list[dict[str, Any]], case: str
) -> None:
    if case == "legacy":
        path = sealed(tmp_path / "net.dnn", keypair, LEGACY + b"\x01" * 300)
        mcntk.load_model(path, public_keys=[keypair.public])
    else:
        path = sealed(tmp_path / "net.onnx", keypair)
        mcntk.load_model(path, format=ModelFormat.ONNX, public_keys=[keypair.public])
    (call,) = fake_cntk
    assert isinstance(call["model"], str)
    assert Path(call["model"]).parent != tmp_path
    assert call["content"] == path.read_bytes()
    assert call["mode"] == 0o700
    assert not Path(call["model"]).exists()  # removed after the load


def test_turned_legacy_after_the_first_look(
    tmp_path: Path,
    keypair: KeyPair,
    fake_cntk: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the verified bytes are legacy although the first look said v2: snapshot after all."""
    path = sealed(tmp_path / "net.model", keypair, LEGACY + b"\x02" * 300)
    monkeypatch.setattr(mcntk, "_looks_legacy", lambda _path: False)
    mcntk.load_model(path, public_keys=[keypair.public])
    (call,) = fake_cntk
    assert isinstance(call["model"], str)
    assert call["content"] == path.read_bytes()


def test_usage_errors(tmp_path: Path, keypair: KeyPair, no_cntk: None) -> None:
    path = sealed(tmp_path / "net.model", keypair)
    with pytest.raises(UsageError, match="pass the path"):
        mcntk.load_model(path.read_bytes(), public_keys=[keypair.public])
    with pytest.raises(UsageError, match="one file"):
        mcntk.load_model(tmp_path, public_keys=[keypair.public])
    with pytest.raises(UsageError, match="one file"):
        mcntk.seal_model(tmp_path, key=keypair.private)
    modelseal.verify(path, public_keys=[keypair.public])  # an ordinary seal
