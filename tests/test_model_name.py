"""An expected model name: the signer picks the name a policy decides by, so callers pin it."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair, policy_file
from modelseal.errors import SealError
from modelseal.policy import Policy


@pytest.fixture
def test_key_model(model: Path, keypair: KeyPair, tmp_path: Path) -> tuple[Path, Policy]:
    """A key trusted for `test-*` seals its own model as `test-x` and drops it where `fraud-v3`
    is deployed: the policy alone cannot tell, the expected name can."""
    modelseal.seal(model, key=keypair.private, name="test-x")
    return model, Policy.load(policy_file(tmp_path / "policy.toml", keypair.public, "test-*"))


def test_verify_refuses_a_seal_for_another_name(test_key_model: tuple[Path, Policy]) -> None:
    model, policy = test_key_model
    assert modelseal.verify(model, policy=policy).model_name == "test-x"  # the gap without it
    with pytest.raises(SealError, match="not the expected 'fraud-v3'") as info:
        modelseal.verify(model, policy=policy, model_name="fraud-v3")
    assert info.value.failure is not None
    assert info.value.failure.findings[0].kind == "seal"
    assert modelseal.verify(model, policy=policy, model_name="test-x").signed


def test_open_verified_and_a_loader_refuse_another_name(
    test_key_model: tuple[Path, Policy], tmp_path: Path, keypair: KeyPair
) -> None:
    model, policy = test_key_model
    with (
        pytest.raises(SealError, match="not the expected"),
        modelseal.open_verified(model, policy=policy, model_name="fraud-v3"),
    ):
        pytest.fail("open_verified gave a model sealed under another name")
    with modelseal.open_verified(model, policy=policy, model_name="test-x") as verified:
        assert verified.read("config.json")
    torch = pytest.importorskip("torch")
    from modelseal.integrations import torch as sealed_torch

    path = tmp_path / "weights.pt"
    sealed = sealed_torch.save({"w": torch.ones(2)}, path, key=keypair.private, name="test-x")
    assert sealed.model_name == "test-x"
    with pytest.raises(SealError, match="not the expected"):
        sealed_torch.load(path, public_keys=[keypair.public], model_name="fraud-v3")
    state = sealed_torch.load(path, public_keys=[keypair.public], model_name="test-x")
    assert torch.equal(state["w"], torch.ones(2))


def test_cli_verify_and_sign_take_the_expected_name(
    cli: Cli, test_key_model: tuple[Path, Policy], keypair: KeyPair, other_keypair: KeyPair
) -> None:
    model, _ = test_key_model
    refused = cli("verify", model, "--public-key", keypair.public, "--name", "fraud-v3")
    assert refused.code == 1
    assert "not the expected 'fraud-v3'" in refused.err
    assert cli("verify", model, "--public-key", keypair.public, "--name", "test-x").code == 0
    cosign = ("sign", model, "--key", other_keypair.private, "--public-key", keypair.public)
    assert cli(*cosign, "--name", "fraud-v3").code == 1
    assert cli(*cosign, "--name", "test-x").code == 0
