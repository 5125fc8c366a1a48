"""A policy that requires provenance: verify, open_verified, the loaders and the CLI check it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair, make_keypair, write_model
from modelseal.policy import Policy, PolicyViolation
from modelseal.provenance import ProvenanceError, default_provenance_path, record

BUILDER = "https://ci.example.com/trainer"


def require(path: Path, trainer: KeyPair, claims: str = "", models: str = '["*"]') -> Policy:
    path.write_text(
        f"""
[[signers]]
name = "trainer"
public_key = "{trainer.public}"
models = {models}

[[rules]]
models = ["*"]
signers = ["trainer"]
require_provenance = true
{claims}
"""
    )
    return Policy.load(path)


def train(model: Path, key: KeyPair, dataset: Path, builder: str = BUILDER) -> None:
    with record(model, key=key.private, datasets=[dataset], builder_id=builder, script=False):
        write_model(model) if not model.exists() else None


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("x,y\n1,0\n2,1\n")
    return path


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_recorded_model_passes_and_loads(tmp_path: Path, keypair: KeyPair, dataset: Path) -> None:
    model = tmp_path / "model"
    train(model, keypair, dataset)
    claims = (
        f'[rules.provenance]\nbuilder_id = "{BUILDER}"\ndataset_digests = ["{sha256(dataset)}"]\n'
    )
    policy = require(tmp_path / "policy.toml", keypair, claims)
    assert modelseal.verify(model, policy=policy).signed
    with modelseal.open_verified(model, policy=policy) as verified:
        assert verified.read("config.json") == (model / "config.json").read_bytes()


def test_missing_provenance_is_refused(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    modelseal.seal(model, key=keypair.private)
    with pytest.raises(ProvenanceError, match="requires provenance and none is at") as info:
        modelseal.verify(model, policy=require(tmp_path / "policy.toml", keypair))
    assert info.value.failure is not None
    assert info.value.failure.findings[0].kind == "provenance"


def test_provenance_replayed_from_an_older_version_is_refused(
    tmp_path: Path, keypair: KeyPair, dataset: Path
) -> None:
    old, new = tmp_path / "v1", tmp_path / "v2"
    train(old, keypair, dataset)
    new.mkdir()
    (new / "weights.bin").write_bytes(b"retrained without provenance")
    modelseal.seal(new, key=keypair.private, name="v1")  # same model name, new weights
    shutil.copy(default_provenance_path(old), default_provenance_path(new))
    with pytest.raises(ProvenanceError, match="older version"):
        modelseal.verify(new, policy=require(tmp_path / "policy.toml", keypair))


def test_provenance_signed_by_a_key_the_policy_does_not_trust_is_refused(
    tmp_path: Path, keypair: KeyPair, key_dir: Path, dataset: Path
) -> None:
    """The seal is the trainer's; the provenance beside it was signed by someone else."""
    intruder = make_keypair(key_dir, "intruder")
    model = tmp_path / "model"
    train(model, intruder, dataset)
    modelseal.sign(model, key=keypair.private, public_keys=[intruder.public])
    with pytest.raises(ProvenanceError, match="trusted"):
        modelseal.verify(model, policy=require(tmp_path / "policy.toml", keypair))


def test_claims_that_differ_are_refused(tmp_path: Path, keypair: KeyPair, dataset: Path) -> None:
    model = tmp_path / "model"
    train(model, keypair, dataset, builder="https://laptop.example/me")
    builder = require(
        tmp_path / "b.toml", keypair, f'[rules.provenance]\nbuilder_id = "{BUILDER}"\n'
    )
    with pytest.raises(ProvenanceError, match="builder_id"):
        modelseal.verify(model, policy=builder)
    other_data = "sha256:" + "0" * 64
    data = require(
        tmp_path / "d.toml", keypair, f'[rules.provenance]\ndataset_digests = ["{other_data}"]\n'
    )
    with pytest.raises(ProvenanceError, match="dataset"):
        modelseal.verify(model, policy=data)


def test_a_signer_that_may_not_sign_the_model_cannot_vouch_for_its_provenance(
    tmp_path: Path, keypair: KeyPair, dataset: Path
) -> None:
    model = tmp_path / "model"
    train(model, keypair, dataset)
    policy = require(tmp_path / "policy.toml", keypair, models='["fraud-*"]')
    with pytest.raises((PolicyViolation, ProvenanceError), match="may not sign"):
        modelseal.verify(model, policy=policy)


def test_loader_refuses_without_provenance(tmp_path: Path, keypair: KeyPair) -> None:
    torch = pytest.importorskip("torch")
    from modelseal.integrations import torch as sealed_torch

    path = tmp_path / "model.pt"
    sealed_torch.save({"w": torch.ones(2)}, path, key=keypair.private)
    policy = require(tmp_path / "policy.toml", keypair)
    with pytest.raises(ProvenanceError, match=r"model\.pt\.provenance\.sig"):
        sealed_torch.load(path, policy=policy)


def test_cli_verify_reports_the_provenance_reason(
    cli: Cli, tmp_path: Path, keypair: KeyPair, dataset: Path
) -> None:
    model = tmp_path / "model"
    train(model, keypair, dataset)
    policy_path = tmp_path / "policy.toml"
    require(policy_path, keypair)
    assert cli("verify", model, "--policy", policy_path).code == 0
    default_provenance_path(model).write_text("garbage")
    result = cli("verify", model, "--policy", policy_path)
    assert result.code == 1
    assert "provenance" in result.err
    assert "Traceback" not in result.err
