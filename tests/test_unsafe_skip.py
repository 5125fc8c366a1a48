"""The emergency escape: loading without verification is possible, never silent, never default."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair, policy_file
from modelseal.audit import LOGGER_NAME
from modelseal.errors import ModelMismatchError, UsageError
from modelseal.policy import Policy
from modelseal.verification import UNSAFE_SKIP_ENV


def tampered(model: Path, keypair: KeyPair) -> Path:
    modelseal.seal(model, key=keypair.private)
    (model / "config.json").write_text('{"layers": 666}\n')
    return model


def critical_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        r.modelseal_event  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == LOGGER_NAME and r.levelno == logging.CRITICAL
    ]


def test_the_default_still_refuses(
    model: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered(model, keypair)
    monkeypatch.setenv(UNSAFE_SKIP_ENV, "0")
    with pytest.raises(ModelMismatchError):
        modelseal.verify(model, public_keys=[keypair.public])


def test_environment_skip_loads_and_logs_critical_every_time(
    model: Path,
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tampered(model, keypair)
    monkeypatch.setenv(UNSAFE_SKIP_ENV, "1")
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    for _ in range(2):
        with modelseal.open_verified(model, public_keys=[keypair.public]) as loaded:
            assert loaded.read("config.json") == b'{"layers": 666}\n'
            assert loaded.verification.skipped
            assert not loaded.verification.signed
    events = critical_events(caplog)
    assert len(events) == 2
    assert events[0]["outcome"] == "skipped-unsafe"
    assert f"{UNSAFE_SKIP_ENV}=1" in str(events[0]["reasons"])
    assert capsys.readouterr().err.count("WITHOUT verification") == 2


def test_explicit_skip_needs_no_trust_and_reports_not_verified(
    model: Path, keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    tampered(model, keypair)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    result = modelseal.verify(model, unsafe_skip_verification=True)
    assert result.skipped
    assert result.to_json()["verified"] is False
    assert result.files == 4  # the seal itself is not part of what is read
    assert len(critical_events(caplog)) == 1


def test_a_typo_in_the_variable_is_an_error_not_a_skip(
    model: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered(model, keypair)
    monkeypatch.setenv(UNSAFE_SKIP_ENV, "yes")
    with pytest.raises(UsageError, match="must be 1"):
        modelseal.verify(model, public_keys=[keypair.public])


def test_cli_flag_exits_zero_loudly_and_logs_critical_json(
    cli: Cli, model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    tampered(model, keypair)
    log = tmp_path / "audit.jsonl"
    refused = cli("verify", model, "--public-key", keypair.public)
    assert refused.code == 1
    result = cli(
        "verify", model, "--unsafe-skip-verification", "--log-json", log, "--format", "json"
    )
    assert result.code == 0
    assert "CRITICAL" in result.err
    assert "NOT verified" in result.err
    assert json.loads(result.out)["verified"] is False
    event = json.loads(log.read_text().splitlines()[-1])
    assert event["level"] == "CRITICAL"
    assert event["outcome"] == "skipped-unsafe"


def test_framework_loader_honours_the_environment(
    tmp_path: Path,
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch = pytest.importorskip("torch")
    from modelseal.integrations import torch as sealed_torch

    path = tmp_path / "model.pt"
    sealed_torch.save({"w": torch.ones(3)}, path, key=keypair.private)
    torch.save({"w": torch.zeros(3)}, path)  # swapped after sealing
    with pytest.raises(ModelMismatchError):
        sealed_torch.load(path, public_keys=[keypair.public])
    monkeypatch.setenv(UNSAFE_SKIP_ENV, "1")
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    state = sealed_torch.load(path, public_keys=[keypair.public])
    assert torch.equal(state["w"], torch.zeros(3))
    assert len(critical_events(caplog)) == 1


def test_a_policy_can_forbid_the_escape(
    model: Path,
    keypair: KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    tampered(model, keypair)
    allowing = policy_file(tmp_path / "allowing.toml", keypair.public)
    forbidding = tmp_path / "forbidding.toml"
    forbidding.write_text("allow_unsafe_skip = false\n" + allowing.read_text())
    assert Policy.load(forbidding).describe()["allow_unsafe_skip"] is False
    monkeypatch.setenv(UNSAFE_SKIP_ENV, "1")
    with pytest.raises(UsageError, match="allow_unsafe_skip = false"):
        modelseal.verify(model, policy=Policy.load(forbidding))
    with (
        pytest.raises(UsageError, match="allow_unsafe_skip = false"),
        modelseal.open_verified(model, policy=Policy.load(forbidding)),
    ):
        pytest.fail("loaded without verification against the policy")
    assert modelseal.verify(model, policy=Policy.load(allowing)).skipped
    monkeypatch.delenv(UNSAFE_SKIP_ENV)
    refused = cli("verify", model, "--policy", forbidding, "--unsafe-skip-verification")
    assert refused.code == 2
    assert "allow_unsafe_skip = false" in refused.err
    assert cli("verify", model, "--policy", allowing, "--unsafe-skip-verification").code == 0
