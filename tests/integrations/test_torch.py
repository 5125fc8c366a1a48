"""modelseal.integrations.torch: verified torch.load (weights_only kept), sealing torch.save."""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import modelseal
from conftest import KeyPair
from modelseal.errors import (
    Error,
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UsageError,
)
from modelseal.integrations import torch as mtorch
from race import race


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_net(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net()


INPUT = torch.linspace(-2.0, 2.0, 40).reshape(5, 8)


@pytest.fixture
def torch_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call that reaches torch.load (so a refusal can prove nothing was loaded)."""
    calls: list[object] = []
    real = torch.load

    def spy(f: object, *args: Any, **kwargs: Any) -> Any:
        calls.append(f)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.fixture
def sealed(tmp_path: Path, keypair: KeyPair) -> Path:
    path = tmp_path / "model" / "model.pt"
    path.parent.mkdir()
    mtorch.save(make_net(1).state_dict(), path, key=keypair.private)
    return path


def fresh_net(state: dict[str, torch.Tensor]) -> Net:
    net = make_net(99)
    net.load_state_dict(state)
    return net.eval()


def test_state_dict_round_trip_predicts_as_plain_torch(sealed: Path, keypair: KeyPair) -> None:
    state = mtorch.load(sealed, public_keys=[keypair.public])
    plain = torch.load(sealed, weights_only=True)
    assert state.keys() == plain.keys()
    with torch.no_grad():
        ours = fresh_net(state)(INPUT)
        theirs = fresh_net(plain)(INPUT)
        original = make_net(1).eval()(INPUT)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, original)


def test_save_returns_the_seal(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "weights.pt"
    result = mtorch.save({"w": torch.ones(3)}, path, pickle, 4, key=keypair.private)
    assert result.seal == f"{path}.sig"
    assert result.signed
    assert result.files == 1
    assert modelseal.verify(path, public_keys=[keypair.public]).root_digest == result.root_digest
    custom = tmp_path / "elsewhere.sig"
    mtorch.save({"w": torch.ones(3)}, path, key=keypair.private, signature=custom)
    assert mtorch.load(path, public_keys=keypair.public, signature=custom)["w"].sum() == 3


def test_map_location_and_legacy_format(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "legacy.pt"
    state = {"w": torch.arange(6.0)}
    mtorch.save(state, path, key=keypair.private, _use_new_zipfile_serialization=False)
    for location in (None, "cpu", torch.device("cpu"), lambda storage, _: storage):
        loaded = mtorch.load(path, location, public_keys=[keypair.public])
        assert torch.equal(loaded["w"], state["w"])


def _flip_byte(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _other_key(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    modelseal.seal(path, key=other.private)


def _edit_seal(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    seal = Path(f"{path}.sig")
    bundle = json.loads(seal.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["name"] = "renamed"
    payload = json.dumps(statement).encode()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    seal.write_text(json.dumps(bundle))


def _unsealed(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    Path(f"{path}.sig").unlink()


def _missing(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    path.unlink()


TAMPER: dict[str, tuple[Callable[[Path, KeyPair, KeyPair], None], type[Error]]] = {
    "changed byte": (_flip_byte, ModelMismatchError),
    "signed by another key": (_other_key, SignatureError),
    "seal edited after signing": (_edit_seal, SignatureError),
    "unsealed": (_unsealed, SealError),
    # A single-file model that is gone is a usage error in the core ("model not found").
    "missing file": (_missing, UsageError),
}


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_model_is_refused_and_nothing_loaded(
    sealed: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    torch_loads: list[object],
    tmp_path: Path,
    case: str,
    mmap: bool,
) -> None:
    tamper, error = TAMPER[case]
    tamper(sealed, keypair, other_keypair)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    with pytest.raises(error):
        mtorch.load(sealed, public_keys=[keypair.public], mmap=mmap, snapshot_dir=snapshots)
    assert torch_loads == []
    assert list(snapshots.iterdir()) == []


class Payload:
    """Pickles as a call to exec: unpickling it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("mmap", [False, True])
def test_weights_only_refuses_a_sealed_malicious_pickle(
    tmp_path: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch, mmap: bool
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    mtorch.save({"w": torch.ones(2), "x": Payload(marker)}, path, key=keypair.private)
    # The seal is valid: only weights_only stands between the pickle and exec.
    modelseal.verify(path, public_keys=[keypair.public])
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for weights_only in (True, None):
        with pytest.raises(pickle.UnpicklingError):
            mtorch.load(path, public_keys=[keypair.public], weights_only=weights_only, mmap=mmap)
    assert not marker.exists()
    # The payload is real: plain torch with weights_only=False runs it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_weights_only_false_is_explicit_logged_and_still_verified(
    tmp_path: Path, keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fraction.pt"
    mtorch.save({"ratio": Fraction(1, 3)}, path, key=keypair.private)
    with pytest.raises(pickle.UnpicklingError):
        mtorch.load(path, public_keys=[keypair.public])
    with caplog.at_level(logging.WARNING, logger="modelseal"):
        loaded = mtorch.load(path, public_keys=[keypair.public], weights_only=False)
    assert loaded == {"ratio": Fraction(1, 3)}
    warnings = [r for r in caplog.records if r.name == "modelseal"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "weights_only=False" in warnings[0].getMessage()

    # Verification still comes first: a tampered malicious pickle never runs.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    mtorch.save({"x": Payload(marker)}, evil, key=keypair.private)
    data = bytearray(evil.read_bytes())
    data[-30] ^= 1
    evil.write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError):
        mtorch.load(evil, public_keys=[keypair.public], weights_only=False)
    assert not marker.exists()


def test_mmap_loads_from_a_private_snapshot_removed_afterwards(
    sealed: Path, keypair: KeyPair, tmp_path: Path, torch_loads: list[object]
) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    state = mtorch.load(sealed, public_keys=[keypair.public], mmap=True, snapshot_dir=snapshots)
    assert len(torch_loads) == 1
    source = Path(str(torch_loads[0]))
    assert source.parent.parent == snapshots  # loaded from the snapshot, not the model
    assert list(snapshots.iterdir()) == []  # and the snapshot is gone
    with torch.no_grad():
        assert torch.equal(fresh_net(state)(INPUT), make_net(1).eval()(INPUT))


def test_torch_default_mmap_config_uses_the_snapshot(
    sealed: Path, keypair: KeyPair, torch_loads: list[object]
) -> None:
    from torch.utils.serialization import config

    with config.patch({"load.mmap": True}):  # torch.load would refuse a file object
        state = mtorch.load(sealed, public_keys=[keypair.public])
    assert isinstance(torch_loads[0], Path)
    assert torch.equal(state["body.0.weight"], make_net(1).state_dict()["body.0.weight"])


def test_a_safetensors_path_goes_to_the_verified_safetensors_loader(
    tmp_path: Path, keypair: KeyPair, torch_loads: list[object]
) -> None:
    from modelseal.integrations import safetensors as mst

    path = tmp_path / "w.safetensors"
    mst.save_file({"w": torch.arange(4.0)}, path, key=keypair.private)
    loaded = mtorch.load(path, "cpu", public_keys=[keypair.public])
    assert torch.equal(loaded["w"], torch.arange(4.0))
    assert torch_loads == []
    with pytest.raises(UsageError, match="map_location"):
        mtorch.load(path, {"cuda:0": "cpu"}, public_keys=[keypair.public])
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(IntegrityError):
        mtorch.load(path, public_keys=[keypair.public])


def test_usage_errors(sealed: Path, keypair: KeyPair, tmp_path: Path) -> None:
    with (
        pytest.raises(UsageError, match="file object cannot be verified"),
        open(sealed, "rb") as handle,
    ):
        mtorch.load(handle, public_keys=[keypair.public])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="file object"):
        mtorch.save({}, io.BytesIO(), key=keypair.private)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="pickle_module"):
        mtorch.load(sealed, None, pickle, public_keys=[keypair.public])
    with pytest.raises(UsageError, match="trusted public key"):
        mtorch.load(sealed)
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "a.pt").write_bytes(sealed.read_bytes())
    modelseal.seal(directory, key=keypair.private)
    with pytest.raises(UsageError, match="directory"):
        mtorch.load(directory, public_keys=[keypair.public])
    # A bad key is found before anything is written.
    target = tmp_path / "never.pt"
    with pytest.raises(UsageError):
        mtorch.save({"w": torch.ones(1)}, target, key=tmp_path / "no-such.key")
    assert not target.exists()
    with pytest.raises(UsageError, match="key="):
        mtorch.save({"w": torch.ones(1)}, target, key=None)  # type: ignore[arg-type]
    assert not target.exists()


def test_swap_race_never_loads_the_swapped_file(tmp_path: Path, keypair: KeyPair) -> None:
    honest_state = {"w": torch.arange(64.0), "b": torch.zeros(8)}
    evil_state = {"w": torch.full((64,), 666.0), "b": torch.ones(8)}
    honest, evil = tmp_path / "honest.pt", tmp_path / "evil.pt"
    torch.save(honest_state, honest)
    torch.save(evil_state, evil)
    target = tmp_path / "model" / "model.pt"
    target.parent.mkdir()
    shutil.copyfile(honest, target)
    modelseal.seal(target, key=keypair.private)

    def is_honest(loaded: object) -> bool:
        assert isinstance(loaded, dict)
        return all(torch.equal(loaded[k], v) for k, v in honest_state.items())

    result = race(
        target,
        honest,
        evil,
        lambda: mtorch.load(target, public_keys=[keypair.public]),
        is_honest,
        attempts=300,
    )
    assert result.loads + result.refused == 300
