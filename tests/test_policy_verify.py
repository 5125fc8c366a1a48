"""A trust policy in verify, open_verified and the CLI: who may vouch for which model, when."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair
from modelseal.errors import SignatureError
from modelseal.policy import Policy, PolicyViolation


def write_policy(path: Path, keypair: KeyPair, **signer: str) -> Path:
    fields = {"models": '["model*"]', **signer}
    extra = "\n".join(f"{k} = {v}" for k, v in fields.items())
    path.write_text(
        f"""
[[signers]]
name = "trainer"
public_key = "{keypair.public}"
{extra}

[[rules]]
models = ["*"]
signers = ["trainer"]
"""
    )
    return path


def test_a_policy_that_allows_the_signer(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    modelseal.seal(model, key=keypair.private)
    policy = Policy.load(write_policy(tmp_path / "p.toml", keypair))
    result = modelseal.verify(model, policy=policy)
    assert result.signed
    with modelseal.open_verified(model, policy=policy) as verified:
        assert verified.read("config.json") == (model / "config.json").read_bytes()


@pytest.mark.parametrize(
    ("signer", "reason"),
    [
        ({"models": '["fraud-*"]'}, "trainer"),
        ({"not_after": "2020-01-01T00:00:00Z"}, "trainer"),
        ({"not_before": "2999-01-01T00:00:00Z"}, "trainer"),
    ],
)
def test_a_policy_that_refuses(
    model: Path,
    keypair: KeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    signer: dict[str, str],
    reason: str,
) -> None:
    modelseal.seal(model, key=keypair.private)
    policy = Policy.load(write_policy(tmp_path / "p.toml", keypair, **signer))
    with (
        caplog.at_level("INFO", logger="modelseal.audit"),
        pytest.raises(PolicyViolation) as caught,
    ):
        modelseal.verify(model, policy=policy)
    assert caught.value.failure is not None
    assert [f.kind for f in caught.value.failure.findings] == ["policy"]
    (event,) = [r.modelseal_event for r in caplog.records]  # type: ignore[attr-defined]
    assert event["outcome"] == "failed"
    assert reason in event["reasons"][0]


def test_revoked_key_is_refused_even_if_listed(
    model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    modelseal.seal(model, key=keypair.private)
    path = write_policy(tmp_path / "p.toml", keypair)
    key_id = modelseal.verify(model, public_keys=[keypair.public]).signers[0]
    path.write_text(path.read_text() + f'\n[revoked]\nkey_ids = ["{key_id}"]\n')
    with pytest.raises(SignatureError):
        modelseal.verify(model, policy=Policy.load(path))


def test_policy_and_keys_are_exclusive(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    policy = Policy.load(write_policy(tmp_path / "p.toml", keypair))
    with pytest.raises(modelseal.UsageError, match="not both"):
        modelseal.verify(model, policy=policy, public_keys=[keypair.public])


def test_cli_policy_flag_discovery_and_check(
    cli: Cli, model: Path, keypair: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("seal", model, "--key", keypair.private)
    good = write_policy(tmp_path / "good.toml", keypair)
    bad = write_policy(tmp_path / "bad.toml", keypair, models='["fraud-*"]')
    assert cli("verify", model, "--policy", good).code == 0
    refused = cli("verify", model, "--policy", bad)
    assert refused.code == 1
    assert len(refused.err.strip().splitlines()) == 1
    assert "policy refuses model 'model'" in refused.err
    # ./modelseal.toml is used when no key is given.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "modelseal.toml").write_text(good.read_text())
    found = cli("verify", model)
    assert found.code == 0
    assert "modelseal.toml" in found.err
    described = cli("policy", "check", good, "--format", "json")
    assert described.code == 0
    assert json.loads(described.out)
    (tmp_path / "broken.toml").write_text("[[signers]\n")
    broken = cli("policy", "check", tmp_path / "broken.toml")
    assert broken.code == 2
    assert len(broken.err.strip().splitlines()) == 1


def test_cli_key_id_matches_keygen(cli: Cli, tmp_path: Path) -> None:
    made = cli("keygen", "--out", tmp_path / "k")
    shown = cli("key", "id", tmp_path / "k.pub")
    assert shown.code == 0
    assert shown.out == made.out
