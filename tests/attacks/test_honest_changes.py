"""Changes that are not tampering: a seal covers bytes and names, nothing else.

Metadata (times, modes), the model's location, and git bookkeeping files must not
make an honest model fail verification.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair
from modelseal.signing.keys import key_id, load_public_key

FILES = ("config.json", "tokenizer.txt", "weights/layer0.bin", "weights/layer1.bin")


def sealed_root(model: Path, keypair: KeyPair) -> str:
    return modelseal.seal(model, key=keypair.private).root_digest


def verified_root(model: Path, keypair: KeyPair) -> str:
    result = modelseal.verify(model, public_keys=[keypair.public])
    assert result.files == 4
    assert result.signers == (key_id(load_public_key(keypair.public)),)
    return result.root_digest


def test_touched_mtimes_verify(model: Path, keypair: KeyPair) -> None:
    root = sealed_root(model, keypair)
    for name in FILES:
        os.utime(model / name, (1_000_000_000, 1_000_000_000))
    os.utime(model / "weights", (2_000_000_000, 2_000_000_000))
    assert verified_root(model, keypair) == root


@pytest.mark.parametrize("mode", [0o444, 0o600, 0o755])
def test_changed_file_modes_verify(model: Path, keypair: KeyPair, mode: int) -> None:
    root = sealed_root(model, keypair)
    for name in FILES:
        os.chmod(model / name, mode)
    assert verified_root(model, keypair) == root


def test_model_copied_elsewhere_verifies(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    root = sealed_root(model, keypair)
    copy = tmp_path / "deploy" / "renamed-model"
    shutil.copytree(model, copy)  # the seal travels inside the model
    shutil.rmtree(model)
    assert verified_root(copy, keypair) == root


def test_model_moved_and_verified_by_the_cli(
    model: Path, keypair: KeyPair, tmp_path: Path, cli: Cli
) -> None:
    root = sealed_root(model, keypair)
    moved = tmp_path / "moved"
    model.rename(moved)

    result = cli("verify", moved, "--public-key", keypair.public)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert f"root {root}" in result.err


def test_git_files_added_after_sealing_verify(model: Path, keypair: KeyPair) -> None:
    root = sealed_root(model, keypair)
    (model / ".git" / "objects" / "ab").mkdir(parents=True)
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (model / ".git" / "objects" / "ab" / "cdef").write_bytes(os.urandom(64))
    (model / ".gitignore").write_text("*.tmp\n")
    (model / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (model / ".github" / "workflows").mkdir(parents=True)
    (model / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    assert verified_root(model, keypair) == root


def test_untrusted_extra_key_does_not_hurt(
    model: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    root = sealed_root(model, keypair)
    result = modelseal.verify(model, public_keys=[other_keypair.public, keypair.public])
    assert result.root_digest == root
    assert result.signers == (key_id(load_public_key(keypair.public)),)


def test_success_emits_one_audit_event(
    model: Path, keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    root = sealed_root(model, keypair)
    with caplog.at_level(logging.DEBUG, logger="modelseal.audit"):
        verified_root(model, keypair)

    records = [r for r in caplog.records if r.name == "modelseal.audit"]
    assert [r.levelno for r in records] == [logging.INFO]
    event = records[0].modelseal_event  # type: ignore[attr-defined]
    assert event["outcome"] == "verified"
    assert event["reasons"] == []
    assert event["expected_root"] == event["actual_root"] == root
